"""metadata.json of a model folder: where the model came from, reproducibly.

`created_at` follows the reproducible-builds convention: SOURCE_DATE_EPOCH when set, else the time of the last
git commit that changed the pipeline's definition (params.yaml, dvc.yaml, src/). Two `dvc repro` runs of one
commit write byte-identical folders (same DVC hash), and committing the results (dvc.lock, metrics.json)
does not change what the next clone reproduces.
Run ids and timings live in MLflow, not here, for the same reason.
The recorded `source` never holds credentials (see model_foundry.credentials): a folder is pushed to remotes.
"""

from __future__ import annotations

import os
import subprocess
from datetime import datetime, timezone
from typing import Any

from model_foundry.credentials import redact

DEFINITION = ("params.yaml", "dvc.yaml", "src")


def created_at() -> str:
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if not epoch:
        try:
            out = subprocess.run(
                ["git", "log", "-1", "--format=%ct", "--", *DEFINITION],
                capture_output=True,
                text=True,
                timeout=10,
                check=True,
            )
            epoch = out.stdout.strip() or None
        except (OSError, subprocess.SubprocessError):
            epoch = None
    when = datetime.fromtimestamp(int(epoch), timezone.utc) if epoch else datetime.now(timezone.utc)
    return when.replace(microsecond=0).isoformat()


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
    """The content of metadata.json; `source` is recorded without credentials (user info, tokens)."""
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
