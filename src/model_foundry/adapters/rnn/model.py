"""Recurrent language model: embedding → LSTM | GRU | RNN stack → (projection) → vocabulary logits.

One module for all three cells (`config.cell`, fixed by the registry entry). Unidirectional models are causal
LMs: the state at t has read tokens ≤ t. Bidirectional models are for masked LM: the output at t concatenates
the forward state (tokens ≤ t) and the backward state (tokens ≥ t); seeing position t itself is fine because
its input is [MASK] (or a random/kept token) whenever it is a target.

Generation carries the recurrent state between calls: `RNNAdapter.prefill`/`decode` return the hidden state
h (LSTM: (h, c)), (n_layer, B, hidden_size) each, so a token costs one step of the stack. Bidirectional models
have no such state (the backward direction reads the whole sequence) and do not decode.

Not a Hugging Face family: the folder is our canonical layout (safetensors + config.json) only.
"""

from __future__ import annotations

import torch
from torch import nn

from model_foundry.adapters.rnn import RNNConfig
from model_foundry.adapters.scratch import ScratchAdapter
from model_foundry.errors import FoundryError

RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]  # h, or (h, c) for LSTM
TIED = {"head.weight": "embedding.weight"}  # with tie_embeddings: ours → the weight it shares (saved once)


class RecurrentLM(nn.Module):
    def __init__(self, cfg: RNNConfig) -> None:
        super().__init__()
        self.embedding = nn.Embedding(cfg.vocab_size, cfg.embedding_size)
        self.drop = nn.Dropout(cfg.dropout)
        self.rnn = RECURRENT[cfg.cell](
            cfg.embedding_size,
            cfg.hidden_size,
            num_layers=cfg.n_layer,
            dropout=cfg.dropout if cfg.n_layer > 1 else 0.0,  # between layers; torch warns on one layer
            bidirectional=cfg.bidirectional,
            batch_first=True,
        )
        # Tied output weights live in embedding space: project the recurrent features there when sizes differ.
        needs_proj = cfg.tie_embeddings and cfg.output_size != cfg.embedding_size
        self.proj = nn.Linear(cfg.output_size, cfg.embedding_size) if needs_proj else None
        self.head = nn.Linear(cfg.embedding_size if cfg.tie_embeddings else cfg.output_size, cfg.vocab_size)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        nn.init.zeros_(self.head.bias)
        if cfg.tie_embeddings:
            self.head.weight = self.embedding.weight
        else:
            nn.init.uniform_(self.head.weight, -0.1, 0.1)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.read(idx)[0]  # (B, T, V)

    def read(self, idx: torch.Tensor, state: Hidden | None = None) -> tuple[torch.Tensor, Hidden]:
        """(B, T) ids after `state` (None: the start) → (B, T, V) logits and the state after them.

        state: h (n_layer · directions, B, hidden_size); for LSTM the pair (h, c).
        """
        x = self.drop(self.embedding(idx))  # (B, T, E)
        h, state = self.rnn(x, state)  # (B, T, H) or (B, T, 2H): [forward; backward] states
        h = self.drop(h)
        if self.proj is not None:
            h = self.proj(h)  # (B, T, E)
        return self.head(h), state  # (B, T, V)


class RNNAdapter(ScratchAdapter):
    """Shared by the three cells: the registry entry's config class (LSTMConfig, ...) says which cell."""

    module_cls = RecurrentLM
    model: RecurrentLM
    config: RNNConfig

    def tied_weights(self) -> dict[str, str]:
        return TIED if self.config.tie_embeddings else {}

    def prefill(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, Hidden]:
        """(B, T) prompt → (B, T, V) logits and the recurrent state after it (no context limit)."""
        self._require_unidirectional()
        return self.model.read(input_ids)

    def decode(self, input_ids: torch.Tensor, state: Hidden) -> tuple[torch.Tensor, Hidden]:
        """(B, n) next ids → (B, n, V) logits and the state after them (`state` is not changed)."""
        return self.model.read(input_ids, state)

    def _require_unidirectional(self) -> None:
        if self.config.bidirectional:
            raise FoundryError(
                f"This {self.spec.name} is bidirectional (a masked language model): it cannot continue text.",
                "Generate with a unidirectional model trained with train.objective: causal_lm.",
            )
