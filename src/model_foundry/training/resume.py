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
    check_expected,
    check_files,
    latest_checkpoint,
    read_sidecar,
    reproducibility,
)

if TYPE_CHECKING:
    from model_foundry.config import Params
    from model_foundry.training.state import TrainState

CHECKPOINTS_DIR = "checkpoints"  # under the project root: git-ignored, not tracked by DVC
# train settings that change where and how often checkpoints are written, not the numbers of the run.
NOT_IN_DIGEST = ("checkpoint_interval", "keep_checkpoints", "resume", "output_name")


def params_digest(params: Params) -> str:
    """sha256 (hex) of the params that decide a run's numbers: the model entry's architecture, source and
    config, and the effective `train:` section except NOT_IN_DIGEST. Same params → same digest, in any
    process (sorted JSON)."""
    train = {k: v for k, v in dataclasses.asdict(params.train).items() if k not in NOT_IN_DIGEST}
    payload = {
        "architecture": params.model.architecture,
        "source": params.model.source,
        "revision": params.model.revision,
        "model": dataclasses.asdict(params.model.arch),
        "train": train,
    }
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()


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
    root: Path, identity: RunIdentity, state: TrainState, note: Callable[[str], None]
) -> Path | None:
    """The newest complete checkpoint under `root` that this run can continue from, else None.

    Checks the sidecar's identity (RunIdentity), the fused flag and thread count against this process, and
    that its files are whole; on any mismatch or damage calls `note` with one line saying why it is
    ignored, and returns None (the run starts from step 0 and its checkpoints replace the old ones).
    """
    path = latest_checkpoint(root)
    if path is None:
        return None
    current = reproducibility(state)
    try:
        sidecar = read_sidecar(path)
        check_files(path, sidecar)  # a damaged checkpoint is named as such, before any mismatch
        expect = {"fused": current["fused"], "threads": current["threads"], **identity.as_dict()}
        check_expected(sidecar, expect, path)
    except FoundryError as e:
        note(f"note: not resuming from {path}: {e.message}")
        return None
    return path


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
