"""Recurrent language models (LSTM, GRU, Elman RNN): the config (torch-free) and three registry entries.

The cell is fixed by the registry entry, not by a setting: `architecture: lstm` builds an LSTM, and
config.json's `architecture` key rebuilds it, so no `cell:` field can disagree with the name. Each cell has
its own (empty) config subclass so that its config knows its cell; the fields are shared, and one adapter
(`model.py`) serves all three.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from model_foundry.adapters.spec import ArchitectureSpec
from model_foundry.errors import FoundryError
from model_foundry.schema import rule

CELLS = ("lstm", "gru", "rnn")


@dataclass
class RNNConfig:
    """Shared settings. No `block_size`: a recurrent model reads any length (`max_context` is None)."""

    n_layer: int = rule(2, ge=1, doc="stacked recurrent layers")
    hidden_size: int = rule(256, ge=1, doc="recurrent state size (per direction)")
    embedding_size: int = rule(256, ge=1, doc="token embedding size")
    dropout: float = rule(0.0, ge=0.0, lt=1.0, doc="dropout on embeddings, between layers and on the output")
    tie_embeddings: bool = rule(
        True, doc="share input embeddings and output weights (a projection is added when sizes differ)"
    )
    bidirectional: bool = rule(
        False, doc="read both directions; masked_lm only (causal_lm would see the future)"
    )
    vocab_size: int = rule(
        0, ge=0, doc="0: the tokenizer's size; larger pads the embedding and output rows; smaller is refused"
    )

    cell: ClassVar[str] = "rnn"  # fixed per registry entry by the subclasses below
    TINY: ClassVar[dict[str, Any]] = {"n_layer": 1, "hidden_size": 32, "embedding_size": 32}

    @property
    def output_size(self) -> int:
        """Features per position after the recurrent stack: forward and backward states are concatenated."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    def check_objective(self, objective: str) -> None:
        if self.bidirectional and objective == "causal_lm":
            raise FoundryError(
                f"bidirectional = true with train.objective = 'causal_lm': the backward {self.cell.upper()} "
                "would read the very tokens the model must predict.",
                "Set bidirectional: false for causal_lm, or train it with train: {objective: masked_lm}.",
            )


@dataclass
class LSTMConfig(RNNConfig):
    cell: ClassVar[str] = "lstm"


@dataclass
class GRUConfig(RNNConfig):
    cell: ClassVar[str] = "gru"


def _spec(config_cls: type[RNNConfig], what: str) -> ArchitectureSpec:
    return ArchitectureSpec(
        name=config_cls.cell,
        config_cls=config_cls,
        adapter="model_foundry.adapters.rnn.model:RNNAdapter",
        objectives=("causal_lm", "masked_lm"),
        description=f"{what} language model (bidirectional for masked_lm); saved in our own layout only",
    )


LSTM_SPEC = _spec(LSTMConfig, "LSTM")
GRU_SPEC = _spec(GRUConfig, "GRU")
RNN_SPEC = _spec(RNNConfig, "Elman RNN (tanh)")
