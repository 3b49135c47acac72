"""Reading `dvc.lock` and computing DVC's content hash of a file or folder, without importing DVC.

DVC 3 records a file as the md5 of its bytes and a folder as `<md5 of its .dir listing>.dir`, where the
listing is `json.dumps(sorted [{"md5", "relpath"}], sort_keys=True)` (dvc_data's `Tree.as_bytes` and
`Tree.digest`); a test checks this against `dvc add`. Torch-free and DVC-free, so the registry and MLflow
tracking read it cheaply.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

LOCK_NAME = "dvc.lock"


def _md5_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def dvc_md5(path: str | Path, file_md5: Callable[[Path], str] = _md5_file) -> str:
    """DVC's checksum of `path`: the file's md5, or `<hex>.dir` for a folder (every file below it).

    file_md5: how one file's md5 is computed (a stat-keyed cache passes its own). Raises OSError when a file
    cannot be read.
    """
    path = Path(path)
    if path.is_file():
        return file_md5(path)
    entries = sorted(
        (
            {"md5": file_md5(p), "relpath": p.relative_to(path).as_posix()}
            for p in path.rglob("*")
            if p.is_file()
        ),
        key=lambda e: e["relpath"],
    )
    return hashlib.md5(json.dumps(entries, sort_keys=True).encode("utf-8")).hexdigest() + ".dir"


def read_lock(root: str | Path) -> dict[str, Any]:
    """The `stages:` mapping of `<root>/dvc.lock` ({} when there is none or it does not parse)."""
    import yaml

    try:
        lock = yaml.safe_load((Path(root) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError):
        return {}
    stages = lock.get("stages") if isinstance(lock, dict) else None
    return stages if isinstance(stages, dict) else {}


def recorded_metrics_for(root: str | Path, model_dir: str | Path) -> dict[str, Any] | None:
    """The metrics file a locked stage computed from exactly this model folder's bytes, or None.

    Looks for a stage in `dvc.lock` that depends on `model_dir` with the folder's current DVC hash and
    has a metrics output whose file on disk still has the recorded hash; returns that file's JSON. This is
    how a retrained model with byte-identical weights gets its evaluation when DVC skips the evaluate stage
    (a fresh clone's `dvc repro` retrains, and the lock already says how those weights scored).
    """
    root = Path(root).resolve()
    try:
        rel = Path(model_dir).resolve().relative_to(root).as_posix()
    except ValueError:
        return None
    folder_md5: str | None = None
    for stage in read_lock(root).values():
        deps = {d.get("path"): d.get("md5") for d in stage.get("deps", []) if isinstance(d, dict)}
        if rel not in deps:
            continue
        folder_md5 = folder_md5 or dvc_md5(root / rel)
        if deps[rel] != folder_md5:
            continue
        for out in stage.get("outs", []):
            path = root / str(out.get("path", ""))
            if path.suffix == ".json" and path.is_file() and out.get("md5") == _md5_file(path):
                try:
                    data = json.loads(path.read_text(encoding="utf-8"))
                except (OSError, ValueError):
                    continue
                if isinstance(data, dict):
                    return data
    return None


def is_dvc_tracked(path: str | Path) -> bool:
    """Whether DVC tracks the file or folder `path`: a `<path>.dvc` file lies beside it, or it is an `outs`
    path of a stage in the `dvc.lock` of its DVC repository (the nearest folder above holding `.dvc/`).

    False outside a DVC repository, and for a path only inside a tracked folder. Raises nothing.
    """
    from model_foundry.project import dvc_root

    path = Path(path).resolve()
    if path.with_name(path.name + ".dvc").is_file():
        return True
    root = dvc_root(path.parent)
    if root is None:
        return False
    rel = path.relative_to(root).as_posix()
    return any(
        isinstance(out, dict) and str(out.get("path", "")).rstrip("/") == rel
        for stage in read_lock(root).values()
        if isinstance(stage, dict)
        for out in stage.get("outs") or []
    )


def object_path(objects: Path, md5: str) -> Path:
    """Where a DVC 3 cache (or local remote) keeps the object with this md5: `<objects>/<2 hex>/<rest>`."""
    return objects / md5[:2] / md5[2:]


def read_listing(objects: Path, checksum: str) -> list[dict[str, str]] | None:
    """The `.dir` listing of a folder checksum ([{"md5", "relpath"}], as `dvc_md5` hashes it) from the objects
    folder `objects`, or None when it is not there or is not such a listing. Raises nothing."""
    try:
        entries = json.loads(object_path(objects, checksum).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(entries, list) or not all(
        isinstance(e, dict) and isinstance(e.get("md5"), str) and isinstance(e.get("relpath"), str)
        for e in entries
    ):
        return None
    return entries
