"""Data-parallel training on torch.distributed: one process per device, started by `torchrun`.

`torchrun` (or `training.launch`, which re-runs `foundry train` under it) sets RANK, LOCAL_RANK, WORLD_SIZE,
MASTER_ADDR and MASTER_PORT; `Dist.from_env()` reads them (a plain `python` run is world size 1 and none of
this applies). `Dist.init(device)` opens the process group: gloo on CPU, nccl on CUDA, with a timeout on
every collective (`FOUNDRY_DIST_TIMEOUT` seconds, default 600), so a rank that dies makes the others stop
with a FoundryError instead of hanging.

What `train.batch_size` means does not change with the world size: every optimizer step draws the same
global batch of `batch_size × grad_accum` windows from the one seeded generator (on every rank), and rank r
trains on rows [r·b/N, (r+1)·b/N) of each micro-batch (`shard`). Two processes × b/2 rows therefore see
exactly the data of one process × b rows, and DDP's gradient average equals the one-process mean gradient
(when each row has the same number of loss tokens: causal LM on plain text; masked LM and chat data differ
by the per-row token counts). `batch_size` must divide by N (`local_batch_size`).

Strategies (`train.strategy`): `ddp` wraps the model in `DistributedDataParallel` for the forward/backward
(the adapter keeps the bare module, so state dicts, checkpoints and saved models are unchanged); `fsdp`
shards every parameter across ranks with FSDP2's `fully_shard` (in place).

Rank 0 alone logs, prints and writes (`is_main`); the loss that is logged is averaged over ranks
(`mean_over_ranks`). Under FSDP no rank holds the whole model: checkpoints are sharded (every rank writes
its shards with `torch.distributed.checkpoint`, `training.checkpoint`), and the final model is gathered
to rank 0's CPU (`gather_full_state`) and written there in the usual single-file layout.

Dropout: the batch draw is shared (one seeded generator, the same on every rank), but each rank's
dropout masks come from torch's global generators reseeded with `dropout_seed(train.seed, rank)`
(`TrainState.create`), so the N shares of a global batch do not repeat one mask N times. Checkpoints
store every rank's generators, so a resume under the same world size continues each rank's stream
exactly.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    import torch

TIMEOUT_ENV = "FOUNDRY_DIST_TIMEOUT"  # seconds a collective may wait for the other ranks
DEFAULT_TIMEOUT_S = 600.0


def timeout_seconds() -> float:
    """FOUNDRY_DIST_TIMEOUT (seconds, > 0) or the default 600; FoundryError for anything else."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw == "":
        return DEFAULT_TIMEOUT_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise FoundryError(f"{TIMEOUT_ENV} = {raw!r} is not a positive number of seconds.", "E.g. 600.")
    return value


@dataclass(frozen=True)
class Dist:
    """This process's place in the job: `rank` (0..world_size-1), `local_rank` (on this machine)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1

    @classmethod
    def from_env(cls) -> Dist:
        """From torchrun's RANK / LOCAL_RANK / WORLD_SIZE; world size 1 when they are not set."""
        env = os.environ
        if "RANK" not in env or "WORLD_SIZE" not in env:
            return cls()
        return cls(int(env["RANK"]), int(env.get("LOCAL_RANK", env["RANK"])), int(env["WORLD_SIZE"]))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, prints the progress bar and writes files."""
        return self.rank == 0

    def init(self, device: torch.device) -> None:
        """Open the default process group (idempotent; nothing at world size 1).

        gloo on CPU, nccl on CUDA (this rank's GPU is cuda:LOCAL_RANK, set here). Raises FoundryError for
        MPS (torch.distributed has no MPS backend), a rendezvous address already in use, and a peer that
        does not show up within the timeout.
        """
        import torch
        import torch.distributed as dist

        if not self.enabled or dist.is_initialized():
            return
        if device.type == "mps":
            raise FoundryError(
                f"train.nproc = {self.world_size} but the device is Apple MPS, which torch.distributed "
                "cannot use.",
                "Set train.nproc: 1 on a Mac, or train.device: cpu to run the processes on the CPU.",
            )
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(self.local_rank)
        timeout = datetime.timedelta(seconds=timeout_seconds())
        try:
            dist.init_process_group(backend, rank=self.rank, world_size=self.world_size, timeout=timeout)
        except Exception as e:  # DistNetworkError, DistStoreError, RuntimeError, by torch version
            raise rendezvous_error(e) from None

    def device(self, device: torch.device) -> torch.device:
        """This rank's device: cuda:LOCAL_RANK on CUDA, the device itself elsewhere."""
        import torch

        if device.type == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return device


def rendezvous_error(e: BaseException) -> FoundryError:
    """The FoundryError of a process group that could not be opened (port in use, peers missing)."""
    text = " ".join(str(e).split())[:300]
    addr = f"{os.environ.get('MASTER_ADDR', '?')}:{os.environ.get('MASTER_PORT', '?')}"
    if "in use" in text.lower() or "EADDRINUSE" in text:
        return FoundryError(
            f"The rendezvous port {addr} is already in use by another process: {text}",
            "Pick a free port (torchrun --rdzv-endpoint host:PORT or --master-port PORT), or let "
            "`torchrun --standalone` (what train.nproc uses) choose one.",
        )
    return FoundryError(
        f"The training processes could not connect ({addr}): {text}",
        f"Check that every node runs the same torchrun command and can reach {addr}; {TIMEOUT_ENV} "
        f"(now {timeout_seconds():g} s) sets how long they wait.",
    )


def current() -> Dist:
    """The job this process is part of (world size 1 outside torchrun)."""
    return Dist.from_env()


def local_batch_size(batch_size: int, world_size: int) -> int:
    """Rows each rank trains on per micro-batch: `batch_size / world_size`; FoundryError when not whole."""
    if batch_size % world_size:
        lower = batch_size - batch_size % world_size
        options = ", ".join(str(n) for n in (lower, lower + world_size) if n > 0)
        raise FoundryError(
            f"train.batch_size = {batch_size} (the global batch) does not divide among {world_size} "
            "processes.",
            f"Use a multiple of {world_size} (e.g. {options}), or another train.nproc.",
        )
    return batch_size // world_size


def shard(batch: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """Rank `rank`'s rows of a (B, ...) global batch: rows [rank·B/N, (rank+1)·B/N), a view."""
    if world_size == 1:
        return batch
    n = local_batch_size(batch.shape[0], world_size)
    return batch[rank * n : (rank + 1) * n]


def mean_over_ranks(values: torch.Tensor) -> torch.Tensor:
    """All-reduce `values` in place to their mean over ranks (gloo has no AVG: a sum, then a division)."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        with collective("averaging the loss"):
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
        values /= dist.get_world_size()
    return values


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is True on any (e.g. a signal asked one rank to stop)."""
    import torch
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    with collective("agreeing to stop"):
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier() -> None:
    """Wait for every rank (e.g. until rank 0 has written a file the others read); no-op alone."""
    import torch.distributed as dist

    if dist.is_initialized() and dist.get_world_size() > 1:
        with collective("waiting for the other ranks"):
            dist.barrier()


@contextlib.contextmanager
def collective(what: str) -> Iterator[None]:
    """Turn a failed or timed-out collective (a rank died or hangs) into a FoundryError naming `what`."""
    try:
        yield
    except FoundryError:
        raise
    except Exception as e:  # DistBackendError / RuntimeError from gloo or nccl
        if not is_collective_error(e):
            raise
        rank = current().rank
        raise FoundryError(
            f"Rank {rank} lost the other training processes while {what}: {' '.join(str(e).split())[:200]}",
            f"Another rank died or hangs (see its error above); the run waits at most {timeout_seconds():g} "
            f"s ({TIMEOUT_ENV}). Fix that rank's error and run again: train.resume: auto continues from "
            "the last checkpoint.",
        ) from None


def is_collective_error(e: BaseException) -> bool:
    import torch.distributed as dist

    if isinstance(e, dist.DistError):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(
        word in text for word in ("gloo", "nccl", "timed out", "timeout", "connection", "peer")
    )


def wrap(model: torch.nn.Module, strategy: str, device: torch.device) -> Any:
    """Prepare `model` for data-parallel training; returns what the forward pass should call.

    ddp: a `DistributedDataParallel` around it (parameters broadcast from rank 0; gradients all-reduced,
    averaged, in buckets during backward). fsdp: `fully_shard` on each block with parameters and then the
    whole model, in place (parameters become DTensors sharded over ranks); the model itself is returned.
    """
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return model
    if strategy == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for module in list(model.modules())[1:]:
            if isinstance(module, _block_types()):
                fully_shard(module)
        fully_shard(model)
        return model
    ids = [device.index] if device.type == "cuda" else None
    with collective("broadcasting the initial weights"):
        return DistributedDataParallel(model, device_ids=ids)


def _block_types() -> tuple[type, ...]:
    """The repeated blocks FSDP shards one by one (a transformer layer each): ours and Hugging Face's."""
    types: list[type] = []
    with contextlib.suppress(ImportError):
        from model_foundry.adapters.gpt.model import Block

        types.append(Block)
    with contextlib.suppress(ImportError):
        from transformers.models.qwen2.modeling_qwen2 import Qwen2DecoderLayer

        types.append(Qwen2DecoderLayer)
    return tuple(types)


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether FSDP's `fully_shard` sharded `model` (its parameters are DTensors)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


def full_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's unsharded state dict on the CPU (FSDP: gathered on every rank; otherwise as it is)."""
    from torch.distributed.tensor import DTensor

    out = {}
    for name, value in model.state_dict().items():
        out[name] = value.full_tensor().cpu() if isinstance(value, DTensor) else value
    return out


def gather_full_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The model's full (unsharded) state dict on rank 0's CPU; {} on the other ranks.

    Under FSDP every rank must call it (an all-gather of each shard, `get_model_state_dict` with
    `full_state_dict=True, cpu_offload=True`: only rank 0 keeps the tensors). Otherwise the model is whole
    on every rank and rank 0 copies it to the CPU without any collective.
    """
    import torch
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    if not is_sharded(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()} if current().is_main else {}
    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    with collective("gathering the weights of the sharded model"):
        full = get_model_state_dict(model, options=options)
    return {k: v for k, v in full.items() if isinstance(v, torch.Tensor)}


def dropout_seed(seed: int, rank: int, step: int | None = None) -> int:
    """The seed of rank `rank`'s dropout stream (torch's global generators): a 63-bit number derived from
    (`seed`, `rank`, and `step` when given) by sha256, so ranks differ and reruns agree."""
    text = f"dropout:{seed}:{rank}" + ("" if step is None else f":{step}")
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1


def gather_objects(obj: Any) -> list[Any] | None:
    """Every rank's `obj` (picklable), in rank order, on every rank; None outside a process group."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return None
    out: list[Any] = [None] * dist.get_world_size()
    with collective("gathering the generator states"):
        dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    """Rank 0's `obj` (picklable) on every rank; `obj` itself outside a process group."""
    import torch.distributed as dist

    if not (dist.is_initialized() and dist.get_world_size() > 1):
        return obj
    box = [obj]
    with collective("waiting for rank 0"):
        dist.broadcast_object_list(box, src=0)
    return box[0]


def destroy() -> None:
    """Close the process group (at the end of a run; idempotent)."""
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


class NullTracker:
    """What ranks other than 0 get instead of the MLflow run: every call does nothing, `run_id` is None.

    Used as `with (tracking.start_run(...) if job.is_main else NullTracker()) as tracker:`."""

    run_id: str | None = None

    def __enter__(self) -> NullTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def __getattr__(self, name: str) -> Callable[..., None]:
        def nothing(*args: Any, **kwargs: Any) -> None:
            return None

        return nothing
