"""LoRA settings (`train.lora` in params.yaml), torch-free: validated with the config, used by lora.py.

The fields are peft's `LoraConfig` fields of the same meaning
(https://huggingface.co/docs/peft/package_reference/lora):
r, lora_alpha (here `alpha`), lora_dropout (here `dropout`), target_modules, modules_to_save.
"""

from __future__ import annotations

from dataclasses import dataclass

from model_foundry.schema import rule


@dataclass
class LoRASettings:
    """Low-rank adapters on the model's projection matrices: W x + (alpha / r) · B A x, only A and B train.

    A is (r, in_features), B is (out_features, r), B starts at zero (the adapted model starts as the base).
    """

    r: int = rule(8, ge=1, doc="LoRA rank: the inner size of the two low-rank matrices")
    alpha: int = rule(16, ge=1, doc="LoRA scale numerator: the update is scaled by alpha / r")
    dropout: float = rule(0.0, ge=0.0, lt=1.0, doc="dropout on the LoRA input (training only)")
    target_modules: list[str] | None = rule(
        None,
        doc="module names to adapt (suffixes, as peft matches them: 'q_proj' or 'layers.0.self_attn.q_proj');"
        " null: the family's defaults (attention + MLP projections)",
    )
    modules_to_save: list[str] = rule(
        [], doc="modules trained in full beside the adapters (never the tied embeddings or output head)"
    )
