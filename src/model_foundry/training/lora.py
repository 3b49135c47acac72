"""LoRA through peft: wrap an adapter's model so only low-rank adapters train, merge them, export them.

    default_targets(spec)             the family's (or scratch model's) target modules and fan_in_fan_out
    apply_lora(adapter, settings)     inject peft LoRA layers into adapter.model (in place); LoRAInfo
    merge(adapter)                    peft's merge_and_unload: back to the plain model, tied weights intact
    save_lora_adapter(adapter, ...)   the PEFT-format folder (adapter_config.json +
                                      adapter_model.safetensors), atomic and canonical (same bytes always)

peft (https://huggingface.co/docs/peft/package_reference/lora) is used through `get_peft_model`,
`merge_and_unload` and `get_peft_model_state_dict`. `get_peft_model` replaces the target nn.Linear/Conv1D
modules *inside* the model it is given; `apply_lora` keeps that same module object as `adapter.model`, so the
adapter's forward, loss, prefill/decode (KV caches) and the training loop run unchanged, with only the LoRA
matrices trainable. The PeftModel is kept beside it for `merge` and `save_lora_adapter`.

Tied embeddings (Qwen2.5-0.5B, GPT-2, BERT, the scratch gpt and bert share the input embedding matrix with the
output head) are refused as targets: with peft 0.21 LoRA on `lm_head`/`embed_tokens` of a tied model merges
wrongly (merged ≠ unmerged, even with `ensure_weight_tying=True`), and `modules_to_save=["lm_head"]` silently
unties them on merge and adds a vocab × hidden matrix (issue 10).

The scratch gpt trains nn.Linear (out, in) weights and saves them in GPT-2's Conv1D (in, out) layout. LoRA's
lora_A (r, in) and lora_B (out, r) are the same tensors for both; only `fan_in_fan_out` differs (peft
transposes the product B·A for Conv1D). The exported adapter_config.json carries the flag of the *saved*
layout, so the adapter loads onto `GPT2LMHeadModel.from_pretrained(folder)`.

Importing this module imports torch; peft and transformers are imported inside the functions.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from model_foundry.errors import FoundryError
from model_foundry.training.lora_settings import LoRASettings

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter
    from model_foundry.adapters.spec import ArchitectureSpec

ADAPTER_CONFIG_NAME = "adapter_config.json"  # peft's CONFIG_NAME
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"  # peft's SAFETENSORS_WEIGHTS_NAME

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

# Attribute (in the module's __dict__, so not a registered submodule) holding the LoRA state of a model.
_STATE_ATTR = "_foundry_lora"


@dataclass
class LoRAInfo:
    """What `apply_lora` did. Parameter counts are elements (tied weights counted once)."""

    targets: list[str]  # target module suffixes given to peft (sorted)
    modules: list[str]  # full names of the modules that got adapters (sorted)
    modules_to_save: list[str]
    fan_in_fan_out: bool  # of the in-memory layers (False for nn.Linear, True for Conv1D)
    saved_fan_in_fan_out: bool  # of the layout the model saves in (what the exported adapter says)
    trainable: int
    total: int

    @property
    def trainable_percent(self) -> float:
        return 100.0 * self.trainable / self.total if self.total else 0.0

    def describe(self) -> str:
        """One line for the log: "LoRA r … on q_proj, …: 12,288 trainable of 5,012,288 parameters (0.25%)"."""
        return (
            f"LoRA on {', '.join(self.targets)}"
            + (f" (+ {', '.join(self.modules_to_save)} in full)" if self.modules_to_save else "")
            + f": {self.trainable:,} trainable of {self.total:,} parameters ({self.trainable_percent:.2f}%)"
        )


@dataclass
class _LoRAState:
    peft_model: Any  # peft.PeftModel whose base_model.model is the adapter's model
    info: LoRAInfo
    tied: list[list[str]] = field(default_factory=list)  # tied module groups before wrapping


# --------------------------------------------------------------------------------------------- targets


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
            raise FoundryError(f"The {spec.name} family has no default LoRA targets.", _targets_hint())
        return sorted(spec.family.lora_targets), spec.family.lora_fan_in_fan_out
    if spec.name in SCRATCH_TARGETS:
        targets, fan_in_fan_out = SCRATCH_TARGETS[spec.name]
        return sorted(targets), fan_in_fan_out
    raise FoundryError(f"{spec.name} has no default LoRA targets.", _targets_hint())


def _targets_hint() -> str:
    return "Set train.lora.target_modules to the names of its Linear layers."


def _matches(name: str, target: str) -> bool:
    """peft's rule for a list of target names: the module's full name is the target or ends with .target."""
    return name == target or name.endswith("." + target)


def _adaptable_types() -> tuple[type[nn.Module], ...]:
    from transformers.pytorch_utils import Conv1D

    return (nn.Linear, Conv1D, nn.Embedding)


def linear_names(model: nn.Module) -> list[str]:
    """Sorted, deduplicated last name components of the model's Linear/Conv1D modules ("c_attn", "q_proj")."""
    from transformers.pytorch_utils import Conv1D

    return sorted(
        {n.rsplit(".", 1)[-1] for n, m in model.named_modules() if n and isinstance(m, (nn.Linear, Conv1D))}
    )


def tied_modules(model: nn.Module) -> list[list[str]]:
    """Groups of modules that share one weight Parameter (tied input embeddings and output head), each sorted:
    [["lm_head", "model.embed_tokens"]] for a tied Qwen2; [] for a model without tied weights."""
    by_weight: dict[int, list[str]] = {}
    for name, module in model.named_modules(remove_duplicate=False):
        weight = module._parameters.get("weight")
        if name and weight is not None:
            by_weight.setdefault(id(weight), []).append(name)
    return sorted(sorted(set(names)) for names in by_weight.values() if len(set(names)) > 1)


def _check_targets(adapter: BaseAdapter, targets: list[str], modules_to_save: list[str]) -> list[str]:
    """The full names of the modules `targets` adapt; FoundryError for unknown, unsupported or tied ones."""
    model = adapter.model
    types = _adaptable_types()
    names = {n: m for n, m in model.named_modules() if n}
    tied = tied_modules(model)
    tied_names = {n for group in tied for n in group}
    adapted: list[str] = []
    existing = ", ".join(linear_names(model))
    for target in targets:
        found = [n for n in names if _matches(n, target)]
        if not found:
            raise FoundryError(
                f"LoRA target module {target!r} does not exist in {adapter.spec.name}.",
                f"Its Linear/Conv1D modules are: {existing}.",
            )
        wrong = sorted({type(names[n]).__name__ for n in found if not isinstance(names[n], types)})
        if wrong:
            raise FoundryError(
                f"LoRA target module {target!r} of {adapter.spec.name} is a {', '.join(wrong)}, not a Linear "
                "or Conv1D layer: peft adapts weight matrices only.",
                f"Name Linear/Conv1D modules: {existing}.",
            )
        if tied_names & set(found):
            raise _tied_error(adapter, target, "a LoRA target", tied)
        adapted += found
    for module in modules_to_save:
        found = [n for n in names if n == module or n.endswith("." + module)]
        if not found:
            raise FoundryError(
                f"modules_to_save names {module!r}, which does not exist in {adapter.spec.name}.",
                f"Its modules include: {', '.join(sorted({n.rsplit('.', 1)[-1] for n in names}))}.",
            )
        if tied_names & {n for f in found for n in names if n == f or n.startswith(f + ".")}:
            raise _tied_error(adapter, module, "in modules_to_save", tied)
    return sorted(set(adapted))


def _tied_error(adapter: BaseAdapter, name: str, role: str, tied: list[list[str]]) -> FoundryError:
    pairs = "; ".join(" = ".join(group) for group in tied)
    try:
        defaults = ", ".join(default_targets(adapter.spec)[0])
    except FoundryError:
        defaults = "the attention and MLP projections"
    return FoundryError(
        f"{name!r} cannot be {role}: {adapter.spec.name} ties its input embeddings and output head "
        f"({pairs}). "
        "With peft, LoRA on a tied embedding or head merges wrongly (merged ≠ unmerged), and modules_to_save "
        "unties them silently on merge and adds a vocabulary × hidden matrix.",
        f"Adapt the projections instead (leave train.lora.target_modules unset for {defaults}) and keep "
        "modules_to_save free of the embeddings and head; to train the embeddings, use train.method: full.",
    )


# --------------------------------------------------------------------------------------------- wrapping


def lora_info(adapter: BaseAdapter) -> LoRAInfo | None:
    """The LoRAInfo of a model wrapped by `apply_lora` (None for a plain model)."""
    state = _state(adapter.model)
    return None if state is None else state.info


def _state(model: nn.Module) -> _LoRAState | None:
    state: _LoRAState | None = vars(model).get(_STATE_ATTR)
    return state


def _saved_transposed(adapter: BaseAdapter, modules: list[str]) -> bool | None:
    """Whether the saved layout stores the adapted weights transposed (Conv1D): True/False when every one
    agrees, None when the adapter has no saved-layout map (Hub families save the in-memory layout)."""
    export: Callable[[], dict[str, torch.Tensor]] | None = getattr(adapter, "export_state_dict", None)
    if export is None:
        return None
    saved = export()
    flags: set[bool] = set()
    for name in modules:
        weight = adapter.model.get_submodule(name).get_parameter("weight")
        on_disk = saved.get(f"{name}.weight")
        if on_disk is None or weight.dim() != 2:
            continue
        if on_disk.shape == weight.shape and torch.equal(on_disk, weight):
            flags.add(False)
        elif on_disk.shape == weight.t().shape and torch.equal(on_disk, weight.t()):
            flags.add(True)
    if len(flags) > 1:
        raise FoundryError(
            f"The LoRA targets of {adapter.spec.name} are saved in two layouts (some transposed).",
            "Target either the transposed projections or the others, not both.",
        )
    return flags.pop() if flags else None


def apply_lora(adapter: BaseAdapter, settings: LoRASettings) -> LoRAInfo:
    """Inject LoRA layers into `adapter.model` (in place, through `peft.get_peft_model`); only they train.

    `adapter.model` stays the same module object (its forward, the adapter's loss, prefill/decode and
    `training.loop.train` work unchanged), with every base parameter frozen (requires_grad False) and the
    lora_A (r, in) / lora_B (out, r) matrices (and `modules_to_save`) trainable. Call before
    `TrainState.create`, which builds the optimizer over the trainable parameters.

    Raises FoundryError: recurrent models (peft cannot wrap their cells); a target that names no module
    (listing the Linear/Conv1D names that exist) or a module that is not Linear/Conv1D/Embedding; a tied
    embedding or output head as a target or in modules_to_save (naming the alternative); a model already
    wrapped.
    """
    from peft import LoraConfig, get_peft_model
    from transformers.pytorch_utils import Conv1D

    model = adapter.model
    if adapter.spec.name in RNN_ARCHITECTURES or any(isinstance(m, nn.RNNBase) for m in model.modules()):
        raise FoundryError(
            f"LoRA is not available for {adapter.spec.name}: {RNN_REASON}.",
            "Use train.method: full for recurrent models.",
        )
    if _state(model) is not None:
        raise FoundryError("The model already has LoRA adapters.", "Merge them first (training.lora.merge).")
    if settings.target_modules is None:
        targets, _ = default_targets(adapter.spec)
    else:
        targets = sorted(set(settings.target_modules))
        if not targets:
            raise FoundryError("train.lora.target_modules is empty.", "Leave it unset for the defaults.")
    modules_to_save = sorted(set(settings.modules_to_save))
    adapted = _check_targets(adapter, targets, modules_to_save)
    fan_in_fan_out = all(isinstance(model.get_submodule(n), Conv1D) for n in adapted)
    saved = _saved_transposed(adapter, adapted)
    tied = tied_modules(model)
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        modules_to_save=modules_to_save or None,
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
    )
    with warnings.catch_warnings():
        # peft 0.21 reads the deprecated `is_gradient_checkpointing` (a FutureWarning in transformers 5)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, config)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in model.parameters())
    info = LoRAInfo(
        targets=targets,
        modules=adapted,
        modules_to_save=modules_to_save,
        fan_in_fan_out=fan_in_fan_out,
        saved_fan_in_fan_out=fan_in_fan_out if saved is None else saved,
        trainable=trainable,
        total=total,
    )
    vars(model)[_STATE_ATTR] = _LoRAState(peft_model, info, tied)
    return info


def _require_state(adapter: BaseAdapter) -> _LoRAState:
    state = _state(adapter.model)
    if state is None:
        raise FoundryError("The model has no LoRA adapters.", "Call apply_lora first (train.method: lora).")
    return state


# --------------------------------------------------------------------------------------------- merge


def merge(adapter: BaseAdapter) -> BaseAdapter:
    """Fold the adapters into the base weights (W += (alpha / r) · B·A; peft's `merge_and_unload`) and put the
    plain model back as `adapter.model` (its class and state dict keys as before `apply_lora`).

    Tied embeddings stay tied (the same Parameter); FoundryError if they would not (never expected: tied
    modules are refused as targets). Returns the adapter.
    """
    state = _require_state(adapter)
    merged: nn.Module = state.peft_model.merge_and_unload()
    vars(merged).pop(_STATE_ATTR, None)
    vars(adapter.model).pop(_STATE_ATTR, None)
    if "peft_config" in vars(merged):  # set on the base model by peft's BaseTuner; no part of the model
        del vars(merged)["peft_config"]
    for p in merged.parameters():
        p.requires_grad_(True)
    adapter.model = merged
    if tied_modules(merged) != state.tied:
        raise FoundryError(
            f"Merging the LoRA adapters untied {adapter.spec.name}'s embeddings and output head "
            f"(before: {state.tied}, after: {tied_modules(merged)}).",
            "Report this: tied modules should have been refused as LoRA targets.",
        )
    return adapter


# --------------------------------------------------------------------------------------------- export


def adapter_files(adapter: BaseAdapter, base_name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(adapter_config.json content, adapter_model.safetensors tensors) in canonical form.

    The config is peft's LoraConfig as `PeftModel.save_pretrained` writes it (inference_mode true), with
    every list sorted (peft keeps target_modules as a set: its order, and so the file's bytes, change with
    PYTHONHASHSEED), `base_model_name_or_path` = `base_name` (a model name or Hub id@sha: never a path), and
    `fan_in_fan_out` of the layout the base model is saved in. Tensor names are peft's
    ("base_model.model.<module>.lora_A.weight", (r, in); "….lora_B.weight", (out, r)), CPU, contiguous;
    modules_to_save weights are converted to the saved layout.
    """
    from peft.utils import get_peft_model_state_dict

    state = _require_state(adapter)
    if not base_name or Path(base_name).is_absolute() or base_name.startswith(("./", "../", "~")):
        raise FoundryError(
            f"The adapter's base_model_name_or_path must be a model name or Hub id, not {base_name!r}.",
            "Pass the parent model's name (models/<name>) or its Hub id@sha.",
        )
    config = state.peft_model.peft_config["default"].to_dict()
    config["base_model_name_or_path"] = base_name
    config["inference_mode"] = True
    config["fan_in_fan_out"] = state.info.saved_fan_in_fan_out
    config["revision"] = None
    config = {k: _canonical(v) for k, v in config.items()}
    tensors = get_peft_model_state_dict(state.peft_model)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    if state.info.saved_fan_in_fan_out and not state.info.fan_in_fan_out:
        # full weights of modules_to_save that the saved layout transposes (lora_A/B are layout-free)
        prefix = "base_model.model."
        base_keys = {k.removeprefix(prefix): k for k in tensors if "lora_" not in k}
        if base_keys:
            export: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]] | None = getattr(
                adapter, "to_saved", None
            )
            if export is not None:
                converted = export({k: tensors[full] for k, full in base_keys.items()})
                for k, full in base_keys.items():
                    tensors[full] = converted[k].contiguous()
    return config, tensors


def _canonical(value: Any) -> Any:
    """Sets and lists sorted (by their JSON text when mixed), dicts with canonical values."""
    if isinstance(value, (set, frozenset, list, tuple)):
        items = [_canonical(v) for v in value]
        try:
            return sorted(items)
        except TypeError:
            import json

            return sorted(items, key=lambda v: json.dumps(v, sort_keys=True))
    if isinstance(value, dict):
        return {str(k): _canonical(v) for k, v in value.items()}
    return value


def write_lora_files(adapter: BaseAdapter, folder: str | Path, base_name: str) -> list[Path]:
    """Write adapter_config.json and adapter_model.safetensors into an existing `folder` (not atomic by
    itself: use inside `io.atomic_dir`, e.g. beside merged weights). Returns the two paths."""
    from safetensors.torch import save_file

    from model_foundry.io import write_json

    folder = Path(folder)
    config, tensors = adapter_files(adapter, base_name)
    write_json(folder / ADAPTER_CONFIG_NAME, config, atomic=False)
    save_file(tensors, str(folder / ADAPTER_WEIGHTS_NAME), metadata={"format": "pt"})
    return [folder / ADAPTER_CONFIG_NAME, folder / ADAPTER_WEIGHTS_NAME]


def save_lora_adapter(adapter: BaseAdapter, folder: str | Path, base_name: str) -> Path:
    """The PEFT-format adapter folder `folder` (replaced atomically): adapter_config.json (sorted keys and
    lists, base_model_name_or_path = `base_name`) + adapter_model.safetensors, no README. The same adapter
    gives the same bytes in every process. `peft.PeftModel.from_pretrained(base, folder)` loads it onto the
    base model saved by the adapter's `save_checkpoint` (or loaded with transformers). Returns `folder`.

    Raises FoundryError for a model without LoRA adapters, an absolute `base_name`, or a folder that cannot
    be written (full disk, read-only).
    """
    from model_foundry.io import atomic_dir

    _require_state(adapter)
    with atomic_dir(folder) as tmp:
        write_lora_files(adapter, tmp, base_name)
    return Path(folder)
