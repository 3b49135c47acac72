"""End to end: `dvc repro` in two temp git + DVC copies of the project, with tiny params.

One `dvc repro` with its lockfile, metrics and MLflow run, then `dvc exp run`, is tested by
tests/core/test_readme_flows.py (the README's quick start, run as written).
"""

from __future__ import annotations

import json
import re
import sqlite3

import pytest
import yaml

from conftest import make_repo_copy, run_cmd, tiny_params

pytestmark = pytest.mark.slow


def _env(repo):
    return {"env": {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}}


def _outs(repo) -> dict[str, str]:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for stage in lock["stages"].values() for o in stage.get("outs", [])}


def test_two_clean_copies_reproduce_identical_hashes_and_rerun_as_noops(tmp_path):
    hashes = []
    for name in ("one", "two"):
        repo = make_repo_copy(tmp_path / name, tiny_params())
        run_cmd(["dvc", "repro"], repo, **_env(repo))
        hashes.append((_outs(repo), (repo / "metrics.json").read_text()))
    assert hashes[0] == hashes[1]
    assert hashes[0][0]["models/gpt-tiny-trained"].endswith(".dir") and "data/tokenized" in hashes[0][0]
    metrics = json.loads(hashes[0][1])

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
