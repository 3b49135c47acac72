"""MLflow: the one module that knows the store URI, the experiment, the tags and how params are flattened.

Default store: `sqlite:///<project root>/mlflow.db` (override with MLFLOW_TRACKING_URI). Runs queued with
`dvc exp run --queue` execute in a temp copy under `.dvc/tmp/exps/`; they still log to the main project's
store, so every experiment shows up in one `mlflow ui`.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EXPERIMENT = "model-foundry"
WEIGHTS_TAG = "foundry.weights_sha256"


def project_root(start: Path | None = None) -> Path:
    """The folder holding `.dvc/`, skipping DVC's temp experiment copies."""
    here = (start or Path.cwd()).resolve()
    parts = here.parts
    for i in range(len(parts) - 3):
        if parts[i : i + 4] == (".dvc", "tmp", "exps", parts[i + 3]) and parts[i + 3]:
            return Path(*parts[:i])
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir():
            return folder
    return here


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project_root() / 'mlflow.db'}"


def git_commit(cwd: Path | None = None) -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _setup() -> Any:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    if mlflow.get_experiment_by_name(EXPERIMENT) is None:
        artifacts = (project_root() / "mlartifacts").as_uri()
        with contextlib.suppress(Exception):  # another process may create it at the same moment
            mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def standard_tags(
    model_name: str, architecture: str, fine_tuned_from: str | None, stage: str
) -> dict[str, str]:
    tags = {
        "model_name": model_name,
        "architecture": architecture,
        "fine_tuned_from": fine_tuned_from or "",
        "stage": stage,
    }
    if commit := git_commit():
        tags["git_commit"] = commit
        tags["mlflow.source.git.commit"] = commit
    if exp := os.environ.get("DVC_EXP_NAME"):
        tags["dvc_exp_name"] = exp
    return tags


class Tracker:
    """An open MLflow run: `log` takes step metrics (and matches the training loop's callback)."""

    def __init__(self, mlflow: Any, run: Any) -> None:
        self.mlflow = mlflow
        self.run_id: str = run.info.run_id

    def log(self, metrics: dict[str, float], step: int | None = None) -> None:
        self.mlflow.log_metrics({k: float(v) for k, v in metrics.items()}, step=step, synchronous=False)

    def log_params(self, params: dict[str, Any]) -> None:
        self.mlflow.log_params({k: ("" if v is None else str(v)[:6000]) for k, v in params.items()})

    def set_tags(self, tags: dict[str, str]) -> None:
        self.mlflow.set_tags(tags)

    def log_artifact(self, path: str | Path) -> None:
        self.mlflow.log_artifact(str(path))


@contextlib.contextmanager
def start_run(run_name: str, tags: dict[str, str], run_id: str | None = None) -> Iterator[Tracker]:
    mlflow = _setup()
    resume = run_id is not None  # logging into an earlier run keeps its tags
    with mlflow.start_run(
        run_id=run_id, run_name=None if resume else run_name, tags=None if resume else tags
    ) as run:
        tracker = Tracker(mlflow, run)
        yield tracker
        mlflow.flush_async_logging()


def find_run_by_weights(sha256: str) -> str | None:
    """The training run that produced these weights (tagged at the end of training), if this store has it."""
    mlflow = _setup()
    runs = mlflow.search_runs(
        experiment_names=[EXPERIMENT],
        filter_string=f"tags.`{WEIGHTS_TAG}` = '{sha256}'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
        output_format="list",
    )
    return runs[0].info.run_id if runs else None


def loss_curve_png(
    train: list[tuple[int, float]], val: list[tuple[int, float]], path: Path, title: str
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if train:
        ax.plot(*zip(*train, strict=True), label="train")
    if val:
        ax.plot(*zip(*val, strict=True), marker="o", label="val")
    ax.set(xlabel="step", ylabel="loss", title=title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
