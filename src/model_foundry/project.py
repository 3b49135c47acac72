"""The project around the code: its root folder, its git commit, its reproducible time, and running dvc in it.

No DVC, git or MLflow import (the stages, MLflow tracking, model metadata and the CLI use it): git and dvc
run as subprocesses; a missing `git` or a folder outside a repository is an answer (None), not an error, since
models can be trained and imported outside git.

Every dvc command we run goes through `run_dvc`. DVC has a repository lock (`.dvc/tmp/lock`), held by
`dvc repro` while it checks and records stages (not while a stage's command runs: a stage may run
`foundry`, and our dvc commands, without a deadlock) and by `dvc add`; a dvc command that finds it held
fails after 3 s with "Unable to acquire lock" unless given the global `--wait-for-lock` (which waits
forever). `run_dvc` waits for it first, with a note and a bound (`lock_timeout()`, FOUNDRY_LOCK_TIMEOUT),
then runs dvc with `--wait-for-lock`. Our own project-wide lock is model_foundry.locking.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from model_foundry.errors import FoundryError

DVC_LOCK = Path(".dvc") / "tmp" / "lock"  # DVC's repository lock, relative to the repo root
TIMEOUT_ENV = "FOUNDRY_LOCK_TIMEOUT"
DEFAULT_TIMEOUT = 600.0  # seconds a run waits for a lock another run holds
POLL = 0.2  # seconds between two looks at DVC's lock

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


def stderr_note(message: str) -> None:
    """The default way to tell the user that a run waits: `note: <message>` on stderr."""
    print(f"note: {message}", file=sys.stderr, flush=True)


def lock_timeout() -> float:
    """How long a run waits for a lock another run holds, in seconds: FOUNDRY_LOCK_TIMEOUT, else 600.

    Raises FoundryError when FOUNDRY_LOCK_TIMEOUT is set but not a finite number >= 0.
    """
    raw = os.environ.get(TIMEOUT_ENV, "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = float("nan")
    if not 0 <= value < float("inf"):
        raise FoundryError(
            f"{TIMEOUT_ENV}={raw!r} is not a number of seconds.",
            f"Set {TIMEOUT_ENV} to how long to wait for another run's lock (e.g. 600), or unset it.",
        )
    return value


def dvc_lock_busy(root: Path) -> bool:
    """Whether another process holds DVC's repository lock of the repo at `root` right now.

    Looks the way DVC locks (`flock` on `.dvc/tmp/lock`, through zc.lockfile), holding it for an instant
    only: DVC retries for 3 s before it fails, so the look never fails a dvc command. A repo configured with
    `core.hardlink_lock` locks another way: there this answers False and `--wait-for-lock` does the wait.
    """
    try:
        import fcntl  # POSIX only; elsewhere `--wait-for-lock` does the whole wait
    except ImportError:
        return False
    try:
        fd = os.open(Path(root) / DVC_LOCK, os.O_RDONLY)
    except OSError:  # no lock file yet: no dvc command has locked this repo
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)  # releases our instant's flock with the descriptor
    return False


def wait_for_dvc_lock(
    root: Path, *, note: Callable[[str], None] = stderr_note, timeout: float | None = None
) -> float:
    """Wait until DVC's repository lock of the repo at `root` is free; returns the seconds waited.

    `note` is told once when the lock is held. Raises FoundryError, naming `.dvc/tmp/lock`, when it stays
    held for more than `timeout` seconds (default `lock_timeout()`).
    """
    limit = lock_timeout() if timeout is None else timeout
    start = time.monotonic()
    told = False
    while dvc_lock_busy(root):
        if time.monotonic() - start >= limit:
            raise FoundryError(
                f"DVC's repository lock {Path(root) / DVC_LOCK} stayed held for more than {limit:.0f} s.",
                "Another dvc command (`dvc repro`, `dvc exp run`, `dvc pull`, ...) is running in this "
                "project: let it finish, then run the command again. Set "
                f"{TIMEOUT_ENV} (seconds) to wait longer.",
            )
        if not told:
            note(
                "waiting for another dvc command (e.g. `dvc repro`) to release DVC's lock "
                f"{Path(root) / DVC_LOCK} (up to {limit:.0f} s) ..."
            )
            told = True
        time.sleep(POLL)
    return time.monotonic() - start


def run_dvc(
    args: list[str], root: Path, *, note: Callable[[str], None] = stderr_note
) -> subprocess.CompletedProcess[str]:
    """Run `dvc <args>` (this Python's dvc) in the DVC repo `root`; output captured as text.

    Waits first for DVC's repository lock (`wait_for_dvc_lock`: `note` is told, the wait is bounded), then
    runs dvc with its global `--wait-for-lock`, so a dvc command that takes the lock in between is waited
    for too, never failed with "Unable to acquire lock". Returns the finished process (check its
    `returncode`). Raises FoundryError when DVC's lock stays held longer than `lock_timeout()`.
    """
    wait_for_dvc_lock(root, note=note)
    return subprocess.run(
        [sys.executable, "-m", "dvc", "--wait-for-lock", *args], cwd=root, capture_output=True, text=True
    )


def dvc_add(path: Path, *, note: Callable[[str], None] = stderr_note) -> DvcAdd | None:
    """Track the file or folder `path` with DVC (`dvc add`, run from the repo root through `run_dvc`).

    Its DVC content hash then becomes the model's checksum. Returns None when `path` is not inside a DVC repo
    (nothing to do), else what happened: a failure of `dvc add` is reported in `DvcAdd.error`, not raised.
    Raises FoundryError only when DVC's lock stays held by another dvc command for more than
    `lock_timeout()` seconds (`note` is told when it waits). Callers that share models/ with other runs hold
    `locking.project_lock` around it.
    """
    root = dvc_root(Path(path).parent)
    if root is None:
        return None
    rel = Path(path).resolve().relative_to(root)
    proc = run_dvc(["add", "--quiet", str(rel)], root, note=note)
    if proc.returncode == 0:
        return DvcAdd(root, rel)
    detail = (proc.stderr or proc.stdout).strip().splitlines()
    return DvcAdd(root, rel, detail[-1] if detail else str(proc.returncode))
