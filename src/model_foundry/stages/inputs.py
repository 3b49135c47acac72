"""inputs stage: validate params.yaml and fingerprint every input the pipeline reads from outside the repo's
stage outputs, so DVC re-runs exactly the stages whose inputs changed.

dvc.yaml cannot list a dependency that only some params name (a local `source:` folder, a repo model
`source: model:<name>`, `data.source` files, a `tokenizer_override` folder), so this stage runs on every
`dvc repro` (`always_changed: true`) and writes one small JSON file per kind of input with the content hash
of what the params name. The stages that read an input depend on its file: when the input's bytes change,
so does the file, and DVC re-runs them; when nothing changed, the files keep their bytes and nothing
downstream runs.

The files hold the paths as written in params.yaml (never absolute paths), so two clones fingerprint alike.
Hashing is sha256; a folder's hash covers its files' relative paths and bytes. Hashes are cached by path,
size, mtime, ctime, inode in `.foundry-cache/input_hashes.json` (git-ignored): an unchanged multi-GB model
folder costs one `stat` per file per `dvc repro`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

from model_foundry.config import BUILTIN_CORPUS, Params
from model_foundry.data.corpus import check_source
from model_foundry.errors import FoundryError
from model_foundry.hashcache import HashCache  # shared with model_check
from model_foundry.io import write_json

HASH_CACHE = Path(".foundry-cache/input_hashes.json")
SKIP_DIRS = {".git", ".dvc", "__pycache__"}  # never read by a stage; volatile


def folder_fingerprint(folder: Path, cache: HashCache) -> dict[str, Any]:
    """{"sha256", "files", "bytes"} of every file under `folder` (symlinks followed; .git/.dvc skipped).

    The hash is sha256 over "relative/path\\0<file sha256>\\n" lines in sorted path order, so a renamed,
    added, removed or edited file changes it.
    """
    found: list[Path] = []
    for root, dirs, names in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS)
        found.extend(Path(root) / n for n in names)
    files = sorted((f for f in found if f.is_file()), key=lambda f: f.relative_to(folder).as_posix())
    h = hashlib.sha256()
    size = 0
    for f in files:
        h.update(f"{f.relative_to(folder).as_posix()}\0{cache.sha256(f)}\n".encode())
        size += f.stat().st_size
    return {"sha256": h.hexdigest(), "files": len(files), "bytes": size}


def path_fingerprint(path: Path, cache: HashCache) -> dict[str, Any]:
    """A file's sha256 and size, or a folder's `folder_fingerprint`."""
    if path.is_dir():
        return {"kind": "folder", **folder_fingerprint(path, cache)}
    return {"kind": "file", "sha256": cache.sha256(path), "bytes": path.stat().st_size}


def builtin_fingerprint(name: str) -> dict[str, Any]:
    """The builtin corpus: its name and the sha256 of its text (it comes with Python, so it can differ)."""
    from pydoc_data.topics import topics

    h = hashlib.sha256()
    for key in sorted(topics):
        h.update(f"{key}\0{topics[key]}\0".encode())
    return {"kind": "builtin", "sha256": h.hexdigest()}


def data_inputs(params: Params, cache: HashCache) -> dict[str, Any]:
    """What the import stage reads as the corpus: every `data.source`, fingerprinted."""
    sources = params.data.source if isinstance(params.data.source, list) else [params.data.source]
    out = []
    for source in sources:
        if source == BUILTIN_CORPUS:
            out.append({"source": source, **builtin_fingerprint(source)})
            continue
        path = check_source(source)
        out.append({"source": source, **path_fingerprint(path, cache)})
    return {"data.source": out}


def model_inputs(params: Params, cache: HashCache) -> dict[str, Any]:
    """What the import and convert stages read as the model: a local folder's content, or a Hub id + revision.

    A Hub source is recorded as written (id and revision, no network): pin `revision:` to a commit sha for a
    source that cannot move; a branch that moves on the Hub is picked up only by `dvc repro -f -s import`.
    A repo model (`source: model:<name>`) is the folder `models/<name>/` of the project root (also from
    DVC's temp experiment copies), fingerprinted like a local folder and recorded by its relative path
    ("folder": "models/<name>"), so import and convert re-run exactly when the parent's bytes change.
    Raises FoundryError when that folder is missing (hint: the entry that produces it, or how to restore it).
    """
    from model_foundry.hub.sources import FolderSource, parse_source
    from model_foundry.stages.ingest import MODELS_DIR, find_repo_model

    entry = params.model
    record: dict[str, Any] = {"model_name": params.model_name, "source": entry.source}
    if entry.is_scratch:
        return {**record, "kind": "scratch"}
    if entry.parent_model is not None:
        folder = find_repo_model(entry, params.catalog)
        return {
            **record,
            "folder": f"{MODELS_DIR}/{entry.parent_model}",
            **path_fingerprint(folder, cache),
        }
    parsed = parse_source(entry.source, entry.revision)
    if isinstance(parsed, FolderSource):
        return {**record, **path_fingerprint(parsed.path, cache)}
    return {**record, "kind": "hub", "repo_id": parsed.repo_id, "revision": parsed.revision}


def tokenizer_inputs(params: Params, cache: HashCache) -> dict[str, Any]:
    """What the tokenize stage reads besides the model folder: the `tokenizer_override` folder, if any."""
    override = params.model.tokenizer_override
    if not override:
        return {"tokenizer_override": None}
    path = Path(override)
    if not path.is_dir():
        raise FoundryError(
            f"models.{params.model_name}.tokenizer_override {override!r} is not a folder.",
            "Point it at a folder with a saved fast tokenizer (tokenizer.json), e.g. another model's folder.",
        )
    return {"tokenizer_override": override, **path_fingerprint(path, cache)}


def run(
    params: Params, data_out: Path, model_out: Path, tokenizer_out: Path, cache_file: Path | None = HASH_CACHE
) -> dict[str, Any]:
    """The inputs stage: write the three fingerprint files (each atomically, with sorted keys: same inputs,
    same bytes).

    data_out: every `data.source` (`data_inputs`); model_out: the model source, a local folder's content or
    a Hub id + revision (`model_inputs`); tokenizer_out: the `tokenizer_override` folder (`tokenizer_inputs`).
    Hashes are sha256 hex digests, sizes in bytes. Returns {"data", "model", "tokenizer"}: what the files
    hold. Raises FoundryError when a named input is missing. `cache_file=None` hashes without a cache.
    """
    cache = HashCache(cache_file)
    result = {
        "data": data_inputs(params, cache),
        "model": model_inputs(params, cache),
        "tokenizer": tokenizer_inputs(params, cache),
    }
    for key, out in (("data", data_out), ("model", model_out), ("tokenizer", tokenizer_out)):
        write_json(out, result[key])
    cache.save()
    return result
