"""Recurrent language model: embedding → LSTM | GRU | RNN stack → (projection) → vocabulary logits.

One module for all three cells (`config.cell`, fixed by the registry entry). Unidirectional models are causal
LMs: the state at t has read tokens ≤ t. Bidirectional models are for masked LM: the output at t concatenates
the forward state (tokens ≤ t) and the backward state (tokens ≥ t); seeing position t itself is fine because
its input is [MASK] (or a random/kept token) whenever it is a target.

Not a Hugging Face family: the folder is our canonical layout (safetensors + config.json) only.
"""

from __future__ import annotations

import torch
from torch import nn

from model_foundry.adapters.base import ScratchAdapter
from model_foundry.adapters.rnn_config import GRU_SPEC, LSTM_SPEC, RNN_SPEC, RNNConfig

RECURRENT = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
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
        x = self.drop(self.embedding(idx))  # (B, T, E)
        h, _ = self.rnn(x)  # (B, T, H) or (B, T, 2H): [forward; backward] states
        h = self.drop(h)
        if self.proj is not None:
            h = self.proj(h)  # (B, T, E)
        return self.head(h)  # (B, T, V)


class RNNAdapter(ScratchAdapter):
    """Shared by the three cells; the subclasses below only say which registry entry (and cell) they are."""

    spec = RNN_SPEC
    module_cls = RecurrentLM

    def tied_weights(self) -> dict[str, str]:
        return TIED if self.config.tie_embeddings else {}


class LSTMAdapter(RNNAdapter):
    spec = LSTM_SPEC


class GRUAdapter(RNNAdapter):
    spec = GRU_SPEC
