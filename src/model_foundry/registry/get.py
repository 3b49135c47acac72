"""`foundry get NAME`: bring a recorded model back into `models/NAME/` without switching the workspace.

A model trained in an experiment that is no longer the workspace, or recorded by an older commit, lives on
in the DVC cache (or a DVC remote) under the checksum its `dvc.lock` recorded. `get_model` fetches that one
folder from the remote when the cache lacks it (DVC's own fetch, limited to the path and the commit that
recorded it), rebuilds the folder from the cache's `.dir` listing, checks every file's md5 and the folder's
DVC hash, and renames it into place. The workspace's `dvc.lock`, params and other folders are untouched; the
folder is added to `models/.gitignore` so git never sees its weights.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model_foundry.errors import FoundryError
from model_foundry.registry.dvc import dvc_md5
from model_foundry.registry.gc import objects_dir
from model_foundry.registry.records import ModelRecord, Version, in_cache, remotes
from model_foundry.registry.restore import RecordedOutput, restore_output


@dataclass(frozen=True)
class GetResult:
    """What `get_model` did: the folder written (or found identical), its checksum, where it came from."""

    folder: Path
    checksum: str
    where: str
    fetched: bool  # downloaded from a DVC remote first
    already_there: bool  # the workspace already held exactly these bytes
    files: int


def choose_version(model: ModelRecord, experiment: str | None) -> Version:
    """The version of `model` to bring back: the one `experiment` recorded, else the one the registry shows.

    Raises FoundryError when the experiment did not record this model, or the model has no recorded version.
    """
    if experiment is not None:
        for version in model.versions:
            if version.kind == "experiment" and version.where == f"experiment {experiment}":
                return version
        if experiment in model.experiments:  # same bytes as an earlier-listed version
            checksum = next(v.checksum for v in model.versions if v.checksum)
            return next(v for v in model.versions if v.checksum == checksum)
        known = ", ".join(model.experiments) or "none"
        raise FoundryError(
            f"Experiment {experiment!r} did not record {model.name} (experiments that did: {known}).",
            f"`foundry model-info {model.name}` lists its versions; `dvc exp list` the experiments.",
        )
    shown = next((v for v in model.versions if v.checksum == model.checksum), None)
    if model.checksum is None and model.versions:  # a changed folder with no workspace record: the newest
        shown = model.versions[0]
    if shown is None:
        raise FoundryError(
            f"{model.path} has no DVC record: there is nothing to bring back.",
            f"`dvc add {model.path}` tracks a folder; a pipeline model is recorded by `dvc repro`.",
        )
    return shown


def _fetch(root: Path, version: Version, path: str) -> None:
    """Download one recorded folder from the default DVC remote into the cache (DVC's fetch, limited to
    `path` at the commit that recorded it). Raises FoundryError when the remote fails."""
    from dvc.repo import Repo

    from model_foundry.project import wait_for_dvc_lock
    from model_foundry.registry.records import default_remote, local_remote_objects

    remote_objects = local_remote_objects(root)
    if remote_objects is not None:  # a local-directory remote: copy the objects, checking each md5
        _copy_from_local_remote(remote_objects, objects_dir(root), version.checksum)
        return
    wait_for_dvc_lock(root)  # DVC's fetch gives up after 3 s on a held lock
    remote, _ = default_remote(root)  # the workspace's remote: the recording commit may predate it
    try:
        with Repo(str(root)) as repo:
            if version.rev is None:
                repo.fetch(targets=[path], remote=remote)
            else:
                repo.fetch(targets=[path], revs=[version.rev], workspace=False, remote=remote)
    except Exception as e:  # DVC raises many kinds: an unreachable remote, missing credentials...
        raise FoundryError(
            f"Could not fetch {path} ({version.checksum[:8]}) from the DVC remote: {e}",
            "Check the remote (`dvc remote list`, network, credentials), then run the command again.",
        ) from e


def _copy_from_local_remote(remote: Path, objects: Path, checksum: str) -> None:
    """Copy the folder `checksum` (its `.dir` listing and every file) from a local-directory remote's objects
    into the cache's, each written to a temp name, md5-checked, then renamed. Missing objects are left for
    the caller's check."""
    import json
    import shutil

    from model_foundry.registry.dvc import _md5_file
    from model_foundry.registry.records import cached_object

    listing_path = cached_object(remote, checksum)
    try:
        listing = json.loads(listing_path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return
    for md5 in [checksum, *(e.get("md5", "") for e in listing if isinstance(e, dict))]:
        source, target = cached_object(remote, md5), cached_object(objects, md5)
        if target.is_file() or not source.is_file():
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        temp = target.with_name(f".{target.name}.tmp")
        shutil.copyfile(source, temp)
        if _md5_file(temp) != md5.removesuffix(".dir"):
            temp.unlink()
            raise FoundryError(
                f"The DVC remote's copy of object {md5} is damaged (its md5 differs).",
                "Push the model again from a machine whose cache holds it (`dvc push`).",
            )
        temp.replace(target)


def _ignore(root: Path, name: str) -> None:
    """Add `/<name>` to models/.gitignore (as `dvc add` does) unless git already ignores the folder."""
    import subprocess

    from model_foundry.io import atomic_write_text

    check = subprocess.run(
        ["git", "check-ignore", "-q", f"models/{name}/"], cwd=root, capture_output=True, check=False
    )
    if check.returncode != 1:  # 0: ignored already; 128: not a git repository
        return
    ignore = root / "models" / ".gitignore"
    text = ignore.read_text(encoding="utf-8") if ignore.is_file() else ""
    atomic_write_text(ignore, text + ("" if not text or text.endswith("\n") else "\n") + f"/{name}\n")


def get_model(
    root: Path, model: ModelRecord, experiment: str | None = None, force: bool = False
) -> GetResult:
    """Write the recorded folder of `model` (the version `experiment` made, else the registry's) to
    `root/models/<name>`, verified against its checksum. Raises FoundryError when the folder exists with other
    bytes (unless `force`), or the bytes are neither in the cache nor fetchable from a remote."""
    from model_foundry.locking import project_lock

    version = choose_version(model, experiment)
    dest = root / model.path
    if _check_destination(dest, model, version, force):
        return GetResult(dest, version.checksum, version.where, False, True, version.nfiles or 0)
    objects = objects_dir(root)
    fetched = False
    if not in_cache(objects, version.checksum):
        if not remotes(root):
            raise FoundryError(
                f"{model.path} ({version.checksum[:8]}, {version.where}) is not in the DVC cache and no DVC "
                "remote is configured.",
                "Configure the remote that holds it (`dvc remote add -d …`), or re-run the experiment.",
            )
        _fetch(root, version, model.path)
        fetched = True
        if not in_cache(objects, version.checksum):
            raise FoundryError(
                f"The DVC remote does not hold {model.path} ({version.checksum[:8]}).",
                "Push it from the machine that made it (`dvc push`, `dvc exp push origin <exp>`).",
            )
    with project_lock(root / "models", f"get {model.name}: write models/{model.name}"):
        already = _check_destination(dest, model, version, force)  # again: another run may have written it
        if already:
            return GetResult(dest, version.checksum, version.where, fetched, True, version.nfiles or 0)
        files = restore_output(root, RecordedOutput(model.path, version.checksum, version.where), dest)
        if dvc_md5(dest) != version.checksum:  # every file was checked; this checks the set of files too
            raise FoundryError(f"{model.path} does not hash to {version.checksum} after the restore.")
        _ignore(root, model.name)
    return GetResult(dest, version.checksum, version.where, fetched, False, files)


def _check_destination(dest: Path, model: ModelRecord, version: Version, force: bool) -> bool:
    """Whether `dest` already holds exactly the version's bytes; FoundryError when it holds something else
    (a file, or a folder with other bytes) and `force` is off."""
    if dest.is_dir() and dvc_md5(dest) == version.checksum:
        return True
    if (dest.exists() or dest.is_symlink()) and not force:
        raise FoundryError(
            f"{model.path} exists and holds other bytes than {version.where}'s version "
            f"({version.checksum[:8]})."
            if dest.is_dir()
            else f"{model.path} exists and is a file, not a model folder.",
            f"Pass --force to replace it with {version.where}'s version, or move it away first.",
        )
    return False
