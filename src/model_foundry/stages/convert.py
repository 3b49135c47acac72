"""convert stage: the model in the canonical layout `models/<model_name>/`.

A scratch model has no weights yet (its vocabulary comes from the tokenize stage), so its folder records the
architecture config and metadata; the train stage writes the weights into `models/<model_name>-trained/`.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_foundry.config import Params
from model_foundry.errors import FoundryError
from model_foundry.io import read_json
from model_foundry.model_folder import model_metadata, write_config_folder
from model_foundry.stages.ingest import SOURCE_FILE

if TYPE_CHECKING:
    from model_foundry.hub.report import Reporter


def run(params: Params, source: Path, out: Path, reporter: Reporter | None = None) -> dict[str, Any]:
    """The convert stage: write `out` (models/<model_name>/) from the import stage's `source` folder.

    Returns the metadata.json written. A scratch model gets config.json + metadata.json (no weights yet); an
    imported one is rebuilt from the Hub cache or its folder (see `_convert_pretrained`; messages to
    `reporter`, default stderr). Raises FoundryError when `source` holds no record, or one for another
    architecture or source than the entry's (the import stage must run again).
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
