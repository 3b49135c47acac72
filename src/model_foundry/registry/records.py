"""The model registry, derived on demand: what models the project has, where each came from, where it is now.

Sources of truth, all written by DVC, git or MLflow, never by us (no registry file exists):
- `dvc.lock` of the workspace, of every branch/tag commit that changed it and of every DVC experiment
  (registry/history.py): each stage out `models/<name>` is a model version, its md5 the checksum; a stage's
  `models/…` dep is the parent, with the parent's checksum (lineage from the lockfile); the stage's params;
  a stage that read exactly those bytes and wrote a `.json` out gives its metrics;
- `models/*.dvc` files (models added by `foundry import-model`);
- each model's `metadata.json`, from the workspace or read from the DVC cache (`.dir` listing → file md5);
- MLflow runs tagged `model_name` (only when asked: reading them is the slow part; registry/mlflow_runs.py).

Inconsistencies are warnings on the result, never exceptions. Torch-, DVC- and MLflow-free, so
`foundry list-models` answers in a fraction of a second (benchmarks/bench_registry.py).
"""

from __future__ import annotations

import configparser
import difflib
import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from model_foundry.errors import FoundryError
from model_foundry.registry.dvc import dvc_md5, object_path, read_listing
from model_foundry.registry.gc import objects_dir
from model_foundry.registry.history import (
    LOCK_PATH,
    MODELS_DIR,
    Snapshot,
    recorded_snapshots,
    workspace_snapshot,
)

METADATA = "metadata.json"
KEY_METRICS = ("perplexity", "pseudo_perplexity", "val_loss", "mlm_loss")  # the first one a model has
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True)
class Version:
    """One recorded state of `models/<name>`.

    checksum: DVC's md5 of the folder (`<hex>.dir`); size (bytes) and nfiles as DVC recorded them.
    where: the snapshot that recorded it: `workspace`, `experiment <name>` or `commit <sha>`; rev its commit.
    recorded_by: `dvc.lock stage <stage>` or `models/<name>.dvc`.
    parent, parent_checksum: the stage's `models/…` dependency and its md5 (None for imports and scratch).
    params: the producing stage's params as dvc.lock recorded them (params.yaml keys → values).
    metrics: the metrics file of a stage that evaluated exactly these bytes in the same snapshot, or None.
    """

    checksum: str
    size: int | None
    nfiles: int | None
    where: str
    kind: str
    rev: str | None
    time: int
    recorded_by: str
    stage: str | None = None
    parent: str | None = None
    parent_checksum: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] | None = None


@dataclass(frozen=True)
class ModelRecord:
    """One model of the registry: its newest version (the workspace's when checked out) and every other.

    location: `workspace`, `experiment <name>`, `cache only`, `remote only` or `missing`.
    source_kind: `scratch`, `hub`, `folder` or `model` (another model of this repo); source: metadata's.
    method: `scratch`, `import`, `copy`, `full` or `lora r=<r>` (registry/lineage.link_method).
    runs: the MLflow runs tagged with the model (only when the registry was read with MLflow).
    """

    name: str
    path: str
    checksum: str | None
    size: int | None
    nfiles: int | None
    location: str
    in_workspace: bool
    recorded_by: str | None
    experiment: str | None
    experiments: tuple[str, ...]
    architecture: str | None
    method: str | None
    source: str | None
    source_kind: str | None
    parameters: int | None
    created: str | None
    license: str | None
    fine_tuned_from: str | None
    parent_checksum: str | None
    key_metric: tuple[str, float] | None
    metrics: dict[str, Any] | None
    metadata: dict[str, Any] | None
    versions: tuple[Version, ...]
    runs: tuple[Any, ...] = ()
    warnings: tuple[str, ...] = ()

    @property
    def short_checksum(self) -> str:
        return self.checksum[:8] if self.checksum else "-"

    def to_json(self, full: bool = False) -> dict[str, Any]:
        """A JSON-ready dict (the `--json` schema); `full` adds metadata, versions, metrics and runs."""
        data = asdict(self)
        data["key_metric"] = dict([self.key_metric]) if self.key_metric else None
        data["runs"] = [asdict(run) for run in self.runs]
        if not full:
            for key in ("metadata", "versions", "metrics", "runs"):
                data.pop(key)
        return data


@dataclass(frozen=True)
class Registry:
    """Every model the project has made or imported, and the warnings found while reading."""

    root: Path
    models: tuple[ModelRecord, ...]
    warnings: tuple[str, ...]

    def get(self, name: str) -> ModelRecord:
        """The model called `name`; FoundryError (naming the closest names) when there is none."""
        for model in self.models:
            if model.name == name:
                return model
        names = [m.name for m in self.models]
        close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
        hint = f"Did you mean {' or '.join(close)}?" if close else "`foundry list-models` lists them."
        if not names:
            hint = "This project has no models yet: `dvc repro` or `foundry import-model` makes one."
        raise FoundryError(f"No model called {name!r} in {self.root}.", hint)

    def children(self, name: str) -> list[ModelRecord]:
        """The models whose parent is `name` (in any recorded version)."""
        return [
            m for m in self.models if m.fine_tuned_from == name or any(v.parent == name for v in m.versions)
        ]


def _load_yaml(text: str | None) -> Any:
    if not text:
        return None
    try:
        return yaml.load(text, Loader=_Loader)
    except yaml.YAMLError:
        return None


def _model_name(path: Any) -> str | None:
    """`<name>` for a path `models/<name>` (one level; DVC may write a trailing slash)."""
    if not isinstance(path, str):
        return None
    parts = path.strip().rstrip("/").split("/")
    return parts[1] if len(parts) == 2 and parts[0] == MODELS_DIR and parts[1] else None


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _version(snapshot: Snapshot, out: dict[str, Any], recorded_by: str, **more: Any) -> Version:
    """The version an `outs` entry (`md5`, `size`, `nfiles`) of `snapshot` records."""
    return Version(
        checksum=str(out["md5"]),
        size=_int(out.get("size")),
        nfiles=_int(out.get("nfiles")),
        where=snapshot.where,
        kind=snapshot.kind,
        rev=snapshot.rev,
        time=snapshot.time,
        recorded_by=recorded_by,
        **more,
    )


def _lock_versions(snapshot: Snapshot, warnings: list[str]) -> list[tuple[str, Version]]:
    """(name, version) for every `models/<name>` out of the snapshot's dvc.lock."""
    text = snapshot.files.get(LOCK_PATH)
    lock = _load_yaml(text)
    if text and not isinstance(lock, dict):
        warnings.append(f"{snapshot.where}: {LOCK_PATH} does not parse; its models are not listed")
        return []
    stages = lock.get("stages") if isinstance(lock, dict) else None
    if not isinstance(stages, dict):
        return []
    evaluated: dict[tuple[str, str], dict[str, Any]] = {}
    for stage in stages.values():  # metrics: a stage that read a model folder and wrote a .json file
        if not isinstance(stage, dict):
            continue
        inputs = [(n, d.get("md5")) for d in stage.get("deps") or [] if (n := _model_name(d.get("path")))]
        for out in stage.get("outs") or []:
            path = out.get("path") if isinstance(out, dict) else None
            if not (isinstance(path, str) and path.endswith(".json") and path in snapshot.files):
                continue
            try:
                metrics = json.loads(snapshot.files[path])
            except ValueError:
                continue
            for key in inputs:
                if isinstance(metrics, dict) and isinstance(key[1], str):
                    evaluated[(key[0], key[1])] = metrics
    found = []
    for stage_name, stage in stages.items():
        if not isinstance(stage, dict):
            continue
        parents = [(n, d.get("md5")) for d in stage.get("deps") or [] if (n := _model_name(d.get("path")))]
        parent, parent_md5 = parents[0] if len(parents) == 1 else (None, None)
        params = (stage.get("params") or {}).get("params.yaml") or {}
        for out in stage.get("outs") or []:
            name = _model_name(out.get("path")) if isinstance(out, dict) else None
            md5 = out.get("md5") if name else None
            if name is None or not isinstance(md5, str):
                continue
            recorder = f"{LOCK_PATH} stage {stage_name}"
            version = _version(
                snapshot,
                out,
                recorder if snapshot.kind == "workspace" else f"{recorder} of {snapshot.where}",
                stage=str(stage_name),
                parent=parent,
                parent_checksum=parent_md5 if isinstance(parent_md5, str) else None,
                params=params if isinstance(params, dict) else {},
                metrics=evaluated.get((name, md5)),
            )
            found.append((name, version))
    return found


def _dvc_file_versions(snapshot: Snapshot, warnings: list[str]) -> list[tuple[str, Version]]:
    """(name, version) for every `models/<name>.dvc` file of the snapshot."""
    found = []
    for path, text in snapshot.files.items():
        if not (path.startswith(f"{MODELS_DIR}/") and path.endswith(".dvc")):
            continue
        data = _load_yaml(text)
        outs = data.get("outs") if isinstance(data, dict) else None
        out = outs[0] if isinstance(outs, list) and outs and isinstance(outs[0], dict) else None
        if out is None or not isinstance(out.get("md5"), str):
            warnings.append(f"{snapshot.where}: {path} does not parse as a DVC file")
            continue
        name = Path(str(out.get("path", ""))).name or Path(path).stem
        recorder = path if snapshot.kind == "workspace" else f"{path} of {snapshot.where}"
        found.append((name, _version(snapshot, out, recorder)))
    return found


def _remote_config(root: Path) -> tuple[str | None, dict[str, str]]:
    """(the default remote's name, {remote name: url}) from `.dvc/config` and `.dvc/config.local` (which
    wins), read without DVC. A remote without a url maps to ""."""
    default, urls = None, {}
    for name in ("config", "config.local"):
        parser = configparser.ConfigParser(interpolation=None, strict=False)
        try:
            parser.read(root / ".dvc" / name, encoding="utf-8")
        except (configparser.Error, UnicodeDecodeError):
            continue
        if parser.has_option("core", "remote"):
            default = parser.get("core", "remote").strip()
        for section in parser.sections():
            title = section.strip("'")  # DVC writes ['remote "name"']
            if title.startswith("remote ") and title.count('"') == 2:
                urls[title.split('"')[1]] = parser.get(section, "url", fallback="").strip()
    return default, urls


def remotes(root: Path) -> list[str]:
    """The names of the DVC remotes `.dvc/config` (and config.local) configure."""
    return list(_remote_config(root)[1])


def default_remote(root: Path) -> tuple[str | None, str | None]:
    """(name, url) of the workspace's default DVC remote (`core.remote`), (None, None) without one."""
    default, urls = _remote_config(root)
    return default, urls.get(default or "") or None


def local_remote_objects(root: Path) -> Path | None:
    """The md5 objects folder of the default DVC remote when it is a local directory (DVC 3 layout
    `<url>/files/md5`), else None (a cloud remote: whether it holds an object is not checked here)."""
    _, url = default_remote(root)
    if url is None or ("://" in url and not url.startswith("file://")):
        return None
    path = Path(url.removeprefix("file://")).expanduser()
    return (path if path.is_absolute() else root / ".dvc" / path) / "files" / "md5"


cached_object = object_path  # the names the registry's callers use (registry/dvc.py owns the format)
cache_listing = read_listing


def in_cache(objects: Path, checksum: str) -> bool:
    """Whether the DVC cache holds the folder `checksum` whole (its listing and every file)."""
    listing = cache_listing(objects, checksum)
    return listing is not None and all(cached_object(objects, e.get("md5", "")).is_file() for e in listing)


def _metadata_from_cache(objects: Path, checksum: str) -> dict[str, Any] | None:
    for entry in cache_listing(objects, checksum) or []:
        if entry.get("relpath") == METADATA:
            try:
                data = json.loads(cached_object(objects, entry["md5"]).read_text(encoding="utf-8"))
            except (OSError, ValueError, KeyError):
                return None
            return data if isinstance(data, dict) else None
    return None


def _source_kind(meta: dict[str, Any]) -> str | None:
    from model_foundry.config import repo_model_name

    source = meta.get("source")
    if not isinstance(source, str):
        return None
    if source == "scratch":
        return "scratch"
    if repo_model_name(source) is not None:
        return "model"
    return "hub" if meta.get("revision") or meta.get("model_id") else "folder"


def _key_metric(metrics: dict[str, Any] | None) -> tuple[str, float] | None:
    for key in KEY_METRICS:
        value = (metrics or {}).get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return key, float(value)
    return None


class _FolderHashes:
    """DVC md5s of workspace folders, with file md5s cached by `stat` (hashcache.HashCache), so a second
    listing of unchanged models costs one stat per file."""

    def __init__(self, root: Path) -> None:
        from model_foundry.hashcache import CACHE_DIR, HashCache
        from model_foundry.registry.dvc import _md5_file

        self.cache = HashCache(root / CACHE_DIR / "dvc-md5.json", hasher=_md5_file)

    def __call__(self, folder: Path) -> str:
        return dvc_md5(folder, file_md5=self.cache.digest)

    def save(self) -> None:
        self.cache.save()


def scan(root: str | Path, with_runs: bool = False) -> Registry:
    """Read the registry of the project at `root` (see the module docstring). Never raises for a damaged or
    missing source: each problem is a warning. `with_runs` also reads MLflow (slower)."""
    root = Path(root).resolve()
    warnings: list[str] = []
    snapshots = [workspace_snapshot(root, ("metrics.json",)), *recorded_snapshots(root)]
    versions: dict[str, list[Version]] = {}  # unique checksums, newest record first
    experiments: dict[str, dict[str, str | None]] = {}  # name → experiment → the checksum it recorded
    for snapshot in snapshots:
        for name, version in _lock_versions(snapshot, warnings) + _dvc_file_versions(snapshot, warnings):
            known = versions.setdefault(name, [])
            if not any(v.checksum == version.checksum for v in known):
                known.append(version)
            if version.kind == "experiment":
                experiments.setdefault(name, {}).setdefault(snapshot.label, version.checksum)
    objects = objects_dir(root)
    has_remote = bool(remotes(root))
    local_remote = local_remote_objects(root) if has_remote else None
    hashes = _FolderHashes(root)
    models_dir = root / MODELS_DIR
    folders = (  # hidden names are temp folders of writes in progress (model_foundry.leftovers)
        sorted(p.name for p in models_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
        if models_dir.is_dir()
        else []
    )
    records = []
    for name in sorted(set(versions) | set(folders)):
        notes: list[str] = []
        recorded = versions.get(name, [])
        folder = models_dir / name
        present = folder.is_dir()
        current = None
        if present:
            try:
                current = hashes(folder)
            except OSError as e:
                notes.append(f"models/{name} cannot be read: {e.strerror or e}")
        shown = next((v for v in recorded if current is not None and v.checksum == current), None)
        if present and shown is None:
            workspace = next((v for v in recorded if v.kind == "workspace"), None)
            if workspace is not None:
                notes.append(
                    f"models/{name} changed since {workspace.recorded_by} recorded it "
                    f"({workspace.checksum[:8]}, now {(current or '?')[:8]}): "
                    f"`dvc checkout models/{name}` restores it, "
                    f"`foundry validate-model {name}` names the files"
                )
            elif recorded:
                notes.append(f"models/{name} matches no recorded version (edited after `foundry get`?)")
            else:
                notes.append(
                    f"models/{name} has no DVC record (no stage output, no models/{name}.dvc): "
                    f"`dvc add models/{name}` tracks it"
                )
        if shown is None and recorded and not present:
            shown = recorded[0]  # not checked out: the newest record
        elif shown is None and present:  # changed, or no record: only the workspace's own record applies
            shown = next((v for v in recorded if v.kind == "workspace"), None)
        meta: dict[str, Any] | None = None
        if present:
            try:
                loaded = json.loads((folder / METADATA).read_text(encoding="utf-8"))
                meta = loaded if isinstance(loaded, dict) else None
                if meta is None:
                    notes.append(f"models/{name}/{METADATA} is not a JSON object")
            except FileNotFoundError:
                notes.append(f"models/{name} has no {METADATA}")
            except (OSError, ValueError) as e:
                notes.append(f"models/{name}/{METADATA} does not parse: {e}")
        elif shown is not None:
            meta = _metadata_from_cache(objects, shown.checksum)
        if present:
            location = "workspace"
        elif shown is not None and in_cache(objects, shown.checksum):
            exp = next((e for e, md5 in experiments.get(name, {}).items() if md5 == shown.checksum), None)
            location = f"experiment {exp}" if exp else "cache only"
            if shown.kind == "workspace":
                notes.append(
                    f"models/{name} is recorded in the workspace but not checked out: `dvc checkout`"
                )
        elif (
            shown is not None
            and has_remote
            and (local_remote is None or in_cache(local_remote, shown.checksum))
        ):
            location = "remote only"  # checked for a local-directory remote; assumed for a cloud one
        else:
            location = "missing"
            if shown is not None:
                notes.append(
                    f"models/{name} ({shown.checksum[:8]}, {shown.where}) is neither checked out nor in the "
                    + (
                        "DVC cache nor in the default DVC remote"
                        if has_remote
                        else "DVC cache, and no DVC remote is configured"
                    )
                )
        made_in = experiments.get(name, {})
        records.append(_record(name, shown, recorded, made_in, meta, present, location, notes))
    hashes.save()
    registry = Registry(root, tuple(records), tuple(warnings))
    return with_mlflow_runs(registry) if with_runs else registry


def _record(
    name: str,
    shown: Version | None,
    recorded: list[Version],
    made_in: dict[str, str | None],
    meta: dict[str, Any] | None,
    present: bool,
    location: str,
    notes: list[str],
) -> ModelRecord:
    from model_foundry.registry.lineage import link_method, parent_of

    meta = meta or {}
    parent, parent_checksum = (shown.parent, shown.parent_checksum) if shown else (None, None)
    if parent is None:
        parent, parent_checksum = parent_of(meta)
    metrics = shown.metrics if shown else None
    made_by = next((exp for exp, md5 in made_in.items() if shown and md5 == shown.checksum), None)
    architecture = meta.get("architecture")
    return ModelRecord(
        name=name,
        path=f"{MODELS_DIR}/{name}",
        checksum=shown.checksum if shown else None,
        size=shown.size if shown else None,
        nfiles=shown.nfiles if shown else None,
        location=location,
        in_workspace=present,
        recorded_by=shown.recorded_by if shown else None,
        experiment=made_by,
        experiments=tuple(made_in),
        architecture=architecture if isinstance(architecture, str) else None,
        method=link_method(meta) if meta else None,
        source=meta.get("source") if isinstance(meta.get("source"), str) else None,
        source_kind=_source_kind(meta),
        parameters=_int(meta.get("parameters")),
        created=meta.get("created_at") if isinstance(meta.get("created_at"), str) else None,
        license=meta.get("license") if isinstance(meta.get("license"), str) else None,
        fine_tuned_from=parent,
        parent_checksum=parent_checksum,
        key_metric=_key_metric(metrics),
        metrics=metrics,
        metadata=meta or None,
        versions=tuple(recorded),
        warnings=tuple(notes),
    )


def with_mlflow_runs(registry: Registry) -> Registry:
    """The registry with each model's MLflow runs (tag `model_name`) attached; a store that is missing,
    locked or damaged is a warning. A model without an evaluation in dvc.lock takes its key metric from its
    newest run that has one (the evaluate stage logs `eval_<metric>` into the training run)."""
    from model_foundry.registry.mlflow_runs import read_runs, tracking_uri_for

    runs, problems = read_runs(tracking_uri_for(registry.root))
    models = []
    for model in registry.models:
        mine = tuple(runs.get(model.name, ()))
        key = model.key_metric
        for run in mine if key is None else ():
            metrics = {k.removeprefix("eval_"): v for k, v in run.metrics.items() if k.startswith("eval_")}
            if (key := _key_metric(metrics)) is not None:
                break
        models.append(replace(model, runs=mine, key_metric=key))
    return replace(registry, models=tuple(models), warnings=(*registry.warnings, *problems))


def filter_models(
    models: Iterable[ModelRecord],
    architecture: str | None = None,
    source: str | None = None,
    experiment: str | None = None,
) -> list[ModelRecord]:
    """The models matching every filter given: architecture (exact), source kind (`scratch`, `hub`,
    `folder`, `model`) or exact source, and an experiment that recorded them."""
    return [
        m
        for m in models
        if (architecture is None or m.architecture == architecture)
        and (source is None or source in (m.source_kind, m.source))
        and (experiment is None or experiment in m.experiments)
    ]
