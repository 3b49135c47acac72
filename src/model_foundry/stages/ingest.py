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


def import_model_source(entry: ModelEntry, out: Path) -> dict[str, Any]:
    """Scratch: the architecture and its config. Imported families fetch their checkpoint here."""
    if not entry.is_scratch:
        raise FoundryError(f"Model source {entry.source!r} cannot be imported yet.", "Use `source: scratch`.")
    record = {
        "source": "scratch",
        "architecture": entry.architecture,
        "config": dataclasses.asdict(entry.arch),
    }
    with atomic_dir(out) as tmp:
        write_json(tmp / SOURCE_FILE, record, atomic=False)
    return record


def run(params: Params, corpus_out: Path, source_out: Path) -> dict[str, Any]:
    stats = import_corpus(params.data, Path(corpus_out))
    source = import_model_source(params.model, Path(source_out))
    return {"corpus": stats, "source": source}
