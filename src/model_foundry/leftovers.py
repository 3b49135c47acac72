"""Temp files and folders of our atomic writes, named so that they are never taken for outputs, and cleaned.

An atomic write works in `<folder>/.foundry-tmp-<pid>@<host>-<name>-<random>` beside its target (a rename
is atomic only within one file system) and, while replacing an existing target, parks the old one as
`<folder>/.foundry-old-<pid>@<host>-<name>`. Both patterns are git- and DVC-ignored. A process killed with
kill -9 leaves them behind: the next atomic write into the same folder removes those of processes on this
host that are gone, and puts a parked old target back where its replacement never arrived.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
from pathlib import Path

TEMP = ".foundry-tmp-"
OLD = ".foundry-old-"
_OWNER = re.compile(r"^(?P<kind>\.foundry-(?:tmp|old)-)(?P<pid>\d+)@(?P<host>[^-]*)-(?P<rest>.+)$")


def host() -> str:
    """This machine's name as used in temp names (no '-' or '/', at most 32 characters)."""
    return re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:32] or "host"


def owner() -> str:
    return f"{os.getpid()}@{host()}"


def temp_prefix(name: str) -> str:
    """Prefix for a temp file or folder that will become `name` (tempfile adds a random suffix)."""
    return f"{TEMP}{owner()}-{name}-"


def old_name(name: str) -> str:
    """Where an existing `name` is parked while its replacement is renamed in."""
    return f"{OLD}{owner()}-{name}"


def process_alive(pid: int) -> bool:
    """Whether a process with this id exists on this machine (one we may not signal counts as alive)."""
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return pid > 0
    return True


def stale(entry: Path) -> re.Match[str] | None:
    """The parsed name of a temp/parked entry of ours whose process (on this host) is gone, else None."""
    match = _OWNER.match(entry.name)
    if match is None or match.group("host") != host() or process_alive(int(match.group("pid"))):
        return None
    return match


def clean_stale(folder: str | os.PathLike[str]) -> list[Path]:
    """Remove the stale temp entries of ours in `folder` and restore stale parked targets; returns what was
    removed or restored. Errors (a concurrent cleaner, permissions) are ignored: cleaning is best effort."""
    folder = Path(folder)
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    done: list[Path] = []
    for entry in entries:
        match = stale(entry)
        if match is None:
            continue
        with contextlib.suppress(OSError):
            target = folder / match.group("rest")
            if match.group("kind") == OLD and not (target.exists() or target.is_symlink()):
                entry.rename(target)  # killed between parking the old target and renaming the new one in
            elif entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()
            done.append(entry)
    return done
