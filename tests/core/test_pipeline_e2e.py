"""End to end: `dvc repro` and `dvc exp run` in a temp git + DVC copy of the project, with tiny params."""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
import yaml

from conftest import make_repo_copy, run_cmd, tiny_params

pytestmark = pytest.mark.slow
STAGES = ["inputs", "import", "convert", "tokenize", "train", "evaluate"]


def _env(repo):
    return {"env": {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}}


def _outs(repo) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def test_repro_lock_metrics_mlflow_and_noop_rerun(tmp_path):
    repo = make_repo_copy(tmp_path / "a", tiny_params())
    run_cmd(["dvc", "repro"], repo, **_env(repo))

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert list(lock["stages"]) == STAGES
    outs = _outs(repo)
    assert outs["models/gpt-tiny-trained"].endswith(".dir") and "data/tokenized" in outs
    metrics = json.loads((repo / "metrics.json").read_text())
    assert metrics["perplexity"] > 1 and "unigram" in metrics
    assert (repo / "models/gpt-tiny-trained/model.safetensors").is_file()

    with sqlite3.connect(repo / "mlflow.db") as db:
        runs = db.execute("select run_uuid, status from runs").fetchall()
        tags = dict(db.execute("select key, value from tags where run_uuid = ?", (runs[0][0],)).fetchall())
        metric_keys = {k for (k,) in db.execute("select distinct key from metrics")}
    assert len(runs) == 1 and runs[0][1] == "FINISHED"  # evaluate logged into the training run
    assert tags["model_name"] == "gpt-tiny-trained" and tags["git_commit"]
    assert {"train_loss", "val_loss", "eval_perplexity", "eval_unigram_perplexity"} <= metric_keys

    again = run_cmd(["dvc", "repro"], repo, **_env(repo))  # only `inputs` runs (always_changed): same bytes
    assert "didn't change, skipping" in again.stdout
    assert re.findall(r"Running stage '([\w-]+)'", again.stdout) == ["inputs"]

    # A fresh clone has an empty MLflow store: retraining gives the same bytes, DVC skips evaluate, and the
    # new training run still carries the evaluation that dvc.lock records for those bytes.
    (repo / "mlflow.db").unlink()
    retrain = run_cmd(["dvc", "repro", "--force", "train"], repo, **_env(repo))
    assert "Running stage 'evaluate'" not in retrain.stdout
    with sqlite3.connect(repo / "mlflow.db") as db:
        (run_id,) = db.execute("select run_uuid from runs").fetchone()
        tags = dict(db.execute("select key, value from tags where run_uuid = ?", (run_id,)).fetchall())
        evals = dict(db.execute("select key, value from latest_metrics where key like 'eval_%'").fetchall())
    assert tags["foundry.eval_copied_from"] == "dvc.lock"
    assert evals["eval_perplexity"] == pytest.approx(metrics["perplexity"])


def test_two_clean_copies_reproduce_identical_hashes(tmp_path):
    hashes = []
    for name in ("one", "two"):
        repo = make_repo_copy(tmp_path / name, tiny_params())
        run_cmd(["dvc", "repro"], repo, **_env(repo))
        hashes.append((_outs(repo), (repo / "metrics.json").read_text()))
    assert hashes[0] == hashes[1]
