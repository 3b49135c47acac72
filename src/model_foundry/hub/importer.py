"""The import, step by step: SOURCE → plan → licence → download → the canonical folder `models/<name>/`.

`import_model` is what `foundry import-model` runs; the pipeline's import and convert stages run the same
steps split in two (`plan_import` + `checked_download` + `source_record`, then `plan_from_record` +
`materialize`), so a catalog entry with `source: Qwen/Qwen2.5-0.5B` and the CLI produce the same folder.

Steps: parse SOURCE → read the repo's file list and config.json (validate the family, refuse remote code and
pickles) → estimate memory → show the licence and get it accepted → download what is needed into the Hub
cache (verified against the Hub's sha256) → build the canonical folder in a temp dir and rename it.
Messages, warnings, progress bars and the licence question go through one `Reporter` (`report.py`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from model_foundry.errors import FoundryError
from model_foundry.hub import convert as _convert
from model_foundry.hub import download as _download
from model_foundry.hub.download import LocalFile, Snapshot, fetch
from model_foundry.hub.license import LicenseInfo, acknowledge, card_metadata, read_license
from model_foundry.hub.naming import check_name, choose_name, default_name, taken
from model_foundry.hub.report import Reporter
from model_foundry.hub.sources import FolderSource, HubSource, parse_source
from model_foundry.hub.validate import (
    README,
    FileSelection,
    MemoryEstimate,
    check_memory,
    estimate_memory,
    family_for,
    remote_code_note,
    select_files,
)
from model_foundry.model_folder.layout import CONFIG_NAME, METADATA_NAME

__all__ = [
    "ImportPlan",
    "ImportResult",
    "accept_for_pipeline",
    "checked_download",
    "credentials_warning",
    "import_model",
    "materialize",
    "plan_from_record",
    "plan_import",
    "source_record",
]


@dataclass
class ImportPlan:
    """Everything known before the weights are downloaded."""

    source: str  # SOURCE as given, without credentials
    snapshot: Snapshot
    architecture: str  # registry name, e.g. hf-qwen2
    config: dict[str, Any]
    selection: FileSelection
    license: LicenseInfo
    memory: MemoryEstimate | None = None
    notes: list[str] = field(default_factory=list)  # shown as warnings before the download

    @property
    def weight_bytes(self) -> int:
        """Size of the selected weight files on the Hub (or in the folder), in bytes."""
        return sum(self.snapshot.files[w].size or 0 for w in self.selection.weights)


@dataclass
class ImportResult:
    """What `import_model` did: the folder, what metadata.json records, and how long it took."""

    name: str
    path: Path
    architecture: str
    model_id: str | None
    revision: str | None  # resolved commit sha (Hub)
    source: str
    parameters: int
    dtype: str | None
    license: str | None
    sha256: dict[str, str]  # weight file → sha256 hex digest
    weight_bytes: int
    linked_files: int  # weight files hard-linked (from the Hub cache, or a folder with `link`)
    seconds: float
    warnings: list[str] = field(default_factory=list)  # what `reporter.warn` was given during this import


def _read_json(path: Path, name: str, where: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as e:
        raise FoundryError(
            f"{where}/{name} is not valid JSON: {e}", "The file is damaged; re-download it."
        ) from None


def plan_import(
    source: str,
    revision: str | None = None,
    *,
    allow_pickle: bool = False,
    cache_dir: str | Path | None = None,
    reporter: Reporter | None = None,
) -> ImportPlan:
    """Resolve and validate SOURCE, reading only small files (config, shard index, README, licence).

    Credentials in SOURCE are stripped with a warning: `plan.source` never holds them (see `sources`).
    Returns the plan with its memory estimate. Raises FoundryError for a source that cannot be imported: not
    found, gated without a token, no config.json, unsupported family or remote code only, pickle weights
    without `allow_pickle`, damaged JSON.
    """
    reporter = reporter or Reporter()
    src = parse_source(source, revision)
    if isinstance(src, HubSource) and src.credentials:
        reporter.warn(credentials_warning(src))
        source = src.text
    if isinstance(src, HubSource):
        snap = _download.open_hub(src, cache_dir, reporter)
        where = src.repo_id
        hint = snap.config_hint or {}
        if hint.get("model_type"):  # fail on an unsupported family before asking for any file
            family_for(hint, where)
        if snap.gated and not _download.token_available():
            raise FoundryError(
                f"{src.repo_id} is a gated repository and no Hugging Face token is set.",
                f"Accept its conditions at {src.url}, then set HF_TOKEN to a token of that account "
                "(or run `hf auth login`).",
            )
    else:
        assert isinstance(src, FolderSource)
        snap = _download.open_folder(src)
        where = str(src.path)
    if CONFIG_NAME not in snap.files:
        family_for(None, where)
    config = _read_json(fetch(snap, [CONFIG_NAME], progress=False)[CONFIG_NAME].path, CONFIG_NAME, where)
    architecture = family_for(config, where)

    def read_small(name: str) -> Any:
        return _read_json(fetch(snap, [name], progress=False)[name].path, name, where)

    selection = select_files(snap.files, read_small, allow_pickle, where)
    docs = fetch(snap, selection.docs, progress=False)
    readme = docs[README].path.read_text(encoding="utf-8", errors="replace") if README in docs else None
    card = card_metadata(readme) or snap.card
    lic = read_license(card, {n: f.path for n, f in docs.items()})
    plan = ImportPlan(source, snap, architecture, config, selection, lic)
    stored = config.get("torch_dtype") or config.get("dtype")
    plan.memory = estimate_memory(
        plan.weight_bytes, snap.parameters, stored if isinstance(stored, str) else None
    )
    note = remote_code_note(config)
    if note:
        plan.notes.append(note)
    return plan


def credentials_warning(src: HubSource) -> str:
    """The warning for a SOURCE that carried credentials (they are neither used nor recorded)."""
    return (
        f"warning: SOURCE carried {' and '.join(src.credentials)}: they are not used and not recorded "
        f"(recorded as {src.text}). Set HF_TOKEN, or run `hf auth login`, for private or gated repositories."
    )


def _license_owner(plan: ImportPlan) -> str:
    return plan.snapshot.repo_id or plan.snapshot.where


def checked_download(
    plan: ImportPlan,
    acknowledge_license: Callable[[], dict[str, Any] | None],
    *,
    force: bool,
    reporter: Reporter,
) -> tuple[dict[str, Any] | None, dict[str, LocalFile]]:
    """What every import does once it has a plan, CLI and pipeline alike: report the notes and the memory
    estimate, enforce the memory limit, get the licence acknowledged (`acknowledge_license()`), then
    download (the Hub cache is reused; progress bars when `reporter.progress`).

    Returns (licence acknowledgment or None, {file name: local file}). Raises FoundryError above the memory
    limit without `force`, for an unaccepted licence, and for a failed or corrupt download.
    """
    for note in plan.notes:
        reporter.warn(note)
    assert plan.memory is not None
    reporter.info(f"{plan.snapshot.label}: {plan.architecture} — {plan.memory.describe()}")
    check_memory(plan.memory, force, reporter)
    acknowledgment = acknowledge_license()
    return acknowledgment, fetch(plan.snapshot, plan.selection.all, reporter.progress)


def import_model(
    source: str,
    models_dir: str | Path = "models",
    *,
    name: str | None = None,
    revision: str | None = None,
    accept_license: bool = False,
    force: bool = False,
    allow_pickle: bool = False,
    version_suffix: bool = False,
    init_missing: bool = False,
    link: bool = False,
    reporter: Reporter | None = None,
    cache_dir: str | Path | None = None,
) -> ImportResult:
    """Import SOURCE into `models_dir/<name>/`; on any error nothing is left under `models_dir`.

    Without `accept_license` the licence is asked for through `reporter.confirm` (`foundry import-model`
    asks at a terminal); where there is nobody to ask, an unaccepted licence is an error. Weights from the
    Hub cache are hard-linked; a local folder's are copied unless `link` (faster, but an in-place re-save of
    the folder would then change the imported model). A checkpoint that lacks tensors the family's class
    needs is refused unless `init_missing`: then they are initialised once, seeded, and saved into the
    folder (see `convert.complete_weights`). Messages and progress bars go to `reporter` (default: stderr).

    Concurrent imports into one project are safe: the folder is built privately and renamed into
    `models_dir/<name>` inside the project lock (`_build_and_claim`), so two imports racing for one name end
    as `<name>` and `<name>-v2` with `version_suffix`, or the second fails with "already exists".

    Returns what was imported (`ImportResult`). Raises FoundryError for every bad input: SOURCE, name
    (taken, not allowed), repo, licence, memory, weights (see `plan_import`, `checked_download`), and when
    another run holds the project lock longer than `project.lock_timeout()`.
    """
    t0 = time.perf_counter()
    reporter = reporter or Reporter()
    first_warning = len(reporter.warnings)
    src = parse_source(source, revision)
    _verify_own_folder(src)
    models_dir = Path(models_dir)
    wanted = check_name(name) if name is not None else default_name(src)
    final = choose_name(models_dir, wanted, version_suffix)
    plan = plan_import(source, revision, allow_pickle=allow_pickle, cache_dir=cache_dir, reporter=reporter)
    ack, local = checked_download(
        plan,
        lambda: acknowledge(
            plan.license, _license_owner(plan), accepted=accept_license, via="--accept-license",
            reporter=reporter,
        ),
        force=force, reporter=reporter,
    )  # fmt: skip
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat()

    def build(out: Path, name: str) -> dict[str, Any]:
        return materialize(
            plan, local, out, name, ack, created_at=now, link_local=link, reporter=reporter,
            init_missing=init_missing,
        )  # fmt: skip

    final, meta = _build_and_claim(models_dir, wanted, final, version_suffix, build, reporter)
    return ImportResult(
        name=final,
        path=models_dir / final,
        architecture=plan.architecture,
        model_id=meta["model_id"],
        revision=meta["revision"],
        source=plan.source,
        parameters=meta["parameters"],
        dtype=meta["dtype"],
        license=meta["license"],
        sha256=meta["sha256"],
        weight_bytes=plan.weight_bytes,
        linked_files=meta.get("import", {}).get("linked_files", 0),
        seconds=time.perf_counter() - t0,
        warnings=reporter.warnings[first_warning:],
    )


def _build_and_claim(
    models_dir: Path,
    wanted: str,
    final: str,
    version_suffix: bool,
    build: Callable[[Path, str], dict[str, Any]],
    reporter: Reporter,
) -> tuple[str, dict[str, Any]]:
    """Build the folder `final` with `build(out, name)` in a staging folder of this run, then move it to
    `models_dir/<final>` inside the project lock; returns (the name taken, what `build` returned).

    Another run (a second `foundry import-model`) may take the name while this one downloads or builds:
    the name is checked again inside the lock, and the loser builds again as `wanted`'s next free version
    with `version_suffix`, or raises choose_name's "already exists" FoundryError without it. An existing
    folder is never replaced, and `models_dir/<name>` only ever appears complete (one rename). The staging
    folder (`.foundry-tmp-<pid>@<host>-<name>-…`, git- and DVC-ignored, cleaned after a kill by the next
    atomic write in `models_dir`) is removed on every exit. Raises FoundryError when the lock stays held
    longer than `project.lock_timeout()` (see model_foundry.locking).
    """
    import shutil
    import tempfile

    from model_foundry.envfaults import check_output_folder, writing
    from model_foundry.leftovers import temp_prefix
    from model_foundry.locking import project_lock

    check_output_folder(models_dir)
    with writing(models_dir / final):  # a full disk or a read-only folder becomes a FoundryError
        staging = Path(tempfile.mkdtemp(prefix=temp_prefix(final), dir=models_dir))
    try:
        while True:
            if taken(models_dir, final):  # created meanwhile by another run: never replace it
                final = choose_name(models_dir, wanted, version_suffix)
            meta = build(staging / final, final)
            what = f"import-model: moving the import into {models_dir / final}"
            with project_lock(models_dir, what, note=lambda m: reporter.info(f"note: {m}")):
                if not taken(models_dir, final):
                    (staging / final).rename(models_dir / final)
                    return final, meta
            shutil.rmtree(staging / final)  # the name went to another run while we built: build again
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def materialize(
    plan: ImportPlan,
    local: dict[str, LocalFile],
    out: Path,
    name: str,
    acknowledgment: dict[str, Any] | None,
    *,
    created_at: str | None = None,
    load_dtype: str = "float32",
    link_local: bool = False,
    reporter: Reporter | None = None,
    init_missing: bool = False,
    opt_in: str = "--init-missing",
) -> dict[str, Any]:
    """Write the canonical folder `out` (atomically) and return its metadata.json content.

    The provenance (`model_folder.model_metadata`: source, commit, licence and its acknowledgment, how the
    files were imported) and the weights' description are written by `model_folder.write_metadata`, so the
    folder records `format` like every other. `created_at` (ISO 8601) defaults to the project's reproducible
    time. Weights missing for the family's class raise FoundryError unless `init_missing` (`opt_in` names
    how the user turns it on, for the hint); the parameter count is transformers' (tied weights once, no
    buffers).
    """
    from model_foundry.model_folder import model_metadata

    snap, lic = plan.snapshot, plan.license

    def provenance(done: _convert.Converted) -> dict[str, Any]:
        extra: dict[str, Any] = {
            "hf_model_type": plan.config.get("model_type"),
            "load": {"dtype": load_dtype},
            "import": {
                "kind": snap.kind,
                "revision_requested": snap.revision,
                "files": done.files,
                "pickle_converted": plan.selection.pickle,
                "linked_files": done.linked,
            },
        }
        if created_at:
            extra["created_at"] = created_at
        if done.init_missing:
            extra["init_missing"] = done.init_missing
        return model_metadata(
            name,
            plan.architecture,
            plan.source,
            model_id=snap.repo_id,
            revision=snap.commit,
            license=lic.id,
            license_name=lic.name,
            license_link=lic.link,
            license_file=lic.file,
            license_acknowledgment=acknowledgment,
            **extra,
        )

    return _convert.write_model_folder(
        out, plan.selection, local, plan.architecture, provenance, link=True, link_local=link_local,
        reporter=reporter or Reporter(), init_missing=init_missing, opt_in=opt_in, where=snap.label,
    )  # fmt: skip


# --- the pipeline: import stage → data/source/source.json → convert stage -------------------------------
def source_record(
    plan: ImportPlan, local: dict[str, LocalFile], reporter: Reporter | None = None
) -> dict[str, Any]:
    """What the import stage writes to source.json: enough to rebuild the folder offline, hashes included
    ({"source", "kind", "architecture", "model_type", "repo_id", "revision", "commit", "folder",
    "files": {name: {"size" in bytes, "sha256"}}, "selection", "license"}).

    Every file is hashed here (a progress bar when `reporter.progress`), so a corrupt download fails the
    import stage with FoundryError (and is evicted from the cache).
    """
    hashes = _convert.hash_files(local, (reporter or Reporter()).progress)
    snap = plan.snapshot
    return {
        "source": plan.source,
        "kind": snap.kind,
        "architecture": plan.architecture,
        "model_type": plan.config.get("model_type"),
        "repo_id": snap.repo_id,
        "revision": snap.revision,
        "commit": snap.commit,
        "folder": str(snap.folder) if snap.folder else None,
        "files": {n: {"size": local[n].path.stat().st_size, "sha256": hashes[n]} for n in sorted(local)},
        "selection": asdict(plan.selection),
        "license": plan.license.to_json(),
    }


def plan_from_record(record: dict[str, Any], cache_dir: str | Path | None = None) -> ImportPlan:
    """The plan the import stage recorded (`source_record`), pinned to its commit and file hashes (no
    network needed). Raises FoundryError when a recorded source folder no longer exists."""
    files = {n: _download.RepoFile(n, f["size"], f["sha256"]) for n, f in record["files"].items()}
    snap = Snapshot(
        record["kind"],
        record.get("repo_id") or record.get("folder") or record["source"],
        files,
        repo_id=record.get("repo_id"),
        revision=record.get("revision"),
        commit=record.get("commit"),
        folder=Path(record["folder"]) if record.get("folder") else None,
        offline=_download.is_offline(),
        cache_dir=str(cache_dir) if cache_dir else None,
    )
    if snap.kind == "folder" and (snap.folder is None or not snap.folder.is_dir()):
        raise FoundryError(f"The source folder {snap.folder} recorded by the import stage is gone.")
    selection = FileSelection(**record["selection"])
    lic = LicenseInfo(**record.get("license") or {"id": None})
    config = {"model_type": record.get("model_type")}
    return ImportPlan(record["source"], snap, record["architecture"], config, selection, lic)


def accept_for_pipeline(
    plan: ImportPlan, accepted: bool, entry_name: str, reporter: Reporter | None = None
) -> dict[str, Any] | None:
    """Licence acknowledgment from a catalog entry's `license_accepted`: never a prompt in a pipeline (the
    licence is shown on `reporter`), dated with the project's reproducible time.

    Returns the acknowledgment record (None for a repo without a licence). Raises FoundryError, naming the
    catalog entry, when the licence is not accepted.
    """
    from model_foundry.project import created_at

    try:
        return acknowledge(
            plan.license, _license_owner(plan), accepted=accepted,
            via=f"params.yaml models.{entry_name}.license_accepted",
            reporter=reporter or Reporter(), may_ask=False, when=created_at(),
        )  # fmt: skip
    except FoundryError as e:
        raise FoundryError(
            f"models.{entry_name}: {e.message}",
            f"Read the licence, then set `license_accepted: true` in models.{entry_name} of params.yaml.",
        ) from None


def _verify_own_folder(src: Any) -> None:
    """A folder written by Model Foundry records the sha256 of its weights: check them before importing, so
    damaged bytes are not imported and re-hashed as if they were the model. Raises FoundryError."""
    from model_foundry.model_folder.checks import read_json_object, verify_hashes

    meta_path = getattr(src, "path", None) and Path(src.path) / METADATA_NAME
    if not meta_path or not meta_path.is_file():
        return
    meta = read_json_object(meta_path)
    if isinstance(meta.get("sha256"), dict):
        verify_hashes(Path(src.path), meta)
