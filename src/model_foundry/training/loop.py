"""The training loop every architecture shares: optimizer steps over a `TrainState`, with hooks.

`train(state, ...)` advances a `training.state.TrainState` (model, optimizer, generators, histories) and tells
its hooks (`training.hooks`: metrics logging, progress bar, checkpoints) what happened. The optimizer, the
model's device and any wrapping (LoRA, DDP) are set up before, by `TrainState.create`; resuming is
`TrainState.load_state_dict` before `train`. The loop itself has no I/O.

Fast by avoiding per-step overhead (benchmarks/bench_trainer.py measures it against transformers.Trainer):
no `.item()` host sync except on logging steps, batches gathered from the memmap with one fancy index,
a fused AdamW (one kernel for all parameters, CPU included), a foreach gradient clip, gradients freed with
set_to_none, and on CUDA pinned host batches copied asynchronously. Deterministic for a fixed seed and
thread count: the batch order, masking and dropout all come from seeded generators, saved in the state.

Divergence stops training with a FoundryError, never a saved NaN model: each step's loss (and gradient norm
when clipping) goes into a small device buffer (`TrainState.window`), read back with the one host sync of
each logging step; a NaN/Infinity there names the first bad step. Checking costs a tiny device copy per step.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from model_foundry.adapters.base import BaseAdapter
from model_foundry.config import TrainConfig
from model_foundry.data.tokens import WindowSource, as_source
from model_foundry.errors import FoundryError
from model_foundry.training.device import Runtime
from model_foundry.training.distributed import any_rank, collective, mean_over_ranks, shard
from model_foundry.training.hooks import TrainHook
from model_foundry.training.optim import clip_grad_norm, lr_at
from model_foundry.training.state import TrainState


@dataclass
class TrainResult:
    """What one `train` call did. The histories are the state's (the whole run, earlier calls included);
    `tokens`, `seconds` and `step_seconds` count this call only (so `tokens_per_second` is this call's)."""

    train_history: list[tuple[int, float]] = field(default_factory=list)  # (step, mean loss since last log)
    val_history: list[tuple[int, float]] = field(default_factory=list)  # (step, val loss)
    tokens: int = 0
    seconds: float = 0.0
    # Host wall time of each optimizer step (batch drawing to zero_grad). On CPU that is the step's cost; on
    # CUDA the host runs ahead of the GPU, so only their sum over many steps is meaningful.
    step_seconds: list[float] = field(default_factory=list)
    # A hook asked to stop before `until` (`TrainHook.should_stop`: a checkpoint hook on SIGINT/SIGTERM).
    stopped: bool = False

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def to_device(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Host batch → device: a no-op on CPU; on CUDA through pinned memory, so the copy does not block."""
    if device.type == "cuda":
        return t.contiguous().pin_memory().to(device, non_blocking=True)
    return t.to(device)


@torch.no_grad()
def estimate_loss(
    adapter: BaseAdapter, tokens: WindowSource | np.ndarray, cfg: TrainConfig, collator: Any, runtime: Runtime
) -> float:
    """Mean loss over `eval_batches` fixed (seeded) windows: the same windows at every evaluation.

    Under torchrun each rank scores its share of every batch (`distributed.shard`), averaged over ranks."""
    rank, world = runtime.dist.rank, runtime.dist.world_size
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    was_training = adapter.model.training
    adapter.model.eval()
    losses: list[torch.Tensor] = []
    source = as_source(tokens)
    for _ in range(cfg.eval_batches):
        windows = source.draw(cfg.batch_size, cfg.block_size + collator.extra_tokens, gen)
        x, y = collator(windows, gen)
        x, y = shard(x, rank, world), shard(y, rank, world)
        with runtime.autocast():
            loss = adapter(to_device(x, runtime.device), to_device(y, runtime.device)).loss
        assert loss is not None  # labels were given
        losses.append(loss)
    adapter.model.train(was_training)
    return mean_over_ranks(torch.stack(losses).mean()).item()


def check_finite(losses: list[float], norms: list[float] | None, first_step: int, cfg: TrainConfig) -> None:
    """Raise FoundryError at the first non-finite loss or gradient norm; `first_step` is losses[0]'s step.

    Steps are 1-based, as in the logs; the error names the step, what went non-finite and that step's lr.
    """
    for i, loss in enumerate(losses):
        norm = norms[i] if norms is not None else 0.0
        if math.isfinite(loss) and math.isfinite(norm):
            continue
        what = f"loss is {loss}" if not math.isfinite(loss) else f"gradient norm is {norm}"
        raise_diverged(first_step + i, what, cfg)


def raise_diverged(step: int, what: str, cfg: TrainConfig) -> None:
    """The FoundryError of a diverged run: at which step, what, the lr then, and how to avoid it."""
    lr = lr_at(step - 1, lr=cfg.lr, warmup=cfg.warmup_steps, total=cfg.steps, min_ratio=cfg.min_lr_ratio)
    clip = (
        "set train.grad_clip (e.g. 1.0)" if cfg.grad_clip == 0 else f"lower train.grad_clip ({cfg.grad_clip})"
    )
    raise FoundryError(
        f"Training diverged at step {step} of {cfg.steps}: the {what} (lr {lr:.3g}). No model was saved.",
        f"Lower train.lr (now {cfg.lr:g}), {clip}, or train in fp32 (train.precision: fp32).",
    )


def train(
    state: TrainState,
    train_tokens: WindowSource | np.ndarray,
    val_tokens: WindowSource | np.ndarray,
    cfg: TrainConfig,
    collator: Any,
    runtime: Runtime,
    hooks: Sequence[TrainHook] = (),
    until: int | None = None,
) -> TrainResult:
    """Advance `state` (model, optimizer, generators, histories) from `state.step` to `until` optimizer steps
    (default `cfg.steps`, the end of the schedule), calling `hooks` (see hooks.py) on the way.

    The learning-rate schedule always spans `cfg.steps`: stopping at `until` < cfg.steps and continuing from
    the saved state later trains exactly as one uninterrupted run. Raises FoundryError when a loss, gradient
    norm or validation loss is NaN/Infinity (checked on logging steps, so at most `cfg.log_interval` steps
    after it happened, and always before the last step returns).

    Stops early, after a step's hooks, when a hook's `should_stop()` says so (a checkpoint hook on SIGINT or
    SIGTERM, having saved that step); `on_train_end` is still called and the result has `stopped` set.

    Under torchrun (`runtime.dist`, `state.parallel`) every rank calls `train` with the same arguments (rank
    0 alone with the hooks that write): each micro-batch is the global `cfg.batch_size` windows drawn from
    the shared generator, of which this rank trains its `distributed.shard`; DDP averages the gradients; the
    logged losses are averaged over ranks, and a stop on any rank stops all. A rank that dies or hangs makes
    the others raise FoundryError within `distributed.timeout_seconds()`.
    """
    adapter = state.adapter
    model = adapter.model
    params: list[torch.Tensor] = [p for p in model.parameters() if p.requires_grad]
    # torch.compile wraps the adapter's forward (model + loss) for the training steps only: evaluation and
    # anything that uses the model afterwards run it eagerly, so neither recompiles nor keeps the wrapper.
    forward = torch.compile(adapter.forward) if cfg.compile else adapter.forward
    rank, world, ddp = runtime.dist.rank, runtime.dist.world_size, ddp_module(state.parallel, model)
    if ddp is not None:
        forward = through(adapter, ddp, forward)
    opt, gen, window = state.optimizer, state.rng, state.window
    source = as_source(train_tokens)
    length = cfg.block_size + collator.extra_tokens
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum
    device = runtime.device
    end = cfg.steps if until is None else min(until, cfg.steps)
    result = TrainResult(state.train_history, state.val_history)
    # Each step's loss (and gradient norm when clipping) since the last log stays on the device (`window`).
    losses, norms = window.losses, window.norms
    t_log = time.perf_counter()
    t_start, timed = t_log, 0  # steps of this call since the last log (a resumed window began earlier)
    for hook in hooks:
        hook.on_train_start(state, cfg)
    for step in range(state.step, end):
        t_step = time.perf_counter()
        lr = lr_at(step, lr=cfg.lr, warmup=cfg.warmup_steps, total=cfg.steps, min_ratio=cfg.min_lr_ratio)
        for group in opt.param_groups:
            group["lr"] = lr
        for micro in range(cfg.grad_accum):
            x, y = collator(source.draw(cfg.batch_size, length, gen), gen)
            x, y = shard(x, rank, world), shard(y, rank, world)  # this rank's rows of the global batch
            with runtime.autocast():
                loss = forward(to_device(x, device), to_device(y, device)).loss
            assert loss is not None  # labels were given
            if cfg.grad_accum > 1:
                loss = loss / cfg.grad_accum
            # DDP all-reduces the gradients once per optimizer step, in the last micro-batch's backward
            last_micro = ddp is None or micro == cfg.grad_accum - 1
            sync = contextlib.nullcontext() if last_micro else ddp.no_sync()
            with sync, collective("in the backward pass"):
                loss.backward()
            losses[window.count] += loss.detach()
        if norms is not None:
            norms[window.count] = clip_grad_norm(params, cfg.grad_clip)
        opt.step()
        opt.zero_grad(set_to_none=True)
        result.step_seconds.append(time.perf_counter() - t_step)
        window.count += 1
        timed += 1
        state.step = step + 1
        state.tokens += tokens_per_step
        result.tokens += tokens_per_step
        last = step == cfg.steps - 1
        if (step + 1) % cfg.log_interval == 0 or last:
            now = time.perf_counter()
            since_log = window.count
            mean_over_ranks(losses)  # each rank's losses are of its share: the logged loss is the mean
            synced = (losses if norms is None else torch.cat([losses, norms])).tolist()  # the one host sync
            step_losses = synced[:since_log]
            step_norms = None if norms is None else synced[len(losses) : len(losses) + since_log]
            check_finite(step_losses, step_norms, step + 2 - since_log, cfg)
            mean_loss = sum(step_losses) / since_log
            tps = timed * tokens_per_step / (now - t_log)
            state.train_history.append((step + 1, mean_loss))
            for hook in hooks:
                hook.on_log(step + 1, {"train_loss": mean_loss, "lr": lr, "tokens_per_s": tps})
            window.reset()
            t_log, timed = now, 0
        if (step + 1) % cfg.eval_interval == 0 or last:
            val = estimate_loss(adapter, val_tokens, cfg, collator, runtime)
            if not math.isfinite(val):
                raise_diverged(step + 1, f"validation loss is {val}", cfg)
            state.val_history.append((step + 1, val))
            for hook in hooks:
                hook.on_eval(step + 1, val)
            t_log = time.perf_counter()  # evaluation time does not count against tokens/s
        for hook in hooks:
            hook.on_step_end(step + 1, state)
        stop = any([hook.should_stop() for hook in hooks])  # host flags: no device sync
        if world > 1:
            stop = any_rank(stop, device)  # rank 0's checkpoint hook saw the signal: all ranks stop
        if stop and step + 1 < end:
            result.stopped = True
            break
    for hook in hooks:
        hook.on_train_end(state)
    result.seconds = time.perf_counter() - t_start
    return result


def ddp_module(parallel: Any, model: torch.nn.Module) -> Any:
    """`parallel` when it is a DistributedDataParallel wrapper of `model` (FSDP shards in place: None)."""
    from torch.nn.parallel import DistributedDataParallel

    return parallel if isinstance(parallel, DistributedDataParallel) else None


def through(adapter: BaseAdapter, ddp: Any, forward: Callable[..., Any]) -> Callable[..., Any]:
    """`forward` with `adapter.model` swapped for the DDP wrapper `ddp` while it runs, so the adapter's own
    forward (its loss, its input handling) goes through DDP, whose backward then all-reduces the gradients.
    Elsewhere `adapter.model` stays the bare module: its state dict keys, saving and evaluation are unchanged.
    """
    inner = adapter.model

    def run(x: torch.Tensor, y: torch.Tensor) -> Any:
        adapter.model = ddp
        try:
            return forward(x, y)
        finally:
            adapter.model = inner

    return run
