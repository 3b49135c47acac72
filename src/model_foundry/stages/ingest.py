"""import stage: the corpus (split into train/val) and the model source, brought into the repo."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_foundry.config import ModelEntry, Params
from model_foundry.data.corpus import import_corpus
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir, write_json

if TYPE_CHECKING:
    from model_foundry.hub.report import Reporter

SOURCE_FILE = "source.json"


def import_model_source(entry: ModelEntry, out: Path, reporter: Reporter | None = None) -> dict[str, Any]:
    """Write `out/source.json` (atomically) and return what it holds.

    Scratch: the architecture and its config. Imported families fetch their checkpoint here (see
    `_import_pretrained`); their messages go to `reporter` (default: stderr, progress bars, no prompt).
    """
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
    source = import_model_source(params.model, Path(source_out))
    return {"corpus": stats, "source": source}
