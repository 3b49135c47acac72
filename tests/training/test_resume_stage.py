"""The train stage's checkpoints through the real CLI: SIGKILL mid-run, run again, get the uninterrupted run.

Contract (issue 10): a run killed with SIGKILL after a checkpoint and resumed gives, from the checkpoint on,
exactly the per-step losses of an uninterrupted run (compared as float hex strings, from MLflow, where the
continued run logs into the same run id) and byte-identical final weights; LoRA on a model with dropout 0.1,
LoRA dropout 0.1, grad_accum 2 (full fine-tuning is covered in tests/training/test_checkpoint.py through a
worker process, and through `dvc repro` in tests/hub/test_hub_pipeline.py). Duplicate-metric policy: steps
between the checkpoint and the kill that reached MLflow are logged again by the continued run, with equal
values. Also: SIGTERM writes a checkpoint and stops without a model; a truncated checkpoint and one of other
params are ignored with a note; the default output name; `--resume` with a bad path is refused.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import VENV_BIN, make_repo_copy, run_cmd, tiny_params

pytestmark = pytest.mark.slow

STEPS, INTERVAL = 30, 10


@pytest.fixture(scope="module")
def trained_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A repo with models/gpt-small-trained (dropout 0.1) and data/tokenized, made by the stage functions
    in-process (what `dvc repro` runs, without six CLI start-ups)."""
    from model_foundry.config import parse_params
    from model_foundry.stages import convert, ingest, tokenize, train

    raw = tiny_params(model_name="gpt-small")
    raw["models"]["gpt-small"]["dropout"] = 0.1
    repo = make_repo_copy(tmp_path_factory.mktemp("resume") / "repo", raw)
    params = parse_params(raw)
    cwd = Path.cwd()
    os.chdir(repo)
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{repo / 'mlflow.db'}")
            ingest.run(params, Path("data/corpus"), Path("data/source"))
            convert.run(params, Path("data/source"), Path("models/gpt-small"))
            tokenize.run(params, Path("data/corpus"), Path("models/gpt-small"), Path("data/tokenized"))
            model, data = Path("models/gpt-small"), Path("data/tokenized")
            train.run(params, model, data, Path("models/gpt-small-trained"), Path("plots"), progress=False)
    finally:
        os.chdir(cwd)
    return repo


def _env(repo: Path) -> dict[str, str]:
    return {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}


def _set_train(repo: Path, **train: Any) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"].update(train)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _train_cmd(model: str, out: str) -> list[str]:
    return ["foundry", "train", "--model", f"models/{model}", "--data", "data/tokenized", "--out",
            f"models/{out}", "--plots", f"plots-{out}", "--quiet"]  # fmt: skip


def _history(repo: Path, run_id: str, key: str = "train_loss") -> dict[int, list[str]]:
    """step → every value logged for `key` in the run, as float hex strings (in logging order)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    out: dict[int, list[str]] = defaultdict(list)
    for m in sorted(client.get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp)):
        out[m.step].append(float(m.value).hex())
    return dict(out)


def _run_id(stdout: str) -> str:
    return stdout.strip().rsplit("MLflow run ", 1)[1].split()[0]


def _kill_after_first_checkpoint(repo: Path, cmd: list[str], out: str) -> int:
    """Start `cmd`, SIGKILL it as soon as its first checkpoint is complete; return the newest saved step."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **_env(repo)}
    root = repo / "checkpoints" / out
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not (root / f"step-{INTERVAL:06d}" / "checkpoint.json").is_file():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no checkpoint within 120 s"
        time.sleep(0.002)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    steps = sorted(int(p.name.split("-")[1]) for p in root.glob("step-*") if (p / "checkpoint.json").exists())
    assert steps and steps[-1] < STEPS, steps
    return steps[-1]


@pytest.mark.parametrize(
    ("method", "model", "extra"),
    [("lora", "gpt-small-trained", {"grad_accum": 2, "lora": {"r": 4, "alpha": 8, "dropout": 0.1}})],
)  # full fine-tuning: tests/training/test_checkpoint.py (gpt and bert, dropout, grad_accum 2) and the Hub e2e
def test_sigkill_then_rerun_equals_uninterrupted(
    trained_repo: Path, method: str, model: str, extra: dict
) -> None:
    repo = trained_repo
    _set_train(repo, method=method, steps=STEPS, checkpoint_interval=INTERVAL, log_interval=1,
               eval_interval=10, lr=0.01, **extra)  # fmt: skip
    whole = run_cmd(_train_cmd(model, f"{method}-a"), repo, env=_env(repo))
    assert not (repo / "checkpoints" / f"{method}-a").exists()  # spent once the model is saved
    saved_step = _kill_after_first_checkpoint(repo, _train_cmd(model, f"{method}-b"), f"{method}-b")
    assert not (repo / "models" / f"{method}-b").exists()
    resumed = run_cmd(_train_cmd(model, f"{method}-b"), repo, env=_env(repo))
    assert (
        f"resuming from {repo / 'checkpoints' / f'{method}-b' / f'step-{saved_step:06d}'}" in resumed.stdout
    )
    run_a, run_b = _run_id(whole.stdout), _run_id(resumed.stdout)
    hist_a, hist_b = _history(repo, run_a), _history(repo, run_b)
    assert sorted(hist_b) == sorted(hist_a) == list(range(1, STEPS + 1))
    for step in range(1, STEPS + 1):
        # the killed run and its continuation log into one run: steps logged twice carry the same value
        assert len(set(hist_b[step])) == 1, (step, hist_b[step])
        assert hist_b[step][-1] == hist_a[step][0], step
    # every step up to the checkpoint reached the store before the kill (flushed before each save), once
    assert all(len(hist_b[step]) == 1 for step in range(1, saved_step + 1))
    a, b = repo / "models" / f"{method}-a", repo / "models" / f"{method}-b"
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()
    if method == "lora":
        for name in ("adapter_config.json", "adapter_model.safetensors"):
            assert (a / "adapter" / name).read_bytes() == (b / "adapter" / name).read_bytes()
    meta = json.loads((b / "metadata.json").read_text())
    assert meta["training"]["method"] == method
    assert meta["parent"]["name"] == model and meta["fine_tuned_from"] == model


def test_sigterm_saves_a_checkpoint_and_no_model(trained_repo: Path) -> None:
    repo = trained_repo
    _set_train(repo, method="full", steps=2000, checkpoint_interval=1000, log_interval=10, lr=0.001)
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", **_env(repo)}
    cmd = _train_cmd("gpt-small-trained", "term")
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while "training term" not in (line := proc.stdout.readline() if proc.stdout else ""):  # training started
        assert line or proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 2, (stdout, stderr)
    assert "error: Training stopped at step" in stderr and "hint:" in stderr
    assert "Traceback" not in stderr
    saved = list((repo / "checkpoints" / "term").glob("step-*/checkpoint.json"))
    assert len(saved) == 1
    assert not (repo / "models" / "term").exists()
    # a truncated checkpoint is not used: one note names the file, and training starts over
    state = saved[0].parent / "state.pt"
    state.write_bytes(state.read_bytes()[:100])
    _set_train(repo, steps=3)
    truncated = run_cmd([*cmd[:-1]], repo, check=False, env=_env(repo))  # not quiet: progress on stderr
    assert truncated.returncode == 0, truncated.stderr
    assert (
        f"note: not resuming from {saved[0].parent}" in truncated.stderr and "truncated" in truncated.stderr
    )
    assert (repo / "models" / "term" / "model.safetensors").is_file()
    # SIGTERM again, then other params: that checkpoint is ignored with a note, never used
    _set_train(repo, steps=2000)
    proc = subprocess.Popen(cmd, cwd=repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while "training term" not in (line := proc.stdout.readline() if proc.stdout else ""):
        assert line or proc.poll() is None, proc.communicate()
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=120)
    # other params: the checkpoint is ignored with a note, never used
    _set_train(repo, steps=4, checkpoint_interval=1000, lr=0.002)
    rerun = run_cmd(cmd, repo, env=_env(repo))
    assert "note: not resuming from" in rerun.stderr
    assert "saved with other params (train.lr 0.001 → 0.002, train.steps 2000 → 4)" in rerun.stderr
    assert "(kept; delete it to free the space)" in rerun.stderr
    assert "resuming from" not in rerun.stdout
    assert (repo / "models" / "term" / "model.safetensors").is_file()
    # the other runs' checkpoints stay (never used, never pruned by this run); this run's are spent
    assert len(list((repo / "checkpoints" / "term").glob("step-*/checkpoint.json"))) == 2


def test_default_output_name_and_an_existing_one(trained_repo: Path) -> None:
    repo = trained_repo
    _set_train(repo, method="full", steps=2, checkpoint_interval=1000)
    cmd = ["foundry", "train", "--model", "models/gpt-small-trained", "--data", "data/tokenized", "--quiet"]
    first = run_cmd(cmd, repo, env=_env(repo))
    assert "trained → models/gpt-small-trained-full" in first.stdout
    assert json.loads((repo / "models/gpt-small-trained-full/metadata.json").read_text())["model_name"] == (
        "gpt-small-trained-full"
    )
    again = run_cmd(cmd, repo, check=False, env=_env(repo))
    assert (
        again.returncode == 2
        and "error: The output models/gpt-small-trained-full exists already." in again.stderr
    )
    assert "hint: Pass --out models/gpt-small-trained-full to replace it" in again.stderr


def test_resume_flag_with_no_checkpoint_is_refused(trained_repo: Path) -> None:
    proc = run_cmd(
        [*_train_cmd("gpt-small-trained", "x"), "--resume", "checkpoints/none"], trained_repo, check=False,
        env=_env(trained_repo),
    )  # fmt: skip
    assert proc.returncode == 2
    assert "error: --resume checkpoints/none: no checkpoint there" in proc.stderr
    assert "hint:" in proc.stderr and "Traceback" not in proc.stderr
