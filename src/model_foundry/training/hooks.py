"""What the training loop tells the outside world, as hooks: logging, the progress bar, checkpoints.

`training.loop.train` calls every hook it is given at these points, in list order:

    on_train_start(state, cfg)        once, before the first step of this call (state.step may be > 0: resume)
    on_log(step, metrics)             every train.log_interval steps and at the last: train_loss (mean since
                                      the previous log), lr, tokens_per_s; step is 1-based, as in the logs
    on_eval(step, val_loss)           every train.eval_interval steps and at the last
    on_step_end(step, state)          after every optimizer step (and its log/eval): the checkpoint hook
                                      (training/checkpoint.py) saves `state.state_dict()` here
    on_train_end(state)               once, after the last step of this call (not when training raised)
    should_stop()                     after each step's on_step_end: True ends training after that step
                                      (on_train_end still runs); e.g. the checkpoint hook on SIGINT/SIGTERM

A hook subclasses `TrainHook` and overrides what it needs. Hooks run on the host between steps, so one that
reads a device tensor adds a host sync: the loop itself syncs only on logging steps (see loop.py).
MLflow logging (`MetricsLog` over `tracking.Tracker.log`) and the progress bar (`ProgressBar`) are hooks;
LoRA (wrapping the model before `TrainState.create`), resuming (`TrainState.load_state_dict` before `train`)
and DDP (wrapping the model; all-reducing logged losses in a hook) plug in without editing the loop.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model_foundry.config import TrainConfig
    from model_foundry.training.state import TrainState


class TrainHook:
    """No-op base of a training hook (see the module docstring for when each method is called)."""

    def on_train_start(self, state: TrainState, cfg: TrainConfig) -> None:
        pass

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        pass

    def on_eval(self, step: int, val_loss: float) -> None:
        pass

    def on_step_end(self, step: int, state: TrainState) -> None:
        pass

    def on_train_end(self, state: TrainState) -> None:
        pass

    def should_stop(self) -> bool:
        """True to end training after the current step (read on the host: no device sync)."""
        return False


class MetricsLog(TrainHook):
    """Send the logged metrics and validation losses to `log(metrics, step)` (e.g. `tracking.Tracker.log`)."""

    def __init__(self, log: Callable[[dict[str, float], int], None]) -> None:
        self.log = log

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.log(metrics, step)

    def on_eval(self, step: int, val_loss: float) -> None:
        self.log({"val_loss": val_loss}, step)


class ProgressBar(TrainHook):
    """A tqdm bar on stderr (loss, tokens/s, lr), refreshed every 0.2 s on a terminal and every 15 s in a
    log file; validation losses are printed as lines ("step N: val_loss x") on stdout, even when `enabled`
    is False (the bar alone is hidden, e.g. by `--quiet`)."""

    def __init__(self, enabled: bool = True) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def on_train_start(self, state: TrainState, cfg: TrainConfig) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=cfg.steps, initial=state.step, desc="train", unit="step", file=sys.stderr,
            disable=not self.enabled, dynamic_ncols=True,
            mininterval=0.2 if sys.stderr.isatty() else 15.0,  # a log file: a line every 15 s, not a flood
        )  # fmt: skip

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.bar.set_postfix(
            loss=f"{metrics['train_loss']:.3f}", tok_s=f"{metrics['tokens_per_s']:,.0f}",
            lr=f"{metrics['lr']:.2e}", refresh=False,
        )  # fmt: skip

    def on_eval(self, step: int, val_loss: float) -> None:
        self.bar.write(f"step {step}: val_loss {val_loss:.4f}")

    def on_step_end(self, step: int, state: TrainState) -> None:
        self.bar.update(1)

    def on_train_end(self, state: TrainState) -> None:
        self.bar.close()
