"""The MLflow runs of every model, read fast: the sqlite store with the stdlib, no mlflow import.

`foundry` commands that list models must answer in well under a second; importing mlflow alone takes longer.
MLflow's sqlite store (the project's default, `sqlite:///<root>/mlflow.db`) is read directly, read-only,
from the tables `runs`, `tags`, `params`, `latest_metrics` and `experiments` (schema of mlflow 3.x). Any other
store (a server, a file store) is read with `mlflow.MlflowClient().search_runs`, importing mlflow then.

A store problem (no store yet, a store locked by a writer, a damaged file, an unreachable server) is never an
exception here: `read_runs` returns what it could read and a warning saying what it could not.
"""

from __future__ import annotations

import os
import sqlite3
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

UI_URL = "http://127.0.0.1:5000"  # what `mlflow ui` serves by default
LOCK_TIMEOUT_S = 1.0  # how long a read waits for a writer's lock before giving up with a warning
SQLITE_PREFIX = "sqlite:///"
MODEL_TAG, STAGE_TAG, EXP_TAG = "model_name", "stage", "dvc_exp_name"


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run of a model (a training or evaluation run), as the registry shows it.

    start_time: ISO 8601 in UTC (seconds), "" when unknown. metrics: the latest value of each metric.
    url: the run's page in `mlflow ui` (http://127.0.0.1:5000/#/experiments/<experiment id>/runs/<run id>).
    """

    run_id: str
    name: str
    stage: str  # "train", "evaluate", … (tag `stage`), "" when untagged
    status: str  # RUNNING, FINISHED, FAILED, KILLED, SCHEDULED
    start_time: str
    model_name: str  # tag `model_name`
    dvc_exp_name: str  # tag `dvc_exp_name` ("" outside `dvc exp run`)
    metrics: dict[str, float] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    url: str = ""


def tracking_uri_for(root: Path) -> str:
    """MLFLOW_TRACKING_URI, else the sqlite store `<root>/mlflow.db` (the rule of `tracking.tracking_uri`)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"{SQLITE_PREFIX}{Path(root).resolve() / 'mlflow.db'}"


def sqlite_path(tracking_uri: str) -> Path | None:
    """The database file of a `sqlite:///<path>` URI (`sqlite:////abs` is absolute, `sqlite:///rel` relative
    to the working directory, as SQLAlchemy reads them), or None for any other store."""
    if not tracking_uri.startswith(SQLITE_PREFIX):
        return None
    path = tracking_uri[len(SQLITE_PREFIX) :].split("?", 1)[0]
    return Path(path) if path and path != ":memory:" else None


def run_url(experiment_id: str, run_id: str) -> str:
    """The page of a run in `mlflow ui` on its default address."""
    return f"{UI_URL}/#/experiments/{experiment_id}/runs/{run_id}"


def _iso(millis: int | None) -> str:
    if millis is None:
        return ""
    return datetime.fromtimestamp(millis / 1000, tz=UTC).isoformat(timespec="seconds")


def _record(
    row: tuple[Any, ...],
    tags: dict[str, str],
    metrics: dict[str, float],
    params: dict[str, str],
) -> RunRecord:
    run_id, name, status, start_time, experiment_id = row
    return RunRecord(
        run_id=run_id,
        name=name or "",
        stage=tags.get(STAGE_TAG, ""),
        status=status or "",
        start_time=_iso(start_time),
        model_name=tags.get(MODEL_TAG, ""),
        dvc_exp_name=tags.get(EXP_TAG, ""),
        metrics=metrics,
        params=params,
        url=run_url(str(experiment_id), run_id),
    )


def _by_model(records: list[tuple[int, RunRecord]]) -> dict[str, list[RunRecord]]:
    """Records keyed by model name, newest first; runs without a `model_name` tag are not a model's."""
    out: dict[str, list[RunRecord]] = defaultdict(list)
    for _, record in sorted(records, key=lambda r: r[0], reverse=True):
        if record.model_name:
            out[record.model_name].append(record)
    return dict(out)


def _read_sqlite(path: Path) -> dict[str, list[RunRecord]]:
    """Every active run with a `model_name` tag in the active experiments of the sqlite store `path`.

    Raises sqlite3.Error (locked, not a database, not an MLflow store); the caller turns it into a warning.
    """
    uri = f"file:{quote(str(path.resolve()))}?mode=ro"
    db = sqlite3.connect(uri, uri=True, timeout=LOCK_TIMEOUT_S)
    try:
        db.execute("BEGIN")  # one snapshot for the four reads (a writer may commit in between otherwise)
        rows = db.execute(
            "SELECT r.run_uuid, r.name, r.status, r.start_time, r.experiment_id FROM runs r "
            "JOIN experiments e ON e.experiment_id = r.experiment_id "
            "WHERE r.lifecycle_stage = 'active' AND e.lifecycle_stage = 'active' "
            "AND r.run_uuid IN (SELECT run_uuid FROM tags WHERE key = ?)",
            (MODEL_TAG,),
        ).fetchall()
        wanted = {row[0] for row in rows}
        tags: dict[str, dict[str, str]] = defaultdict(dict)
        for key, value, run_id in db.execute("SELECT key, value, run_uuid FROM tags"):
            if run_id in wanted:
                tags[run_id][key] = value
        params: dict[str, dict[str, str]] = defaultdict(dict)
        for key, value, run_id in db.execute("SELECT key, value, run_uuid FROM params"):
            if run_id in wanted:
                params[run_id][key] = value
        metrics: dict[str, dict[str, float]] = defaultdict(dict)
        for key, value, is_nan, run_id in db.execute(
            "SELECT key, value, is_nan, run_uuid FROM latest_metrics"
        ):
            if run_id in wanted:
                metrics[run_id][key] = float("nan") if is_nan else float(value)
        db.rollback()
    finally:
        db.close()
    return _by_model(
        [(row[3] or 0, _record(row, tags[row[0]], metrics[row[0]], params[row[0]])) for row in rows]
    )


def _read_client(tracking_uri: str) -> dict[str, list[RunRecord]]:
    """The same as `_read_sqlite` through mlflow's client, for any other store (imports mlflow)."""
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    experiment_ids = [e.experiment_id for e in client.search_experiments()]
    records: list[tuple[int, RunRecord]] = []
    token = None
    while experiment_ids:
        page = client.search_runs(
            experiment_ids, filter_string=f"tags.{MODEL_TAG} != ''", max_results=1000, page_token=token
        )
        for run in page:
            row = (run.info.run_id, run.info.run_name, run.info.status, run.info.start_time,
                   run.info.experiment_id)  # fmt: skip
            record = _record(row, dict(run.data.tags), dict(run.data.metrics), dict(run.data.params))
            records.append((run.info.start_time or 0, record))
        token = page.token
        if not token:
            break
    return _by_model(records)


def read_runs(tracking_uri: str) -> tuple[dict[str, list[RunRecord]], list[str]]:
    """The MLflow runs of every model in the store `tracking_uri`, and warnings.

    Returns ({model name (tag `model_name`): its runs, newest first}, warnings). Runs without a `model_name`
    tag and deleted runs are left out. A sqlite store is read with the stdlib (read-only, waiting at most
    LOCK_TIMEOUT_S for a writer's lock); any other URI with `mlflow.MlflowClient`. Never raises for a store
    problem: no store yet, a locked or damaged file, or an unreachable server give ({}, [a warning]).
    """
    path = sqlite_path(tracking_uri)
    if path is None:
        if tracking_uri.startswith("sqlite:"):
            return {}, [
                f"MLflow store {tracking_uri} is not a sqlite file this reader can open; runs not read"
            ]
        try:
            return _read_client(tracking_uri), []
        except Exception as e:  # a server down, a bad URI, …: the registry still lists the models
            return {}, [
                f"MLflow store {tracking_uri} could not be read ({type(e).__name__}: {e}); runs not read"
            ]
    if not path.is_file():
        return {}, [f"no MLflow store at {path} (nothing has been trained or evaluated with this store yet)"]
    try:
        return _read_sqlite(path), []
    except sqlite3.OperationalError as e:
        if "locked" in str(e) or "busy" in str(e):
            reason = f"is locked by another process (waited {LOCK_TIMEOUT_S:g} s); try again when it finishes"
        elif "no such table" in str(e) or "no such column" in str(e):
            reason = f"is not an MLflow store ({e})"
        else:
            reason = f"could not be read ({e})"
        return {}, [f"MLflow store {path} {reason}; runs not read"]
    except sqlite3.Error as e:  # "file is not a database", a damaged page, …
        return {}, [f"MLflow store {path} is damaged or not a database ({e}); runs not read"]
