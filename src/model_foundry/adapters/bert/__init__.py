"""BERT encoder with an MLM head: the config (torch-free, validated from params.yaml) and its registry entry.

Field names follow the GPT config (n_layer, n_head, n_embd, block_size, dropout) so catalog entries and MLflow
params line up across architectures; `hf_config()` in model.py writes Hugging Face's names beside them.
Token types are `token_types`, not Hugging Face's `type_vocab_size`: both keys live in one config.json, and
our 0 ("no token type embeddings") is not a value transformers accepts, so the saved folder says
`type_vocab_size: 1` (with a zero embedding row) next to our `token_types: 0`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from model_foundry.adapters.spec import ArchitectureSpec, check_heads
from model_foundry.schema import rule


@dataclass
class BertConfig:
    n_layer: int = rule(4, ge=1, doc="encoder layers")
    n_head: int = rule(4, ge=1, doc="attention heads; n_embd must divide by it")
    n_embd: int = rule(128, ge=1, doc="hidden size (Hugging Face: hidden_size)")
    intermediate_size: int = rule(512, ge=1, doc="feed-forward width (BERT uses 4 × n_embd)")
    block_size: int = rule(128, ge=1, doc="maximum sequence length (Hugging Face: max_position_embeddings)")
    token_types: int = rule(
        2, ge=0, doc="token type (segment) embeddings, Hugging Face's type_vocab_size; 0 = none"
    )
    dropout: float = rule(0.0, ge=0.0, lt=1.0, doc="dropout on embeddings, attention and residuals")
    vocab_size: int = rule(
        0, ge=0, doc="0: the tokenizer's size; larger pads the embedding and output rows; smaller is refused"
    )

    # A tiny instance for tests and smoke runs (the contract tests and the end-to-end test use it).
    TINY: ClassVar[dict[str, Any]] = {
        "n_layer": 2,
        "n_head": 2,
        "n_embd": 32,
        "intermediate_size": 64,
        "block_size": 32,
    }

    def validate(self) -> None:
        check_heads(self.n_embd, self.n_head)


SPEC = ArchitectureSpec(
    name="bert",
    config_cls=BertConfig,
    adapter="model_foundry.adapters.bert.model:BertAdapter",
    objectives=("masked_lm",),
    description="BERT encoder (post-LayerNorm, bidirectional) with an MLM head; saves as BertForMaskedLM",
)
