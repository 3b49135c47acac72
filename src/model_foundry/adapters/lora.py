"""LoRA through peft: wrap an adapter's model so only low-rank adapters train, merge them, export them.

    default_targets(spec)             the family's (or scratch model's) target modules and fan_in_fan_out
    apply_lora(adapter, settings)     inject peft LoRA layers into adapter.model (in place); LoRAInfo
    merge(adapter)                    peft's merge_and_unload: back to the plain model, tied weights intact
    save_lora_adapter(adapter, ...)   the PEFT-format folder (adapter_config.json +
                                      adapter_model.safetensors), atomic and canonical (same bytes always)
    load_lora_adapter(adapter, dir)   apply such a folder (ours or plain peft's) in place, trainable or not

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

from model_foundry.adapters.lora_targets import (
    RNN_ARCHITECTURES,
    RNN_REASON,
    LoRASettings,
    default_targets,
)
from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter

ADAPTER_CONFIG_NAME = "adapter_config.json"  # peft's CONFIG_NAME
ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"  # peft's SAFETENSORS_WEIGHTS_NAME

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
    # what the hints offer: the adaptable modules, without the tied embedding/head (refused below)
    tied_last = {n.rsplit(".", 1)[-1] for n in tied_names}
    existing = ", ".join(n for n in linear_names(model) if n not in tied_last)
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
    from peft import LoraConfig
    from transformers.pytorch_utils import Conv1D

    model = adapter.model
    _check_wrappable(adapter)
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
    config = LoraConfig(
        r=settings.r,
        lora_alpha=settings.alpha,
        lora_dropout=settings.dropout,
        target_modules=targets,
        modules_to_save=modules_to_save or None,
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
    )
    info = LoRAInfo(
        targets=targets,
        modules=adapted,
        modules_to_save=modules_to_save,
        fan_in_fan_out=fan_in_fan_out,
        saved_fan_in_fan_out=fan_in_fan_out if saved is None else saved,
        trainable=0,
        total=0,
    )
    return _wrap(adapter, config, info)


def _check_wrappable(adapter: BaseAdapter) -> None:
    """FoundryError for a recurrent model (peft cannot wrap its cells) or one already wrapped."""
    model = adapter.model
    if adapter.spec.name in RNN_ARCHITECTURES or any(isinstance(m, nn.RNNBase) for m in model.modules()):
        raise FoundryError(
            f"LoRA is not available for {adapter.spec.name}: {RNN_REASON}.",
            "Use train.method: full for recurrent models.",
        )
    if _state(model) is not None:
        raise FoundryError("The model already has LoRA adapters.", "Merge them first (adapters.lora.merge).")


def _wrap(adapter: BaseAdapter, config: Any, info: LoRAInfo) -> LoRAInfo:
    """`peft.get_peft_model(adapter.model, config)` in place; records the _LoRAState (with `info`, its
    parameter counts filled in) on the model. Returns the info."""
    from peft import get_peft_model

    model = adapter.model
    tied = tied_modules(model)
    with warnings.catch_warnings():
        # peft 0.21 reads the deprecated `is_gradient_checkpointing` (a FutureWarning in transformers 5)
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        peft_model = get_peft_model(model, config)
    info.trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info.total = sum(p.numel() for p in model.parameters())
    vars(model)[_STATE_ATTR] = _LoRAState(peft_model, info, tied)
    return info


def _unwrap(adapter: BaseAdapter, requires_grad: dict[str, bool]) -> None:
    """Undo `_wrap` without merging (peft's `unload`): the plain model back as `adapter.model`, each
    parameter's requires_grad as in `requires_grad` (by name, as before wrapping)."""
    state = _require_state(adapter)
    plain: nn.Module = state.peft_model.unload()
    for model in (plain, adapter.model):
        vars(model).pop(_STATE_ATTR, None)
        vars(model).pop("peft_config", None)
    for name, p in plain.named_parameters():
        p.requires_grad_(requires_grad.get(name, True))
    adapter.model = plain


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


# --------------------------------------------------------------------------------------------- load

# adapter_config.json keys that are not LoraConfig settings of the layers, or that `load_lora_adapter`
# decides itself (fan_in_fan_out of the in-memory layers; inference_mode from `trainable`).
_NOT_LAYER_KEYS = frozenset(
    {"peft_type", "task_type", "base_model_name_or_path", "revision", "inference_mode", "fan_in_fan_out",
     "target_modules", "modules_to_save", "auto_mapping", "peft_version"}
)  # fmt: skip


def read_adapter_config(folder: str | Path) -> dict[str, Any]:
    """The adapter_config.json of a PEFT-format LoRA adapter folder (ours or one written by plain peft).

    Raises FoundryError when the folder has no adapter_config.json, the file is damaged (not a JSON object,
    r / lora_alpha / target_modules of the wrong type), or the adapter is not LoRA (peft_type ≠ "LORA").
    """
    from model_foundry.model_folder.checks import read_json_object, require_types

    path = Path(folder) / ADAPTER_CONFIG_NAME
    if not path.is_file():
        raise FoundryError(
            f"{folder} is not a LoRA adapter folder (no {ADAPTER_CONFIG_NAME}).",
            "Point to a LoRA run's folder (models/<out>, or its adapter/ subfolder) or to a folder written "
            "by peft's save_pretrained.",
        )
    hint = "Re-export the adapter (peft's save_pretrained, or re-run the LoRA train stage)."
    raw = read_json_object(path, hint)
    if str(raw.get("peft_type", "")).upper() != "LORA":
        raise FoundryError(
            f"{path} describes a {raw.get('peft_type') or 'untyped'} adapter, not LoRA.",
            "Only LoRA adapters (peft_type LORA) can be loaded and merged here.",
        )
    require_types(raw, {"r": int, "lora_alpha": (int, float), "target_modules": (list, str),
                        "modules_to_save": list, "base_model_name_or_path": str}, str(path))  # fmt: skip
    if not raw.get("target_modules"):
        raise FoundryError(f"{path} names no target_modules.", hint)
    return raw


def _adapter_targets(
    adapter: BaseAdapter, targets: list[str] | str, to_save: list[str], where: Path
) -> list[str]:
    """The full names of the modules an adapter's `targets` (suffixes, or peft's regex string) adapt.

    FoundryError naming `where` for targets that exist nowhere in the model (listing its Linear/Conv1D
    names) or that are not adaptable / tied (`_check_targets`).
    """
    import re

    names = [n for n, _ in adapter.model.named_modules() if n]
    if isinstance(targets, str):
        if targets == "all-linear":
            raise FoundryError(
                f"{where} targets 'all-linear', which names no modules.",
                "Re-export the adapter with the module names peft resolved (its target_modules list).",
            )
        targets = sorted(n for n in names if re.fullmatch(targets, n))
        missing = [] if targets else [str(targets)]
    else:
        missing = [t for t in targets if not any(_matches(n, t) for n in names)]
    if missing:
        raise FoundryError(
            f"{where} targets {', '.join(map(repr, missing))}, which "
            f"{'does' if len(missing) == 1 else 'do'} not exist in {adapter.spec.name}.",
            f"Its Linear/Conv1D modules are: {', '.join(linear_names(adapter.model))}. Apply the adapter to "
            "the model it was trained on (foundry merge-lora --base DIR).",
        )
    try:
        return _check_targets(adapter, list(targets), to_save)
    except FoundryError as e:
        raise FoundryError(f"{where}: {e.message}", e.hint) from None


def load_lora_adapter(adapter: BaseAdapter, folder: str | Path, trainable: bool = False) -> LoRAInfo:
    """Apply the PEFT-format LoRA adapter in `folder` (adapter_config.json + adapter_model.safetensors; ours
    or one written by plain peft) to `adapter.model`, in place, as `apply_lora` does: `merge`,
    `write_lora_files` and `lora_info` work after it.

    The layers are injected with `peft.get_peft_model` (the config's r, lora_alpha, lora_dropout, targets,
    modules_to_save…; fan_in_fan_out of the in-memory layers, so an adapter exported from the scratch gpt's
    Conv1D layout fits its nn.Linear layers) and filled with `peft.set_peft_model_state_dict`: lora_A (r, in)
    and lora_B (out, r) per target module. `trainable=True`: exactly the LoRA matrices (and modules_to_save)
    have requires_grad, as after `apply_lora`; False: no parameter does (inference).

    Raises FoundryError, leaving the model as it was: no adapter_config.json or not LoRA
    (`read_adapter_config`); no adapter_model.safetensors or a damaged one; a target that does not exist in
    the model (listing those that do), or that is tied / not a Linear layer; tensors missing from the file,
    unexpected in it, or of other shapes than the model's layers (another base model); a recurrent model or
    one that already has adapters.
    """
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict, set_peft_model_state_dict
    from safetensors.torch import load_file
    from transformers.pytorch_utils import Conv1D

    from model_foundry.model_folder.checks import check_safetensors

    folder = Path(folder)
    raw = read_adapter_config(folder)
    weights = folder / ADAPTER_WEIGHTS_NAME
    hint = "Re-export the adapter (peft's save_pretrained, or re-run the LoRA train stage)."
    if not weights.is_file():
        old = (folder / "adapter_model.bin").is_file()
        raise FoundryError(
            f"{folder} has no {ADAPTER_WEIGHTS_NAME}"
            + (" (only the pickled adapter_model.bin)." if old else "."),
            "Save it with peft's save_pretrained(..., safe_serialization=True)." if old else hint,
        )
    check_safetensors(weights, str(weights), hint)
    _check_wrappable(adapter)
    model = adapter.model
    to_save = sorted(raw.get("modules_to_save") or [])
    adapted = _adapter_targets(adapter, raw["target_modules"], to_save, folder / ADAPTER_CONFIG_NAME)
    fan_in_fan_out = all(isinstance(model.get_submodule(n), Conv1D) for n in adapted)
    saved = _saved_transposed(adapter, adapted)
    fields = LoraConfig.__dataclass_fields__
    settings = {k: v for k, v in raw.items() if k in fields and k not in _NOT_LAYER_KEYS}
    targets = raw["target_modules"]
    try:
        config = LoraConfig(
            **settings,
            target_modules=sorted(targets) if isinstance(targets, list) else targets,
            modules_to_save=to_save or None,
            fan_in_fan_out=fan_in_fan_out,
            inference_mode=not trainable,
        )
    except (TypeError, ValueError) as e:
        raise FoundryError(f"{folder / ADAPTER_CONFIG_NAME} is not a valid LoRA config: {e}", hint) from None
    tensors = load_file(str(weights), device=str(adapter.device))
    requires_grad = {n: p.requires_grad for n, p in model.named_parameters()}
    training = model.training
    info = LoRAInfo(
        targets=sorted(targets) if isinstance(targets, list) else [targets],
        modules=adapted,
        modules_to_save=to_save,
        fan_in_fan_out=fan_in_fan_out,
        saved_fan_in_fan_out=fan_in_fan_out if saved is None else saved,
        trainable=0,
        total=0,
    )
    _wrap(adapter, config, info)
    state = _require_state(adapter)
    try:
        if saved and not fan_in_fan_out:  # modules_to_save weights are stored in the saved layout
            prefix = "base_model.model."
            base_keys = {k.removeprefix(prefix): k for k in tensors if "lora_" not in k}
            from_saved = getattr(adapter, "from_saved", None)
            if base_keys and from_saved is not None:
                converted = from_saved({k: tensors[full] for k, full in base_keys.items()})
                tensors.update({full: converted[k] for k, full in base_keys.items()})
        _check_tensors(get_peft_model_state_dict(state.peft_model), tensors, weights, adapter.spec.name)
        set_peft_model_state_dict(state.peft_model, tensors)
    except BaseException:
        _unwrap(adapter, requires_grad)
        raise
    adapter.model.train(training)  # the new layers' dropout follows the model's mode (eval: off)
    if not trainable:
        for p in adapter.model.parameters():
            p.requires_grad_(False)
    info.trainable = sum(p.numel() for p in adapter.model.parameters() if p.requires_grad)
    return info


def _check_tensors(
    expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor], where: Path, model: str
) -> None:
    """FoundryError unless `found` has exactly the tensor names and shapes of `expected`."""
    hint = "Apply the adapter to the model it was trained on (foundry merge-lora --base DIR)."
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing or extra:
        what = (f"lacks {len(missing)} tensors the adapter's layers need ({missing[0]}, …)" if missing
                else f"holds {len(extra)} tensors {model} has no place for ({extra[0]}, …)")  # fmt: skip
        raise FoundryError(f"{where} does not fit {model}: it {what}.", hint)
    wrong = [k for k in sorted(expected) if tuple(expected[k].shape) != tuple(found[k].shape)]
    if wrong:
        k = wrong[0]
        raise FoundryError(
            f"{where} does not fit {model}: {len(wrong)} tensors have other shapes, e.g. {k} is "
            f"{tuple(found[k].shape)} where the model's layer needs {tuple(expected[k].shape)}.",
            hint,
        )
