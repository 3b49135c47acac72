"""Free the DVC cache objects that nothing in the project references any more (`foundry delete-model --gc`).

Scope: an object of the cache's `files/md5` folder is kept when its md5 is named by
  - the workspace: every `dvc.lock` (outs and deps) and every `*.dvc` file below the project root
    (outside `.git/` and `.dvc/`), committed or not, and those of experiments running in `.dvc/tmp/exps/`;
  - any git commit reachable from any ref: every branch, tag, remote-tracking branch, the latest stash, HEAD,
    and every DVC experiment (refs/exps/**, whose commits hold each experiment's dvc.lock), skipping only the
    refs/exps/exec/* bookkeeping refs of a running experiment;
  - a `.dir` listing of a kept folder (its files' md5s, read from the cache; a missing listing is fine).
Everything else is garbage. That is `dvc gc -w --all-commits --all-branches --all-tags --all-experiments`,
plus the stash and remote-tracking branches; plain `dvc gc -w` keeps only the workspace and would delete the
data of every other experiment and commit.

Read cheaply, without DVC: one `git log` for the commits' root trees, then one `git cat-file --batch` process
that walks the trees (each distinct tree read once) and reads each distinct `dvc.lock` / `*.dvc` blob once.
The old DVC 2 cache layout (objects in the cache root, not `files/md5`) is left alone, as is the run cache.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
import subprocess
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from model_foundry.errors import FoundryError
from model_foundry.registry.dvc import read_listing

_MD5 = re.compile(r"^[0-9a-f]{32}(\.dir)?$")
_OBJECT_NAME = re.compile(r"^[0-9a-f]{30}(\.dir)?$")  # a cache file's name: the md5 without its first 2 hex


@dataclass(frozen=True)
class CacheObject:
    """One file of the DVC cache: `path` (absolute), its `md5` (`<hex>` or `<hex>.dir`), `size` in bytes."""

    path: Path
    md5: str
    size: int


@dataclass(frozen=True)
class GcReport:
    """What a garbage collection freed (or, for a dry run, would free): object count and bytes."""

    objects: int
    bytes: int


# ---------------------------------------------------------------------------------------------------------
# Where the cache is


def cache_dir(root: Path) -> Path:
    """The project's DVC cache folder: `cache.dir` from `.dvc/config.local` or `.dvc/config` (relative paths
    are relative to `.dvc/`, as DVC reads them), else `<root>/.dvc/cache`. A global or system `cache.dir`
    (DVC's other config levels) is not read."""
    dvc_dir = Path(root) / ".dvc"
    found: str | None = None
    for name in ("config", "config.local"):  # config.local wins
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read(dvc_dir / name, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue
        if parser.has_option("cache", "dir"):
            found = parser.get("cache", "dir").strip().strip("'\"")
    if not found:
        return dvc_dir / "cache"
    return (dvc_dir / os.path.expanduser(found)).resolve()


def objects_dir(root: Path) -> Path:
    """The cache's DVC 3 object folder: `<cache>/files/md5/<2 hex>/<30 hex>[.dir]`."""
    return cache_dir(root) / "files" / "md5"


# ---------------------------------------------------------------------------------------------------------
# What is referenced


def _shape_problem(doc: Any, dvc_file: bool) -> str | None:
    """Why a parsed dvc.lock / .dvc document is not one DVC would accept (the parts that name data), or None.

    A `.dvc` file needs a non-empty `outs` list of mappings; `outs`/`deps` anywhere must be lists of mappings
    and `stages` a mapping of mappings (DVC's own schema is stricter; these are what gc relies on)."""
    if doc is None:
        return "it is empty" if dvc_file else None
    if not isinstance(doc, dict):
        return "it is not a mapping"
    if dvc_file and not (isinstance(doc.get("outs"), list) and doc["outs"]):
        return "`outs` is not a non-empty list"
    stages = doc.get("stages", {})
    if not isinstance(stages, dict) or not all(isinstance(s, dict) for s in stages.values()):
        return "`stages` is not a mapping of stages"
    for node in [doc, *stages.values()]:
        for key in ("outs", "deps"):
            entries = node.get(key, [])
            if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
                return f"`{key}` is not a list of entries"
    return None


def _load_yaml(text: str | bytes, where: str, dvc_file: bool = False) -> Any:
    """A parsed dvc.lock or .dvc file. Raises FoundryError when it does not parse, repeats a key or does not
    have DVC's shape (`_shape_problem`): what it references is unknown then, and collecting garbage could
    delete the only copy of its data."""
    import yaml

    class StrictLoader(yaml.SafeLoader):
        """A safe loader that refuses a repeated key (YAML keeps the last one silently; DVC refuses it)."""

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode) -> dict[Any, Any]:
        keys = [loader.construct_object(k) for k, _ in node.value]
        repeated = sorted({str(k) for k in keys if keys.count(k) > 1})
        if repeated:
            raise yaml.constructor.ConstructorError(
                None, None, f"repeated key {repeated[0]!r}", node.start_mark
            )
        return loader.construct_mapping(node)

    StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    hint = (
        "Repair or restore that file (`git checkout -- <file>`, `git log` for a committed one), then run the "
        "command again."
    )
    try:
        doc = yaml.load(text, Loader=StrictLoader)  # noqa: S506  (a safe loader)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise FoundryError(
            f"{where} does not parse ({type(e).__name__}: {str(e).splitlines()[0]}): what it references is "
            "unknown, so no cache object is collected.",
            hint,
        ) from None
    if problem := _shape_problem(doc, dvc_file):
        raise FoundryError(
            f"{where} is not a valid DVC file ({problem}): what it references is unknown, so no cache object "
            "is collected.",
            hint,
        )
    return doc


def _md5s_in(doc: Any) -> Iterator[str]:
    """Every value of an `md5` key anywhere in a parsed dvc.lock or .dvc file (outs, deps, `files:` lists).

    Deliberately broad: an md5 that names no cache object (a source file's dep) costs nothing, and one we
    missed would cost data."""
    stack = [doc]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "md5" and isinstance(value, str) and _MD5.match(value):
                    yield value
                elif isinstance(value, dict | list):
                    stack.append(value)
        elif isinstance(node, list):
            stack.extend(node)


def _is_dvc_file(name: str) -> bool:
    return name == "dvc.lock" or (name.endswith(".dvc") and name != ".dvc")


def workspace_dvc_files(root: Path) -> list[Path]:
    """Every `dvc.lock` and `*.dvc` file below `root`, outside `.git/` and `.dvc/` folders, plus those of the
    workspaces of experiments running in temp folders (`.dvc/tmp/exps/`), sorted."""
    found: list[Path] = []
    for top in (Path(root), Path(root) / ".dvc" / "tmp" / "exps"):
        for folder, dirs, files in os.walk(top):
            dirs[:] = [d for d in dirs if d not in (".git", ".dvc")]
            found.extend(Path(folder) / f for f in files if _is_dvc_file(f))
    return sorted(found)


def _git(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=False)


class _CatFile:
    """One `git cat-file --batch` process: `read(sha)` returns (type, bytes), or None for a missing object."""

    def __init__(self, root: Path) -> None:
        env = {**os.environ, "GIT_NO_LAZY_FETCH": "1"}  # a partial clone must not go to the network
        self.proc = subprocess.Popen(
            ["git", "cat-file", "--batch"], cwd=root, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.stdin: IO[bytes] = self.proc.stdin
        self.stdout: IO[bytes] = self.proc.stdout

    def read(self, sha: str) -> tuple[str, bytes] | None:
        self.stdin.write(sha.encode("ascii") + b"\n")
        self.stdin.flush()
        header = self.stdout.readline().split()
        if len(header) != 3:  # "<sha> missing"
            return None
        kind, size = header[1].decode("ascii"), int(header[2])
        data = self.stdout.read(size)
        self.stdout.read(1)  # the newline after the content
        return kind, data

    def close(self) -> None:
        self.stdin.close()
        self.proc.wait()


def _tree_entries(data: bytes, hash_len: int) -> Iterator[tuple[bytes, str, str]]:
    """(mode, name, sha) of each entry of a raw git tree object: `<mode> <name>\\0<binary sha>`."""
    i = 0
    while i < len(data):
        space = data.index(b" ", i)
        nul = data.index(b"\0", space)
        yield (
            data[i:space],
            data[space + 1 : nul].decode("utf-8", "surrogateescape"),
            data[nul + 1 : nul + 1 + hash_len].hex(),
        )
        i = nul + 1 + hash_len


def _git_history_md5s(root: Path) -> set[str]:
    """The md5s that the dvc.lock and *.dvc files of every commit of every ref name (see the module doc).

    An empty set outside a git repository or in one without commits."""
    if _git(root, "rev-parse", "--git-dir").returncode != 0:
        return set()
    log = _git(root, "log", "--exclude=refs/exps/exec/*", "--all", "--format=%T")
    roots = set(log.stdout.split()) if log.returncode == 0 else set()
    if not roots:
        return set()
    object_format = _git(root, "rev-parse", "--show-object-format").stdout.strip() or "sha1"
    hash_len = 32 if object_format == "sha256" else 20

    md5s: set[str] = set()
    cat = _CatFile(root)
    try:
        seen_trees: set[str] = set()
        blobs: set[str] = set()
        stack = list(roots)
        while stack:  # every distinct tree once: commits share most of their subtrees
            tree = stack.pop()
            if tree in seen_trees:
                continue
            seen_trees.add(tree)
            obj = cat.read(tree)
            if obj is None or obj[0] != "tree":
                continue
            for mode, name, sha in _tree_entries(obj[1], hash_len):
                if mode == b"40000":
                    stack.append(sha)
                elif mode in (b"100644", b"100755") and _is_dvc_file(name):
                    blobs.add(sha)
        for blob in blobs:
            obj = cat.read(blob)
            if obj is not None:
                md5s.update(
                    _md5s_in(_load_yaml(obj[1], f"a committed dvc.lock or .dvc file (git blob {blob})"))
                )
    finally:
        cat.close()
    return md5s


def referenced_md5s(root: Path, excluding: Collection[Path] = ()) -> set[str]:
    """Every DVC md5 that the workspace, any commit of any ref or any DVC experiment references (module doc),
    `.dir` listings expanded into their files' md5s (each `<hex>` or `<hex>.dir`).

    `excluding`: workspace `*.dvc` files to treat as already deleted (what `delete-model --gc --dry-run`
    reports before deleting anything). A committed copy of such a file still counts.
    """
    root = Path(root)
    skip = {Path(p).resolve() for p in excluding}
    md5s = _git_history_md5s(root)
    for path in workspace_dvc_files(root):
        if path.resolve() in skip:
            continue
        try:
            text = path.read_bytes()
        except OSError as e:
            raise FoundryError(
                f"{path} cannot be read ({e.strerror or e}): what it references is unknown, so no cache "
                "object is collected.",
                "Fix its permissions, then run the command again.",
            ) from None
        md5s.update(_md5s_in(_load_yaml(text, str(path.relative_to(root)), dvc_file=path.suffix == ".dvc")))
    objects = objects_dir(root)
    for md5 in [m for m in md5s if m.endswith(".dir")]:
        listing = read_listing(objects, md5)  # None: not in this cache (never pulled, or collected)
        md5s.update(e["md5"] for e in listing or [] if _MD5.match(e["md5"]))
    return md5s


# ---------------------------------------------------------------------------------------------------------
# What is garbage


def cache_objects(root: Path) -> list[CacheObject]:
    """Every object file of the cache's `files/md5` folder, sorted by path. Files whose name is no md5 (a
    temp file DVC is writing) are not objects and are never listed."""
    objects = objects_dir(root)
    found = []
    for prefix in sorted(objects.iterdir()) if objects.is_dir() else []:
        if len(prefix.name) != 2 or not prefix.is_dir():
            continue
        for path in sorted(prefix.iterdir()):
            md5 = prefix.name + path.name
            if _OBJECT_NAME.match(path.name) and _MD5.match(md5) and path.is_file():
                found.append(CacheObject(path, md5, path.stat().st_size))
    return found


def unreferenced_objects(root: Path, excluding: Collection[Path] = ()) -> list[CacheObject]:
    """The cache objects that `referenced_md5s(root, excluding)` does not name, sorted by path."""
    keep = referenced_md5s(root, excluding)
    return [obj for obj in cache_objects(root) if obj.md5 not in keep]


@contextlib.contextmanager
def _dvc_lock(root: Path) -> Iterator[None]:
    """Hold DVC's repository lock (`.dvc/tmp/lock`), so no `dvc add` / `dvc exp run` writes objects whose
    .dvc file or dvc.lock does not exist yet while we decide what is garbage."""
    import zc.lockfile  # type: ignore[import-untyped]  # a DVC dependency

    tmp = Path(root) / ".dvc" / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    try:
        lock = zc.lockfile.LockFile(str(tmp / "lock"))
    except zc.lockfile.LockError as e:
        raise FoundryError(
            "DVC is running in this project (its lock .dvc/tmp/lock is held): not collecting garbage now.",
            "Wait for the running `dvc` command (e.g. `dvc exp run`) to finish, then run it again.",
        ) from e
    try:
        yield
    finally:
        lock.close()


def collect_garbage(root: Path, dry_run: bool, excluding: Collection[Path] = ()) -> GcReport:
    """Delete exactly the objects `unreferenced_objects(root, excluding)` lists; return their count and bytes.

    `dry_run` deletes nothing and reports the same numbers. Holds DVC's repository lock while it works.
    Raises FoundryError when `root` is not a DVC project, when DVC holds its lock, and when the cache lies
    outside the project (`cache.dir` set elsewhere: possibly shared with other projects, whose references
    are not read here).
    """
    root = Path(root).resolve()
    if not (root / ".dvc").is_dir():
        raise FoundryError(f"{root} is not a DVC project (no .dvc folder).", "Run it in the project's root.")
    cache = cache_dir(root).resolve()
    if not cache.is_relative_to(root):
        raise FoundryError(
            f"The DVC cache ({cache}) lies outside the project: other projects may share it, and their "
            "data would look unreferenced here.",
            "Collect it with DVC, naming every project that uses it: "
            "`dvc gc -w --all-commits --all-experiments -p <other projects>`.",
        )
    with _dvc_lock(root):
        garbage = unreferenced_objects(root, excluding)
        if not dry_run:
            for obj in garbage:
                obj.path.unlink(
                    missing_ok=True
                )  # DVC makes objects read-only; unlinking needs only the folder
    return GcReport(objects=len(garbage), bytes=sum(obj.size for obj in garbage))
