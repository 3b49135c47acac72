"""A local server that speaks the Hugging Face Hub HTTP protocol, for offline tests.

The real ``huggingface_hub`` client (and ``transformers`` on top of it) is pointed at this server through
``HF_ENDPOINT`` so that the project's download code runs unmodified, without mocks and without internet.

Two listeners run on 127.0.0.1, each in a daemon thread:

* the *hub* listener answers the JSON API (``/api/models/...``) and ``/{repo}/resolve/{rev}/{path}``;
* the *cdn* listener stores LFS content. LFS files are answered on the hub with a 302 to the cdn, like the
  real Hub redirects to its CDN. The cdn is on another port, hence another origin, so the client stops at the
  redirect on its HEAD call and drops the ``Authorization`` header on the download, as against the real Hub.

Pure standard library on purpose: this module must be importable (and the server started) before
``huggingface_hub``/``transformers`` are imported, because they read ``HF_ENDPOINT``/``HF_HOME`` at import
time.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import http.server
import json
import os
import re
import socket
import struct
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

__all__ = [
    "GATED_TOKEN",
    "HubFile",
    "LocalHub",
    "RequestRecord",
    "dir_files",
    "git_blob_sha1",
    "no_client_backoff",
    "start_session_hub",
]

# A token tests can pass to read gated repos (any bearer token works unless `access_tokens` is restricted).
GATED_TOKEN = "hf_localhub_access_token"

# Same patterns as the `.gitattributes` the Hub writes into every new repo: these files are stored with LFS.
LFS_PATTERNS = (
    "*.7z", "*.arrow", "*.bin", "*.bz2", "*.ckpt", "*.ftz", "*.gz", "*.h5", "*.joblib", "*.lfs.*",
    "*.mlmodel", "*.model", "*.msgpack", "*.npy", "*.npz", "*.onnx", "*.ot", "*.parquet", "*.pb",
    "*.pickle", "*.pkl", "*.pt", "*.pth", "*.rar", "*.safetensors", "*.tar.*", "*.tflite", "*.tgz",
    "*.wasm", "*.xz", "*.zip", "*.zst", "*tfevents*",
)  # fmt: skip
# Files above this size go to LFS whatever their name (the Hub refuses plain-git files above 10 MB).
LFS_SIZE_THRESHOLD = 1_000_000

DEFAULT_GITATTRIBUTES = "".join(f"{p} filter=lfs diff=lfs merge=lfs -text\n" for p in LFS_PATTERNS).encode()

_EPOCH = datetime(2024, 1, 1, tzinfo=timezone.utc)
_API_PREFIXES = {"models": "model", "datasets": "dataset"}
_URL_PREFIX = {"model": "", "dataset": "datasets/"}
_API_ACTIONS = {
    "revision",
    "tree",
    "paths-info",
    "refs",
    "commits",
    "resolve",
    "treesize",
    "preupload",
    "commit",
}
_CHUNK = 64 * 1024


def git_blob_sha1(data: bytes) -> str:
    """Git object id of a blob (``git hash-object``): the Hub's ``oid``/``ETag`` of plain files."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


def _is_lfs(path: str, size: int) -> bool:
    name = path.rsplit("/", 1)[-1]
    return size > LFS_SIZE_THRESHOLD or any(fnmatch.fnmatch(name, p) for p in LFS_PATTERNS)


def _iso(dt: datetime) -> str:
    return dt.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def dir_files(root: Path | str) -> dict[str, Path]:
    """Map every file under ``root`` to its repo path (posix, relative): ``files`` for ``add_repo``."""
    root = Path(root)
    return {p.relative_to(root).as_posix(): p for p in sorted(root.rglob("*")) if p.is_file()}


@dataclass(frozen=True)
class HubFile:
    """One file of one commit, with the hashes the Hub advertises for it."""

    path: str
    data: bytes = field(repr=False)
    git_oid: str  # blob id; for LFS files, the blob id of the pointer file (what git stores)
    sha256: str
    lfs: bool

    @property
    def size(self) -> int:
        return len(self.data)

    @property
    def pointer_size(self) -> int:
        return len(_lfs_pointer(self.sha256, self.size))

    @classmethod
    def from_bytes(cls, path: str, data: bytes) -> HubFile:
        sha256 = hashlib.sha256(data).hexdigest()
        lfs = _is_lfs(path, len(data))
        oid = git_blob_sha1(_lfs_pointer(sha256, len(data)) if lfs else data)
        return cls(path=path, data=data, git_oid=oid, sha256=sha256, lfs=lfs)

    @property
    def etag(self) -> str:
        """The value the client keys its blob cache on: sha256 for LFS files, git blob id otherwise."""
        return self.sha256 if self.lfs else self.git_oid


@dataclass
class _Commit:
    sha: str
    files: dict[str, HubFile]
    title: str
    date: str
    card_data: dict | None


@dataclass
class _Repo:
    repo_type: str
    repo_id: str
    gated: str | bool = False
    commits: dict[str, _Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit sha
    tags: dict[str, str] = field(default_factory=dict)
    history: dict[str, list[str]] = field(default_factory=dict)  # branch -> commit shas, newest first

    def resolve(self, revision: str) -> _Commit | None:
        for refs in (self.branches, self.tags):
            if revision in refs:
                return self.commits[refs[revision]]
        for prefix in ("refs/heads/", "refs/tags/"):
            if revision.startswith(prefix):
                return self.resolve(revision[len(prefix) :])
        return self.commits.get(revision.lower()) if re.fullmatch(r"[0-9a-fA-F]{40}", revision) else None


@dataclass
class RequestRecord:
    """One request as the server saw it, for assertions such as "the second load downloaded no weights"."""

    listener: str  # "hub" or "cdn"
    method: str
    path: str  # percent-decoded URL path
    query: str
    headers: dict[str, str]
    range: str | None
    authorized: bool  # an Authorization header was sent
    repo_id: str | None = None
    filename: str | None = None
    status: int = 0
    # file-content bytes sent, counted just before they are written so the log never lags behind the client
    bytes_sent: int = 0


@dataclass
class _Fault:
    kind: str  # "drop", "corrupt", "fail"
    path: str
    repo_id: str | None
    times: int | None  # None: until clear_faults()
    value: object = None

    def matches(self, repo_id: str, path: str) -> bool:
        return (
            self.path == path and self.repo_id in (None, repo_id) and (self.times is None or self.times > 0)
        )


class HubError(Exception):
    """An error answer: status, ``X-Error-Code`` and ``X-Error-Message`` as the real Hub sends them."""

    def __init__(self, status: int, code: str | None, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.code, self.message, self.headers = status, code, message, headers or {}


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], hub: LocalHub, listener: str):
        self.hub, self.listener = hub, listener
        self.open_connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, _Handler)


class LocalHub:
    """In-memory Hub: repos, revisions and files served over HTTP on 127.0.0.1.

    Typical use (before importing huggingface_hub): ``hub = start_session_hub(tmp)``; later
    ``hub.add_repo("org/name", dir_files(path))`` and use the normal client calls with ``repo_id="org/name"``.
    """

    def __init__(self, *, access_tokens: Iterable[str] | None = None, page_size: int = 1000):
        # None: any bearer token opens gated repos; otherwise only these tokens do (others get 403).
        self.access_tokens = set(access_tokens) if access_tokens is not None else None
        self.page_size = page_size  # tree listing page size (Link-header pagination like the real Hub)
        self._lock = threading.RLock()
        self._repos: dict[tuple[str, str], _Repo] = {}
        self._log: list[RequestRecord] = []
        self._faults: list[_Fault] = []
        self._commit_count = 0
        self._servers: dict[str, _Server] = {}
        self._ports: dict[str, int] = {}

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> str:
        """Bind the hub and cdn listeners (free ports, the same again after ``stop()``); return the URL."""
        with self._lock:
            for listener in ("hub", "cdn"):
                if listener in self._servers:
                    continue
                server = _Server(("127.0.0.1", self._ports.get(listener, 0)), self, listener)
                self._ports[listener] = server.server_address[1]
                self._servers[listener] = server
                threading.Thread(
                    target=server.serve_forever,
                    kwargs={"poll_interval": 0.05},
                    name=f"localhub-{listener}",
                    daemon=True,
                ).start()
        return self.url

    def stop(self) -> None:
        """Stop both listeners and cut open keep-alive connections, so clients really see the Hub as down."""
        with self._lock:
            servers, self._servers = self._servers, {}
        for server in servers.values():
            server.shutdown()
            server.server_close()
            with server.conn_lock:
                conns = list(server.open_connections)
            for conn in conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)

    def __enter__(self) -> LocalHub:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return bool(self._servers)

    @property
    def url(self) -> str:
        """Base URL of the hub listener: the value for ``HF_ENDPOINT``."""
        if "hub" not in self._ports:
            raise RuntimeError("LocalHub is not started")
        return f"http://127.0.0.1:{self._ports['hub']}"

    @property
    def cdn_url(self) -> str:
        """Base URL of the listener that serves LFS content (targets of the 302 redirects)."""
        if "cdn" not in self._ports:
            raise RuntimeError("LocalHub is not started")
        return f"http://127.0.0.1:{self._ports['cdn']}"

    # ------------------------------------------------------------------ content

    def add_repo(
        self,
        repo_id: str,
        files: Mapping[str, Path | bytes | str],
        *,
        revision: str = "main",
        gated: bool | str | None = None,
        card_data: dict | None = None,
        repo_type: str = "model",
        commit_message: str | None = None,
        add_gitattributes: bool = True,
    ) -> str:
        """Publish ``files`` (repo path -> file, bytes or text) as a new commit on branch ``revision``.

        Returns the commit sha (40 hex, deterministic from repo id and content). Earlier commits stay
        reachable by sha, so tests can move a branch and still resolve the old commit. ``gated`` applies to
        the whole repo: True means "manual", or "auto"; None keeps the current setting (False for a new repo).
        ``card_data`` overrides the README.md front matter. Like real repos, a default ``.gitattributes`` is
        added unless the files bring one.
        """
        if repo_type not in _URL_PREFIX:
            raise ValueError(f"unsupported repo_type {repo_type!r}")
        if re.fullmatch(r"[0-9a-fA-F]{40}", revision):
            raise ValueError("revision must be a branch name, not a commit sha")
        hub_files: dict[str, HubFile] = {}
        for path, content in files.items():
            path = path.replace("\\", "/").lstrip("/")
            if isinstance(content, Path):
                data = content.read_bytes()
            elif isinstance(content, str):
                data = content.encode()
            else:
                data = bytes(content)
            hub_files[path] = HubFile.from_bytes(path, data)
        if add_gitattributes and ".gitattributes" not in hub_files:
            hub_files[".gitattributes"] = HubFile.from_bytes(".gitattributes", DEFAULT_GITATTRIBUTES)
        hub_files = dict(sorted(hub_files.items()))

        digest = hashlib.sha1(f"{repo_type}/{repo_id}\n".encode())
        for f in hub_files.values():
            digest.update(f"{f.path}\0{f.git_oid}\n".encode())
        sha = digest.hexdigest()

        if card_data is None and "README.md" in hub_files:
            card_data = parse_front_matter(hub_files["README.md"].data.decode("utf-8", errors="replace"))
        with self._lock:
            repo = self._repos.setdefault((repo_type, repo_id), _Repo(repo_type=repo_type, repo_id=repo_id))
            if gated is not None:
                repo.gated = "manual" if gated is True else gated
            if sha not in repo.commits:
                date = _iso(_EPOCH + timedelta(minutes=self._commit_count))
                self._commit_count += 1
                title = commit_message or f"Upload {len(hub_files)} files"
                repo.commits[sha] = _Commit(sha, hub_files, title, date, card_data)
            repo.branches[revision] = sha
            history = repo.history.setdefault(revision, [])
            if not history or history[0] != sha:
                history.insert(0, sha)
        return sha

    def add_tag(self, repo_id: str, tag: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """Point tag ``tag`` at ``revision`` (branch or sha); returns the commit sha."""
        with self._lock:
            repo = self._repos[(repo_type, repo_id)]
            commit = repo.resolve(revision)
            if commit is None:
                raise KeyError(revision)
            repo.tags[tag] = commit.sha
            return commit.sha

    def remove_repo(self, repo_id: str, *, repo_type: str = "model") -> None:
        with self._lock:
            self._repos.pop((repo_type, repo_id), None)

    def commit_sha(self, repo_id: str, revision: str = "main", *, repo_type: str = "model") -> str:
        """The commit sha a branch/tag/sha resolves to (what the client stores under ``refs/``)."""
        commit = self._repos[(repo_type, repo_id)].resolve(revision)
        if commit is None:
            raise KeyError(revision)
        return commit.sha

    def file(self, repo_id: str, path: str, revision: str = "main", *, repo_type: str = "model") -> HubFile:
        """The served file (``.data``, ``.sha256``, ``.git_oid``, ``.lfs``) for assertions."""
        commit = self._repos[(repo_type, repo_id)].resolve(revision)
        if commit is None:
            raise KeyError(revision)
        return commit.files[path]

    def repo_ids(self, repo_type: str = "model") -> list[str]:
        return sorted(rid for (rtype, rid) in self._repos if rtype == repo_type)

    # ------------------------------------------------------------------ request log

    @property
    def requests(self) -> list[RequestRecord]:
        """All requests seen since start (or the last ``clear_requests``), oldest first."""
        with self._lock:
            return list(self._log)

    def find_requests(
        self,
        *,
        listener: str | None = None,
        method: str | None = None,
        filename: str | None = None,
        repo_id: str | None = None,
        path_contains: str | None = None,
    ) -> list[RequestRecord]:
        return [
            r
            for r in self.requests
            if (listener is None or r.listener == listener)
            and (method is None or r.method == method)
            and (filename is None or r.filename == filename)
            and (repo_id is None or r.repo_id == repo_id)
            and (path_contains is None or path_contains in r.path)
        ]

    def bytes_served(self, *, filename: str | None = None, repo_id: str | None = None) -> int:
        """File-content bytes sent (both listeners): 0 after a call means everything came from the cache."""
        return sum(r.bytes_sent for r in self.find_requests(filename=filename, repo_id=repo_id))

    def clear_requests(self) -> None:
        with self._lock:
            self._log.clear()

    # ------------------------------------------------------------------ fault injection

    def drop_after_bytes(self, path: str, n: int, *, repo_id: str | None = None, times: int = 1) -> None:
        """Close the connection after ``n`` body bytes of the next ``times`` GETs of ``path`` (any listener).

        Content-Length still announces the full size, so the client sees a truncated body
        (RemoteProtocolError) and retries with ``Range: bytes=<received>-``. Note: huggingface_hub writes to
        disk in 10 MiB chunks (``constants.DOWNLOAD_CHUNK_SIZE``), so a resume from a non-zero offset needs
        ``n`` > 10 MiB on a larger file, or a smaller DOWNLOAD_CHUNK_SIZE in the test.
        """
        self._add_fault(_Fault("drop", path, repo_id, times, n))

    def corrupt(self, path: str, *, repo_id: str | None = None, data: bytes | None = None) -> None:
        """Serve other bytes for ``path``, still advertising the original sha256/ETag/size (until cleared).

        Default: same length with the last byte flipped, so only a checksum check can notice.
        """
        self._add_fault(_Fault("corrupt", path, repo_id, None, data))

    def fail_requests(
        self, path: str, status: int = 503, *, repo_id: str | None = None, times: int = 1
    ) -> None:
        """Answer the next ``times`` requests (HEAD or GET, either listener) for ``path`` with ``status``."""
        self._add_fault(_Fault("fail", path, repo_id, times, status))

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def _add_fault(self, fault: _Fault) -> None:
        with self._lock:
            self._faults.append(fault)

    def _take_fault(self, kind: str, repo_id: str, path: str) -> _Fault | None:
        with self._lock:
            for fault in self._faults:
                if fault.kind == kind and fault.matches(repo_id, path):
                    if fault.times is not None:
                        fault.times -= 1
                    return fault
        return None

    # ------------------------------------------------------------------ request handling (called by _Handler)

    def _record(self, record: RequestRecord) -> None:
        with self._lock:
            self._log.append(record)

    def _repo(self, repo_type: str, repo_id: str) -> _Repo:
        with self._lock:
            repo = self._repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, "RepoNotFound", "Repository not found")
        return repo

    def _split_repo(self, repo_type: str, segments: list[str]) -> tuple[str, list[str]]:
        """Split URL segments into (repo_id, rest): repo ids are ``name`` or ``namespace/name``."""
        with self._lock:
            known = {rid for (rtype, rid) in self._repos if rtype == repo_type}
        if len(segments) >= 2 and f"{segments[0]}/{segments[1]}" in known:
            return f"{segments[0]}/{segments[1]}", segments[2:]
        if segments and segments[0] in known:
            return segments[0], segments[1:]
        if len(segments) >= 2 and segments[1] not in _API_ACTIONS:
            return f"{segments[0]}/{segments[1]}", segments[2:]
        return (segments[0] if segments else ""), segments[1:]

    @staticmethod
    def _commit(repo: _Repo, revision: str) -> _Commit:
        commit = repo.resolve(revision)
        if commit is None:
            raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        return commit

    def _check_gated(self, repo: _Repo, authorization: str | None) -> None:
        if not repo.gated:
            return
        token = (
            authorization[7:].strip() if authorization and authorization.lower().startswith("bearer ") else ""
        )
        kind = "model" if repo.repo_type == "model" else repo.repo_type
        if not token:
            raise HubError(
                401,
                "GatedRepo",
                f"Access to {kind} {repo.repo_id} is restricted. You must have access to it and be "
                "authenticated to access it. Please log in.",
            )
        if self.access_tokens is not None and token not in self.access_tokens:
            raise HubError(
                403,
                "GatedRepo",
                f"Access to {kind} {repo.repo_id} is restricted and you are not in the authorized list. "
                f"Visit {self.url}/{repo.repo_id} to ask for access.",
            )

    def _repo_info(self, repo: _Repo, commit: _Commit, params: dict[str, list[str]]) -> dict:
        blobs = _truthy(params.get("blobs"))
        siblings = []
        for f in commit.files.values():
            entry: dict = {"rfilename": f.path}
            if blobs:
                entry.update(size=f.size, blobId=f.git_oid)
                if f.lfs:
                    entry["lfs"] = {"size": f.size, "sha256": f.sha256, "pointerSize": f.pointer_size}
            siblings.append(entry)
        card = commit.card_data or {}
        info: dict = {
            "_id": hashlib.sha1(repo.repo_id.encode()).hexdigest()[:24],
            "id": repo.repo_id,
            "author": repo.repo_id.split("/")[0] if "/" in repo.repo_id else None,
            "sha": commit.sha,
            "lastModified": commit.date,
            "createdAt": _iso(_EPOCH),
            "private": False,
            "disabled": False,
            "gated": repo.gated,
            "downloads": 0,
            "likes": 0,
            "tags": _tags(commit),
            "cardData": card or None,
            "siblings": siblings,
            "usedStorage": sum(f.size for f in commit.files.values()),
        }
        if repo.repo_type == "model":
            info["modelId"] = repo.repo_id
            info["spaces"] = []
            config = _json_file(commit, "config.json")
            if config:
                pipeline = _pipeline_tag(config)
                info["library_name"] = card.get("library_name", "transformers")
                if pipeline:
                    info["pipeline_tag"] = card.get("pipeline_tag", pipeline)
                hub_config = {
                    k: config[k] for k in ("architectures", "model_type", "auto_map") if k in config
                }
                tok = _json_file(commit, "tokenizer_config.json")
                if tok:
                    keys = ("bos_token", "eos_token", "pad_token", "unk_token", "chat_template")
                    hub_config["tokenizer_config"] = {k: tok[k] for k in keys if tok.get(k) is not None}
                info["config"] = hub_config
                info["transformersInfo"] = {
                    "auto_model": _auto_model(config),
                    "pipeline_tag": pipeline,
                    "processor": "AutoTokenizer",
                }
            safetensors = _safetensors_info(commit)
            if safetensors:
                info["safetensors"] = safetensors
        if _truthy(params.get("securityStatus")):
            info["securityRepoStatus"] = {"scansDone": True, "filesWithIssues": []}
        expand = params.get("expand") or params.get("expand[]")
        if expand:
            info = {k: v for k, v in info.items() if k in {"_id", "id", *expand}}
        return info

    def _tree_entry(self, commit: _Commit, path: str, expand: bool) -> dict:
        f = commit.files.get(path)
        if f is not None:
            entry: dict = {"type": "file", "oid": f.git_oid, "size": f.size, "path": f.path}
            if f.lfs:
                entry["lfs"] = {"oid": f.sha256, "size": f.size, "pointerSize": f.pointer_size}
            if expand:
                entry["securityFileStatus"] = {
                    "status": "safe",
                    "avScan": {"virusFound": False, "virusNames": None},
                    "pickleImportScan": None,
                }
        else:
            children = sorted(p for p in commit.files if p.startswith(path + "/"))
            tree_oid = hashlib.sha1("\n".join(f"{p}:{commit.files[p].git_oid}" for p in children).encode())
            entry = {"type": "directory", "oid": tree_oid.hexdigest(), "size": 0, "path": path}
        if expand:
            entry["lastCommit"] = {"id": commit.sha, "title": commit.title, "date": commit.date}
        return entry

    @staticmethod
    def _dirs(commit: _Commit) -> set[str]:
        dirs = set()
        for p in commit.files:
            parts = p.split("/")[:-1]
            dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
        return dirs

    def _tree(self, commit: _Commit, path: str, recursive: bool) -> list[str]:
        dirs = self._dirs(commit)
        if path and path not in dirs:
            raise HubError(404, "EntryNotFound", f'{path} does not exist on "{commit.sha}"')
        prefix = path + "/" if path else ""
        paths = []
        for p in sorted(set(commit.files) | dirs):
            if not p.startswith(prefix):
                continue
            if recursive or "/" not in p[len(prefix) :]:
                paths.append(p)
        return paths

    def _file_for_request(self, repo_type: str, segments: list[str], authorization: str | None):
        """Resolve ``{repo}/resolve/{rev}/{path}`` segments to (repo, commit, file), or raise HubError."""
        repo_id, rest = self._split_repo(repo_type, segments)
        if not rest or rest[0] != "resolve" or len(rest) < 3:
            raise HubError(404, None, "Not Found")
        repo = self._repo(repo_type, repo_id)
        self._check_gated(repo, authorization)
        commit = self._commit(repo, unquote(rest[1]))
        path = "/".join(unquote(s) for s in rest[2:])
        f = commit.files.get(path)
        if f is None:
            raise HubError(
                404, "EntryNotFound", f"Entry not found: {path}", headers={"X-Repo-Commit": commit.sha}
            )
        return repo, commit, f

    def _cdn_location(self, repo: _Repo, commit: _Commit, f: HubFile) -> str:
        # Content-addressed like the real CDN, with the repo/commit/path kept for the log and fault injection.
        rtype = "datasets" if repo.repo_type == "dataset" else "models"
        return f"{self.cdn_url}/lfs/{rtype}/{repo.repo_id}/{commit.sha}/{quote(f.path)}?sha256={f.sha256}"


def _truthy(values: list[str] | None) -> bool:
    return bool(values) and values[-1].lower() in {"1", "true", "yes", "on"}


def _json_file(commit: _Commit, path: str) -> dict | None:
    f = commit.files.get(path)
    if f is None:
        return None
    try:
        data = json.loads(f.data)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def _pipeline_tag(config: dict) -> str | None:
    archs = " ".join(config.get("architectures") or [])
    auto_map = config.get("auto_map") or {}
    if "CausalLM" in archs or "LMHeadModel" in archs or "AutoModelForCausalLM" in auto_map:
        return "text-generation"
    if "MaskedLM" in archs:
        return "fill-mask"
    if "SequenceClassification" in archs:
        return "text-classification"
    return None


def _auto_model(config: dict) -> str:
    return {"text-generation": "AutoModelForCausalLM", "fill-mask": "AutoModelForMaskedLM"}.get(
        _pipeline_tag(config) or "", "AutoModel"
    )


def _tags(commit: _Commit) -> list[str]:
    tags: list[str] = []
    config = _json_file(commit, "config.json")
    names = list(commit.files)
    if config:
        tags.append("transformers")
    if any(n.endswith(".safetensors") for n in names):
        tags.append("safetensors")
    if any(n.endswith(".bin") or n.endswith(".pt") for n in names):
        tags.append("pytorch")
    if config and config.get("model_type"):
        tags.append(str(config["model_type"]))
    if config and _pipeline_tag(config):
        tags.append(str(_pipeline_tag(config)))
    if config and config.get("auto_map"):
        tags.append("custom_code")
    card = commit.card_data or {}
    extra = card.get("tags") or []
    tags.extend(str(t) for t in (extra if isinstance(extra, list) else [extra]))
    if card.get("license"):
        tags.append(f"license:{card['license']}")
    tags.append("region:us")
    return list(dict.fromkeys(tags))


_ST_DTYPES = {"F64", "F32", "F16", "BF16", "I64", "I32", "I16", "I8", "U8", "BOOL", "F8_E4M3", "F8_E5M2"}


def _safetensors_info(commit: _Commit) -> dict | None:
    """Parameter counts per dtype from the safetensors headers, like the Hub's ``safetensors`` field."""
    params: dict[str, int] = {}
    found = False
    for f in commit.files.values():
        if not f.path.endswith(".safetensors") or f.size < 8:
            continue
        (n,) = struct.unpack("<Q", f.data[:8])
        try:
            header = json.loads(f.data[8 : 8 + n])
        except ValueError:
            continue
        found = True
        for name, meta in header.items():
            if name == "__metadata__" or not isinstance(meta, dict):
                continue
            count = 1
            for dim in meta.get("shape", []):
                count *= int(dim)
            dtype = meta.get("dtype", "F32")
            params[dtype if dtype in _ST_DTYPES else str(dtype)] = params.get(dtype, 0) + count
    return {"parameters": params, "total": sum(params.values())} if found else None


def parse_front_matter(text: str) -> dict | None:
    """Metadata block of a model card (``---`` YAML ``---``), i.e. the Hub's ``cardData``."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", text, flags=re.DOTALL)
    if not match:
        return None
    block = match.group(1)
    try:
        import yaml  # lazily: PyYAML is a project dependency, but this module must stay importable without it
    except ImportError:  # pragma: no cover - minimal `key: value` fallback
        data: dict = {}
        for line in block.splitlines():
            if ":" in line and not line.startswith((" ", "-")):
                key, value = line.split(":", 1)
                data[key.strip()] = value.strip().strip("'\"") or None
        return data
    data = yaml.safe_load(block)
    return data if isinstance(data, dict) else None


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    timeout = 60

    def setup(self) -> None:
        super().setup()
        with self.server.conn_lock:
            self.server.open_connections.add(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            with self.server.conn_lock:
                self.server.open_connections.discard(self.connection)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - quiet: the hub keeps its own log
        pass

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def do_POST(self) -> None:
        self._dispatch()

    # ------------------------------------------------------------------ plumbing

    def _dispatch(self) -> None:
        hub = self.server.hub
        split = urlsplit(self.path)
        self.params = parse_qs(split.query, keep_blank_values=True)
        self.raw_segments = [s for s in split.path.split("/") if s]
        self.record = RequestRecord(
            listener=self.server.listener,
            method=self.command,
            path=unquote(split.path),
            query=split.query,
            headers=dict(self.headers.items()),
            range=self.headers.get("Range"),
            authorized=self.headers.get("Authorization") is not None,
        )
        hub._record(self.record)
        length = int(self.headers.get("Content-Length") or 0)
        self.body = self.rfile.read(length) if length else b""
        try:
            if self.server.listener == "cdn":
                self._cdn()
            else:
                self._hub()
        except HubError as e:
            self._send_error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as e:  # pragma: no cover - a server bug must show up in the test output
            import traceback

            traceback.print_exc(file=sys.stderr)
            self._send_error(HubError(500, None, f"localhub internal error: {e!r}"))

    def _send(self, status: int, headers: Mapping[str, str], body: bytes = b"") -> None:
        self.record.status = status
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        if "Content-Length" not in headers:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_json(self, data: object, headers: Mapping[str, str] | None = None) -> None:
        body = json.dumps(data).encode()
        self._send(200, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)

    def _send_error(self, error: HubError) -> None:
        headers = {"Content-Type": "application/json; charset=utf-8", "X-Error-Message": error.message}
        if error.code:
            headers["X-Error-Code"] = error.code
        headers.update(error.headers)
        self._send(error.status, headers, json.dumps({"error": error.message}).encode())

    # ------------------------------------------------------------------ hub listener

    def _hub(self) -> None:
        seg = self.raw_segments
        if seg[:2] == ["api", "agent-harnesses"]:
            return self._send_json({"standardEnvVars": [], "harnesses": {}})
        if seg[:2] == ["api", "telemetry"]:
            return self._send(200, {})
        if len(seg) >= 3 and seg[0] == "api" and seg[1] in _API_PREFIXES:
            return self._api(_API_PREFIXES[seg[1]], seg[2:])
        repo_type = "model"
        if seg and seg[0] == "datasets":
            repo_type, seg = "dataset", seg[1:]
        if "resolve" in seg[1:3] and self.command in ("GET", "HEAD"):
            return self._resolve(repo_type, seg)
        raise HubError(404, None, f"localhub does not implement {self.command} {self.record.path}")

    def _api(self, repo_type: str, segments: list[str]) -> None:
        hub = self.server.hub
        repo_id, rest = hub._split_repo(repo_type, segments)
        self.record.repo_id = repo_id
        repo = hub._repo(repo_type, repo_id)
        action = rest[0] if rest else ""
        if action == "" and self.command == "GET":
            return self._send_json(hub._repo_info(repo, hub._commit(repo, "main"), self.params))
        if action == "revision" and len(rest) == 2 and self.command == "GET":
            return self._send_json(hub._repo_info(repo, hub._commit(repo, unquote(rest[1])), self.params))
        if action == "tree" and len(rest) >= 2 and self.command == "GET":
            return self._api_tree(repo, rest)
        if action == "paths-info" and len(rest) == 2 and self.command == "POST":
            commit = hub._commit(repo, unquote(rest[1]))
            form = self._form()
            paths = form.get("paths", [])
            expand = _truthy(form.get("expand"))
            known = set(commit.files) | hub._dirs(commit)
            entries = [hub._tree_entry(commit, p.strip("/"), expand) for p in paths if p.strip("/") in known]
            return self._send_json(entries)
        if action == "refs" and self.command == "GET":
            return self._send_json(
                {
                    "branches": [
                        {"name": n, "ref": f"refs/heads/{n}", "targetCommit": s}
                        for n, s in repo.branches.items()
                    ],
                    "tags": [
                        {"name": n, "ref": f"refs/tags/{n}", "targetCommit": s} for n, s in repo.tags.items()
                    ],
                    "converts": [],
                    **({"pullRequests": []} if _truthy(self.params.get("include_prs")) else {}),
                }
            )
        if action == "commits" and len(rest) == 2 and self.command == "GET":
            revision = unquote(rest[1])
            commit = hub._commit(repo, revision)
            shas = repo.history.get(revision) or [commit.sha]
            shas = shas[shas.index(commit.sha) :] if commit.sha in shas else [commit.sha]
            items = []
            for sha in shas:
                c = repo.commits[sha]
                items.append(
                    {
                        "id": c.sha,
                        "authors": [{"user": "localhub"}],
                        "date": c.date,
                        "title": c.title,
                        "message": "",
                        "formatted": {"title": c.title, "message": ""},
                    }
                )
            return self._send_json(items)
        raise HubError(404, None, f"localhub does not implement {self.command} {self.record.path}")

    def _form(self) -> dict[str, list[str]]:
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            data = json.loads(self.body or b"{}")
            paths = data.get("paths", [])
            return {
                "paths": paths if isinstance(paths, list) else [paths],
                "expand": [str(data.get("expand", False))],
            }
        return parse_qs(self.body.decode(), keep_blank_values=True)

    def _api_tree(self, repo: _Repo, rest: list[str]) -> None:
        hub = self.server.hub
        commit = hub._commit(repo, unquote(rest[1]))
        path = "/".join(unquote(s) for s in rest[2:]).strip("/")
        recursive = _truthy(self.params.get("recursive"))
        expand = _truthy(self.params.get("expand"))
        paths = hub._tree(commit, path, recursive)
        page_size = min(hub.page_size, 50) if expand else hub.page_size
        start = int((self.params.get("cursor") or ["0"])[-1] or 0)
        page = paths[start : start + page_size]
        headers = {}
        if start + page_size < len(paths):
            query = {k: v[-1] for k, v in self.params.items() if k != "cursor"}
            query["cursor"] = str(start + page_size)
            qs = "&".join(f"{quote(k)}={quote(v)}" for k, v in query.items())
            next_url = f"http://{self.headers.get('Host')}{urlsplit(self.path).path}?{qs}"
            headers["Link"] = f'<{next_url}>; rel="next"'
        self._send_json([hub._tree_entry(commit, p, expand) for p in page], headers)

    def _resolve(self, repo_type: str, segments: list[str]) -> None:
        hub = self.server.hub
        repo_id, _ = hub._split_repo(repo_type, segments)
        self.record.repo_id = repo_id
        if "/resolve/" in self.record.path:
            self.record.filename = "/".join(self.record.path.split("/resolve/", 1)[1].split("/")[1:]) or None
        repo, commit, f = hub._file_for_request(repo_type, segments, self.headers.get("Authorization"))
        self.record.filename = f.path
        fail = hub._take_fault("fail", repo.repo_id, f.path)
        if fail is not None:
            raise HubError(int(fail.value), None, "localhub injected failure")  # type: ignore[arg-type]
        if f.lfs:
            headers = {
                "Location": hub._cdn_location(repo, commit, f),
                "ETag": f'"{f.git_oid}"',
                "X-Linked-Etag": f'"{f.sha256}"',
                "X-Linked-Size": str(f.size),
                "X-Repo-Commit": commit.sha,
                "Content-Length": "0",
            }
            return self._send(302, headers)
        self._send_file(repo, f, {"ETag": f'"{f.git_oid}"', "X-Repo-Commit": commit.sha})

    # ------------------------------------------------------------------ cdn listener

    def _cdn(self) -> None:
        hub = self.server.hub
        seg = self.raw_segments
        if (
            len(seg) < 5
            or seg[0] != "lfs"
            or seg[1] not in _API_PREFIXES
            or self.command not in ("GET", "HEAD")
        ):
            raise HubError(404, None, "NoSuchKey")
        repo_type = _API_PREFIXES[seg[1]]
        repo_id, rest = hub._split_repo(repo_type, seg[2:])
        self.record.repo_id = repo_id
        if len(rest) < 2:
            raise HubError(404, None, "NoSuchKey")
        with hub._lock:
            repo = hub._repos.get((repo_type, repo_id))
        commit = repo.commits.get(rest[0]) if repo else None
        path = "/".join(unquote(s) for s in rest[1:])
        self.record.filename = path
        f = commit.files.get(path) if commit else None
        if repo is None or f is None:
            raise HubError(404, None, "NoSuchKey")
        fail = hub._take_fault("fail", repo.repo_id, f.path)
        if fail is not None:
            raise HubError(int(fail.value), None, "localhub injected failure")  # type: ignore[arg-type]
        self._send_file(repo, f, {"ETag": f'"{f.sha256}"', "Last-Modified": "Mon, 01 Jan 2024 00:00:00 GMT"})

    # ------------------------------------------------------------------ file bodies

    def _send_file(self, repo: _Repo, f: HubFile, headers: dict[str, str]) -> None:
        hub = self.server.hub
        data = f.data
        if self.command == "GET":
            corrupt = hub._take_fault("corrupt", repo.repo_id, f.path)
            if corrupt is not None:
                if corrupt.value is not None:
                    data = bytes(corrupt.value)  # type: ignore[arg-type]
                elif data:
                    data = data[:-1] + bytes([data[-1] ^ 0xFF])
        total = len(data)
        status, start, end = 200, 0, total
        range_header = self.headers.get("Range")
        headers = {
            **headers,
            "Accept-Ranges": "bytes",
            "Content-Type": "application/octet-stream",
            "Content-Disposition": f"inline; filename*=UTF-8''{quote(f.path.rsplit('/', 1)[-1])}; "
            f'filename="{f.path.rsplit("/", 1)[-1]}"',
        }
        if range_header:
            parsed = _parse_range(range_header, total)
            if parsed == "unsatisfiable":
                raise HubError(
                    416, None, "Range Not Satisfiable", headers={"Content-Range": f"bytes */{total}"}
                )
            if parsed is not None:
                start, end = parsed  # type: ignore[misc]
                status = 206
                headers["Content-Range"] = f"bytes {start}-{end - 1}/{total}"
        headers["Content-Length"] = str(end - start)
        self._send(status, headers)
        if self.command == "HEAD":
            return
        limit = end - start
        drop = hub._take_fault("drop", repo.repo_id, f.path)
        if drop is not None:
            limit = min(limit, int(drop.value))  # type: ignore[arg-type]
        pos = start
        while pos < start + limit:
            chunk = data[pos : min(pos + _CHUNK, start + limit)]
            with hub._lock:
                self.record.bytes_sent += len(chunk)
            self.wfile.write(chunk)
            pos += len(chunk)
        if drop is not None:
            self.wfile.flush()
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)


def _parse_range(value: str, total: int) -> tuple[int, int] | str | None:
    """Single ``bytes=`` range -> (start, end_exclusive); None to ignore it; "unsatisfiable" for a 416."""
    match = re.fullmatch(r"\s*bytes\s*=\s*(\d*)\s*-\s*(\d*)\s*", value)
    if not match or (not match.group(1) and not match.group(2)):
        return None  # multi-range or garbage: serve the whole file, as many servers do
    first, last = match.groups()
    if not first:
        suffix = int(last)
        return (max(total - suffix, 0), total) if suffix else "unsatisfiable"
    start = int(first)
    end = min(int(last) + 1, total) if last else total
    if start >= total or start >= end:
        return "unsatisfiable"
    return start, end


@contextlib.contextmanager
def no_client_backoff() -> Iterator[list[float]]:
    """Skip huggingface_hub's retry sleeps while inside the block; yields the list of sleeps it asked for.

    There is no setting for them: on connection errors/5xx the client backs off 1+2+4+8+8 s before giving up
    (e.g. a file that is not cached while the hub is down), and waits 1 s before resuming a broken download.
    Import huggingface_hub only after ``start_session_hub``; this helper imports it.
    """
    import importlib
    import time
    import types

    slept: list[float] = []
    proxy = types.SimpleNamespace(**{k: getattr(time, k) for k in dir(time) if not k.startswith("__")})
    proxy.sleep = slept.append
    patched = []
    for name in ("huggingface_hub.utils._http", "huggingface_hub.file_download"):
        module = importlib.import_module(name)
        if getattr(module, "time", None) is time:
            patched.append(module)
            module.time = proxy  # type: ignore[attr-defined]
    try:
        yield slept
    finally:
        for module in patched:
            module.time = time  # type: ignore[attr-defined]


# Environment the client libraries read at import time. Popped: variables that would bypass the local hub.
_POPPED_ENV = (
    "HF_TOKEN",
    "HUGGING_FACE_HUB_TOKEN",
    "HF_TOKEN_PATH",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "HF_DATASETS_OFFLINE",
    "HF_HUB_CACHE",
    "HUGGINGFACE_HUB_CACHE",
    "TRANSFORMERS_CACHE",
    "HF_ASSETS_CACHE",
    "HUGGINGFACE_ASSETS_CACHE",
    "HF_XET_CACHE",
    "HUGGINGFACE_CO_STAGING",
    "HF_HUB_ENABLE_HF_TRANSFER",
    "XDG_CACHE_HOME",
)


_SESSION_HUB: LocalHub | None = None


def start_session_hub(tmp_root: Path | str, *, strict: bool = True) -> LocalHub:
    """Start a LocalHub and point the Hugging Face stack at it (endpoint, empty cache, no token, no Xet).

    Must run before anything imports ``huggingface_hub`` or ``transformers``: both freeze ``HF_ENDPOINT`` and
    the cache paths at import. With ``strict`` (default) that mistake raises instead of silently using the
    real Hub.
    Idempotent within a process: a second call returns the hub already started (``tmp_root`` is then ignored).
    """
    global _SESSION_HUB
    if _SESSION_HUB is not None and os.environ.get("HF_ENDPOINT") == _SESSION_HUB.url:
        return _SESSION_HUB  # idempotent: a root conftest and a package conftest may both ask for it
    already = sorted(m for m in ("huggingface_hub", "transformers") if m in sys.modules)
    if already:
        message = (
            f"start_session_hub() called after importing {', '.join(already)}: HF_ENDPOINT would be ignored"
        )
        if strict:
            raise RuntimeError(message)
        warnings.warn(message, stacklevel=2)
    tmp_root = Path(tmp_root)
    hf_home = tmp_root / "hf_home"
    hf_home.mkdir(parents=True, exist_ok=True)
    hub = LocalHub()
    url = hub.start()
    for name in _POPPED_ENV:
        os.environ.pop(name, None)
    os.environ.update(
        {
            "HF_ENDPOINT": url,
            "HF_HOME": str(hf_home),
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_XET": "1",  # never try Xet (the server sends no X-Xet-* headers anyway)
            "HF_HUB_ETAG_TIMEOUT": "10",
            "HF_HUB_DOWNLOAD_TIMEOUT": "10",
            "HF_HUB_DISABLE_UPDATE_CHECK": "1",
            "HF_HUB_DISABLE_SYMLINKS_WARNING": "1",
            "HF_HUB_DISABLE_EXPERIMENTAL_WARNING": "1",
            "DISABLE_SAFETENSORS_CONVERSION": "1",  # transformers: no conversion-bot thread for .bin repos
            "TOKENIZERS_PARALLELISM": "false",
        }
    )
    _SESSION_HUB = hub
    return hub
