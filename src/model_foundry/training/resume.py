"""Which checkpoint a training run continues from, and what makes a checkpoint belong to a run.

A run is identified by `RunIdentity`: the output model's name, the method (full or lora), the parent's
checksum (`model_folder.parent_record`), a digest of every param that changes the numbers (`params_digest`)
and the dataset hash (DVC's md5 of the tokenize output). `training.checkpoint` records it in each sidecar
and refuses a checkpoint whose identity differs.

`train.resume: auto` (the default) continues from the newest checkpoint under `checkpoints/<output>/` when its
identity, fused flag and thread count match this run, and says so; one that does not match is ignored with
a one-line note naming the field (never used silently). `never` always starts from step 0. An explicit
`foundry train --resume PATH` must match, or the run stops with the mismatch (`load_checkpoint`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_foundry.errors import FoundryError
from model_foundry.training.checkpoint import (
    belongs_to,
    check_expected,
    check_files,
    check_layout,
    checkpoint_folders,
    expected_reproducibility,
    latest_checkpoint,
    read_sidecar,
    reproducibility,
)

if TYPE_CHECKING:
    from model_foundry.config import Params
    from model_foundry.training.state import TrainState

CHECKPOINTS_DIR = "checkpoints"  # under the project root: git-ignored, not tracked by DVC
# train settings that change where and how often checkpoints are written, not the numbers of the run; and
# nproc: N processes × batch_size/N rows train as one process × batch_size (within float tolerance), so a
# checkpoint resumes under another world size (`checkpoint.expected_reproducibility` notes the re-split).
NOT_IN_DIGEST = ("checkpoint_interval", "keep_checkpoints", "resume", "output_name", "nproc")


def digest_settings(params: Params) -> dict[str, Any]:
    """The settings that decide a run's numbers, flattened (`train.lr`, `model.n_layer`, `architecture`, ...):
    the model entry's architecture, source and config, and the effective `train:` section except
    NOT_IN_DIGEST. Recorded in each checkpoint's sidecar, so a mismatch can name the settings that differ."""
    train = {k: v for k, v in dataclasses.asdict(params.train).items() if k not in NOT_IN_DIGEST}
    settings: dict[str, Any] = {
        "architecture": params.model.architecture,
        "source": params.model.source,
        "revision": params.model.revision,
    }
    settings.update({f"model.{k}": v for k, v in dataclasses.asdict(params.model.arch).items()})
    settings.update({f"train.{k}": v for k, v in train.items()})
    return json.loads(json.dumps(settings, default=str))  # plain JSON values, as the sidecar holds them


def params_digest(params: Params) -> str:
    """sha256 (hex) of `digest_settings(params)`: same settings → same digest in any process (sorted JSON)."""
    text = json.dumps(digest_settings(params), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def settings_diff(saved: Any, now: dict[str, Any], limit: int = 4) -> str:
    """'train.lr 0.002 → 0.001, train.threads 2 → 1' for the settings that differ ('' if unknown)."""
    if not isinstance(saved, dict):
        return ""
    keys = sorted(set(saved) | set(now))
    changed = [f"{k} {saved.get(k)!r} → {now.get(k)!r}" for k in keys if saved.get(k) != now.get(k)]
    more = f" and {len(changed) - limit} more" if len(changed) > limit else ""
    return ", ".join(changed[:limit]) + more


def check_settings(
    sidecar: dict[str, Any], identity: RunIdentity, settings: dict[str, Any], path: Path
) -> None:
    """Raise FoundryError naming the settings that differ when the checkpoint's params digest is not this
    run's (`params_digest` alone would say only that two hashes differ)."""
    if sidecar.get("params_digest") == identity.params_digest:
        return
    diff = settings_diff(sidecar.get("settings"), settings) or "settings of another params.yaml"
    raise FoundryError(
        f"The checkpoint {path} was saved with other params ({diff}): resuming would reproduce neither run.",
        f"Resume with the settings it was saved with, or delete {path.parent} to train from the start.",
    )


@dataclass(frozen=True)
class RunIdentity:
    """What a checkpoint must share with a run to be resumed by it (the sidecar's checked fields)."""

    model: str  # the output model's name
    method: str  # "full" | "lora"
    parent_checksum: str | None
    params_digest: str
    data_hash: str

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def checkpoint_root(project_root: Path, output_name: str) -> Path:
    """`<project root>/checkpoints/<output name>/`: the root, not DVC's temp copy of a queued experiment."""
    return Path(project_root) / CHECKPOINTS_DIR / output_name


def resumable_checkpoint(
    root: Path,
    identity: RunIdentity,
    state: TrainState,
    note: Callable[[str], None],
    settings: dict[str, Any] | None = None,
) -> Path | None:
    """The newest complete checkpoint under `root` that this run can continue from, else None.

    Checks each checkpoint, newest first: its files are whole, its settings (`settings`: the run's
    `digest_settings`, to name what differs) and identity (RunIdentity) are this run's, and so are the fused
    flag and thread count of this process, and its layout fits (`checkpoint.check_layout`: no whole-model
    checkpoint under FSDP). Each one that is damaged or of another run is reported through
    `note` (one line saying why) and left in place: it is never used, and this run prunes and deletes only
    its own checkpoints. None when none matches (the run starts from step 0).
    """
    current = reproducibility(state)
    for path in checkpoint_folders(root):  # newest first: the newest that matches wins
        try:
            sidecar = read_sidecar(path)
            check_files(path, sidecar)  # a damaged checkpoint is named as such, before any mismatch
            check_layout(sidecar, state, path)  # a whole-model checkpoint under FSDP
            if settings is not None:
                check_settings(sidecar, identity, settings, path)
            expect = {**expected_reproducibility(sidecar, current), **identity.as_dict()}
            check_expected(sidecar, expect, path)
        except FoundryError as e:
            note(f"note: not resuming from {path}: {e.message} (kept; delete it to free the space)")
            continue
        return path
    return None


def remove_run_checkpoints(root: Path, identity: RunIdentity) -> None:
    """Delete the checkpoints of this run (its model is saved: they are spent), and `root` when it is left
    empty; other runs' checkpoints stay."""
    import shutil

    for path in checkpoint_folders(root):
        if belongs_to(path, identity.as_dict()):
            shutil.rmtree(path, ignore_errors=True)
    if Path(root).is_dir() and not any(Path(root).iterdir()):
        Path(root).rmdir()


def explicit_checkpoint(path: Path) -> Path:
    """A `--resume PATH` argument: a `step-N` folder, or a checkpoints folder (its newest step).

    Raises FoundryError when PATH does not exist or holds no complete checkpoint.
    """
    path = Path(path)
    if (path / "checkpoint.json").is_file():
        return path
    latest = latest_checkpoint(path) if path.is_dir() else None
    if latest is None:
        raise FoundryError(
            f"--resume {path}: no checkpoint there (a step-NNNNNN folder with checkpoint.json).",
            f"Point --resume at a folder under {CHECKPOINTS_DIR}/<model>/, or leave it out to train from the "
            "start (train.resume: auto picks up a matching checkpoint by itself).",
        )
    return latest
