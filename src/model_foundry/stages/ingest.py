"""import stage: the corpus (split into train/val) and the model source, brought into the repo."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from model_foundry.config import ModelEntry, Params
from model_foundry.data.corpus import import_corpus
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir, write_json

SOURCE_FILE = "source.json"


def import_model_source(entry: ModelEntry, out: Path, progress: bool = True) -> dict[str, Any]:
    """Scratch: the architecture and its config. Imported families fetch their checkpoint here."""
    if not entry.is_scratch:
        return _import_pretrained(entry, out, progress)
    record = {
        "source": "scratch",
        "architecture": entry.architecture,
        "config": dataclasses.asdict(entry.arch),
    }
    with atomic_dir(out) as tmp:
        write_json(tmp / SOURCE_FILE, record, atomic=False)
    return record


def _import_pretrained(entry: ModelEntry, out: Path, progress: bool) -> dict[str, Any]:
    """Resolve, validate and download the checkpoint into the Hub cache; record its commit and hashes.

    The weights stay in the Hub cache (not in `out`), so DVC does not store a second copy of them: the convert
    stage builds models/<name>/ from the cache at the recorded commit, verifying every hash.
    """
    from model_foundry import hub

    plan = hub.plan_import(entry.source, entry.revision)
    if plan.architecture != entry.architecture:
        raise FoundryError(
            f"models.{entry.name}: {entry.source} is a {plan.config.get('model_type')} model "
            f"({plan.architecture}), but the entry says architecture: {entry.architecture}.",
            f"Set `architecture: {plan.architecture}` in models.{entry.name}.",
        )
    acknowledgment, local = hub.checked_download(
        plan,
        lambda: hub.accept_for_pipeline(plan, entry.license_accepted, entry.name),
        force=False,
        progress=progress,
        warn=lambda message: print(f"warning: {message}"),
        echo=print,
    )
    record = hub.source_record(plan, local, progress)
    record["license_acknowledgment"] = acknowledgment
    with atomic_dir(out) as tmp:
        write_json(tmp / SOURCE_FILE, record, atomic=False)
    return record


def run(params: Params, corpus_out: Path, source_out: Path) -> dict[str, Any]:
    stats = import_corpus(params.data, Path(corpus_out))
    source = import_model_source(params.model, Path(source_out))
    return {"corpus": stats, "source": source}
