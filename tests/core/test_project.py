"""The project around the code: root folder, git commit, reproducible time, `dvc add` (real git and dvc)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import run_cmd
from model_foundry.project import created_at, dvc_add, dvc_root, git_commit, project_root


def _git_repo(path: Path) -> Path:
    run_cmd(["git", "init", "-q"], path)
    run_cmd(["git", "config", "user.email", "t@example.com"], path)
    run_cmd(["git", "config", "user.name", "t"], path)
    return path


def _commit(repo: Path, path: str, when: str) -> None:
    (repo / path).write_text(when)
    run_cmd(["git", "add", path], repo)
    run_cmd(["git", "commit", "-qm", path], repo, env={"GIT_COMMITTER_DATE": when, "GIT_AUTHOR_DATE": when})


def test_created_at_ignores_result_commits(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    _git_repo(tmp_path)
    _commit(tmp_path, "params.yaml", "2026-01-02T03:04:05Z")
    _commit(tmp_path, "dvc.lock", "2026-02-01T00:00:00Z")  # committing results changes nothing
    monkeypatch.chdir(tmp_path)
    assert created_at() == "2026-01-02T03:04:05+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert created_at() == "1970-01-01T00:00:00+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    with pytest.raises(ValueError):
        created_at()


def test_git_commit_is_head_or_none(tmp_path):
    assert git_commit(tmp_path) is None  # not a repository
    _git_repo(tmp_path)
    assert git_commit(tmp_path) is None  # no commit yet
    _commit(tmp_path, "params.yaml", "2026-01-02T03:04:05Z")
    head = run_cmd(["git", "rev-parse", "HEAD"], tmp_path).stdout.strip()
    assert git_commit(tmp_path) == head and len(head) == 40


def test_project_root_skips_dvc_experiment_copies(tmp_path):
    (tmp_path / ".dvc").mkdir()
    queued = tmp_path / ".dvc" / "tmp" / "exps" / "tmpabc123"
    (queued / ".dvc").mkdir(parents=True)  # a queued run's temp copy is a DVC repo of its own
    (queued / "models").mkdir()
    assert project_root(queued / "models") == tmp_path.resolve()
    assert dvc_root(queued / "models") == queued.resolve()
    assert project_root(tmp_path / "models") == tmp_path.resolve()  # need not exist
    outside = tmp_path.parent / f"{tmp_path.name}-elsewhere"
    outside.mkdir()
    assert project_root(outside) == outside.resolve() and dvc_root(outside) is None


def test_dvc_add_tracks_a_folder_and_reports_failures(tmp_path):
    model = tmp_path / "models" / "m"
    model.mkdir(parents=True)
    (model / "w.bin").write_bytes(b"weights")
    assert dvc_add(model) is None  # not in a DVC repo: nothing to do

    run_cmd(["dvc", "init", "--no-scm", "-q"], tmp_path)
    added = dvc_add(model)
    assert added is not None and added.error is None
    assert added.rel == Path("models/m") and added.dvc_file == Path("models/m.dvc")
    assert yaml.safe_load((tmp_path / "models" / "m.dvc").read_text())["outs"][0]["path"] == "m"

    (tmp_path / ".dvc" / "config").write_text("[core\n")  # a config dvc cannot read
    (model / "w.bin").write_bytes(b"other weights")
    failed = dvc_add(model)
    assert failed is not None and failed.error and failed.rel == Path("models/m")
