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
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TextIO

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
    """Training progress on `stream` (stderr when None): tqdm's bar on a terminal; in a log (stderr not a
    terminal: CI, `dvc repro > log`) a plain line every `interval` seconds and one at the end (`LogLines`).

    Validation losses are printed as lines ("step N: val_loss x") on stdout, even when `enabled` is False
    (the bar or lines alone are hidden, e.g. by `--quiet`). `clock` (seconds, monotonic) is for tests.
    """

    def __init__(
        self,
        enabled: bool = True,
        stream: TextIO | None = None,
        interval: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.enabled = enabled
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self.bar: Any = None
        self.lines: LogLines | None = None

    def on_train_start(self, state: TrainState, cfg: TrainConfig) -> None:
        stream = self.stream or sys.stderr
        if self.enabled and not _is_terminal(stream):
            self.lines = LogLines(cfg.steps, state.step, stream, self.interval, self.clock)
            return
        from tqdm.auto import tqdm

        self.bar = tqdm(
            total=cfg.steps, initial=state.step, desc="train", unit="step", file=stream,
            disable=not self.enabled, dynamic_ncols=True, mininterval=0.2,
        )  # fmt: skip

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        if self.lines is not None:
            self.lines.metrics = metrics
            return
        self.bar.set_postfix(
            loss=f"{metrics['train_loss']:.3f}", tok_s=f"{metrics['tokens_per_s']:,.0f}",
            lr=f"{metrics['lr']:.2e}", refresh=False,
        )  # fmt: skip

    def on_eval(self, step: int, val_loss: float) -> None:
        line = f"step {step}: val_loss {val_loss:.4f}"
        if self.bar is not None:
            self.bar.write(line)  # above the bar, on stdout
        else:
            print(line, flush=True)

    def on_step_end(self, step: int, state: TrainState) -> None:
        if self.lines is not None:
            self.lines.update(step)
        else:
            self.bar.update(1)

    def on_train_end(self, state: TrainState) -> None:
        if self.lines is not None:
            self.lines.close()
        else:
            self.bar.close()


def _is_terminal(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


class LogLines:
    """Progress for a log file: one plain line every `interval` seconds of `clock`, and a last one on `close`.

        step 120/500 (24%) · loss 3.214 · 5.2k tok/s · lr 1.0e-03 · ETA 1m12s

    No carriage returns, no line that grows. Steps are 1-based (`update(step)` after step `step`); loss,
    tok/s and lr are the latest `metrics` (`on_log`'s dict; absent before the first log). The ETA is the
    remaining steps at the mean speed of this call (a resumed run's earlier steps are not counted); the
    last line gives the time taken instead.
    """

    def __init__(
        self, total: int, initial: int, stream: TextIO, interval: float, clock: Callable[[], float]
    ) -> None:
        self.total, self.initial, self.step = total, initial, initial
        self.stream, self.interval, self.clock = stream, interval, clock
        self.metrics: dict[str, float] = {}
        self.start = self.last = clock()
        self.printed_step = -1

    def update(self, step: int) -> None:
        """Record that `step` is done; print a line when `interval` seconds passed since the last one."""
        self.step = step
        if self.clock() - self.last >= self.interval:
            self.write()

    def close(self) -> None:
        """Print the last line (unless the last step's line is already out)."""
        if self.printed_step != self.step:
            self.write(final=True)

    def write(self, final: bool = False) -> None:
        now = self.clock()
        self.last, self.printed_step = now, self.step
        print(self.line(now - self.start, final), file=self.stream, flush=True)

    def line(self, elapsed: float, final: bool = False) -> str:
        """The progress line after `elapsed` seconds of this call."""
        total = max(self.total, 1)
        parts = [f"step {self.step}/{self.total} ({100 * self.step // total}%)"]
        m = self.metrics
        if "train_loss" in m:
            parts.append(f"loss {m['train_loss']:.3f}")
        if "tokens_per_s" in m:
            parts.append(f"{si_number(m['tokens_per_s'])} tok/s")
        if "lr" in m:
            parts.append(f"lr {m['lr']:.1e}")
        done = self.step - self.initial
        if final or self.step >= self.total:
            parts.append(f"{duration(elapsed)} elapsed")
        elif done > 0 and elapsed > 0:
            parts.append(f"ETA {duration((self.total - self.step) * elapsed / done)}")
        return " · ".join(parts)


def si_number(x: float) -> str:
    """A rate for people: 950 → "950", 5234 → "5.2k", 12_345 → "12k", 3.4e6 → "3.4M"."""
    for factor, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            v = x / factor
            return f"{v:.1f}{suffix}" if abs(v) < 10 else f"{v:.0f}{suffix}"
    return f"{x:.0f}"


def duration(seconds: float) -> str:
    """Seconds for people: 42 → "42s", 72 → "1m12s", 3725 → "1h02m"."""
    s = max(0, round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
