"""The project around the code: its root folder, its git commit, its reproducible time, and running dvc in it.

Stdlib only (no DVC, git or MLflow import): the stages, MLflow tracking, model metadata and the CLI use it.
Git and dvc run as subprocesses; a missing `git` or a folder outside a repository is an answer (None), not
an error, since models can be trained and imported outside git.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

# What defines the pipeline's outputs: the last commit touching one of these dates every model folder.
DEFINITION = ("params.yaml", "dvc.yaml", "src")


def dvc_root(path: Path) -> Path | None:
    """The nearest folder at or above `path` (resolved) holding `.dvc/`; None outside a DVC repo."""
    here = Path(path).resolve()
    return next((folder for folder in (here, *here.parents) if (folder / ".dvc").is_dir()), None)


def project_root(start: Path | None = None) -> Path:
    """The project folder (the one holding `.dvc/`) at or above `start` (default: the working directory).

    `dvc exp run --queue` runs each experiment in a temp copy, `<root>/.dvc/tmp/exps/<name>/…`, which holds a
    `.dvc/` of its own: such a path answers `<root>`, so queued runs share the main project's MLflow store.
    Outside a DVC repo it is `start` itself (resolved). Raises nothing.
    """
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps") and parts[i + 3]:
            return Path(*parts[:i])
    return dvc_root(here) or here


def git_commit(cwd: Path | None = None) -> str | None:
    """The full sha of HEAD in `cwd` (default: the working directory); None without git, outside a git
    repository, or in one with no commit yet."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def created_at() -> str:
    """The reproducible time of what the pipeline builds now, ISO 8601 in UTC to the second
    (`2026-01-02T03:04:05+00:00`).

    Follows the reproducible-builds convention (https://reproducible-builds.org/specs/source-date-epoch/):
    SOURCE_DATE_EPOCH (seconds since 1970, UTC) when set; else the commit time of the last git commit, in the
    working directory's repository, that changed the pipeline's DEFINITION (params.yaml, dvc.yaml, src/);
    else (no git, no such commit) the current time. Two `dvc repro` runs of one commit therefore write
    byte-identical model folders (same DVC hash), and committing their results (dvc.lock, metrics.json) does
    not change what the next clone reproduces.

    Raises ValueError when SOURCE_DATE_EPOCH is set but not an integer.
    """
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


@dataclass(frozen=True)
class DvcAdd:
    """What `dvc_add` did: `rel` (relative to the DVC repo `root`) is tracked when `error` is None."""

    root: Path
    rel: Path
    error: str | None = None  # the last line dvc printed (or its exit code) when `dvc add` failed

    @property
    def dvc_file(self) -> Path:
        """The `.dvc` file that records the folder (relative to `root`), to be committed with git."""
        return self.rel.with_name(self.rel.name + ".dvc")


def dvc_add(path: Path) -> DvcAdd | None:
    """Track the file or folder `path` with DVC (`dvc add`, run from the repo root with this Python's dvc).

    Its DVC content hash then becomes the model's checksum. Returns None when `path` is not inside a DVC repo
    (nothing to do), else what happened: a failure of `dvc add` is reported in `DvcAdd.error`, not raised.
    """
    root = dvc_root(Path(path).parent)
    if root is None:
        return None
    rel = Path(path).resolve().relative_to(root)
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "add", "--quiet", str(rel)], cwd=root, capture_output=True, text=True
    )
    if proc.returncode == 0:
        return DvcAdd(root, rel)
    detail = (proc.stderr or proc.stdout).strip().splitlines()
    return DvcAdd(root, rel, detail[-1] if detail else str(proc.returncode))
