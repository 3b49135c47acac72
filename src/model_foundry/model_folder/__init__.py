"""The one owner of the canonical model folder `models/<name>/`.

Everything that reads or writes a model folder's files goes through here: the file names (`layout.py`), the
checks that run before a folder is loaded (`checks.py`), reading config/metadata/tokenizer with clear errors,
writing metadata.json (format, parent, parameters, dtype, sha256 per weight file), licence inheritance, the
weights tag that joins a model's train and evaluate runs in MLflow, and loading a folder with the adapter its
architecture is registered with.

    models/<name>/
      config.json          rebuilds the model (`architecture` + its parameters; HF keys where a class exists)
      model.safetensors    or model-0000k-of-0000n.safetensors + model.safetensors.index.json
      tokenizer.json …     the tokenizer (+ tokenizer_config.json, chat template, special tokens)
      metadata.json        format, model_name, source, architecture, license, created_at, parent, training,
                           parameters, dtype, sha256 per weight file
      LICENSE …            where the source has one
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from model_foundry.credentials import redact
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir, sha256_file, write_json
from model_foundry.model_folder.checks import (
    check_model_folder,
    read_json_object,
    read_model_files,
    require_types,
    restore_hint,
)
from model_foundry.model_folder.layout import (
    CONFIG_NAME,
    INHERITED_METADATA,
    LICENSE_FILES,
    METADATA_FORMAT,
    METADATA_NAME,
    TOKENIZER_FILES,
    WEIGHTS_NAME,
)
from model_foundry.project import created_at

if TYPE_CHECKING:
    import torch
    from torch import nn
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from model_foundry.adapters.base import BaseAdapter

__all__ = [
    "CONFIG_NAME",
    "METADATA_NAME",
    "WEIGHTS_NAME",
    "check_tokenizer_files",
    "describe_weights",
    "first_line",
    "inherit",
    "is_adapter_only",
    "load_adapter",
    "load_tokenizer",
    "model_metadata",
    "parent_record",
    "read_model_info",
    "tokenizer_error",
    "weights_tag",
    "write_config_folder",
    "write_metadata",
]


def first_line(e: BaseException, limit: int = 300) -> str:
    """The start of an exception's message, for an error line (torch's are many lines long)."""
    text = " ".join(str(e).split())
    return text[:limit] + ("…" if len(text) > limit else "")


# --- reading -----------------------------------------------------------------------------------------------
def read_model_info(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, metadata.json or {}) of a canonical model folder.

    Raises FoundryError when the folder is not one or either file is damaged (not JSON, not an object,
    fields of the wrong type).
    """
    return read_model_files(path)


def check_tokenizer_files(path: Path) -> None:
    """The folder's tokenizer JSON files parse and are objects of the expected shape (before transformers).

    Raises FoundryError naming the damaged file.
    """
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (path / name).is_file():
            data = read_json_object(path / name)
            if name == "tokenizer.json":
                require_types(data, {"model": dict, "added_tokens": list}, str(path / name))
            if name == "tokenizer_config.json":
                types: dict[str, type | tuple[type, ...]] = {
                    "chat_template": (str, list), "model_max_length": (int, float),
                    "added_tokens_decoder": dict, "tokenizer_class": str}  # fmt: skip
                require_types(data, types, str(path / name))


def tokenizer_error(path: Path, e: BaseException) -> FoundryError:
    """The error for a tokenizer that transformers cannot build from the folder's files."""
    return FoundryError(
        f"The tokenizer in {path} cannot be built: {e.__class__.__name__}: {first_line(e)}",
        restore_hint(path / "tokenizer.json"),
    )


def has_tokenizer(path: str | Path) -> bool:
    """Whether the folder holds tokenizer files (tokenizer.json, a SentencePiece model or a vocabulary)."""
    return any((Path(path) / name).is_file() for name in TOKENIZER_FILES)


@overload
def load_tokenizer(path: str | Path, required: Literal[True] = True) -> PreTrainedTokenizerBase: ...
@overload
def load_tokenizer(path: str | Path, required: bool) -> PreTrainedTokenizerBase | None: ...
def load_tokenizer(path: str | Path, required: bool = True) -> PreTrainedTokenizerBase | None:
    """The tokenizer saved in a folder — ours, a trained one or an imported model's — as a fast tokenizer.

    One loader for every architecture: transformers' AutoTokenizer, local files only, never remote code (a
    tokenizer_config.json that names a class gets that class; ours name TokenizersBackend). Returns None when
    the folder has no tokenizer files and `required` is False. Raises FoundryError naming the folder when
    they are missing (and required), damaged, or cannot be built.
    """
    from transformers import AutoTokenizer

    path = Path(path)
    if not has_tokenizer(path):
        if not required:
            return None
        raise FoundryError(
            f"{path} has no tokenizer (none of {', '.join(TOKENIZER_FILES)}).",
            restore_hint(path / "tokenizer.json"),
        )
    check_tokenizer_files(path)
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)
    except Exception as e:  # noqa: BLE001 — tokenizers/transformers raise many types for a bad file
        raise tokenizer_error(path, e) from None


# --- writing -----------------------------------------------------------------------------------------------
def model_metadata(
    model_name: str,
    architecture: str,
    source: str,
    *,
    fine_tuned_from: str | None = None,
    model_id: str | None = None,
    revision: str | None = None,
    license: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """The provenance part of metadata.json (`write_metadata` adds format and the weights' description).

    `created_at` is the project's reproducible time (`project.created_at`: SOURCE_DATE_EPOCH, else the last
    commit that changed the pipeline's definition), so two `dvc repro` runs of one commit write byte-identical
    folders (same DVC hash); run ids and timings live in MLflow, not here, for the same reason. `source` is
    recorded without credentials (user info, tokens; see `credentials.redact`): a folder is pushed to remotes.
    """
    return {
        "model_name": model_name,
        "model_id": model_id,
        "source": redact(source),
        "revision": revision,
        "architecture": architecture,
        "license": license,
        "created_at": created_at(),
        "fine_tuned_from": fine_tuned_from,
        **extra,
    }


def describe_weights(folder: Path, model: nn.Module) -> dict[str, Any]:
    """What metadata.json records about the weights just saved in `folder`.

    {"parameters": number of parameters (tied ones counted once), "dtype": e.g. "float32",
     "sha256": {weight file name: sha256 hex digest}} for every `*.safetensors` file in the folder.
    """
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    return {
        "parameters": sum(p.numel() for p in model.parameters()),
        "dtype": dtype,
        "sha256": {w.name: sha256_file(w) for w in sorted(folder.glob("*.safetensors"))},
    }


def write_metadata(folder: Path, metadata: dict[str, Any], weights: dict[str, Any]) -> dict[str, Any]:
    """Write `folder/metadata.json`: format + `metadata` + `weights` (see `describe_weights`); returns it.

    The one writer of metadata.json (scratch saves, Hub saves, imports). Called inside the temp folder of an
    atomic save (`io.atomic_dir`), after the weights were written.
    """
    meta = {"format": METADATA_FORMAT, **metadata, **weights}
    write_json(folder / METADATA_NAME, meta, atomic=False)
    return meta


def write_config_folder(out: Path, config: dict[str, Any], metadata: dict[str, Any]) -> dict[str, Any]:
    """Write `out` (atomically, replacing it) as a model folder without weights yet — a scratch model
    before the train stage: config.json (`config`) and metadata.json (`write_metadata` with no weights).

    Returns the metadata written.
    """
    with atomic_dir(out) as tmp:
        write_json(tmp / CONFIG_NAME, config, atomic=False)
        return write_metadata(tmp, metadata, {})


def inherit(
    parent_meta: dict[str, Any], parent_dir: Path | None, metadata: dict[str, Any], tmp: Path
) -> dict[str, Any]:
    """A model derived from another (trained, fine-tuned) keeps its licence and origin.

    Returns `metadata` with INHERITED_METADATA keys it lacks taken from `parent_meta`, and copies the parent's
    licence files (LICENSE_FILES) into `tmp`, the folder being written.
    """
    meta = dict(metadata)
    for key in INHERITED_METADATA:
        if meta.get(key) is None and parent_meta.get(key) is not None:
            meta[key] = parent_meta[key]
    for name in LICENSE_FILES:
        if parent_dir is not None and (parent_dir / name).is_file():
            shutil.copyfile(parent_dir / name, tmp / name)
    return meta


def weights_tag(metadata: dict[str, Any]) -> str | None:
    """The MLflow tag value that identifies a model's weights: the sha256 of its first weight file by name
    (sharded saves list several), from metadata.json. The train stage tags its run with it; evaluate finds
    the run by it. None when the folder has no weights (a scratch model before training)."""
    weights = metadata.get("sha256") or {}
    return weights[min(weights)] if weights else None


def parent_record(parent_dir: str | Path, name: str | None = None) -> dict[str, Any]:
    """`parent` of metadata.json for a model derived from the folder `parent_dir`: {name, sha256}.

    sha256 is DVC's checksum of the parent folder (md5 `<hex>.dir`, DVC 3's directory hash over every file in
    it), computed here whether or not DVC tracks the folder, so it does not depend on what dvc.lock lists at
    the moment; for a DVC-tracked folder it equals the md5 dvc.lock / its .dvc file records. `name` defaults
    to the folder's model_name.
    """
    from model_foundry.registry.dvc import dvc_md5

    parent_dir = Path(parent_dir)
    _, meta = read_model_info(parent_dir)
    return {"name": name or meta.get("model_name") or parent_dir.name, "sha256": dvc_md5(parent_dir)}


# --- loading -----------------------------------------------------------------------------------------------
def load_adapter(path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> BaseAdapter:
    """Load any canonical model folder with the adapter its architecture is registered with, on `device`.

    Returns the adapter (`BaseAdapter`: model, config, spec, and the folder's tokenizer or None). The
    architecture is metadata.json's `architecture` (else config.json's), looked up in
    `adapters.ARCHITECTURES`. First `checks.check_model_folder`: damaged JSON files, safetensors headers
    and (when `verify`) weights that differ from the sha256 metadata.json records are refused with
    FoundryError, before loading. Also FoundryError: not a model folder, an unknown architecture, a folder
    without weights (a scratch model before the train stage), weights that do not match config.json.

    A LoRA run's folder without merged weights (`train.merge: false`: metadata.json, tokenizer, `adapter/`)
    loads its parent `project_root()/models/<parent.name>` (checked the same way) with the adapter applied
    unmerged and frozen (`adapters.lora.load_lora_adapter`), and the folder's own tokenizer. When `verify`,
    adapter/adapter_model.safetensors is compared with metadata.json's `training.adapter_sha256` (if there).
    FoundryError when the parent is missing, the adapter differs from its sha256, or it does not fit the
    parent.
    """
    from model_foundry.adapters import get_spec

    if is_adapter_only(path):
        return _load_adapter_only(Path(path), device, verify)
    config, meta = read_model_info(path)
    spec = get_spec(meta.get("architecture") or config.get("architecture"))
    if not any(Path(path).glob("*.safetensors")):  # model.safetensors or shards
        raise FoundryError(
            f"{path} has no weights yet.", "Run the train stage (`dvc repro`) to produce them."
        )
    check_model_folder(path, verify=verify)
    return spec.adapter_cls().load_checkpoint(path, spec, device=device)


ADAPTER_DIR = "adapter"  # a LoRA run's PEFT-format adapter (adapter_config.json + adapter_model.safetensors)


def is_adapter_only(path: str | Path) -> bool:
    """Whether `path` is a LoRA run's folder without merged weights: `adapter/adapter_config.json` and no
    `*.safetensors` at the top level (`train.merge: false`)."""
    path = Path(path)
    return (path / ADAPTER_DIR / "adapter_config.json").is_file() and not any(path.glob("*.safetensors"))


def check_parent_checksum(parent: Path, meta: dict[str, Any], child: Path) -> bool:
    """Refuse a parent folder whose bytes are not those `child`'s metadata.json recorded (`parent.sha256`,
    DVC's folder md5): an adapter applied to another model of the same shape gives a model nobody trained.

    Returns True when the bytes were compared and match (the whole folder is then the one the child was
    trained on, which was verified then: a second check of its weights' sha256 would read them again for
    nothing), False when no checksum was recorded. Raises FoundryError naming both checksums.
    """
    from model_foundry.registry.dvc import dvc_md5

    want = (meta.get("parent") or {}).get("sha256")
    if not isinstance(want, str) or not want:
        return False
    got = dvc_md5(parent)
    if got != want:
        raise FoundryError(
            f"{parent} is not the model {child} was trained from: its checksum is {got}, "
            f"{child / METADATA_NAME} records {want}.",
            f"Restore that version of {parent.name} (`dvc checkout {parent}` at the commit or experiment "
            "that trained it: `dvc exp show`), or re-train the LoRA model on the current one.",
        )
    return True


def _load_adapter_only(path: Path, device: str | torch.device, verify: bool) -> BaseAdapter:
    """The parent model folder named by metadata.json `parent.name`, with `path/adapter` applied unmerged."""
    from model_foundry.adapters.lora import load_lora_adapter, lora_info, merge
    from model_foundry.model_folder.checks import check_metadata
    from model_foundry.project import project_root

    if not (path / METADATA_NAME).is_file():
        raise FoundryError(
            f"{path} holds a LoRA adapter but no {METADATA_NAME} naming its base model.",
            restore_hint(path / METADATA_NAME),
        )
    meta = read_json_object(path / METADATA_NAME)
    check_metadata(meta, str(path / METADATA_NAME))
    want = (meta.get("training") or {}).get("adapter_sha256")
    weights = path / ADAPTER_DIR / "adapter_model.safetensors"
    if verify and isinstance(want, str) and weights.is_file() and (got := sha256_file(weights)) != want:
        raise FoundryError(
            f"{weights} is damaged: its sha256 {got[:12]}… differs from the {want[:12]}… recorded in "
            "metadata.json (training.adapter_sha256) when the model was written.",
            restore_hint(path / ADAPTER_DIR) + " (--no-verify skips this check.)",
        )
    name = (meta.get("parent") or {}).get("name")
    if not isinstance(name, str) or not name:
        raise FoundryError(
            f"{path / METADATA_NAME} names no parent model for the adapter in {path / ADAPTER_DIR}.",
            restore_hint(path / METADATA_NAME),
        )
    parent = project_root() / "models" / name
    if not parent.is_dir():
        raise FoundryError(
            f"{path} holds only a LoRA adapter, and its base model {name} is missing ({parent}).",
            f"Restore it (`dvc checkout models/{name}`, or `dvc repro` the stage that writes it), or re-run "
            "the LoRA training with train.merge: true to keep merged weights in the folder.",
        )
    same_bytes = verify and check_parent_checksum(parent, meta, path)
    adapter = load_adapter(parent, device=device, verify=verify and not same_bytes)
    if lora_info(adapter) is not None:  # the parent is itself adapter-only: fold its adapter in first
        merge(adapter)
    load_lora_adapter(adapter, path / ADAPTER_DIR, trainable=False)
    adapter.tokenizer = load_tokenizer(path, required=False) or adapter.tokenizer
    return adapter
