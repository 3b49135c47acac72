"""A failed `dvc repro` leaves the previous results: the README's promise, under real DVC.

DVC deletes a stage's outputs before running its command unless they are `persist: true`; ours are, and
every stage command replaces its outputs atomically. Bad params fail in the inputs stage, before any other
stage runs.
"""

from __future__ import annotations

import re

import pytest
import yaml

from conftest import make_repo_copy, run_cmd, tiny_params

pytestmark = pytest.mark.slow
RESULTS = ("models/gpt-tiny", "models/gpt-tiny-trained", "data/tokenized", "data/corpus", "plots")


def _env(repo):
    return {"env": {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}}


def _snapshot(repo) -> dict[str, bytes]:
    """Every result file's bytes, with metrics.json and dvc.lock."""
    files = [p for top in RESULTS for p in sorted((repo / top).rglob("*")) if p.is_file()]
    files += [repo / "metrics.json", repo / "dvc.lock"]
    return {str(p.relative_to(repo)): p.read_bytes() for p in files}


def _ran(stdout: str) -> set[str]:
    return set(re.findall(r"Running stage '([\w-]+)'", stdout))


def test_a_failed_stage_leaves_the_previous_results(tmp_path):
    params = tiny_params()
    repo = make_repo_copy(tmp_path / "repo", params)
    run_cmd(["dvc", "repro"], repo, **_env(repo))
    before = _snapshot(repo)
    assert "models/gpt-tiny-trained/model.safetensors" in before and "plots/train_loss.csv" in before

    failures = [
        ({"lr": -1}, "inputs", "train.lr = -1"),  # invalid params: caught before any other stage runs
        ({"device": "mps"}, "train", "Apple MPS is not available"),  # valid params, the train stage fails
    ]
    for change, stage, message in failures:
        bad = {**params, "train": {**params["train"], **change}}
        (repo / "params.yaml").write_text(yaml.safe_dump(bad, sort_keys=False))
        proc = run_cmd(["dvc", "repro"], repo, check=False, **_env(repo))
        assert proc.returncode != 0, proc.stdout
        assert f"failed to reproduce '{stage}'" in proc.stderr and message in proc.stderr
        assert _snapshot(repo) == before, f"{stage} failure changed the results"
        assert not [p for p in repo.rglob(".foundry-tmp-*")], "a temp folder was left behind"

    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    again = run_cmd(["dvc", "repro"], repo, **_env(repo))
    assert _ran(again.stdout) == {"inputs"}  # the previous results are still the current ones
    status = run_cmd(["dvc", "status"], repo).stdout
    assert "always changed" in status and "changed outs" not in status and "modified" not in status


def test_dvc_checkout_brings_back_deleted_results(tmp_path):
    """What the README tells a user whose outputs are gone: `dvc checkout` restores them from the cache."""
    import shutil

    repo = make_repo_copy(tmp_path / "repo", tiny_params())
    run_cmd(["dvc", "repro", "tokenize"], repo, **_env(repo))
    before = {p: p.read_bytes() for p in sorted((repo / "data/tokenized").rglob("*")) if p.is_file()}
    shutil.rmtree(repo / "data/tokenized")
    assert "deleted" in run_cmd(["dvc", "status", "tokenize"], repo).stdout
    run_cmd(["dvc", "checkout", "data/tokenized"], repo)
    assert {p: p.read_bytes() for p in sorted((repo / "data/tokenized").rglob("*")) if p.is_file()} == before
