"""What a training run reports besides the model: loss plots (CSV for DVC, a PNG
for MLflow), the settings it used, and the timing log.

In the plots folder (all DVC outputs of the train stage, tracked in git, `cache: false`):
- `train_loss.csv`, `val_loss.csv`: step, loss to 6 decimals (`dvc plots show` draws them);
- `effective_params.json`: the settings the run used after the catalog entry's overrides
  (`effective_params`), a metrics file, so `dvc exp show` shows each experiment's own `steps`, `lr`, ...
They hold only what the params and a fixed seed determine, so an unchanged `dvc repro` rewrites the same
bytes; durations and speeds go to `logs/train_timing.json`, which DVC does not track, and to MLflow. No
NaN/Infinity is ever written: a non-finite loss is a ValueError here (the loop stops a diverged run before,
with a FoundryError).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from model_foundry.io import atomic_write_text, write_json

TIMING_NAME = "train_timing.json"
EFFECTIVE_NAME = "effective_params.json"


def loss_csv(rows: list[tuple[int, float]], column: str) -> str:
    """A plot CSV: "step,<column>", then a row per (step, value); ValueError on a NaN/Infinity value."""
    if bad := [step for step, value in rows if not math.isfinite(value)]:
        raise ValueError(f"non-finite {column} at steps {bad}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", column])
    writer.writerows((step, f"{value:.6f}") for step, value in rows)
    return buf.getvalue()


def write_loss_csvs(
    plots_dir: Path, train_history: list[tuple[int, float]], val_history: list[tuple[int, float]]
) -> list[Path]:
    """`plots_dir/train_loss.csv` and `plots_dir/val_loss.csv`, each written atomically; returns the paths.

    Both are checked before either is written, so a non-finite value leaves both files as they were.
    """
    texts = {column: loss_csv(rows, column) for column, rows in
             (("train_loss", train_history), ("val_loss", val_history))}  # fmt: skip
    paths = []
    for column, text in texts.items():
        path = Path(plots_dir) / f"{column}.csv"
        atomic_write_text(path, text)
        paths.append(path)
    return paths


def loss_curve_png(
    train_history: list[tuple[int, float]], val_history: list[tuple[int, float]], path: Path, title: str
) -> Path:
    """A 700×400 px PNG of the train (line) and validation (dots) losses against the step; returns `path`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if train_history:
        ax.plot(*zip(*train_history, strict=True), label="train")
    if val_history:
        ax.plot(*zip(*val_history, strict=True), marker="o", label="val")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def effective_params(params: Any, parameters: int, tokenizer: str, vocab_size: int) -> dict[str, Any]:
    """The settings a training run used, for `dvc exp show`: the architecture, the parameter count, the
    tokenizer (its kind and actual size, from the tokenized data) and the keys of the `train:` section after
    the catalog entry's overrides (its own keys win over the global ones): `steps`, `lr`, `lora.r`, ...

    Top-level keys, so DVC's columns are short (`steps`, not `effective.train.steps`) and no name is also one
    of params.yaml's (`train.steps`: a shared name would make DVC prefix both with their file's path). Only
    values DVC displays (numbers, strings, booleans): None is left out and lists are joined with ",".
    `params`: a `config.Params`.
    """
    import dataclasses

    def shown(values: dict[str, Any]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in values.items():
            if isinstance(value, dict):
                out[key] = shown(value)
            elif isinstance(value, (list, tuple)):
                out[key] = ",".join(map(str, value))
            elif value is not None:
                out[key] = value
        return out

    return shown(
        {
            "architecture": params.model.architecture,
            "parameters": parameters,
            "tokenizer": tokenizer,
            "vocab_size": vocab_size,
            **dataclasses.asdict(params.train),
        }
    )


def write_effective_params(plots_dir: Path, settings: dict[str, Any]) -> Path:
    """`plots_dir/effective_params.json` (`effective_params`), written atomically; returns its path."""
    path = Path(plots_dir) / EFFECTIVE_NAME
    write_json(path, settings)
    return path


def write_timing(logs_dir: Path, timing: dict[str, Any]) -> Path:
    """`logs_dir/train_timing.json` (model, run id, runtime, losses, tokens/s, seconds); returns its path."""
    path = Path(logs_dir) / TIMING_NAME
    write_json(path, timing)
    return path
