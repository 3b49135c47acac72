"""What a training run reports besides the model: loss plots (CSV for DVC, PNG for MLflow) and the timing log.

The CSVs are DVC plots (`plots/train_loss.csv`, `plots/val_loss.csv`: step, loss to 6 decimals), hashed,
so they hold only what a fixed seed determines; durations and speeds go to `logs/train_timing.json`, which DVC
does not track, and to MLflow. No NaN/Infinity is ever written: a non-finite loss is a ValueError here (the
loop stops a diverged run before, with a FoundryError).
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from model_foundry.io import atomic_write_text, write_json

TIMING_NAME = "train_timing.json"


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


def write_timing(logs_dir: Path, timing: dict[str, Any]) -> Path:
    """`logs_dir/train_timing.json` (model, run id, runtime, losses, tokens/s, seconds); returns its path."""
    path = Path(logs_dir) / TIMING_NAME
    write_json(path, timing)
    return path
