"""MLflow: the one module that knows the store URI, the experiment, the tags and how params are flattened.

Default store: `sqlite:///<project root>/mlflow.db` (override with MLFLOW_TRACKING_URI). Runs queued with
`dvc exp run --queue` execute in a temp copy under `.dvc/tmp/exps/`; they still log to the main project's
store, so every experiment shows up in one `mlflow ui`. With a tracking server (`http://…`) the server places
the artifacts (its `--artifacts-destination`); with a store on this machine they go to `mlartifacts/`.

The experiment `model-foundry` carries `mlflow.experimentKind = custom_model_development`, so MLflow 3's UI
opens it on its runs (not on the GenAI "Traces" tab); a store made before gets the tag at the next run (a
kind set by hand in the UI is left alone).

What a model leaves in the store:
- a training run named after the model (`gpt-tiny-trained`; under `dvc exp run`, `gpt-tiny-trained@bold-mole`,
  and the experiment's name is the tag `dvc_exp_name`), tagged stage=train, with its dataset as an MLflow
  dataset input (name = data.source, digest = DVC's md5 of the tokenized data folder, context "training");
- a LoggedModel of the same name (`ensure_logged_model`): an *external* model, whose weights stay in the
  DVC-tracked folder `models/<name>` (tag `foundry.path`) and are never copied into the artifact store,
  one per (name, DVC checksum of the folder): retraining to identical bytes reuses it;
- the evaluation's metrics, on every training run that produced these weights and linked to the
  LoggedModel (`model_id`); when no training run of these weights is in the store, on a run
  `<model>-eval` (`<model>-eval@<experiment>`) tagged stage=evaluate.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model_foundry.errors import FoundryError
from model_foundry.project import git_commit, project_root
from model_foundry.registry.mlflow_runs import tracking_uri_for

EXPERIMENT = "model-foundry"
WEIGHTS_TAG = "foundry.weights_sha256"
EVAL_PREFIX = "eval_"  # the evaluate stage's metrics on a training run
EVAL_COPIED_TAG = "foundry.eval_copied_from"  # the run whose evaluation of the same weights was copied
PARAM_LIMIT = 6000  # mlflow.utils.validation.MAX_PARAM_VAL_LENGTH in mlflow 3 (a test checks they agree)
# Who runs a run: a run left RUNNING whose process is gone (kill -9, power loss) is marked KILLED later.
PID_TAG, HOST_TAG, PROJECT_TAG = "foundry.pid", "foundry.host", "foundry.project"
# LoggedModel tags (besides foundry.parent, foundry.parent_checksum, architecture, method)
CHECKSUM_TAG = "foundry.checksum"  # DVC's md5 of models/<name> (`<hex>.dir`), what dvc.lock records
PATH_TAG = "foundry.path"  # where the weights are: the DVC-tracked folder, relative to the project root
MODEL_ID_TAG = "foundry.model_id"  # on a training run: the LoggedModel it produced (or reproduced)
MLFLOW_MODEL_FORBIDDEN = "./:%\"'"  # mlflow.utils.validation._validate_logged_model_name
DATASET_NAME_LIMIT = 500  # the `name` column of MLflow's datasets table
# MLflow 3's UI opens an experiment without this tag on its GenAI "Traces" tab; "custom_model_development"
# ("Machine learning" in the UI's experiment settings) opens it on the runs table.
KIND_TAG, TRAINING_KIND = "mlflow.experimentKind", "custom_model_development"
EXPERIMENT_TAGS = {KIND_TAG: TRAINING_KIND}
SERVER_SCHEMES = ("http", "https", "databricks")  # tracking servers: they place the artifacts themselves


def tracking_uri() -> str:
    """MLFLOW_TRACKING_URI, else the sqlite store `mlflow.db` in the project root (model_foundry.project)."""
    return tracking_uri_for(project_root())


def _setup() -> Any:
    """mlflow, pointed at this project's store and experiment (created, with its kind, when missing)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    mlflow.set_tracking_uri(tracking_uri())
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        artifacts = experiment_artifact_location(tracking_uri())
        with contextlib.suppress(Exception):  # another process may create it at the same moment
            mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts, tags=EXPERIMENT_TAGS)
    elif KIND_TAG not in experiment.tags:  # a store made before the kind was set (one set in the UI stays)
        with contextlib.suppress(Exception):
            mlflow.MlflowClient().set_experiment_tag(experiment.experiment_id, KIND_TAG, TRAINING_KIND)
    mlflow.set_experiment(EXPERIMENT)
    return mlflow


def experiment_artifact_location(uri: str) -> str | None:
    """Where a new experiment keeps its artifacts: `<project root>/mlartifacts` for a store on this machine
    (sqlite, a database, a folder), None for a tracking server (`http(s)://`, `databricks`), which then
    chooses (its `--artifacts-destination`, e.g. s3://…): a path on the machine that happened to create the
    experiment would be wrong for every other machine sharing the server."""
    if uri.split(":", 1)[0].lower() in SERVER_SCHEMES:
        return None
    return (project_root() / "mlartifacts").as_uri()


def run_label(name: str) -> str:
    """The MLflow run name for a run of the model `name`: `name`, or `name@<experiment>` inside
    `dvc exp run` (DVC sets DVC_EXP_NAME there, also for the random names it picks)."""
    exp = os.environ.get("DVC_EXP_NAME")
    return f"{name}@{exp}" if exp else name


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
        self.model_id: str | None = None  # the LoggedModel this run produced, once `log_model` ran

    def log(self, metrics: dict[str, float], step: int | None = None, model_id: str | None = None) -> None:
        """Log metrics (linked to the LoggedModel `model_id` when given); raises ValueError on NaN/Infinity
        (no non-finite number is ever recorded)."""
        values = finite_metrics(metrics)
        self.mlflow.log_metrics(values, step=step, synchronous=False, model_id=model_id)

    def log_dataset(self, name: str, digest: str, source: str | Path, context: str = "training") -> None:
        """Record the data this run read as an MLflow dataset input (shown under the run's "Datasets").

        `name`: what the data is (data.source, `dataset_name`); `digest`: DVC's md5 of the folder
        (`<hex>.dir`, `registry.dvc.dvc_md5`), so runs on the same bytes show one dataset; `source`: its path.
        """
        from mlflow.data.meta_dataset import MetaDataset
        from mlflow.data.sources import LocalArtifactDatasetSource

        dataset = MetaDataset(
            LocalArtifactDatasetSource(str(Path(source).resolve())), name=name, digest=digest
        )
        self.mlflow.log_input(dataset, context=context)

    def log_model(self, model_dir: str | Path, meta: dict[str, Any]) -> str:
        """Link this run to the LoggedModel of the folder `model_dir` (created with this run as its source
        run, or the existing one for the same name and bytes); tags the run with MODEL_ID_TAG and returns
        the model id, kept as `self.model_id` (the evaluation this run attaches is linked to it)."""
        from mlflow.entities import LoggedModelOutput

        self.model_id = ensure_logged_model(model_dir, meta, source_run_id=self.run_id)
        self.mlflow.MlflowClient().log_outputs(self.run_id, [LoggedModelOutput(self.model_id, 0)])
        self.set_tags({MODEL_ID_TAG: self.model_id})
        return self.model_id

    def flush(self) -> None:
        """Wait until every metric logged so far is in the store (logging is asynchronous)."""
        self.mlflow.flush_async_logging()

    def log_params(self, params: dict[str, Any]) -> None:
        """Log params as strings; one longer than MLflow's limit is cut with a visible marker and logged
        in full as the artifact `params/<key>.txt`."""
        logged = {}
        for key, value in params.items():
            logged[key], full = param_value(key, value)
            if full is not None:
                self.mlflow.log_text(full, f"params/{key}.txt")
        self.mlflow.log_params(logged)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.mlflow.set_tags(tags)

    def log_artifact(self, path: str | Path) -> None:
        self.mlflow.log_artifact(str(path))

    def attach_earlier_evaluation(self, weights_sha256: str) -> str | None:
        """Copy the latest evaluation of the same weights (from another run) onto this run.

        DVC skips the evaluate stage when retraining gives byte-identical weights; this keeps every training
        run carrying the evaluation of the weights it produced. Returns the source run id (tagged on this run
        as EVAL_COPIED_TAG), or None when these weights were never evaluated in this store.
        """
        found = earlier_evaluation(weights_sha256, exclude_run_id=self.run_id)
        if found is None:
            return None
        source, metrics = found
        self.log(metrics, model_id=self.model_id)
        self.set_tags({EVAL_COPIED_TAG: source})
        return source

    def attach_recorded_evaluation(self, model_dir: str | Path) -> str | None:
        """Attach the evaluation `dvc.lock` records for exactly these bytes of `model_dir`, if any.

        The fresh-clone case of `attach_earlier_evaluation`: the store is new, but the committed lock says an
        evaluate stage scored this very folder (same DVC hash) and its metrics file is unchanged. Returns the
        source (`dvc.lock`, tagged as EVAL_COPIED_TAG) or None.
        """
        from model_foundry.registry.dvc import LOCK_NAME, recorded_metrics_for

        model_dir = Path(model_dir).resolve()
        root = next((d for d in model_dir.parents if (d / LOCK_NAME).is_file()), None)
        metrics = recorded_metrics_for(root, model_dir) if root else None
        if metrics is None:
            return None
        self.log(evaluation_metrics(metrics), model_id=self.model_id)
        self.set_tags({EVAL_COPIED_TAG: LOCK_NAME})
        return LOCK_NAME


def evaluation_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """metrics.json → the `eval_*` metrics of a training run (`unigram` → `eval_unigram_*`)."""
    flat = {f"{EVAL_PREFIX}{k}": v for k, v in metrics.items() if isinstance(v, (int, float))}
    unigram = metrics.get("unigram")
    if isinstance(unigram, dict):
        flat.update(
            {f"{EVAL_PREFIX}unigram_{k}": v for k, v in unigram.items() if isinstance(v, (int, float))}
        )
    return flat


def finite_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    """Metrics as floats; raises ValueError naming any NaN/Infinity (never logged)."""
    values = {k: float(v) for k, v in metrics.items()}
    if bad := [k for k, v in values.items() if not math.isfinite(v)]:
        raise ValueError(f"non-finite metrics {bad}: {[values[k] for k in bad]}")
    return values


def param_value(key: str, value: Any, limit: int = PARAM_LIMIT) -> tuple[str, str | None]:
    """(the string MLflow stores, the full string when that had to be cut, else None)."""
    text = "" if value is None else str(value)
    if len(text) <= limit:
        return text, None
    marker = f"…[truncated, {len(text)} chars; full value in artifact params/{key}.txt]"
    return text[: limit - len(marker)] + marker, text


def owner_tags() -> dict[str, str]:
    """The tags naming this process: its pid, this host and the project folder."""
    from model_foundry.leftovers import host

    return {PID_TAG: str(os.getpid()), HOST_TAG: host(), PROJECT_TAG: str(project_root())}


def mark_stale_runs_killed() -> list[str]:
    """Mark this project's RUNNING runs whose process (on this host) is gone as KILLED; returns their ids.

    A process killed with kill -9 cannot end its run, which would otherwise stay RUNNING forever. Runs of
    live processes, of other hosts or projects, and runs without owner tags (older runs) are left alone.
    """
    from model_foundry.leftovers import process_alive

    mlflow = _setup()
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(EXPERIMENT)
    if experiment is None:
        return []
    mine = owner_tags()
    runs = client.search_runs(
        [experiment.experiment_id],
        filter_string=f"attributes.status = 'RUNNING' and tags.`{HOST_TAG}` = '{mine[HOST_TAG]}'",
        max_results=1000,
    )
    killed = []
    for run in runs:
        pid = run.data.tags.get(PID_TAG, "")
        if run.data.tags.get(PROJECT_TAG) != mine[PROJECT_TAG] or not pid.isdigit():
            continue
        if not process_alive(int(pid)):
            client.set_terminated(run.info.run_id, status="KILLED")
            killed.append(run.info.run_id)
    return killed


@contextlib.contextmanager
def start_run(run_name: str, tags: dict[str, str], run_id: str | None = None) -> Iterator[Tracker]:
    """Open an MLflow run (a new one, or `run_id` resumed with its tags kept), tagged with this process.

    This project's runs left RUNNING by killed processes are marked KILLED first (`mark_stale_runs_killed`).
    """
    mlflow = _setup()
    if killed := mark_stale_runs_killed():
        print(
            f"note: marked {len(killed)} MLflow run(s) of killed processes as KILLED: {', '.join(killed)}",
            file=sys.stderr,
        )
    resume = run_id is not None  # logging into an earlier run keeps its name and tags
    with mlflow.start_run(
        run_id=run_id, run_name=None if resume else run_label(run_name), tags=None if resume else tags
    ) as run:
        mlflow.set_tags(owner_tags())
        tracker = Tracker(mlflow, run)
        yield tracker
        mlflow.flush_async_logging()


def existing_run(run_id: str | None) -> str | None:
    """`run_id` when this store has that run (a checkpoint's run, to continue), else None (with a note)."""
    if not run_id:
        return None
    mlflow = _setup()
    try:
        mlflow.get_run(run_id)
    except mlflow.exceptions.MlflowException:
        print(
            f"note: MLflow run {run_id} of the checkpoint is not in this store; logging to a new run",
            file=sys.stderr,
        )
        return None
    return run_id


def _runs_with_weights(sha256: str) -> list[Any]:
    """The training runs that produced these weights (tagged at the end of training), newest first."""
    mlflow = _setup()
    return mlflow.search_runs(
        experiment_names=[EXPERIMENT],
        filter_string=f"tags.`{WEIGHTS_TAG}` = '{sha256}'",
        order_by=["attributes.start_time DESC"],
        output_format="list",
    )


def find_runs_by_weights(sha256: str) -> list[str]:
    """Ids of every training run that produced these weights (retraining with the same seed repeats them)."""
    return [run.info.run_id for run in _runs_with_weights(sha256)]


def find_run_by_weights(sha256: str) -> str | None:
    """The newest training run that produced these weights, if this store has one."""
    runs = find_runs_by_weights(sha256)
    return runs[0] if runs else None


def earlier_evaluation(sha256: str, exclude_run_id: str | None = None) -> tuple[str, dict[str, float]] | None:
    """(run id, its eval_* metrics) of the newest run with these weights that has an evaluation, or None.

    The run id is where the evaluation was first logged: a run that itself holds a copy names its source.
    """
    for run in _runs_with_weights(sha256):
        metrics = {k: v for k, v in run.data.metrics.items() if k.startswith(EVAL_PREFIX)}
        if run.info.run_id != exclude_run_id and metrics:
            return run.data.tags.get(EVAL_COPIED_TAG) or run.info.run_id, metrics
    return None


def log_evaluation(
    run_ids: list[str],
    metrics: dict[str, float],
    model_id: str | None = None,
    tags: dict[str, str | None] | None = None,
) -> None:
    """Log the evaluate stage's metrics into each of these runs (they produced the evaluated weights),
    linked to the LoggedModel `model_id` when given, and set `tags` on them (a None value removes the tag).

    Raises ValueError on NaN/Infinity. A copied-evaluation tag is dropped: the run now has its own.
    """
    import time

    from mlflow.entities import Metric

    mlflow = _setup()
    values = finite_metrics(metrics)
    client = mlflow.MlflowClient()
    now = int(time.time() * 1000)
    for run_id in run_ids:
        batch = [Metric(k, v, now, 0, model_id=model_id) for k, v in values.items()]
        client.log_batch(run_id, metrics=batch, synchronous=True)
        present = client.get_run(run_id).data.tags
        for key, value in {EVAL_COPIED_TAG: None, **(tags or {})}.items():
            if value is not None:
                client.set_tag(run_id, key, value)
            elif key in present:
                client.delete_tag(run_id, key)


# --- datasets and logged models ----------------------------------------------------------------------------
def dataset_name(source: str | list[str]) -> str:
    """The MLflow dataset name of data.source: the source itself (`builtin:pydoc_topics`, a path), or the
    sources joined with ", "; cut to DATASET_NAME_LIMIT characters with a visible "…"."""
    text = ", ".join(source) if isinstance(source, list) else source
    return text if len(text) <= DATASET_NAME_LIMIT else text[: DATASET_NAME_LIMIT - 1] + "…"


def check_model_name(name: str) -> str:
    """`name` when MLflow accepts it as a LoggedModel name; FoundryError naming the character otherwise.

    Catalog keys and pipeline outputs already follow `naming.check_name` (which implies this); the check
    catches `foundry train --out` folders like `models/gpt.v2` before training starts.
    """
    bad = sorted({c for c in name if c in MLFLOW_MODEL_FORBIDDEN})
    if not name or bad:
        what = f"contains {', '.join(map(repr, bad))}" if bad else "is empty"
        raise FoundryError(
            f"The model name {name!r} {what}: MLflow model names forbid . / : % and quotes.",
            "Name the output folder with lower-case letters, digits and '-' (e.g. models/gpt-v2).",
        )
    return name


def model_method(meta: dict[str, Any]) -> str:
    """How the model was made: metadata.json's training.method (full, lora), else scratch, copy or import."""
    from model_foundry.registry.lineage import link_method

    training = meta.get("training")
    if isinstance(training, dict) and training.get("method"):
        return str(training["method"])
    return link_method(meta)


def model_tags(model_dir: str | Path, meta: dict[str, Any], checksum: str) -> dict[str, str]:
    """The LoggedModel tags of the folder `model_dir` (metadata.json `meta`, DVC checksum `checksum`)."""
    from model_foundry.registry.lineage import parent_of

    model_dir = Path(model_dir).resolve()
    root = project_root().resolve()
    parent, parent_checksum = parent_of(meta)
    path = model_dir.relative_to(root).as_posix() if model_dir.is_relative_to(root) else str(model_dir)
    return {
        CHECKSUM_TAG: checksum,
        PATH_TAG: path,
        "foundry.parent": parent or "",
        "foundry.parent_checksum": parent_checksum or "",
        "architecture": str(meta.get("architecture") or ""),
        "method": model_method(meta),
    }


def find_logged_model(name: str, checksum: str) -> str | None:
    """The id of the LoggedModel `name` whose folder had the DVC checksum `checksum`, if this store has one
    (the oldest: the one first made from these bytes)."""
    mlflow = _setup()
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    found = mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id],
        filter_string=f"name = '{check_model_name(name)}' AND tags.`{CHECKSUM_TAG}` = '{checksum}'",
        order_by=[{"field_name": "creation_time", "ascending": True}],
        output_format="list",
    )
    return found[0].model_id if found else None


def ensure_logged_model(
    model_dir: str | Path, meta: dict[str, Any], source_run_id: str, checksum: str | None = None
) -> str:
    """The id of the LoggedModel of the folder `model_dir`, created when this store has none for its name
    and bytes (one per (name, DVC checksum)).

    The model is external (`mlflow.create_external_model`): nothing of the folder is copied into the
    artifact store (MLflow writes only a small MLmodel stub); its tags say where the weights are
    (`model_tags`). `source_run_id`: the run that produced it (a new model only). `checksum`: DVC's md5 of
    the folder, computed (`registry.dvc.dvc_md5`) when not given. The name is the folder's name; FoundryError
    when MLflow forbids it (`check_model_name`).
    """
    from model_foundry.registry.dvc import dvc_md5

    name = check_model_name(Path(model_dir).name)
    checksum = checksum or dvc_md5(model_dir)
    if (found := find_logged_model(name, checksum)) is not None:
        return found
    mlflow = _setup()
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    model = mlflow.create_external_model(
        name=name,
        source_run_id=source_run_id,
        tags=model_tags(model_dir, meta, checksum),
        model_type="model-foundry",
        experiment_id=experiment.experiment_id,
    )
    return str(model.model_id)
