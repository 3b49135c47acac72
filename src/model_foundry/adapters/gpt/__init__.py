"""GPT-style decoder: the config (torch-free, validated from params.yaml) and its registry entry.

The modules and the adapter are in `model.py` (imported only when a model is built or loaded).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from model_foundry.adapters.spec import ArchitectureSpec, check_heads
from model_foundry.schema import rule


@dataclass
class GPTConfig:
    n_layer: int = rule(4, ge=1, doc="transformer blocks")
    n_head: int = rule(4, ge=1, doc="attention heads; n_embd must divide by it")
    n_embd: int = rule(128, ge=1, doc="embedding / residual width")
    block_size: int = rule(256, ge=1, doc="maximum context length (position embeddings)")
    dropout: float = rule(0.0, ge=0.0, lt=1.0, doc="dropout on embeddings, attention and residuals")
    vocab_size: int = rule(
        0, ge=0, doc="0: the tokenizer's size; larger pads the embedding and output rows; smaller is refused"
    )

    # A tiny instance for tests and smoke runs (the contract tests and the end-to-end test use it).
    TINY: ClassVar[dict[str, Any]] = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}

    def validate(self) -> None:
        check_heads(self.n_embd, self.n_head)


SPEC = ArchitectureSpec(
    name="gpt",
    config_cls=GPTConfig,
    adapter="model_foundry.adapters.gpt.model:GPTAdapter",
    objectives=("causal_lm",),
    description="GPT-2 style decoder (pre-LayerNorm, learned positions, tied embeddings); saves as GPT-2",
)
