"""created_at is reproducible: it follows the pipeline definition's last commit, not later result commits."""

from __future__ import annotations

from conftest import run_cmd
from model_foundry.metadata import created_at


def _commit(repo, path: str, when: str) -> None:
    (repo / path).write_text(when)
    run_cmd(["git", "add", path], repo)
    run_cmd(["git", "commit", "-qm", path], repo, env={"GIT_COMMITTER_DATE": when, "GIT_AUTHOR_DATE": when})


def test_created_at_ignores_result_commits(tmp_path, monkeypatch):
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    run_cmd(["git", "init", "-q"], tmp_path)
    run_cmd(["git", "config", "user.email", "t@example.com"], tmp_path)
    run_cmd(["git", "config", "user.name", "t"], tmp_path)
    _commit(tmp_path, "params.yaml", "2026-01-02T03:04:05Z")
    _commit(tmp_path, "dvc.lock", "2026-02-01T00:00:00Z")  # committing results changes nothing
    monkeypatch.chdir(tmp_path)
    assert created_at() == "2026-01-02T03:04:05+00:00"
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    assert created_at() == "1970-01-01T00:00:00+00:00"
