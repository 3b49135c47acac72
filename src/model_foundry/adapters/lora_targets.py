"""LoRA settings (`train.lora` in params.yaml), torch-free: validated with the config, used by lora.py.

The fields are peft's `LoraConfig` fields of the same meaning
(https://huggingface.co/docs/peft/package_reference/lora):
r, lora_alpha (here `alpha`), lora_dropout (here `dropout`), target_modules, modules_to_save.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from model_foundry.errors import FoundryError
from model_foundry.schema import rule

if TYPE_CHECKING:
    from model_foundry.adapters.spec import ArchitectureSpec

# Scratch architectures (registry name → (targets, fan_in_fan_out of the saved layout)). The scratch gpt's
# projections are nn.Linear in memory and Conv1D on disk (GPT-2 layout): the exported adapter needs the flag.
SCRATCH_TARGETS: dict[str, tuple[tuple[str, ...], bool]] = {
    "gpt": (("c_attn", "c_proj", "c_fc"), True),
    "bert": (("query", "value"), False),
}
RNN_ARCHITECTURES = ("lstm", "gru", "rnn")
RNN_REASON = (
    "peft's LoRA adapts Linear, Conv1D and Embedding layers; the recurrent cells (nn.LSTM/GRU/RNN) keep "
    "their weights inside one fused kernel that peft cannot wrap, and the model's only Linear is its "
    "output head"
)


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


def default_targets(spec: ArchitectureSpec) -> tuple[list[str], bool]:
    """(target module suffixes, fan_in_fan_out of the saved layout) for an architecture.

    Hub families: the family table's `lora_targets` and `lora_fan_in_fan_out` (adapters/hf/families.py).
    Scratch gpt: its projections c_attn/c_proj/c_fc (nn.Linear in memory, saved as GPT-2 Conv1D: True);
    scratch bert: query/value. Raises FoundryError for the recurrent models (peft cannot wrap their cells)
    and for an architecture without defaults.
    """
    if spec.name in RNN_ARCHITECTURES:
        raise FoundryError(
            f"LoRA is not available for {spec.name}: {RNN_REASON}.",
            "Use train.method: full for recurrent models.",
        )
    if spec.family is not None:
        if not spec.family.lora_targets:
            raise FoundryError(f"The {spec.name} family has no default LoRA targets.", targets_hint())
        return sorted(spec.family.lora_targets), spec.family.lora_fan_in_fan_out
    if spec.name in SCRATCH_TARGETS:
        targets, fan_in_fan_out = SCRATCH_TARGETS[spec.name]
        return sorted(targets), fan_in_fan_out
    raise FoundryError(f"{spec.name} has no default LoRA targets.", targets_hint())


def targets_hint() -> str:
    return "Set train.lora.target_modules to the names of its Linear layers."
