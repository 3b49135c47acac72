"""convert stage: the model in the canonical layout `models/<model_name>/`.

A scratch model has no weights yet (its vocabulary comes from the tokenize stage), so its folder records the
architecture config and metadata; the train stage writes the weights into `models/<model_name>-trained/`.
A repo model (`source: model:<name>`) is copied from `models/<name>/` (`copy_repo_model`): same weights and
files, a new metadata.json naming its parent.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_foundry.config import Params
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir, read_json
from model_foundry.model_folder import (
    inherit,
    model_metadata,
    read_model_info,
    write_config_folder,
    write_metadata,
)
from model_foundry.model_folder.layout import LICENSE_FILES, METADATA_NAME
from model_foundry.stages.ingest import SOURCE_FILE, find_repo_model

if TYPE_CHECKING:
    from model_foundry.hub.report import Reporter


def run(params: Params, source: Path, out: Path, reporter: Reporter | None = None) -> dict[str, Any]:
    """The convert stage: write `out` (models/<model_name>/) from the import stage's `source` folder.

    Returns the metadata.json written. A scratch model gets config.json + metadata.json (no weights yet); an
    imported one is rebuilt from the Hub cache or its folder (see `_convert_pretrained`; messages to
    `reporter`, default stderr); a repo model is copied from its folder (`copy_repo_model`). Raises
    FoundryError when `source` holds no record, or one for another architecture or source than the entry's
    (the import stage must run again).
    """
    entry = params.model
    record = read_json(Path(source) / SOURCE_FILE) if (Path(source) / SOURCE_FILE).is_file() else None
    if record is None:
        raise FoundryError(f"{source} holds no imported model source.", "Run the import stage first.")
    if record.get("architecture") != entry.architecture:
        raise FoundryError(
            f"{source} holds a source for {record.get('architecture')!r}, not {entry.architecture!r}.",
            "Re-run the import stage (`dvc repro`).",
        )
    if entry.parent_model is not None:
        return copy_repo_model(params, record, Path(out), reporter)
    if not entry.is_scratch:
        return _convert_pretrained(params, record, Path(out), reporter)
    meta = model_metadata(
        params.model_name, entry.architecture, "scratch", description=entry.description or None
    )
    config = {"architecture": entry.architecture, **dataclasses.asdict(entry.arch)}
    return write_config_folder(Path(out), config, meta)


def _convert_pretrained(
    params: Params, record: dict[str, Any], out: Path, reporter: Reporter | None
) -> dict[str, Any]:
    """models/<model_name>/ from the Hub cache (or folder) at the commit and hashes the import stage wrote."""
    from model_foundry import hub
    from model_foundry.adapters.hf.families import HFModelConfig
    from model_foundry.hub.download import fetch

    entry = params.model
    if record.get("source") != entry.source or record.get("revision") != entry.revision:
        raise FoundryError(
            f"The import stage recorded source {record.get('source')!r}, not {entry.source!r}.",
            "Re-run the import stage (`dvc repro`).",
        )
    assert isinstance(entry.arch, HFModelConfig)  # an imported family's entry (not scratch)
    reporter = reporter or hub.Reporter()
    plan = hub.plan_from_record(record)
    local = fetch(plan.snapshot, plan.selection.all, progress=reporter.progress)
    return hub.materialize(
        plan, local, out, params.model_name, record.get("license_acknowledgment"),
        load_dtype=entry.arch.dtype, init_missing=entry.init_missing, reporter=reporter,
        opt_in=f"`init_missing: true` in models.{entry.name} of params.yaml",
    )  # fmt: skip


# Files of a parent folder that are not copied: the metadata (written anew), PEFT adapter files (a LoRA
# output's adapter belongs to the parent; a top-level adapter_config.json would make transformers load the
# folder as an adapter), pickled weights and training leftovers (a canonical folder holds safetensors only).
NOT_COPIED = {METADATA_NAME, "adapter_config.json", "adapter_model.safetensors", "adapter_model.bin"}
NOT_COPIED_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".tmp", ".lock", "~")


def files_to_copy(folder: Path) -> list[Path]:
    """The files of a parent model folder that make up its copy, sorted by name.

    Every regular file at the top of `folder` (symlinks followed: DVC may link files to its cache) except
    metadata.json, the licence files (`model_folder.inherit` copies those), hidden files, PEFT adapter
    files and pickles/leftovers (NOT_COPIED, NOT_COPIED_SUFFIXES). Subfolders (a LoRA run's `adapter/`,
    checkpoints) are not copied.
    """
    return sorted(
        (
            f
            for f in folder.iterdir()
            if f.is_file()
            and not f.name.startswith(".")
            and f.name not in NOT_COPIED
            and f.name not in LICENSE_FILES
            and not f.name.endswith(NOT_COPIED_SUFFIXES)
        ),
        key=lambda f: f.name,
    )


def copy_repo_model(
    params: Params, record: dict[str, Any], out: Path, reporter: Reporter | None = None
) -> dict[str, Any]:
    """Write `out` (models/<model_name>/, atomically) as a copy of the repo model the import stage recorded.

    The copy holds the parent's files (`files_to_copy`: config, weights, tokenizer, generation config; its
    licence files through `model_folder.inherit`) byte for byte, and a new metadata.json (written by
    `model_folder.write_metadata`): model_name = the entry, source = "model:<parent>", parent = the
    record's {name, sha256}, the parent's licence and origin inherited, its architecture, and the weights
    described again ({"parameters", "dtype" as the parent records them, "sha256" of every weight file
    copied}). A config-only parent (a scratch model before training) gives a config-only copy. Reproducible:
    created_at is the project's reproducible time, so two runs write byte-identical folders. A progress bar
    of the bytes copied goes to stderr when `reporter.progress` (default: on).

    Raises FoundryError when the record is for another source (re-run the import stage), the parent folder
    is missing, or its weights differ from what the import stage recorded (the folder changed since).
    """
    import sys

    from tqdm.auto import tqdm

    from model_foundry.hub.convert import place
    from model_foundry.hub.download import LocalFile
    from model_foundry.model_folder.checks import check_weight_files

    entry = params.model
    name = entry.parent_model
    assert name is not None
    if record.get("source") != f"model:{name}":
        raise FoundryError(
            f"The import stage recorded source {record.get('source')!r}, not 'model:{name}'.",
            "Re-run the import stage (`dvc repro`).",
        )
    folder = find_repo_model(entry)
    _, parent_meta = read_model_info(folder)
    recorded = record.get("weights") or {}
    if (parent_meta.get("sha256") or {}) != recorded:
        raise FoundryError(
            f"models/{name} changed since the import stage checked it (its metadata.json lists other "
            "weights).",
            "Re-run the pipeline (`dvc repro`): the inputs and import stages record the parent again.",
        )
    files = files_to_copy(folder)
    weight_bytes = sum(f.stat().st_size for f in files if f.suffix == ".safetensors")
    progress = reporter.progress if reporter is not None else True
    sha256: dict[str, str] = {}
    with (
        atomic_dir(out) as tmp,
        tqdm(total=weight_bytes, unit="B", unit_scale=True, desc=f"copy {name}", file=sys.stderr,
             disable=not progress, dynamic_ncols=True, mininterval=0.5) as bar,
    ):  # fmt: skip
        for f in files:
            if f.suffix == ".safetensors":  # copied and hashed at once, checked against the import's record
                expected = LocalFile(f, expected_sha256=recorded.get(f.name))
                sha256[f.name], _ = place(f.name, expected, tmp / f.name, False, bar)
            else:
                shutil.copyfile(f, tmp / f.name)
        missing = sorted(set(recorded) - set(sha256))
        if missing:
            raise FoundryError(
                f"models/{name} lacks {', '.join(missing)}, which its metadata.json lists.",
                f"Restore the folder (`dvc checkout models/{name}`) or re-train it.",
            )
        metadata = model_metadata(
            params.model_name,
            entry.architecture,
            f"model:{name}",
            description=entry.description or None,
            parent=record["parent"],
        )
        metadata = inherit(parent_meta, folder, metadata, tmp)
        weights: dict[str, Any] = {}
        if sha256:
            info = check_weight_files(tmp)  # the copy's headers; counts for a parent that records none
            weights = {
                "parameters": parent_meta.get("parameters", info.parameters),
                "dtype": parent_meta.get("dtype", info.dtype),
                "sha256": sha256,
            }
        return write_metadata(tmp, metadata, weights)
