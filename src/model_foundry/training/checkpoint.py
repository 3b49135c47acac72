"""Training checkpoints on disk: `root/step-NNNNNN/`, written atomically, resumed bit-exactly.

A checkpoint folder holds
    model.safetensors   the trainable weights and the buffers of `TrainState.state_dict()["model"]` (frozen
                        parameters, e.g. a LoRA base, are not saved: they come from the parent model, whose
                        checksum the sidecar records); tensors sharing storage (tied embeddings) saved once
    state.pt            everything else of `TrainState.state_dict()` via `torch.save`: the optimizer state,
                        step, tokens, loss histories and un-logged losses, and every generator (the
                        batch/masking one, torch's CPU and accelerator ones, Python's `random`, numpy's as
                        plain data). Read back only with `torch.load(weights_only=True)`: tensors and plain
                        values, no pickled objects.
    checkpoint.json     the sidecar: what the caller passes (model, method, parent_checksum, params_digest,
                        data_hash, mlflow_run_id, ...) and what makes the numbers reproducible (fused/foreach
                        AdamW, torch.get_num_threads(), the torch version, the device), the step, the
                        aliases of tied tensors, and each file's size (a truncated file is named, not
                        half-loaded)

Under FSDP (`train.strategy: fsdp` with torchrun) no rank holds the whole model, so the folder holds
    shards/             model and optimizer state as `torch.distributed.checkpoint` (DCP) writes it: every
                        rank its own shards (`__<rank>_0.distcp`) and rank 0 the `.metadata` index
    state.pt, checkpoint.json   as above (written by rank 0; the sidecar has "sharded": true)
and every rank must see the same folder (one machine, or a shared filesystem across nodes). DCP re-shards on
load, so a sharded checkpoint resumes under FSDP with any number of processes, and in a single process
(the full tensors are assembled from the shards); not under DDP with more than one process (the stage's
params digest refuses the change of train.strategy anyway). A checkpoint of a single process (or DDP) does
not resume under FSDP with more than one process: FoundryError, resume with one process instead
(`check_layout`).

Every rank's dropout generators are gathered into state.pt ("rank_rng", `TrainState.rank_rng_states`), so
each rank resumes its own stream.

The folder is written through `io.atomic_dir` (a temp folder renamed at the end), so a full disk, a killed
process or a second Ctrl-C mid-write leaves the previous checkpoint as it was. `keep_last` prunes old ones
only after a new one is complete. `CheckpointHook` saves every `interval` steps and, on SIGINT/SIGTERM, at
the end of the current step before training stops (a second signal stops at once).

The shape follows nanochat's `checkpoint_manager.py` (model, optimizer and a metadata sidecar side by side,
find-latest by step) and torchtitan's `components/checkpointer/` (step folders, keep the last k).
"""

from __future__ import annotations

import re
import shutil
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from model_foundry.envfaults import writing
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir, read_json, write_json
from model_foundry.training.hooks import TrainHook

if TYPE_CHECKING:
    import torch

    from model_foundry.config import TrainConfig
    from model_foundry.training.state import TrainState

# checkpoint.json's layout; bumped when a key or file changes meaning.
CHECKPOINT_FORMAT = 1
SIDECAR_NAME = "checkpoint.json"
WEIGHTS_FILE = "model.safetensors"
STATE_FILE = "state.pt"
SHARDS_DIR = "shards"  # a sharded (FSDP) checkpoint's DCP folder
SHARDS_INDEX = f"{SHARDS_DIR}/.metadata"
_STEP_DIR = re.compile(r"^step-(\d{6,})$")
# Sidecar fields `load_checkpoint` compares with `expect` (and with this process: fused, threads).
CHECKED_FIELDS = ("model", "method", "parent_checksum", "params_digest", "data_hash", "fused", "threads")


def step_dir(root: Path, step: int) -> Path:
    """`root/step-NNNNNN` (six digits at least, so names sort by step up to 999,999)."""
    return Path(root) / f"step-{step:06d}"


def reproducibility(state: TrainState) -> dict[str, Any]:
    """What must match for a resumed run to give the same floats: {"fused": bool, "foreach": bool|None,
    "threads": torch.get_num_threads(), "torch_version", "device": "cpu"/"cuda"/...}."""
    import torch

    from model_foundry.training.distributed import current

    defaults = state.optimizer.defaults
    return {
        "fused": bool(defaults.get("fused") or False),
        "foreach": defaults.get("foreach"),
        "threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "device": state.device.type,
        "world_size": current().world_size,
    }


def expected_reproducibility(sidecar: dict[str, Any], now: dict[str, Any]) -> dict[str, Any]:
    """The reproducibility fields a checkpoint must share with this process: fused, and threads when the
    world size is the same (older sidecars: 1). Across world sizes the batches are re-split and the sums
    re-ordered, so the run continues within float tolerance rather than bit for bit: the thread count is not
    checked then, and rank 0 says so on stderr."""
    saved = int(sidecar.get("world_size", 1))
    if saved == now["world_size"]:
        return {"fused": now["fused"], "threads": now["threads"]}
    return {"fused": now["fused"]}


def world_size_note(sidecar: dict[str, Any], world_size: int) -> str | None:
    """The note of a checkpoint saved by another number of processes, or None."""
    saved = int(sidecar.get("world_size", 1))
    if saved == world_size:
        return None
    return (
        f"note: the checkpoint was saved by {saved} process(es), this run has {world_size}: every global "
        f"batch is re-split into {world_size} share(s) of the same rows, so the run continues within float "
        "tolerance, not bit for bit."
    )


def _saved_model_tensors(
    state: TrainState, model_state: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], dict[str, str], list[str]]:
    """Split the model's state dict into (tensors to save, {alias: saved name}, frozen names not saved).

    Saved: trainable parameters and buffers. A tensor viewing exactly the same memory as an earlier one (tied
    weights) becomes an alias; one overlapping it otherwise is copied (safetensors refuses shared storage).
    """
    import torch

    module = state.adapter.model
    trainable = {name: p.requires_grad for name, p in module.named_parameters(remove_duplicate=False)}
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    frozen: list[str] = []
    seen: dict[tuple[Any, ...], str] = {}
    storages: set[tuple[str, int]] = set()
    for name, value in model_state.items():
        if trainable.get(name) is False:
            frozen.append(name)
            continue
        tensor = value.detach()
        storage = (tensor.device.type, tensor.untyped_storage().data_ptr())
        view = (*storage, tensor.storage_offset(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if view in seen:
            aliases[name] = seen[view]
            continue
        if storage in storages or not tensor.is_contiguous():
            tensor = tensor.clone(memory_format=torch.contiguous_format)
        seen[view] = name
        storages.add(storage)
        tensors[name] = tensor.cpu()
    return tensors, aliases, frozen


def save_checkpoint(
    state: TrainState, root: Path, sidecar: dict[str, Any], rank_rng: list[dict[str, Any]] | None = None
) -> Path:
    """Write `state` to `root/step-NNNNNN/` (NNNNNN = state.step) atomically; return that folder.

    Under torchrun every rank calls it: rank 0 alone writes a whole model's checkpoint (the others return
    at once), and an FSDP-sharded model's is written by all (`_save_sharded`). `rank_rng`: every rank's
    dropout generators (`TrainState.rank_rng_states`), saved in state.pt.

    `sidecar`: JSON-able values the caller records and checks on resume (model, method, parent_checksum,
    params_digest, data_hash, mlflow_run_id, ...); the reproducibility fields, the step and the file sizes
    are added here. An existing folder of the same step is replaced only once the new one is complete.

    Raises FoundryError when the folder cannot be written (full disk, file size limit, read-only or missing
    permissions: `envfaults`), naming the folder; the previous checkpoints are untouched then.
    """
    import torch
    from safetensors.torch import save_file

    from model_foundry.training.distributed import current, is_sharded

    final = step_dir(Path(root), state.step)
    if is_sharded(state.adapter.model):
        return _save_sharded(state, Path(root), sidecar, rank_rng)
    if not current().is_main:
        return final
    full = state.state_dict(rank_rng)
    model_state = full.pop("model")
    tensors, aliases, frozen = _saved_model_tensors(state, model_state)
    with writing(Path(root)):
        Path(root).mkdir(parents=True, exist_ok=True)
    with atomic_dir(final) as tmp:
        save_file(tensors, str(tmp / WEIGHTS_FILE), metadata={"format": "pt"})
        torch.save(full, tmp / STATE_FILE)
        files = {name: (tmp / name).stat().st_size for name in (WEIGHTS_FILE, STATE_FILE)}
        record = {
            **sidecar,
            **reproducibility(state),
            "format": CHECKPOINT_FORMAT,
            "state_format": full["format"],
            "step": state.step,
            "tokens": state.tokens,
            "aliases": aliases,
            "frozen_tensors": len(frozen),
            "files": files,
        }
        write_json(tmp / SIDECAR_NAME, record, atomic=False)
    return final


def _save_sharded(
    state: TrainState, root: Path, sidecar: dict[str, Any], rank_rng: list[dict[str, Any]] | None
) -> Path:
    """`save_checkpoint` of an FSDP-sharded model (a collective: every rank calls it). Rank 0 makes the temp
    folder and tells the others its name; every rank writes its shards of the model and optimizer state into
    `shards/` (DCP, which ends with rank 0 writing the index once all shards are written); rank 0 adds
    state.pt and the sidecar and renames the folder into place."""
    import contextlib

    import torch
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    from model_foundry.training.distributed import broadcast_object, collective, current

    main = current().is_main
    final = step_dir(root, state.step)
    model_sd, optim_sd = get_state_dict(state.adapter.model, state.optimizer)
    rest = {k: v for k, v in state.state_dict(rank_rng).items() if k not in ("model", "optimizer")}
    with contextlib.ExitStack() as stack:
        tmp: Path | None = None
        if main:
            with writing(root):
                root.mkdir(parents=True, exist_ok=True)
            tmp = stack.enter_context(atomic_dir(final))
            (tmp / SHARDS_DIR).mkdir()
        tmp = broadcast_object(tmp)
        assert tmp is not None
        with collective("writing the sharded checkpoint"):
            dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=tmp / SHARDS_DIR)
        if main:
            torch.save(rest, tmp / STATE_FILE)
            files = {
                f.relative_to(tmp).as_posix(): f.stat().st_size for f in sorted(tmp.rglob("*")) if f.is_file()
            }
            record = {
                **sidecar,
                **reproducibility(state),
                "format": CHECKPOINT_FORMAT,
                "state_format": rest["format"],
                "step": state.step,
                "tokens": state.tokens,
                "sharded": True,
                "files": files,
            }
            write_json(tmp / SIDECAR_NAME, record, atomic=False)
    return final


def _load_sharded(path: Path, state: TrainState) -> None:
    """Load a sharded checkpoint's model and optimizer state (`shards/`) into `state`: every rank reads the
    shards it needs for its own sharding (DCP re-shards), or, in one process, the full tensors."""
    import warnings

    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from model_foundry.training.distributed import collective

    model, optimizer = state.adapter.model, state.optimizer
    model_sd, optim_sd = get_state_dict(model, optimizer)
    wanted = {"model": model_sd, "optim": optim_sd}
    try:
        with collective("reading the sharded checkpoint"), warnings.catch_warnings():
            # in one process DCP warns that it loads without a process group: what we mean
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load(wanted, checkpoint_id=path / SHARDS_DIR, no_dist=not dist.is_initialized())
            set_state_dict(model, optimizer, model_state_dict=model_sd, optim_state_dict=optim_sd)
    except FoundryError:
        raise
    except Exception as e:  # CheckpointException (missing keys, unreadable shard), shape mismatches
        raise FoundryError(
            f"The sharded checkpoint {path} does not fit this model: {' '.join(str(e).split())[:300]}",
            _restart_hint(path),
        ) from None


def check_layout(sidecar: dict[str, Any], state: TrainState, path: Path) -> None:
    """FoundryError when a whole-model checkpoint would be resumed by an FSDP-sharded model (N > 1)."""
    from model_foundry.training.distributed import is_sharded

    if is_sharded(state.adapter.model) and not sidecar.get("sharded"):
        saved = int(sidecar.get("world_size", 1))
        raise FoundryError(
            f"The checkpoint {path} holds the whole model (saved by {saved} process(es) without FSDP); this "
            "run shards the model with FSDP, which resumes only sharded checkpoints.",
            f"Resume it with train.nproc: {saved if saved == 1 else f'{saved} (or 1)'}, then train on; or "
            f"delete {path.parent} to train from the start under FSDP.",
        )


def _steps(root: Path) -> list[tuple[int, Path]]:
    """Complete checkpoint folders under `root` (a step-N name and a sidecar), by step."""
    if not Path(root).is_dir():
        return []
    found = []
    for entry in Path(root).iterdir():
        match = _STEP_DIR.match(entry.name)
        if match and entry.is_dir() and (entry / SIDECAR_NAME).is_file():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def latest_checkpoint(root: Path) -> Path | None:
    """The complete `step-N` folder of the highest step under `root`, or None (no root, none there)."""
    found = _steps(root)
    return found[-1][1] if found else None


def belongs_to(path: Path, identity: dict[str, Any]) -> bool:
    """Whether the checkpoint folder `path` has a readable sidecar with `identity`'s values (its run's)."""
    try:
        sidecar = read_sidecar(path)
    except FoundryError:
        return False
    return all(sidecar.get(key) == value for key, value in identity.items())


def keep_last(root: Path, n: int, identity: dict[str, Any] | None = None) -> list[Path]:
    """Delete all but the `n` (≥ 1) highest-step checkpoint folders under `root`; return those deleted.

    With `identity` (sidecar fields, e.g. the run's model, method and params digest), only that run's
    checkpoints are counted and pruned: another run's (other params, kept for the user) stay as they are.
    """
    if n < 1:
        raise FoundryError(f"keep_last needs n ≥ 1, got {n}.", "Keep at least the latest checkpoint.")
    found = [path for _, path in _steps(root) if identity is None or belongs_to(path, identity)]
    doomed = found[:-n]
    for path in doomed:
        shutil.rmtree(path)
    return doomed


def checkpoint_folders(root: Path) -> list[Path]:
    """The complete checkpoint folders under `root`, newest (highest step) first."""
    return [path for _, path in reversed(_steps(root))]


def _restart_hint(path: Path) -> str:
    return (
        f"Delete {path} to resume from an earlier checkpoint beside it, or delete the checkpoints folder to "
        "train from the start."
    )


def read_sidecar(path: Path) -> dict[str, Any]:
    """checkpoint.json of the checkpoint folder `path`; FoundryError naming it when missing or unreadable."""
    import json

    file = Path(path) / SIDECAR_NAME
    try:
        data = read_json(file)
    except FileNotFoundError:
        raise FoundryError(
            f"{file} is missing: {path} is not a complete checkpoint.", _restart_hint(path)
        ) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FoundryError(f"{file} cannot be read: {e}", _restart_hint(path)) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        found = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise FoundryError(
            f"{file} has checkpoint format {found!r}; this version reads {CHECKPOINT_FORMAT}.",
            _restart_hint(path),
        )
    return data


def check_expected(sidecar: dict[str, Any], expect: dict[str, Any], path: Path) -> None:
    """Raise FoundryError at the first of CHECKED_FIELDS in `expect` that the sidecar has another value of."""
    for key in CHECKED_FIELDS:
        if key not in expect:
            continue
        saved = sidecar.get(key)
        if saved != expect[key]:
            raise FoundryError(
                f"The checkpoint {path} was saved with {key} = {saved!r}; this run has {key} = "
                f"{expect[key]!r}. Resuming would not reproduce the uninterrupted run.",
                f"Resume with the {key} it was saved with, or delete {path.parent} to train from the start.",
            )


def check_files(path: Path, sidecar: dict[str, Any]) -> None:
    """FoundryError naming the first file of the sidecar's list that is missing or of another size."""
    files = sidecar.get("files")
    needed = {STATE_FILE, SHARDS_INDEX} if sidecar.get("sharded") else {WEIGHTS_FILE, STATE_FILE}
    listed = set(files) if isinstance(files, dict) else set()
    if not isinstance(files, dict) or not (needed <= listed if sidecar.get("sharded") else needed == listed):
        raise FoundryError(
            f"{path / SIDECAR_NAME} does not list the checkpoint's files.", _restart_hint(path)
        )
    for name, size in files.items():
        file = path / name
        if not file.is_file():
            raise FoundryError(f"{file} is missing from the checkpoint.", _restart_hint(path))
        actual = file.stat().st_size
        if actual != size:
            raise FoundryError(
                f"{file} is truncated or changed: {actual:,} bytes on disk, {size:,} when it was saved.",
                _restart_hint(path),
            )


def load_checkpoint(path: Path, state: TrainState, expect: dict[str, Any]) -> dict[str, Any]:
    """Restore the checkpoint folder `path` into `state` (built the same way as the saved one); return its
    sidecar (e.g. its mlflow_run_id, to continue that run).

    `expect`: the caller's values of model, method, parent_checksum, params_digest, data_hash (those given
    are checked); fused and threads are checked against this process unless `expect` sets them.
    Raises FoundryError naming the field and both values on a mismatch, naming the file when one is missing,
    truncated or unreadable, and when the state does not fit (`TrainState.load_state_dict`).
    """
    import sys

    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from model_foundry.training.distributed import current as current_job

    path = Path(path)
    sidecar = read_sidecar(path)
    now = reproducibility(state)
    check_expected(sidecar, {**expected_reproducibility(sidecar, now), **expect}, path)
    check_files(path, sidecar)
    check_layout(sidecar, state, path)
    note = world_size_note(sidecar, now["world_size"])
    if note and current_job().is_main:
        print(note, file=sys.stderr)
    weights, rest = path / WEIGHTS_FILE, path / STATE_FILE
    try:
        saved = torch.load(rest, map_location="cpu", weights_only=True)
    except Exception as e:  # zip errors, an unpickling weights_only refuses, I/O: not the file we saved
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise FoundryError(f"{rest} cannot be read: {first}", _restart_hint(path)) from None
    if not isinstance(saved, dict):
        raise FoundryError(f"{rest} does not hold a training state.", _restart_hint(path))
    if sidecar.get("sharded"):
        _load_sharded(path, state)
        state.load_state_dict({**saved, "model": None, "optimizer": None})
        return sidecar
    try:
        tensors = load_file(str(weights))
    except (SafetensorError, OSError, RuntimeError) as e:
        raise FoundryError(f"{weights} cannot be read: {e}", _restart_hint(path)) from None
    model_state = {k: v for k, v in state.adapter.model.state_dict().items()}  # frozen ones stay as built
    for name, tensor in tensors.items():
        model_state[name] = tensor
    for alias, name in sidecar.get("aliases", {}).items():
        model_state[alias] = tensors[name]
    unknown = sorted(set(tensors) - set(model_state))
    if unknown:
        raise FoundryError(
            f"{weights} holds tensors this model does not have: {', '.join(unknown[:5])}",
            "Resume with the model folder and params the checkpoint was saved with.",
        )
    state.load_state_dict({**saved, "model": model_state})
    return sidecar


class CheckpointHook(TrainHook):
    """Save a checkpoint every `interval` steps (keeping the last `keep`), and on SIGINT/SIGTERM save at the
    end of the current step, then stop training (`should_stop`). A second signal stops at once: the previous
    handler runs (SIGINT's default raises KeyboardInterrupt; SIGTERM's ends the process). An atomic write
    interrupted that way leaves the earlier checkpoints whole.

    Handlers are installed in `on_train_start` (from the main thread only; elsewhere signals are left alone)
    and the previous ones restored in `on_train_end`; using the hook as a context manager around `train`
    restores them when training raises too. `sidecar`: see `save_checkpoint`. `saved`: folders written.
    `before_save` runs before each save (the train stage flushes MLflow's asynchronous metric logging, so
    every step up to a checkpoint is recorded before a kill can lose it).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(
        self,
        root: Path,
        interval: int,
        keep: int,
        sidecar: dict[str, Any],
        handle_signals: bool = True,
        before_save: Callable[[], None] | None = None,
    ) -> None:
        if interval < 1 or keep < 1:
            raise FoundryError(
                f"Checkpoint interval and keep must be ≥ 1 (got {interval}, {keep}).",
                "Set both to positive numbers.",
            )
        self.root, self.interval, self.keep, self.sidecar = Path(root), interval, keep, sidecar
        self.handle_signals = handle_signals
        self.before_save = before_save  # e.g. flush metrics logged asynchronously
        self.signalled: int | None = None  # the first signal received
        self.stopping = False  # saved after a signal: training ends after this step
        self.saved: list[Path] = []
        self._saved_step = -1
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> CheckpointHook:
        self._install()
        return self

    def __exit__(self, *exc: object) -> None:
        self._restore()

    def _install(self) -> None:
        main = threading.current_thread() is threading.main_thread()
        if not self.handle_signals or self._previous or not main:
            return
        for sig in self.SIGNALS:
            self._previous[sig] = signal.signal(sig, self._on_signal)

    def _restore(self) -> None:
        previous, self._previous = self._previous, {}
        for sig, handler in previous.items():
            signal.signal(sig, handler)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.signalled is None:
            self.signalled = signum
            return
        previous = self._previous.get(signum, signal.SIG_DFL)
        self._restore()  # a second signal: stop now, as if we had never been installed
        if callable(previous):
            handler: Callable[[int, FrameType | None], Any] = previous
            handler(signum, frame)
        elif signum == signal.SIGINT and previous != signal.SIG_IGN:
            raise KeyboardInterrupt
        elif previous == signal.SIG_DFL:
            signal.raise_signal(signum)

    def on_train_start(self, state: TrainState, cfg: TrainConfig) -> None:
        self._install()

    def save(self, state: TrainState) -> Path:
        """Save `state` now and prune to the last `keep`; returns the folder.

        Under torchrun every rank has the hook (a signal reaches them all and they stop together) and calls
        this together: every rank's dropout generators are gathered, then rank 0 alone writes (DDP keeps
        the same weights and optimizer state on every rank), or, under FSDP, every rank writes its shards."""
        from model_foundry.training.distributed import current

        rank_rng = state.rank_rng_states()  # a collective under torchrun
        main = current().is_main
        if main and self.before_save is not None:
            self.before_save()
        path = save_checkpoint(state, self.root, self.sidecar, rank_rng)
        if not main:
            return path
        self.saved.append(path)
        keep_last(self.root, self.keep, {k: self.sidecar[k] for k in CHECKED_FIELDS if k in self.sidecar})
        return path

    def on_step_end(self, step: int, state: TrainState) -> None:
        if step % self.interval == 0 or self.signalled is not None:
            self.save(state)
            self._saved_step = step
        if self.signalled is not None and self._saved_step == step:  # a signal after the save: stop too
            self.stopping = True

    def should_stop(self) -> bool:
        return self.stopping

    def on_train_end(self, state: TrainState) -> None:
        self._restore()
