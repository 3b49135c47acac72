"""Everything that talks to the Hub (through huggingface_hub, so HF_ENDPOINT, HF_TOKEN, HF_HOME and
HF_HUB_OFFLINE behave as documented there), plus the same view of a local folder.

A `Snapshot` is one fixed set of files: a Hub repo at a resolved commit, or a folder. Files are fetched into
the Hub cache (a second import of the same commit downloads nothing) and used from there.

Symbolic links are followed only inside the source: a folder's links must stay in the folder (a Hub cache
snapshot's in its repo's cache folder, where the blobs are). A link elsewhere (`LICENSE -> /etc/hostname`)
would print and copy any file of this machine into models/, so every file an import reads or copies is
checked, when the folder is listed and again when the file is fetched.
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, overload

from model_foundry.errors import FoundryError
from model_foundry.hub.report import Reporter
from model_foundry.hub.sources import CACHE_SNAPSHOT, FolderSource, HubSource, endpoint

SHA256 = re.compile(r"^[0-9a-f]{64}$")
SHA1 = re.compile(r"^[0-9a-f]{40}$")


@dataclass
class RepoFile:
    """One file of a source as listed (no content): name, size in bytes, and the hash it must have."""

    path: str
    size: int | None = None
    sha256: str | None = None  # LFS files (weights): the Hub's sha256; or recorded by the import stage
    blob_id: str | None = None  # plain git files: the git blob sha1


@dataclass
class LocalFile:
    """A fetched file and what its content must hash to."""

    path: Path  # real path (the cache blob for Hub files)
    expected_sha256: str | None = None
    expected_blob_id: str | None = None
    in_hub_cache: bool = False  # may be hard-linked; evicted from the cache if it turns out corrupt
    pointer: Path | None = None  # the cache's snapshot symlink


@dataclass
class Snapshot:
    """One fixed set of files: a Hub repo at a resolved commit, or a local folder."""

    kind: str  # "hub" | "folder"
    where: str  # repo id or folder, for messages
    files: dict[str, RepoFile]
    repo_id: str | None = None
    revision: str | None = None  # as requested
    commit: str | None = None  # resolved sha (Hub)
    folder: Path | None = None
    gated: bool | str = False
    card: dict[str, Any] = field(default_factory=dict)
    parameters: int | None = None  # from the Hub's safetensors metadata, when it has it
    config_hint: dict[str, Any] | None = None  # the Hub API's excerpt of config.json (model_type, auto_map)
    offline: bool = False
    cache_dir: str | None = None

    @property
    def label(self) -> str:
        """The source in messages: the folder, or `repo@<12 hex digits of the commit>`."""
        if self.kind == "folder":
            return str(self.folder)
        return f"{self.repo_id}@{self.commit[:12]}" if self.commit else str(self.repo_id)


# --- errors ---------------------------------------------------------------------------------------------
NETWORK_HINT = (
    "Check the network or proxy; set HF_ENDPOINT to a reachable mirror; set HF_HUB_OFFLINE=1 to import "
    "from the local Hub cache (HF_HOME); or import a local folder in Hugging Face format."
)


@contextlib.contextmanager
def hub_errors(repo_id: str, revision: str | None) -> Iterator[None]:
    """huggingface_hub/httpx exceptions → FoundryError with what to do about them."""
    import httpx2
    from huggingface_hub import errors

    rev = revision or "main"
    try:
        yield
    except errors.GatedRepoError:
        raise FoundryError(
            f"{repo_id} is a gated repository: your token has no access to it.",
            f"Accept its conditions at {endpoint()}/{repo_id}, then set HF_TOKEN to a token of that account "
            "(https://huggingface.co/settings/tokens).",
        ) from None
    except errors.RepositoryNotFoundError:
        raise FoundryError(
            f"Repository {repo_id} was not found on {endpoint()}.",
            "Check the id (org/name). For a private repo, set HF_TOKEN to a token with read access.",
        ) from None
    except errors.RevisionNotFoundError:
        raise FoundryError(
            f"Revision {rev!r} does not exist in {repo_id}.",
            f"Use a branch, tag or commit sha of the repo (see {endpoint()}/{repo_id}/tree/main).",
        ) from None
    except errors.RemoteEntryNotFoundError as e:
        raise FoundryError(f"A file of {repo_id}@{rev} is missing on the Hub: {e}") from None
    except errors.OfflineModeIsEnabled:
        raise FoundryError(
            f"HF_HUB_OFFLINE is set and {repo_id}@{rev} is not complete in the local Hub cache.",
            "Unset HF_HUB_OFFLINE to download it, or import a local folder.",
        ) from None
    except errors.LocalEntryNotFoundError as e:
        raise FoundryError(
            f"{repo_id}@{rev} could not be downloaded and is not in the local Hub cache "
            f"({e.__class__.__name__}).",
            NETWORK_HINT,
        ) from None
    except errors.HfHubHTTPError as e:
        status = e.response.status_code if e.response is not None else None
        if status == 401:
            raise FoundryError(
                f"The Hub refused the credentials for {repo_id} (HTTP 401).",
                "Set HF_TOKEN to a valid token, or unset it for public repos.",
            ) from None
        raise FoundryError(f"The Hub answered HTTP {status} for {repo_id}: {e}", NETWORK_HINT) from None
    except (httpx2.TransportError, ConnectionError, TimeoutError) as e:
        raise FoundryError(f"Cannot reach the Hub at {endpoint()}: {e}", NETWORK_HINT) from None


def token_available() -> bool:
    """Whether huggingface_hub has a token (HF_TOKEN, or a saved login)."""
    from huggingface_hub import get_token

    return bool(get_token())


def is_offline() -> bool:
    """Whether HF_HUB_OFFLINE is set: no request goes to the Hub, only the Hub cache is read."""
    from huggingface_hub import is_offline_mode

    return bool(is_offline_mode())


# --- opening a source -----------------------------------------------------------------------------------
def open_hub(
    source: HubSource, cache_dir: str | os.PathLike[str] | None = None, reporter: Reporter | None = None
) -> Snapshot:
    """The repo at its resolved commit, with sizes and hashes of every file — no file is downloaded.

    Offline (HF_HUB_OFFLINE) or with the Hub unreachable, the same comes from the Hub cache when it has it
    (with a warning on `reporter` when the Hub was unreachable). Raises FoundryError when the repo, the
    revision or access to it is refused (see `hub_errors`), or when neither the Hub nor the cache has it.
    """
    import httpx2
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError

    cache = str(cache_dir) if cache_dir else None
    if is_offline():
        return _from_cache(source, cache, "HF_HUB_OFFLINE is set")
    with hub_errors(source.repo_id, source.revision):
        try:
            info = HfApi().model_info(source.repo_id, revision=source.revision, files_metadata=True)
        except (httpx2.TransportError, ConnectionError, TimeoutError, HfHubHTTPError) as e:
            status = getattr(getattr(e, "response", None), "status_code", None)
            if isinstance(e, HfHubHTTPError) and (status is None or status < 500):
                raise  # not found, gated, unauthorized: the cache must not hide these
            cached = _from_cache(source, cache, f"the Hub is unreachable ({e})", required=False)
            if cached is None:
                raise
            (reporter or Reporter()).warn(
                f"warning: {endpoint()} is unreachable; using {cached.label} from the local Hub cache"
            )
            return cached
    files = {}
    for s in info.siblings or []:
        lfs = s.lfs
        files[s.rfilename] = RepoFile(
            s.rfilename,
            s.size,
            lfs.sha256 if lfs is not None else None,
            s.blob_id if lfs is None else None,
        )
    card = info.card_data.to_dict() if info.card_data is not None else {}
    params = getattr(info.safetensors, "total", None) if info.safetensors is not None else None
    return Snapshot(
        "hub", source.repo_id, files, repo_id=source.repo_id, revision=source.revision, commit=info.sha,
        gated=info.gated or False, card=card, parameters=params, config_hint=info.config, cache_dir=cache,
    )  # fmt: skip


def _storage(repo_id: str, cache_dir: str | None) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir or constants.HF_HUB_CACHE) / f"models--{repo_id.replace('/', '--')}"


@overload
def _from_cache(
    source: HubSource, cache_dir: str | None, why: str, required: Literal[True] = True
) -> Snapshot: ...
@overload
def _from_cache(source: HubSource, cache_dir: str | None, why: str, required: bool) -> Snapshot | None: ...
def _from_cache(source: HubSource, cache_dir: str | None, why: str, required: bool = True) -> Snapshot | None:
    """The cached snapshot of a repo: the commit from refs/, hashes from blob names (sha256 for LFS files).

    Not in the cache: None, or FoundryError (saying `why` the Hub was not asked) when `required`.
    """
    storage = _storage(source.repo_id, cache_dir)
    rev = source.revision or "main"
    commit = rev if SHA1.match(rev) else None
    ref = storage / "refs" / rev
    if commit is None and ref.is_file():
        commit = ref.read_text().strip()
    snapshot = storage / "snapshots" / commit if commit else None
    if snapshot is None or not snapshot.is_dir():
        if not required:
            return None
        raise FoundryError(
            f"{source.repo_id}@{rev} is not in the local Hub cache ({storage.parent}), and {why}.",
            "Import it once with network access (or unset HF_HUB_OFFLINE), set HF_HOME to the cache that has "
            "it, or import a local folder.",
        )
    files = {}
    refuse_outside_links(
        snapshot, {p.relative_to(snapshot).as_posix(): t for p in snapshot.rglob("*")
                   if (t := _outside_target(p, storage.resolve())) is not None},
    )  # fmt: skip
    for p in sorted(snapshot.rglob("*")):
        if not p.is_file():
            continue
        blob = p.resolve()
        name = p.relative_to(snapshot).as_posix()
        files[name] = RepoFile(
            name,
            blob.stat().st_size,
            blob.name if SHA256.match(blob.name) else None,
            blob.name if SHA1.match(blob.name) else None,
        )
    return Snapshot(
        "hub", source.repo_id, files, repo_id=source.repo_id, revision=source.revision, commit=commit,
        offline=True, cache_dir=cache_dir,
    )  # fmt: skip


def link_root(folder: Path) -> Path:
    """Where the symbolic links of a source folder may point: the folder itself, or for a Hub cache snapshot
    (`models--org--name/snapshots/<sha>`, whose files link to `../../blobs/`) its repo's cache folder."""
    folder = folder.resolve()
    return folder.parents[1] if CACHE_SNAPSHOT.search(folder.as_posix()) else folder


def _is_inside(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def refuse_outside_links(where: str | Path, links: dict[str, str]) -> None:
    """FoundryError naming every link (name → target) that points outside the source; nothing when none."""
    if not links:
        return
    listing = ", ".join(f"{name} -> {target}" for name, target in sorted(links.items()))
    raise FoundryError(
        f"{where} has symbolic links that point outside it ({listing}); an import reads and copies only "
        "files inside its source.",
        "Replace each link with a copy of the file it points to (cp --remove-destination TARGET LINK), or "
        "import from a folder without such links.",
    )


def _outside_target(entry: Path, root: Path) -> str | None:
    """The target of `entry` when it is a link (or lies under one) that leaves `root`, else None."""
    real = entry.resolve()
    if _is_inside(real, root):
        return None
    return os.readlink(entry) if entry.is_symlink() else str(real)


def open_folder(source: FolderSource) -> Snapshot:
    """A local folder in Hugging Face format (top-level files); a Hub cache snapshot keeps its id/commit.

    Raises FoundryError when a top-level entry that is not a folder links outside the source (see
    `link_root`): such a file is neither listed nor read.
    """
    files = {}
    root = link_root(source.path)
    outside = {
        p.name: target
        for p in source.path.iterdir()
        if p.is_symlink() and not p.is_dir() and (target := _outside_target(p, root)) is not None
    }
    refuse_outside_links(source.path, outside)
    for p in sorted(source.path.iterdir()):
        if p.is_file():
            real = p.resolve()
            files[p.name] = RepoFile(
                p.name, real.stat().st_size, real.name if SHA256.match(real.name) else None
            )
    return Snapshot(
        "folder", str(source.path), files, repo_id=source.repo_id, commit=source.revision, folder=source.path
    )


# --- fetching -------------------------------------------------------------------------------------------
def fetch(snapshot: Snapshot, names: list[str], progress: bool = True) -> dict[str, LocalFile]:
    """{name: local file} for `names`, downloading what the Hub cache lacks (nothing at all when it has them;
    progress bars on stderr when `progress`). Raises FoundryError when a file is missing (the folder changed,
    the cache is incomplete offline), links outside the source, or cannot be downloaded (see `hub_errors`).
    """
    if snapshot.kind == "folder":
        assert snapshot.folder is not None
        out = {}
        root = link_root(snapshot.folder)
        outside = {n: t for n in names if (t := _outside_target(snapshot.folder / n, root)) is not None}
        refuse_outside_links(snapshot.folder, outside)  # checked again: the folder may have changed
        for n in names:
            f = snapshot.files.get(n)
            path = (snapshot.folder / n).resolve()
            if not path.is_file():
                raise FoundryError(
                    f"{snapshot.folder / n} is missing.", "The source folder changed: re-run the import."
                )
            out[n] = LocalFile(path, f.sha256 if f else None, None)
        return out
    return _fetch_hub(snapshot, names, progress)


def _fetch_hub(snapshot: Snapshot, names: list[str], progress: bool) -> dict[str, LocalFile]:
    from huggingface_hub import hf_hub_download, snapshot_download

    assert snapshot.repo_id and snapshot.commit
    kwargs: dict[str, Any] = {"repo_id": snapshot.repo_id, "revision": snapshot.commit}
    if snapshot.cache_dir:
        kwargs["cache_dir"] = snapshot.cache_dir
    pointers: dict[str, Path] = {}
    with hub_errors(snapshot.repo_id, snapshot.commit), _progress_bars(progress):
        missing = [n for n in names if not _cached_pointer(snapshot, n).exists()]
        if missing and snapshot.offline:
            raise FoundryError(
                f"{snapshot.label} is incomplete in the local Hub cache: {', '.join(missing)} missing.",
                "Import it once with network access (HF_HUB_OFFLINE unset), or import a local folder.",
            )
        big = [n for n in missing if (snapshot.files[n].size or 0) > 1 << 20] if missing else []
        if len(big) > 1:  # several large files: parallel downloads under one aggregated progress bar
            snapshot_download(
                allow_patterns=[glob.escape(n) for n in big], max_workers=min(8, len(big)), **kwargs
            )
        for n in names:
            pointers[n] = Path(hf_hub_download(filename=n, local_files_only=snapshot.offline, **kwargs))
    if not snapshot.offline:
        _write_ref(snapshot)
    storage = _storage(snapshot.repo_id, snapshot.cache_dir).resolve()
    refuse_outside_links(
        snapshot.label, {n: t for n, p in pointers.items() if (t := _outside_target(p, storage)) is not None}
    )
    out = {}
    for n, pointer in pointers.items():
        f = snapshot.files.get(n) or RepoFile(n)
        out[n] = LocalFile(pointer.resolve(), f.sha256, f.blob_id, True, pointer)
    return out


def _write_ref(snapshot: Snapshot) -> None:
    """refs/<branch or tag> → commit, as huggingface_hub writes it: offline imports of `main` then resolve."""
    rev = snapshot.revision or "main"
    if SHA1.match(rev) or snapshot.repo_id is None or snapshot.commit is None:
        return
    ref = _storage(snapshot.repo_id, snapshot.cache_dir) / "refs" / rev
    with contextlib.suppress(OSError):
        if ref.is_file() and ref.read_text() == snapshot.commit:
            return
        ref.parent.mkdir(parents=True, exist_ok=True)
        tmp = ref.with_name(f".{ref.name}.{os.getpid()}.tmp")
        tmp.write_text(snapshot.commit)
        os.replace(tmp, ref)


def _cached_pointer(snapshot: Snapshot, name: str) -> Path:
    assert snapshot.repo_id and snapshot.commit
    return _storage(snapshot.repo_id, snapshot.cache_dir) / "snapshots" / snapshot.commit / name


@contextlib.contextmanager
def _progress_bars(enabled: bool) -> Iterator[None]:
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    was_disabled = are_progress_bars_disabled()
    if not enabled and not was_disabled:
        disable_progress_bars()
    try:
        yield
    finally:
        if not enabled and not was_disabled:
            enable_progress_bars()


def evict(local: LocalFile) -> None:
    """Remove a corrupt download from the Hub cache so the next import fetches it again."""
    for p in (local.pointer, local.path if local.in_hub_cache else None):
        if p is not None:
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
