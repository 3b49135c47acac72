"""Import models from the Hugging Face Hub, a Hub URL or a local folder into `models/<name>/`.

The public API is re-exported here; the modules:

    importer.py   the import step by step: `import_model` (what `foundry import-model` runs), and the same
                  steps split for the pipeline's import stage (`plan_import`, `checked_download`,
                  `source_record`) and convert stage (`plan_from_record`, `materialize`)
    report.py     `Reporter`: where messages, warnings, progress bars and the licence question go
    sources.py    SOURCE → a Hub repo (id + revision) or a local folder, credentials stripped
    naming.py     the folder name under models/ (default from the repo id, taken names, -v2 suffixes)
    download.py   everything that talks to the Hub (file lists, the Hub cache, offline), and local folders
    validate.py   supported family, which files to fetch, memory estimate — before any weight is downloaded
    license.py    the licence: read from the model card and LICENSE, shown, acknowledged
    convert.py    fetched files → the canonical folder (hard links, streamed hashes, pickle → safetensors)
"""

from __future__ import annotations

from model_foundry.hub.importer import (
    ImportPlan,
    ImportResult,
    accept_for_pipeline,
    checked_download,
    credentials_warning,
    import_model,
    materialize,
    plan_from_record,
    plan_import,
    source_record,
)
from model_foundry.hub.report import QuietReporter, Reporter

__all__ = [
    "ImportPlan",
    "ImportResult",
    "QuietReporter",
    "Reporter",
    "accept_for_pipeline",
    "checked_download",
    "credentials_warning",
    "import_model",
    "materialize",
    "plan_from_record",
    "plan_import",
    "source_record",
]
