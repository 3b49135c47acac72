"""Imported Hugging Face families: the catalog settings and the per-family data, torch-free.

The registry (`adapters/__init__.py`) and the importer (`hub/validate.py`) read this without importing torch;
the adapters (`hf_causal.py`, `hf_masked.py` and one small file per family) add the model code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from model_foundry.adapters.spec import ArchitectureSpec
from model_foundry.schema import rule


@dataclass
class HFModelConfig:
    """What a catalog entry of an imported family may set; the architecture itself comes from config.json."""

    dtype: Literal["float32", "bfloat16", "float16", "auto"] = rule(
        "float32", doc="dtype the weights are loaded in for training/evaluation ('auto': as stored)"
    )


@dataclass(frozen=True)
class HFFamily:
    """What differs between Hugging Face families — data, not code.

    model_classes: config.json `model_type` → the transformers class that loads it (never `auto_map` code).
    stop_tokens:   generation also stops on these tokens when the tokenizer has them (chat turn ends).
    chat_template: used when the tokenizer ships none.
    tied_keys:     checkpoint names that alias another tensor (output embeddings); dropped when a pickle
                   checkpoint is converted, because transformers re-ties them on load.
    ignored_keys:  suffixes of legacy buffers found in old pickle checkpoints (not weights).
    context_offset: positions the model reserves (RoBERTa: padding_idx + 1).
    """

    model_classes: Mapping[str, str]
    stop_tokens: tuple[str, ...] = ()
    chat_template: str | None = None
    tied_keys: tuple[str, ...] = ("lm_head.weight",)
    ignored_keys: tuple[str, ...] = ()
    context_offset: int = 0
    extra: Mapping[str, str] = field(default_factory=dict)


def hf_spec(name: str, adapter: str, description: str, objective: str = "causal_lm") -> ArchitectureSpec:
    """The registry entry of an imported family: `adapter` is "module:Class" under model_foundry.adapters."""
    return ArchitectureSpec(
        name=name,
        config_cls=HFModelConfig,
        adapter=f"model_foundry.adapters.{adapter}",
        objectives=(objective,),
        description=description,
        pretrained=True,
    )
