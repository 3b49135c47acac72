"""Leftovers of killed processes: temp folders of atomic writes and MLflow runs left RUNNING.

Real processes are killed with SIGKILL in the middle of the real code; the next start cleans up after them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from conftest import REPO
from model_foundry import tracking
from model_foundry.io import atomic_dir
from model_foundry.leftovers import OLD, TEMP, clean_stale, old_name

PYTHON = sys.executable


def _start(code: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    """A Python child running `code`, which prints 'ready' when it reached the point to be killed at."""
    proc = subprocess.Popen(
        [PYTHON, "-c", textwrap.dedent(code)], cwd=cwd, stdout=subprocess.PIPE, text=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    return proc


def _kill(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)


HALF_WRITTEN = """
    import time
    from model_foundry.io import atomic_dir
    with atomic_dir("models/m") as tmp:
        (tmp / "model.safetensors").write_bytes(b"half")
        print("ready", flush=True)
        time.sleep(600)
"""


def _project(tmp_path: Path) -> Path:
    """A git repo with the project's .gitignore and .dvcignore, and a previous models/m."""
    root = tmp_path / "p"
    (root / "models" / "m").mkdir(parents=True)
    (root / "models" / "m" / "config.json").write_text("{}")
    for name in (".gitignore", ".dvcignore"):
        (root / name).write_text((REPO / name).read_text())
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    return root


def test_killed_save_leaves_an_ignored_temp_that_the_next_save_removes(tmp_path):
    root = _project(tmp_path)
    _kill(_start(HALF_WRITTEN, root))
    left = [p.name for p in (root / "models").iterdir() if p.name.startswith(TEMP)]
    assert len(left) == 1, left
    assert (root / "models" / "m" / "config.json").read_text() == "{}"  # the previous model is intact
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=root,
                            capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert left[0] not in status and "models/m/" in status  # ignored by git; the model itself is not
    ignored = subprocess.run(["git", "check-ignore", f"models/{left[0]}"], cwd=root, capture_output=True)
    assert ignored.returncode == 0

    with atomic_dir(root / "models" / "m") as tmp:  # a good rerun
        (tmp / "config.json").write_text('{"new": 1}')
    assert sorted(p.name for p in (root / "models").iterdir()) == ["m"]
    assert (root / "models" / "m" / "config.json").read_text() == '{"new": 1}'


def test_temp_folders_of_live_processes_are_left_alone(tmp_path):
    root = _project(tmp_path)
    live = _start(HALF_WRITTEN, root)
    try:
        with atomic_dir(root / "models" / "other") as tmp:
            (tmp / "x").write_text("x")
        names = [p.name for p in (root / "models").iterdir()]
        assert any(n.startswith(f"{TEMP}{live.pid}@") for n in names), names
    finally:
        _kill(live)
    assert clean_stale(root / "models")  # now it is stale
    assert sorted(p.name for p in (root / "models").iterdir()) == ["m", "other"]


def test_a_parked_previous_model_is_put_back_when_its_replacement_never_arrived(tmp_path):
    """Killed between parking the old folder and renaming the new one in: the old one comes back."""
    root = _project(tmp_path)
    park = """
        import time
        from pathlib import Path
        from model_foundry.leftovers import old_name
        Path("models/m").rename(Path("models") / old_name("m"))
        print("ready", flush=True)
        time.sleep(600)
    """
    _kill(_start(park, root))
    assert not (root / "models" / "m").exists()
    assert [p.name.startswith(OLD) for p in (root / "models").iterdir()] == [True]
    clean_stale(root / "models")
    assert sorted(p.name for p in (root / "models").iterdir()) == ["m"]
    assert (root / "models" / "m" / "config.json").read_text() == "{}"
    assert old_name("m").startswith(OLD)


STARTED_RUN = """
    import time
    from model_foundry import tracking
    with tracking.start_run("victim", {"stage": "train"}) as tracker:
        print(tracker.run_id, flush=True)
        print("ready", flush=True)
        time.sleep(600)
"""


def _start_run_process(root: Path, uri: str) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [PYTHON, "-c", textwrap.dedent(STARTED_RUN)], cwd=root, stdout=subprocess.PIPE, text=True,
        env={**os.environ, "MLFLOW_TRACKING_URI": uri},
    )  # fmt: skip
    assert proc.stdout is not None
    run_id = proc.stdout.readline().strip()
    assert proc.stdout.readline().strip() == "ready"
    return proc, run_id


@pytest.fixture
def mlflow_project(tmp_path, monkeypatch) -> tuple[Path, str]:
    root = tmp_path / "p"
    (root / ".dvc").mkdir(parents=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(root)
    return root, uri


def test_runs_of_killed_processes_are_marked_killed_at_the_next_start(mlflow_project):
    import mlflow

    root, uri = mlflow_project
    killed, killed_id = _start_run_process(root, uri)
    live, live_id = _start_run_process(root, uri)
    try:
        _kill(killed)
        client = mlflow.MlflowClient(uri)
        assert client.get_run(killed_id).info.status == "RUNNING"
        tags = client.get_run(killed_id).data.tags
        assert tags[tracking.PID_TAG] == str(killed.pid) and tags[tracking.PROJECT_TAG] == str(root.resolve())

        with tracking.start_run("next", {"stage": "train"}) as tracker:  # the next train/evaluate
            next_id = tracker.run_id
        assert client.get_run(killed_id).info.status == "KILLED"
        assert client.get_run(live_id).info.status == "RUNNING"  # its process still runs
        assert client.get_run(next_id).info.status == "FINISHED"
    finally:
        _kill(live)
    assert tracking.mark_stale_runs_killed() == [live_id]


def test_runs_of_other_projects_are_left_alone(mlflow_project, tmp_path):
    import mlflow

    root, uri = mlflow_project
    other = tmp_path / "other"
    (other / ".dvc").mkdir(parents=True)
    proc, run_id = _start_run_process(other, uri)  # same store, another project folder
    _kill(proc)
    assert tracking.mark_stale_runs_killed() == []
    assert mlflow.MlflowClient(uri).get_run(run_id).info.status == "RUNNING"
