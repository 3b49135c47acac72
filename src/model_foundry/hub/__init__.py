"""Import models from the Hugging Face Hub, a Hub URL or a local folder into `models/<name>/`.

`import_model` is what `foundry import-model` runs; the pipeline's import and convert stages run the same
steps split in two (`plan_import` + `fetch` + `source_record`, then `plan_from_record` + `materialize`), so
a catalog entry with `source: Qwen/Qwen2.5-0.5B` and the CLI produce the same folder.

Steps: parse SOURCE → read the repo's file list and config.json (validate the family, refuse remote code and
pickles) → estimate memory → show the licence and get it accepted → download what is needed into the Hub
cache (verified against the Hub's sha256) → build the canonical folder in a temp dir and rename it.
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
from model_foundry.hub.sources import FolderSource, HubSource, parse_source
from model_foundry.hub.validate import (
    CONFIG,
    README,
    FileSelection,
    MemoryEstimate,
    check_memory,
    estimate_memory,
    family_for,
    remote_code_note,
    select_files,
)

__all__ = [
    "ImportPlan",
    "accept_for_pipeline",
    "checked_download",
    "ImportResult",
    "import_model",
    "materialize",
    "plan_from_record",
    "plan_import",
    "source_record",
]

Echo = Callable[[str], None]


def _stderr(message: str) -> None:
    import sys

    print(message, file=sys.stderr)


@dataclass
class ImportPlan:
    """Everything known before the weights are downloaded."""

    source: str  # SOURCE as given
    snapshot: Snapshot
    architecture: str  # registry name, e.g. hf-qwen2
    config: dict[str, Any]
    selection: FileSelection
    license: LicenseInfo
    memory: MemoryEstimate | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def weight_bytes(self) -> int:
        return sum(self.snapshot.files[w].size or 0 for w in self.selection.weights)


@dataclass
class ImportResult:
    name: str
    path: Path
    architecture: str
    model_id: str | None
    revision: str | None  # resolved commit sha (Hub)
    source: str
    parameters: int
    dtype: str | None
    license: str | None
    sha256: dict[str, str]
    weight_bytes: int
    linked_files: int
    seconds: float
    warnings: list[str] = field(default_factory=list)


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
    echo: Echo = _stderr,
) -> ImportPlan:
    """Resolve and validate SOURCE, reading only small files (config, shard index, README, licence).

    Credentials in SOURCE are stripped with a warning: `plan.source` never holds them (see `sources`).
    """
    src = parse_source(source, revision)
    if isinstance(src, HubSource) and src.credentials:
        echo(credentials_warning(src))
        source = src.text
    if isinstance(src, HubSource):
        snap = _download.open_hub(src, cache_dir, warn=echo)
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
    if CONFIG not in snap.files:
        family_for(None, where)
    config = _read_json(fetch(snap, [CONFIG], progress=False)[CONFIG].path, CONFIG, where)
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
    acknowledge_license: Callable[[], dict | None],
    *,
    force: bool,
    progress: bool,
    warn: Callable[[str], None],
    echo: Echo,
) -> tuple[dict | None, dict[str, LocalFile]]:
    """What every import does once it has a plan, CLI and pipeline alike: report the notes and the memory
    estimate, enforce the memory limit, get the licence acknowledged, then download (the cache is reused).
    Returns (licence acknowledgment, local files)."""
    for note in plan.notes:
        warn(note)
    assert plan.memory is not None
    echo(f"{plan.snapshot.label}: {plan.architecture} — {plan.memory.describe()}")
    check_memory(plan.memory, force, warn)
    acknowledgment = acknowledge_license()
    return acknowledgment, fetch(plan.snapshot, plan.selection.all, progress)


def import_model(
    source: str,
    models_dir: str | Path = "models",
    name: str | None = None,
    revision: str | None = None,
    accept_license: bool = False,
    force: bool = False,
    allow_pickle: bool = False,
    version_suffix: bool = False,
    interactive: bool = False,
    *,
    init_missing: bool = False,
    link: bool = False,
    confirm: Callable[[str], bool] | None = None,
    progress: bool = True,
    echo: Echo = _stderr,
    cache_dir: str | Path | None = None,
) -> ImportResult:
    """Import SOURCE into `models_dir/<name>/`; on any error nothing is left under `models_dir`.

    `interactive` with `confirm` asks for the licence when `accept_license` is not given; otherwise an
    unaccepted licence is an error. Weights from the Hub cache are hard-linked; a local folder's are copied
    unless `link` (faster, but an in-place re-save of the folder would then change the imported model).
    A checkpoint that lacks tensors the family's class needs is refused (FoundryError) unless `init_missing`:
    then they are initialised once, seeded, and saved into the folder (see `convert.complete_weights`).
    Progress bars and messages go to stderr.
    """
    t0 = time.perf_counter()
    warnings: list[str] = []

    def warn(message: str) -> None:
        warnings.append(message)
        echo(message if message.startswith("warning:") else f"warning: {message}")

    src = parse_source(source, revision)
    _verify_own_folder(src)
    models_dir = Path(models_dir)
    wanted = check_name(name) if name is not None else default_name(src)
    final = choose_name(models_dir, wanted, version_suffix)
    plan = plan_import(source, revision, allow_pickle=allow_pickle, cache_dir=cache_dir, echo=echo)
    ack, local = checked_download(
        plan,
        lambda: acknowledge(
            plan.license, _license_owner(plan), accepted=accept_license, via="--accept-license",
            interactive=interactive, confirm=confirm, echo=echo,
        ),
        force=force, progress=progress, warn=warn, echo=echo,
    )  # fmt: skip
    if taken(models_dir, final):  # created meanwhile by someone else: never replace it
        choose_name(models_dir, final, False)
    now = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    meta = materialize(
        plan,
        local,
        models_dir / final,
        final,
        ack,
        created_at=now,
        link_local=link,
        progress=progress,
        warn=warn,
        init_missing=init_missing,
    )
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
        warnings=warnings,
    )


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
    progress: bool = True,
    warn: Echo = _stderr,
    init_missing: bool = False,
    opt_in: str = "--init-missing",
) -> dict[str, Any]:
    """Write the canonical folder `out` (atomically) and return its metadata.json content.

    Weights missing for the family's class raise FoundryError unless `init_missing` (`opt_in` names how the
    user turns it on, for the hint); the parameter count is transformers' (tied weights once, no buffers).
    """
    from model_foundry.metadata import model_metadata

    snap, lic = plan.snapshot, plan.license
    written: dict[str, Any] = {}

    def metadata(done: _convert.Converted) -> dict[str, Any]:
        extra: dict[str, Any] = {"created_at": created_at} if created_at else {}
        if done.init_missing:
            extra["init_missing"] = done.init_missing
        written.update(
            model_metadata(
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
                parameters=done.parameters,
                dtype=done.weights.dtype,
                sha256=done.sha256,
                hf_model_type=plan.config.get("model_type"),
                load={"dtype": load_dtype},
                **{
                    "import": {
                        "kind": snap.kind,
                        "revision_requested": snap.revision,
                        "files": done.files,
                        "pickle_converted": plan.selection.pickle,
                        "linked_files": done.linked,
                    }
                },
                **extra,
            )
        )
        return written

    _convert.write_model_folder(
        out, plan.selection, local, plan.architecture, metadata, link=True, link_local=link_local,
        progress=progress, warn=warn, init_missing=init_missing, opt_in=opt_in, where=snap.label,
    )  # fmt: skip
    return written


# --- the pipeline: import stage → data/source/source.json → convert stage -------------------------------
def source_record(plan: ImportPlan, local: dict[str, LocalFile], progress: bool = True) -> dict[str, Any]:
    """What the import stage writes to source.json: enough to rebuild the folder offline, hashes included.

    Every file is hashed here, so a corrupt download fails the import stage (and is evicted from the cache).
    """
    hashes = _convert.hash_files(local, progress)
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
    """The plan the import stage recorded, pinned to its commit and file hashes (no network needed)."""
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
    plan: ImportPlan, accepted: bool, entry_name: str, echo: Echo = _stderr
) -> dict | None:
    """Licence acknowledgment from a catalog entry's `license_accepted` (no prompt in a pipeline)."""
    from model_foundry.metadata import created_at

    try:
        return acknowledge(
            plan.license, _license_owner(plan), accepted=accepted,
            via=f"params.yaml models.{entry_name}.license_accepted",
            interactive=False, confirm=None, echo=echo, when=created_at(),
        )  # fmt: skip
    except FoundryError as e:
        raise FoundryError(
            f"models.{entry_name}: {e.message}",
            f"Read the licence, then set `license_accepted: true` in models.{entry_name} of params.yaml.",
        ) from None


def _verify_own_folder(src: Any) -> None:
    """A folder written by Model Foundry records the sha256 of its weights: check them before importing, so
    damaged bytes are not imported and re-hashed as if they were the model. Raises FoundryError."""
    from model_foundry.model_check import read_json_object, verify_hashes

    meta_path = getattr(src, "path", None) and Path(src.path) / "metadata.json"
    if not meta_path or not meta_path.is_file():
        return
    meta = read_json_object(meta_path)
    if isinstance(meta.get("sha256"), dict):
        verify_hashes(Path(src.path), meta)
