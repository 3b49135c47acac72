"""import stage: the corpus (split into train/val) and the model source, brought into the repo.

A model source is 'scratch' (the architecture's config), a Hub id / URL / Hugging Face folder (downloaded into
the Hub cache, hashes recorded), or another model of this repo (`source: model:<name>` or `models/<name>`):
the folder `models/<name>/` of the project, checked and recorded here (`import_repo_model`), copied into
`models/<entry>/` by the convert stage.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_foundry.config import ModelEntry, Params
from model_foundry.data.corpus import import_corpus
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir, write_json
from model_foundry.project import project_root

if TYPE_CHECKING:
    from model_foundry.hub.report import Reporter

SOURCE_FILE = "source.json"
MODELS_DIR = "models"  # the project's model folders: models/<name>/ (dvc.yaml writes them)
ADAPTER_DIR = "adapter"  # a LoRA run's PEFT adapter, inside its output folder


def repo_model_dir(name: str, root: Path | None = None) -> Path:
    """The folder of the repo model `name`: `<root>/models/<name>`.

    `root` defaults to `project.project_root()`: the main project, also inside the temp copies that
    `dvc exp run --queue/--temp` runs in (the parent trained by an earlier experiment lives in the main
    workspace, not in the copy).
    """
    return (root or project_root()) / MODELS_DIR / name


def producer_hint(name: str, catalog: dict[str, Any] | None = None) -> str:
    """How to get the missing repo model `name`: run the entry that writes it, or restore it.

    dvc.yaml writes `models/<entry>` (convert stage) and `models/<entry>-trained` (train stage), so the entry
    is `name` itself or `name` without `-trained`, when the catalog (`params.catalog`) has it.
    """
    entries = catalog or {}
    base = name.removesuffix("-trained")
    if name.endswith("-trained") and (base in entries or not entries):
        make = f"train it first: `dvc exp run -S model_name={base}` (writes models/{name})"
    elif name in entries:
        make = f"build it first: `dvc exp run -S model_name={name}` (its convert stage writes models/{name})"
    else:
        make = "train it first: `dvc exp run -S model_name=<the entry that produces it>`"
    return (
        f"{make[0].upper()}{make[1:]}; or bring it back from an experiment or the DVC cache: "
        f"`dvc exp apply <exp>` (`dvc exp show` lists them) or `dvc checkout models/{name}`."
    )


def find_repo_model(
    entry: ModelEntry, catalog: dict[str, Any] | None = None, root: Path | None = None
) -> Path:
    """The folder of the repo model an entry starts from (`source: model:<name>`; see `repo_model_dir`).

    Raises FoundryError naming the folder when it does not exist (hint: the entry that produces it, or how
    to restore it; `catalog` = params.catalog sharpens the hint) or is a LoRA adapter without merged weights.
    """
    name = entry.parent_model
    assert name is not None, "find_repo_model is for entries whose source is a repo model"
    folder = repo_model_dir(name, root)
    where = f"models.{entry.name}.source = {entry.source!r}"
    if not folder.is_dir():
        _restore_from_cache(name, folder)
    if not folder.is_dir():
        raise FoundryError(
            f"{where}: the parent model folder models/{name} is not in the workspace ({folder}).",
            producer_hint(name, catalog),
        )
    if (folder / ADAPTER_DIR).is_dir() and not any(folder.glob("*.safetensors")):
        raise FoundryError(
            f"{where}: models/{name} holds a LoRA adapter without merged weights (trained with "
            "train.merge: false).",
            f"Merge it into a full model (`foundry merge-lora models/{name}/{ADAPTER_DIR} --out "
            f"models/{name}-merged`, then `source: model:{name}-merged`), or re-train it with train.merge: "
            "true.",
        )
    return folder


def _restore_from_cache(name: str, folder: Path) -> None:
    """Bring `models/<name>` back from the DVC cache when a dvc.lock (the workspace's, HEAD's or an
    experiment's) records it: `dvc exp run` resets the workspace, so a parent trained by an earlier
    experiment is gone from it. Says so on stderr; leaves the folder missing when no record exists."""
    import sys

    from model_foundry.registry.restore import recorded_output, restore_output

    root = folder.parent.parent
    record = recorded_output(root, f"models/{name}")
    if record is None:
        return
    files = restore_output(root, record, folder)
    print(
        f"note: restored models/{name} ({files} files) from the DVC cache ({record.where}, {record.md5})",
        file=sys.stderr,
    )


def import_model_source(
    entry: ModelEntry,
    out: Path,
    reporter: Reporter | None = None,
    catalog: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write `out/source.json` (atomically) and return what it holds.

    Scratch: the architecture and its config. Imported families fetch their checkpoint here (see
    `_import_pretrained`); their messages go to `reporter` (default: stderr, progress bars, no prompt).
    A repo model (`source: model:<name>`) is checked and recorded, not copied (`import_repo_model`;
    `catalog`, params.catalog, sharpens the hint when it is missing).
    """
    if entry.parent_model is not None:
        return import_repo_model(entry, out, catalog)
    if not entry.is_scratch:
        from model_foundry.hub import Reporter

        return _import_pretrained(entry, out, reporter or Reporter())
    record = {
        "source": "scratch",
        "architecture": entry.architecture,
        "config": dataclasses.asdict(entry.arch),
    }
    with atomic_dir(out) as tmp:
        write_json(tmp / SOURCE_FILE, record, atomic=False)
    return record


def import_repo_model(
    entry: ModelEntry, out: Path, catalog: dict[str, Any] | None = None, root: Path | None = None
) -> dict[str, Any]:
    """Check the parent folder `models/<name>/` of a `source: model:<name>` entry and record it in
    `out/source.json` (atomically); returns the record.

    The folder must be intact (`model_folder.checks.check_model_folder`: JSON files, safetensors headers,
    weights equal to the sha256 its metadata.json records) and of the entry's architecture. The record:
    {"source": "model:<name>", "architecture", "folder": "models/<name>", "parent": {"name", "sha256"}
    (`model_folder.parent_record`: the folder's DVC md5 when DVC tracks it, else its weights' sha256, None
    for a config-only scratch folder), "weights": {weight file: sha256} as its metadata.json records them}.
    No weights are copied here: the convert stage copies them from the folder and checks them against
    "weights". Raises FoundryError for a missing, damaged or adapter-only folder, or another architecture.
    """
    from model_foundry.model_folder import parent_record
    from model_foundry.model_folder.checks import check_model_folder

    name = entry.parent_model
    assert name is not None
    folder = find_repo_model(entry, catalog, root)
    config, meta = check_model_folder(folder, verify=True)
    architecture = meta.get("architecture") or config.get("architecture")
    if architecture != entry.architecture:
        raise FoundryError(
            f"models.{entry.name}: models/{name} is a {architecture} model, but the entry says "
            f"architecture: {entry.architecture}.",
            f"Set `architecture: {architecture}` in models.{entry.name} (the parent's config.json defines "
            "the model).",
        )
    record = {
        "source": f"model:{name}",
        "architecture": architecture,
        "folder": f"{MODELS_DIR}/{name}",
        "parent": parent_record(folder, name),
        "weights": dict(meta.get("sha256") or {}),
    }
    with atomic_dir(out) as tmp:
        write_json(tmp / SOURCE_FILE, record, atomic=False)
    return record


def _import_pretrained(entry: ModelEntry, out: Path, reporter: Reporter) -> dict[str, Any]:
    """Resolve, validate and download the checkpoint into the Hub cache; record its commit and hashes.

    The weights stay in the Hub cache (not in `out`), so DVC does not store a second copy of them: the convert
    stage builds models/<name>/ from the cache at the recorded commit, verifying every hash. Raises
    FoundryError when the source is not the entry's architecture, its licence is not accepted in the catalog
    entry, or the import fails (see `hub.plan_import`, `hub.checked_download`).
    """
    from model_foundry import hub

    plan = hub.plan_import(entry.source, entry.revision, reporter=reporter)
    if plan.architecture != entry.architecture:
        raise FoundryError(
            f"models.{entry.name}: {entry.source} is a {plan.config.get('model_type')} model "
            f"({plan.architecture}), but the entry says architecture: {entry.architecture}.",
            f"Set `architecture: {plan.architecture}` in models.{entry.name}.",
        )
    acknowledgment, local = hub.checked_download(
        plan,
        lambda: hub.accept_for_pipeline(plan, entry.license_accepted, entry.name, reporter),
        force=False,
        reporter=reporter,
    )
    record = hub.source_record(plan, local, reporter)
    record["license_acknowledgment"] = acknowledgment
    with atomic_dir(out) as tmp:
        write_json(tmp / SOURCE_FILE, record, atomic=False)
    return record


def run(params: Params, corpus_out: Path, source_out: Path) -> dict[str, Any]:
    """The import stage: the corpus split into `corpus_out`, the model source recorded in `source_out`.

    corpus_out: train.jsonl, val.jsonl and stats.json, the documents of `data.source` normalised and split
    (`data.corpus.import_corpus`); source_out: source.json (`import_model_source`; an imported family's
    checkpoint is downloaded into the Hub cache, not into the folder). Returns {"corpus": split statistics,
    "source": the source.json record}. Raises FoundryError for a bad corpus or model source, or a licence
    not accepted in the catalog entry.
    """
    stats = import_corpus(params.data, Path(corpus_out))
    source = import_model_source(params.model, Path(source_out))  # the inputs stage gave the sharper hint
    return {"corpus": stats, "source": source}
