"""Concurrent writers: two imports, or an import and a `dvc repro`, at the same time in one project.

Real processes in a real DVC repo (the local Hub serves the models): racing imports end as two complete,
distinct, DVC-tracked folders (or the loser refuses clearly), a dvc command waits for DVC's lock instead of
failing with "Unable to acquire lock", and every wait is bounded by FOUNDRY_LOCK_TIMEOUT.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml
import zc.lockfile

from conftest import VENV_BIN, run_cmd
from localhub.repos import GPT2, LLAMA, QWEN2
from model_foundry.errors import FoundryError
from model_foundry.hub import QuietReporter, import_model
from model_foundry.hub.importer import _build_and_claim
from model_foundry.io import atomic_dir
from model_foundry.locking import lock_path, project_lock
from model_foundry.project import DVC_LOCK, TIMEOUT_ENV, dvc_add, lock_timeout
from model_foundry.registry.dvc import dvc_md5

FOUNDRY = str(VENV_BIN / "foundry")
LOCK_FAILURE = "Unable to acquire lock"


def dvc_repo(path: Path, git: bool = False) -> Path:
    """A fresh DVC repo at `path` (inside a git repo with `git`, so `dvc add` writes .gitignore files)."""
    path.mkdir(parents=True, exist_ok=True)
    if git:
        run_cmd(["git", "init", "-q"], path)
    run_cmd(["dvc", "init", "-q", *([] if git else ["--no-scm"])], path)
    return path


def start_import(repo: Path, *args: str) -> subprocess.Popen[str]:
    """`foundry import-model ARGS` started in `repo` (not waited for), as run_cmd would run it."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [FOUNDRY, "import-model", *args, "--accept-license", "-q"], cwd=repo, env=env, text=True,
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip


def finish(proc: subprocess.Popen[str], timeout: float = 120) -> tuple[int, str]:
    out, err = proc.communicate(timeout=timeout)
    return proc.returncode, out + err


def assert_tracked(repo: Path, name: str) -> None:
    """models/<name> is complete, records its own name, and its .dvc file holds the folder's DVC hash."""
    folder = repo / "models" / name
    assert json.loads((folder / "metadata.json").read_text())["model_name"] == name
    out = yaml.safe_load((repo / "models" / f"{name}.dvc").read_text())["outs"][0]
    assert out["path"] == name and out["md5"] == dvc_md5(folder)


def assert_clean(repo: Path) -> None:
    status = run_cmd(["dvc", "status"], repo).stdout
    assert "up to date" in status, status
    leftovers = [p.name for p in (repo / "models").iterdir() if p.name.startswith(".foundry-")]
    assert leftovers == []


def assert_empty(models: Path) -> None:
    """Nothing under models/: no model folder, no staging or temp folder."""
    leftovers = sorted(p.name for p in models.iterdir()) if models.exists() else []
    assert leftovers == [], f"left behind in {models}: {leftovers}"


def hold_lock(folder: Path, what: str) -> subprocess.Popen[str]:
    """Another process holding the project lock of `folder` until killed; returns once it holds it."""
    code = (
        "import sys, time\nfrom model_foundry.locking import project_lock\n"
        "with project_lock(sys.argv[1], sys.argv[2]):\n    print('held', flush=True)\n    time.sleep(120)\n"
    )
    args = [sys.executable, "-c", code, str(folder), what]
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


# --- two imports at once ------------------------------------------------------------------------------
def test_two_imports_racing_for_one_name_get_two_folders(local_hub, hub_repos, tmp_path):
    repo = dvc_repo(tmp_path / "repo", git=True)
    procs = [start_import(repo, source, "--name", "shared", "--version-suffix") for source in (QWEN2, LLAMA)]
    results = [finish(p) for p in procs]
    for code, output in results:
        assert code == 0, output
        assert LOCK_FAILURE not in output
    sources = {json.loads((repo / "models" / n / "metadata.json").read_text())["model_id"]: n
               for n in ("shared", "shared-v2")}  # fmt: skip
    assert set(sources) == {QWEN2, LLAMA}  # one folder each, neither replaced by the other
    for name in ("shared", "shared-v2"):
        assert_tracked(repo, name)
        assert f"/{name}\n" in (repo / "models" / ".gitignore").read_text()
    assert_clean(repo)


def _write_folder(out: Path, name: str) -> dict[str, str]:
    with atomic_dir(out) as tmp:
        (tmp / "metadata.json").write_text(json.dumps({"model_name": name}))
    return {"model_name": name}


@pytest.mark.parametrize("version_suffix", [True, False])
def test_the_name_taken_while_building_is_never_replaced(tmp_path, version_suffix):
    """Another run renames its import into the name while this one builds: this one takes the next
    version (and rebuilds under it), or refuses with the "already exists" error."""
    models = tmp_path / "models"
    built: list[str] = []

    def build(out: Path, name: str) -> dict[str, str]:
        built.append(name)
        if len(built) == 1:  # the other run wins the name while we build
            _write_folder(models / name, "the other run")
        return _write_folder(out, name)

    if version_suffix:
        name, meta = _build_and_claim(models, "m", "m", True, build, QuietReporter())
        assert (name, meta, built) == ("m-v2", {"model_name": "m-v2"}, ["m", "m-v2"])
        assert json.loads((models / "m-v2" / "metadata.json").read_text())["model_name"] == "m-v2"
    else:
        with pytest.raises(FoundryError, match="already exists") as e:
            _build_and_claim(models, "m", "m", False, build, QuietReporter())
        assert "--version-suffix" in (e.value.hint or "")
    assert json.loads((models / "m" / "metadata.json").read_text())["model_name"] == "the other run"
    assert sorted(p.name for p in models.iterdir()) == (["m", "m-v2"] if version_suffix else ["m"])


def test_an_import_waits_for_the_project_lock_and_gives_up_after_the_timeout(
    local_hub, hub_repos, tmp_path, monkeypatch
):
    models = tmp_path / "models"  # outside a DVC repo: the lock file lives in the temp folder
    holder = hold_lock(models, "a test holding the lock")
    try:
        monkeypatch.setenv(TIMEOUT_ENV, "0.5")
        reporter = QuietReporter()
        with pytest.raises(FoundryError) as e:
            import_model(GPT2, models, accept_license=True, reporter=reporter)
        message = str(e.value)
        assert str(lock_path(models)) in message and f"pid {holder.pid} " in message
        assert "a test holding the lock" in message and TIMEOUT_ENV in (e.value.hint or "")
        assert any(m.startswith("note: waiting for pid") for m in reporter.messages)
        assert_empty(models)  # neither the folder nor the staging folder is left
    finally:
        holder.kill()  # kill -9: the OS lock goes with the process
        holder.wait()
    result = import_model(GPT2, models, accept_license=True, reporter=QuietReporter())
    assert result.name == "tiny-gpt2" and (models / "tiny-gpt2" / "metadata.json").is_file()


def test_the_project_lock_is_reentrant_and_lives_in_dvc_tmp(tmp_path):
    repo = dvc_repo(tmp_path / "repo")
    with project_lock(repo / "models", "outer") as path, project_lock(repo, "inner", timeout=0) as again:
        assert path == again == repo / ".dvc" / "tmp" / "foundry.lock"
        assert "outer" in (repo / ".dvc" / "tmp" / "foundry.lock.owner").read_text()
    assert not (repo / ".dvc" / "tmp" / "foundry.lock.owner").exists()


def test_lock_timeout_setting(monkeypatch):
    monkeypatch.setenv(TIMEOUT_ENV, "2.5")
    assert lock_timeout() == 2.5
    for bad in ("soon", "-1", "inf", "nan"):
        monkeypatch.setenv(TIMEOUT_ENV, bad)
        with pytest.raises(FoundryError, match=TIMEOUT_ENV):
            lock_timeout()
    monkeypatch.delenv(TIMEOUT_ENV)
    assert lock_timeout() == 600


# --- DVC's own lock -----------------------------------------------------------------------------------
def _folder(repo: Path) -> Path:
    folder = repo / "models" / "m"
    folder.mkdir(parents=True)
    (folder / "w.bin").write_bytes(bytes(range(256)) * 4)
    return folder


def test_dvc_add_waits_for_dvcs_lock_with_a_note(tmp_path):
    repo = dvc_repo(tmp_path / "repo")
    folder = _folder(repo)
    held = zc.lockfile.LockFile(str(repo / DVC_LOCK))  # what `dvc repro` holds while it records a stage
    threading.Timer(2.0, held.close).start()
    notes: list[str] = []
    start = time.monotonic()
    added = dvc_add(folder, note=notes.append)
    assert added is not None and added.error is None, added
    assert time.monotonic() - start >= 1.5
    assert len(notes) == 1 and "waiting for another dvc command" in notes[0] and str(DVC_LOCK) in notes[0]
    assert yaml.safe_load((repo / "models" / "m.dvc").read_text())["outs"][0]["md5"] == dvc_md5(folder)


def test_dvc_add_gives_up_on_a_stuck_dvc_lock(tmp_path, monkeypatch):
    repo = dvc_repo(tmp_path / "repo")
    folder = _folder(repo)
    monkeypatch.setenv(TIMEOUT_ENV, "0.5")
    held = zc.lockfile.LockFile(str(repo / DVC_LOCK))
    try:
        with pytest.raises(FoundryError, match="stayed held") as e:
            dvc_add(folder, note=lambda _: None)
    finally:
        held.close()
    assert str(repo / DVC_LOCK) in e.value.message and TIMEOUT_ENV in (e.value.hint or "")
    assert not (repo / "models" / "m.dvc").exists()


def test_stage_code_opening_the_dvc_repo_needs_no_lock(tmp_path):
    """registry/restore.py opens `dvc.repo.Repo` inside the import stage, while `dvc repro` runs: reading
    the cache location takes no lock, so it works even while another process holds DVC's lock."""
    from model_foundry.registry.restore import cache_files_dir

    repo = dvc_repo(tmp_path / "repo")
    held = zc.lockfile.LockFile(str(repo / DVC_LOCK))
    try:
        assert cache_files_dir(repo) == repo / ".dvc" / "cache" / "files" / "md5"
    finally:
        held.close()


# --- an import while `dvc repro` runs -----------------------------------------------------------------
SLOW_PIPELINE = {
    "stages": {
        "slow": {"cmd": "touch started && sleep 12 && echo done > slow.txt", "outs": ["slow.txt"]},
        "after": {"cmd": "cp slow.txt after.txt", "deps": ["slow.txt"], "outs": ["after.txt"]},
    }
}


@pytest.mark.slow  # ~20 s: a 12 s stage, so that the import runs while it does
def test_an_import_while_dvc_repro_runs(local_hub, hub_repos, tmp_path):
    repo = dvc_repo(tmp_path / "repo")
    (repo / "dvc.yaml").write_text(yaml.safe_dump(SLOW_PIPELINE))
    repro = subprocess.Popen(
        [str(VENV_BIN / "dvc"), "repro"], cwd=repo, text=True,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while not (repo / "started").exists():  # the stage command runs: repro is mid-run
        assert repro.poll() is None and time.monotonic() < deadline, repro.communicate()[0]
        time.sleep(0.1)
    imported = start_import(repo, QWEN2, "--name", "during-repro")
    code, output = finish(imported)
    repro_out = repro.communicate(timeout=60)[0]
    assert code == 0 and repro.returncode == 0, output + repro_out
    assert LOCK_FAILURE not in output + repro_out
    assert (repo / "after.txt").read_text() == "done\n"
    assert set(yaml.safe_load((repo / "dvc.lock").read_text())["stages"]) == {"slow", "after"}
    assert_tracked(repo, "during-repro")
    assert_clean(repo)
