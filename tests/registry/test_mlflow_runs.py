"""The fast MLflow reader: a real sqlite store written by mlflow's client, read with the stdlib only; store
problems (missing, locked, damaged, not MLflow, a server that is down) are warnings, never exceptions."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from model_foundry.registry.mlflow_runs import RunRecord, read_runs, sqlite_path, tracking_uri_for

MODELS = [f"model-{i}" for i in range(20)]
RUNS_PER_MODEL = 10  # 200 runs in all
T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z, in ms


def _build(uri: str) -> dict[str, str]:
    """200 finished runs (10 per model, each with a start time, params, metrics and tags), one run without a
    model_name tag and one deleted run; returns {"experiment_id", "newest": the newest run of model-0}."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag

    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment("model-foundry")
    newest = ""
    for i in range(RUNS_PER_MODEL):
        for m, model in enumerate(MODELS):
            stage = "evaluate" if i % 5 == 4 else "train"
            tags = {"model_name": model, "stage": stage, "dvc_exp_name": f"exp-{i}" if i % 2 else ""}
            start = T0 + (i * len(MODELS) + m) * 1000
            run = client.create_run(experiment_id, start_time=start, tags=tags, run_name=model)
            client.log_batch(
                run.info.run_id,
                metrics=[
                    Metric("val_loss", 5.0 - i, start, 6),
                    Metric("eval_perplexity", 100.0 + i, start, 0),
                ],
                params=[Param("train.steps", str(6 + i)), Param("model.n_layer", "1")],
                tags=[RunTag("foundry.weights_sha256", f"{m:064x}")],
                synchronous=True,
            )
            client.set_terminated(run.info.run_id, "FINISHED", end_time=start + 500)
            if m == 0:
                newest = run.info.run_id
    client.create_run(experiment_id, tags={"stage": "train"}, run_name="not-a-model")
    gone = client.create_run(experiment_id, tags={"model_name": "deleted-model"}, run_name="deleted-model")
    client.delete_run(gone.info.run_id)
    return {"experiment_id": experiment_id, "newest": newest}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, str]]:
    path = tmp_path_factory.mktemp("mlflow-store") / "mlflow.db"
    uri = f"sqlite:///{path}"
    return uri, _build(uri)


def test_reads_200_runs_fast_keyed_by_model_newest_first(store: tuple[str, dict[str, str]]) -> None:
    uri, built = store
    start = time.perf_counter()
    runs, warnings = read_runs(uri)
    seconds = time.perf_counter() - start
    assert seconds < 2.0, f"read_runs took {seconds:.2f} s for 200 runs"
    assert warnings == []
    assert sorted(runs) == sorted(MODELS)  # no untagged run, no deleted run
    assert all(len(records) == RUNS_PER_MODEL for records in runs.values())

    first = runs["model-0"]
    assert [r.start_time for r in first] == sorted((r.start_time for r in first), reverse=True)
    newest = first[0]
    assert newest == RunRecord(
        run_id=built["newest"],
        name="model-0",
        stage="evaluate",  # i = 9
        status="FINISHED",
        start_time="2026-01-01T00:03:00+00:00",  # i = 9: run 180, 180 s after T0
        model_name="model-0",
        dvc_exp_name="exp-9",
        metrics={"val_loss": -4.0, "eval_perplexity": 109.0},
        params={"train.steps": "15", "model.n_layer": "1"},
        url=f"http://127.0.0.1:5000/#/experiments/{built['experiment_id']}/runs/{built['newest']}",
    )
    assert first[5].stage == "evaluate" and first[5].dvc_exp_name == ""  # i = 4
    assert first[1].stage == "train" and first[1].dvc_exp_name == ""  # i = 8


def test_reading_imports_no_mlflow(store: tuple[str, dict[str, str]]) -> None:
    """In a fresh interpreter: read_runs on a sqlite store leaves mlflow (and sqlalchemy) unimported."""
    uri, _ = store
    code = (
        "import json, sys\n"
        "from model_foundry.registry.mlflow_runs import read_runs\n"
        f"runs, warnings = read_runs({uri!r})\n"
        "heavy = [m for m in ('mlflow', 'sqlalchemy') if m in sys.modules]\n"
        "print(json.dumps([len(runs), warnings, heavy]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert json.loads(out.stdout) == [len(MODELS), [], []]


def test_a_missing_store_is_a_warning(tmp_path: Path) -> None:
    runs, warnings = read_runs(f"sqlite:///{tmp_path / 'nothing.db'}")
    assert runs == {} and len(warnings) == 1
    assert warnings[0].startswith(f"no MLflow store at {tmp_path / 'nothing.db'}")
    assert not (tmp_path / "nothing.db").exists()  # read-only: no empty database left behind


def test_a_locked_store_is_a_warning(store: tuple[str, dict[str, str]]) -> None:
    uri, _ = store
    writer = sqlite3.connect(sqlite_path(uri), isolation_level=None)
    try:
        writer.execute("BEGIN EXCLUSIVE")  # what a writer holds while it commits
        start = time.perf_counter()
        runs, warnings = read_runs(uri)
        waited = time.perf_counter() - start
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert runs == {} and len(warnings) == 1 and "is locked by another process" in warnings[0]
    assert waited < 5.0  # gives up after ~1 s
    assert len(read_runs(uri)[0]) == len(MODELS)  # readable again once the writer is done


def test_a_damaged_file_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "mlflow.db"
    path.write_bytes(b"this is not a database, " * 100)
    runs, warnings = read_runs(f"sqlite:///{path}")
    assert runs == {} and len(warnings) == 1
    assert "is damaged or not a database" in warnings[0] and str(path) in warnings[0]


def test_a_sqlite_file_that_is_not_mlflow_is_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE notes (text TEXT)")
    runs, warnings = read_runs(f"sqlite:///{path}")
    assert runs == {} and len(warnings) == 1 and "is not an MLflow store" in warnings[0]


def test_an_unreachable_server_is_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    """A non-sqlite URI goes through mlflow's client; a server that is down is a warning."""
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    runs, warnings = read_runs("http://127.0.0.1:9")  # the discard port: nothing listens
    assert runs == {} and len(warnings) == 1
    assert warnings[0].startswith("MLflow store http://127.0.0.1:9 could not be read")


def test_in_memory_sqlite_is_a_warning() -> None:
    runs, warnings = read_runs("sqlite://")
    assert runs == {} and "not a sqlite file" in warnings[0]


def test_tracking_uri_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = tracking_uri_for(tmp_path)
    assert uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"
    assert sqlite_path(uri) == tmp_path.resolve() / "mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    assert tracking_uri_for(tmp_path) == "http://mlflow.example:5000"
    assert sqlite_path("sqlite:///rel/mlflow.db") == Path("rel/mlflow.db")
    assert sqlite_path("http://mlflow.example:5000") is None


def test_tracking_uses_the_same_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from model_foundry import tracking

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert tracking.tracking_uri() == tracking_uri_for(tmp_path)


def test_other_stores_are_read_through_the_mlflow_client(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A non-sqlite URI (here MLflow's file store; a server in practice) falls back to `search_runs`."""
    import mlflow

    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # mlflow 3 keeps the file store for reading only
    uri = (tmp_path / "mlruns").as_uri()
    client = mlflow.MlflowClient(uri)
    experiment_id = client.create_experiment("model-foundry")
    run = client.create_run(experiment_id, tags={"model_name": "gpt-a", "stage": "train"}, run_name="gpt-a")
    client.log_metric(run.info.run_id, "val_loss", 1.5)
    client.log_param(run.info.run_id, "train.steps", "6")
    client.create_run(experiment_id, tags={"stage": "train"}, run_name="untagged")
    runs, warnings = read_runs(uri)
    assert warnings == [] and list(runs) == ["gpt-a"]
    (record,) = runs["gpt-a"]
    assert (record.run_id, record.name, record.stage, record.status) == (
        run.info.run_id,
        "gpt-a",
        "train",
        "RUNNING",
    )
    assert record.metrics == {"val_loss": 1.5} and record.params == {"train.steps": "6"}
    assert record.url.endswith(f"/#/experiments/{experiment_id}/runs/{run.info.run_id}")
