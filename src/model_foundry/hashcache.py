"""sha256 of files, cached by what `stat` says about them, so an unchanged multi-GB file costs one `stat`.

Used by the inputs stage (fingerprints of what params.yaml names) and by the check that a model's weights
still match the sha256 its metadata.json records (`model_check.verify_hashes`). The cache lives in the
git-ignored `.foundry-cache/` of the project; a missing, damaged or unwritable cache only makes a run slower.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable
from pathlib import Path

from model_foundry.io import sha256_file, write_json

CACHE_DIR = ".foundry-cache"
PROJECT_MARKERS = ("dvc.yaml", ".dvc", ".git")


def stat_key(file: Path) -> str:
    """`path|size|mtime_ns|ctime_ns|inode`: any write to the file (even one that restores its mtime, which
    still moves ctime) or its replacement makes a new key."""
    st = file.stat()
    return f"{file.resolve()}|{st.st_size}|{st.st_mtime_ns}|{st.st_ctime_ns}|{st.st_ino}"


def _still_current(key: str) -> bool:
    path = key.split("|", 1)[0]
    try:
        return stat_key(Path(path)) == key
    except OSError:
        return False


class HashCache:
    """sha256 of files, remembered by `stat_key`: an edit makes a new key.

    `keep_others`: on save, keep the entries of files this run did not hash while they are unchanged (a
    cache shared by several models); otherwise keep only this run's entries (files that went away drop out).
    """

    def __init__(
        self, path: Path | None, keep_others: bool = False, hasher: Callable[[Path], str] = sha256_file
    ) -> None:
        self.path = path
        self.hasher = hasher
        self.keep_others = keep_others
        self.entries: dict[str, str] = {}
        self.used: dict[str, str] = {}
        if path is not None and path.is_file():
            try:
                entries = json.loads(path.read_text(encoding="utf-8"))
                if isinstance(entries, dict):
                    self.entries = {k: v for k, v in entries.items() if isinstance(v, str)}
            except (OSError, ValueError, RecursionError):
                self.entries = {}  # a damaged cache is only a slower run

    def digest(self, file: Path) -> str:
        """`hasher(file)` (default: sha256, hex), cached by the file's stat key. One cache file holds one
        hasher's digests. Raises OSError if the file cannot be read."""
        key = stat_key(file)
        digest = self.entries.get(key) or self.hasher(file)
        self.used[key] = digest
        return digest

    sha256 = digest  # the default hasher's name, as the inputs stage and the weights check call it

    def save(self) -> None:
        """Write the cache atomically (never raises: an unwritable cache only costs a re-hash next time)."""
        if self.path is None:
            return
        keep = dict(self.used)
        if self.keep_others:
            keep = {**{k: v for k, v in self.entries.items() if _still_current(k)}, **self.used}
        if keep != self.entries:
            with contextlib.suppress(OSError):
                write_json(self.path, keep)


def project_cache(start: str | os.PathLike[str], name: str) -> Path | None:
    """`<project>/.foundry-cache/<name>` for the project holding `start` (the nearest folder with dvc.yaml,
    .dvc or .git), or None outside any project (then nothing is cached)."""
    here = Path(start).resolve()
    for folder in (here, *here.parents):
        if any((folder / m).exists() for m in PROJECT_MARKERS):
            return folder / CACHE_DIR / name
    return None
