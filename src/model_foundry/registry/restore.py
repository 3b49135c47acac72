"""Bring a model folder that DVC recorded back into the workspace from the DVC cache.

`dvc exp run -S model_name=B` resets the workspace to the commit's state first, so the folder a previous
experiment trained (models/A-trained) is gone from the workspace although its bytes are in the DVC cache and
its md5 in that experiment's dvc.lock. A catalog entry with `source: model:A-trained` needs it back:
`recorded_output` finds the md5 (the workspace's dvc.lock, HEAD's, then each experiment's, newest first) and
`restore_output` rebuilds the folder from the cache's `.dir` listing (DVC 3 layout), checking each md5.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir
from model_foundry.registry.dvc import LOCK_NAME, _md5_file, object_path, read_listing


@dataclass(frozen=True)
class RecordedOutput:
    """A stage output `path` as one dvc.lock records it: its md5 and where the lock was found."""

    path: str
    md5: str
    where: str  # "the workspace's dvc.lock", "HEAD's dvc.lock" or "experiment <name>"


def _outputs(lock_text: str) -> dict[str, str]:
    try:
        lock = yaml.safe_load(lock_text) or {}
    except yaml.YAMLError:
        return {}
    found = {}
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs") or []:
            if isinstance(out, dict) and out.get("path") and out.get("md5"):
                found[str(out["path"])] = str(out["md5"])
    return found


def _git(root: Path, *args: str) -> str | None:
    proc = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else None


def recorded_output(root: Path, path: str) -> RecordedOutput | None:
    """The newest record of the stage output `path` (relative to the project `root`), or None."""
    root = Path(root)
    candidates: list[tuple[str, str | None]] = []
    lock = root / LOCK_NAME
    candidates.append(("the workspace's dvc.lock", lock.read_text() if lock.is_file() else None))
    candidates.append(("HEAD's dvc.lock", _git(root, "show", f"HEAD:{LOCK_NAME}")))
    refs = _git(root, "for-each-ref", "--sort=-committerdate", "--format=%(refname)", "refs/exps") or ""
    for ref in refs.split():
        if "/exec/" in ref or ref.count("/") < 4:  # refs/exps/exec/EXEC_*: DVC's own bookkeeping
            continue
        candidates.append((f"experiment {ref.rsplit('/', 1)[-1]}", _git(root, "show", f"{ref}:{LOCK_NAME}")))
    for where, text in candidates:
        if text and (md5 := _outputs(text).get(path)):
            return RecordedOutput(path, md5, where)
    return None


def cache_files_dir(root: Path) -> Path:
    """The DVC cache's md5 objects folder of the project (`.dvc/cache/files/md5` unless configured)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return Path(repo.cache.local.path)


def restore_output(root: Path, record: RecordedOutput, dest: Path) -> int:
    """Write the folder `record` names into `dest` (atomically) from the DVC cache; returns the file count.

    Raises FoundryError when the cache lacks the listing or a file (e.g. a fresh clone: `dvc pull` first),
    or a cached file's md5 differs from the listing.
    """
    objects = cache_files_dir(root)

    def cached(md5: str) -> Path:
        return object_path(objects, md5)

    hint = f"Fetch it first: `dvc pull {record.path}` (from a remote), or re-run the stage that produces it."
    entries = read_listing(objects, record.md5) if record.md5.endswith(".dir") else None
    if entries is None:
        raise FoundryError(f"{record.path} ({record.md5}, {record.where}) is not in the DVC cache.", hint)
    with atomic_dir(dest) as tmp:
        for entry in entries:
            source, target = cached(entry["md5"]), tmp / entry["relpath"]
            if not source.is_file():
                raise FoundryError(f"{record.path}/{entry['relpath']} is not in the DVC cache.", hint)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
            if _md5_file(target) != entry["md5"]:
                raise FoundryError(
                    f"The DVC cache's copy of {record.path}/{entry['relpath']} is damaged (md5 differs).",
                    "Run `dvc cache` checks (`dvc status -c`) or re-run the stage that produces it.",
                )
    return len(entries)
