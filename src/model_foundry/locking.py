"""The project-wide lock around the writes that concurrent `foundry` runs share.

Two `foundry import-model` runs, or an import and a `dvc repro`, may run at the same time in one project.
What they share is small and short: choosing a free name under models/, renaming a finished import into
`models/<name>`, and `dvc add` (which writes `models/<name>.dvc` and `models/.gitignore`). Those steps run
inside `project_lock`; downloads and conversions run outside it, in temp folders of their own.

The lock is a `filelock` file lock (an OS lock: it goes with its process, even one killed with kill -9) on
`.dvc/tmp/foundry.lock` of the DVC repo (git- and DVC-ignored), or outside a DVC repo on a file in the temp
folder named after the models folder. Beside it, `foundry.lock.owner` says who holds it, for whoever waits.
A wait ends after `project.lock_timeout()` seconds (FOUNDRY_LOCK_TIMEOUT, default 600) with a FoundryError.
DVC's own repository lock is waited for by `project.run_dvc`; we always take ours first, then DVC's.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
import tempfile
from collections.abc import Callable, Iterator
from datetime import datetime, timezone
from pathlib import Path

from model_foundry.errors import FoundryError
from model_foundry.project import TIMEOUT_ENV, dvc_root, lock_timeout, stderr_note

LOCK_NAME = "foundry.lock"  # in the DVC repo's .dvc/tmp/


def lock_path(folder: str | os.PathLike[str]) -> Path:
    """The lock file guarding writes under `folder`: `<repo>/.dvc/tmp/foundry.lock` inside a DVC repo, else
    `<temp dir>/foundry-<hash of the resolved folder>.lock` (nothing is added to the user's folders)."""
    root = dvc_root(Path(folder))
    if root is not None:
        return root / ".dvc" / "tmp" / LOCK_NAME
    digest = hashlib.sha256(str(Path(folder).resolve()).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"foundry-{digest}.lock"


def _owner_file(path: Path) -> Path:
    return path.with_name(path.name + ".owner")


def holder(path: Path) -> str:
    """Who holds the lock `path`, as its holder recorded it (`pid 123 on host since <time>: <what>
    (<command>)`); "another process" when there is no record or its process is gone."""
    from model_foundry.leftovers import host, process_alive

    try:
        text = _owner_file(path).read_text(encoding="utf-8").strip()
        _, pid, _, where, _ = text.split(" ", 4)
        if where != host() or process_alive(int(pid)):
            return text
    except (OSError, ValueError):
        pass
    return "another process"


def _record_owner(path: Path, what: str) -> None:
    from model_foundry.io import atomic_write_text
    from model_foundry.leftovers import host

    since = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    command = " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv and sys.argv[0] else "python"
    with contextlib.suppress(OSError):  # the record is a courtesy to whoever waits, not part of the lock
        atomic_write_text(
            _owner_file(path), f"pid {os.getpid()} on {host()} since {since}: {what} ({command})\n"
        )


@contextlib.contextmanager
def project_lock(
    folder: str | os.PathLike[str],
    what: str,
    *,
    note: Callable[[str], None] = stderr_note,
    timeout: float | None = None,
) -> Iterator[Path]:
    """Hold the project-wide lock for writes under `folder` (see `lock_path`) in the `with` body; yields
    the lock file's path.

    `what` (e.g. "import-model: rename into models/qwen") is recorded for whoever waits. When another
    process holds the lock, `note` is told once who, and the wait lasts at most `timeout` seconds (default
    `project.lock_timeout()`). Re-entrant within a thread. Raises FoundryError when the wait times out
    (naming the lock file and its holder) or the lock file cannot be created.
    """
    from filelock import FileLock, Timeout

    path = lock_path(folder)
    limit = lock_timeout() if timeout is None else timeout
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = FileLock(path, is_singleton=True)
        nested = lock.is_locked
        try:
            lock.acquire(blocking=False)
        except Timeout:
            note(f"waiting for {holder(path)} to release the project lock {path} (up to {limit:.0f} s) ...")
            lock.acquire(timeout=limit)
    except Timeout:
        raise FoundryError(
            f"Another run held the project lock {path} for more than {limit:.0f} s: {holder(path)}.",
            "Let that run finish, then run the command again; if it hangs, stop that process (the lock goes "
            f"with it). Set {TIMEOUT_ENV} (seconds) to wait longer.",
        ) from None
    except OSError as e:
        raise FoundryError(
            f"Cannot create the project lock {path}: {e.strerror or e}.", f"Make {path.parent} writable."
        ) from None
    try:
        if not nested:
            _record_owner(path, what)
        yield path
    finally:
        if not nested:
            with contextlib.suppress(OSError):
                _owner_file(path).unlink()
        lock.release()
