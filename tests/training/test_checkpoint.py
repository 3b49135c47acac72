"""Training checkpoints through real processes (tests/training/ckpt_worker.py): a run killed with SIGKILL
between two checkpoints and resumed from the latest gives the uninterrupted run's per-step losses (as
float.hex) and byte-identical final weights; SIGTERM saves the current step and exits cleanly; a full disk
(RLIMIT_FSIZE) never destroys the previous checkpoint. In-process: mismatched sidecar fields, truncated or
missing files refused by name, keep_last, latest_checkpoint, tied weights saved once."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from ckpt_worker import SIDECAR

from model_foundry.errors import FoundryError
from model_foundry.training.checkpoint import (
    SIDECAR_NAME,
    STATE_FILE,
    WEIGHTS_FILE,
    CheckpointHook,
    keep_last,
    latest_checkpoint,
    load_checkpoint,
    read_sidecar,
    save_checkpoint,
    step_dir,
)

WORKER = Path(__file__).with_name("ckpt_worker.py")  # the training process the kill tests drive
STEPS, INTERVAL, HANG = 12, 5, 7  # checkpoints at 5 and 10; the killed run hangs at 7, between them


def worker(case: str, root: Path, out: Path, *extra: str) -> subprocess.Popen[str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(WORKER), case, str(root), str(out), "--steps", str(STEPS)]
    cmd += ["--interval", str(INTERVAL), *extra]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def finish(proc: subprocess.Popen[str]) -> tuple[int, str, str]:
    out, err = proc.communicate(timeout=120)
    return proc.returncode, out, err


def wait_for(path: Path, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 90
    while not path.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


def results(out: Path) -> tuple[list[list[Any]], bytes]:
    return json.loads((out / "losses.json").read_text()), (out / "final.safetensors").read_bytes()


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[list[list[Any]], bytes]]:
    base = tmp_path_factory.mktemp("whole")
    procs = {case: worker(case, base / case / "ckpt", base / case / "out") for case in ("gpt", "bert")}
    done = {}
    for case, proc in procs.items():
        rc, _, err = finish(proc)
        assert rc == 0, err
        done[case] = results(base / case / "out")
        assert len(done[case][0]) == STEPS  # one loss per step (log_interval 1)
    return done


@pytest.mark.parametrize("case", ["gpt", "bert"])
def test_sigkill_then_resume_is_bit_exact(case: str, tmp_path: Path, uninterrupted: dict[str, Any]) -> None:
    root, out = tmp_path / "ckpt", tmp_path / "out"
    proc = worker(case, root, out, "--hang-at", str(HANG))
    wait_for(out / "hanging", proc)  # past the checkpoint at 5, before the one at 10
    assert latest_checkpoint(root) == step_dir(root, INTERVAL)
    proc.kill()  # SIGKILL: no handler runs
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    rc, stdout, err = finish(worker(case, root, out, "--resume"))
    assert rc == 0, err
    assert f"resumed from step-{INTERVAL:06d}" in stdout
    losses, weights = results(out)
    whole_losses, whole_weights = uninterrupted[case]
    assert losses[INTERVAL:] == whole_losses[INTERVAL:]  # float.hex strings: the same floats
    assert losses == whole_losses  # the history before the checkpoint came back with it
    assert weights == whole_weights  # byte-identical final weights
    assert sorted(p.name for p in root.iterdir()) == ["step-000005", "step-000010"]  # keep 2


def test_sigterm_saves_the_current_step_and_exits_cleanly(
    tmp_path: Path, uninterrupted: dict[str, Any]
) -> None:
    root, out = tmp_path / "ckpt", tmp_path / "out"
    proc = worker("gpt", root, out, "--hang-at", str(HANG))
    wait_for(out / "hanging", proc)
    proc.send_signal(signal.SIGTERM)
    rc, stdout, err = finish(proc)
    assert rc == 0, err
    assert f"stopped at {HANG}" in stdout
    assert latest_checkpoint(root) == step_dir(root, HANG)
    assert read_sidecar(step_dir(root, HANG))["step"] == HANG

    rc, stdout, err = finish(worker("gpt", root, out, "--resume"))
    assert rc == 0, err
    assert results(out) == uninterrupted["gpt"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path: Path) -> None:
    root, out = tmp_path / "ckpt", tmp_path / "out"
    # After step 6 no file may grow past 4 KiB: the checkpoint at 10 fails writing its weights.
    rc, _, err = finish(worker("gpt", root, out, "--fsize-limit-at", "6", "4096"))
    assert rc == 2
    assert "file size limit" in err and "step-000010" in err
    assert sorted(p.name for p in root.iterdir()) == ["step-000005"]  # no temp folder left, 5 intact
    previous = step_dir(root, INTERVAL)
    assert read_sidecar(previous)["step"] == INTERVAL
    # and it still resumes to the end
    rc, _, err = finish(worker("gpt", root, out, "--resume"))
    assert rc == 0, err


# In-process tests: a tiny GPT state, saved and loaded directly.


def tiny_state(steps: int = 2) -> Any:
    if str(WORKER.parent) not in sys.path:
        sys.path.insert(0, str(WORKER.parent))
    import ckpt_worker

    from model_foundry.config import TrainConfig
    from model_foundry.training.device import Runtime
    from model_foundry.training.loop import train
    from model_foundry.training.state import TrainState

    adapter, collator = ckpt_worker.build("gpt")
    runtime = Runtime.create("cpu", "fp32")
    cfg = TrainConfig(
        steps=20, batch_size=2, block_size=16, warmup_steps=1, eval_interval=100, log_interval=3, device="cpu"
    )
    state = TrainState.create(adapter, cfg, runtime)
    tokens = ckpt_worker.TOKENS
    train(state, tokens[:3000], tokens[3000:], cfg, collator, runtime, until=steps)
    return state


def test_tied_weights_are_saved_once_and_restored(tmp_path: Path) -> None:
    from safetensors import safe_open

    state = tiny_state()
    path = save_checkpoint(state, tmp_path, SIDECAR)
    with safe_open(str(path / WEIGHTS_FILE), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "transformer.wte.weight" in keys
    sidecar = read_sidecar(path)
    assert sidecar["aliases"] == {"lm_head.weight": "transformer.wte.weight"}
    assert sidecar["step"] == 2 and sidecar["fused"] is True and sidecar["threads"] == torch.get_num_threads()
    assert {k: sidecar[k] for k in SIDECAR} == SIDECAR

    fresh = tiny_state(steps=0)
    load_checkpoint(path, fresh, SIDECAR)
    model = fresh.adapter.model
    assert model.lm_head.weight is model.transformer.wte.weight  # still tied after loading
    a, b = state.adapter.model.state_dict(), model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert fresh.step == 2 and fresh.window.count == 2  # un-logged losses of steps 1-2 came back


@pytest.mark.parametrize(
    ("field", "value"),
    [("model", "other"), ("method", "lora"), ("params_digest", "d1"), ("data_hash", "h1"),
     ("parent_checksum", "p1"), ("fused", False), ("threads", 99)],
)  # fmt: skip
def test_mismatched_fields_are_refused(tmp_path: Path, field: str, value: Any) -> None:
    state = tiny_state()
    path = save_checkpoint(state, tmp_path, SIDECAR)
    saved = read_sidecar(path)[field]
    with pytest.raises(FoundryError) as e:
        load_checkpoint(path, tiny_state(steps=0), {**SIDECAR, field: value})
    assert f"{field} = {saved!r}" in e.value.message and f"{field} = {value!r}" in e.value.message


@pytest.mark.parametrize("name", [WEIGHTS_FILE, STATE_FILE, SIDECAR_NAME])
def test_truncated_or_missing_files_are_refused_by_name(tmp_path: Path, name: str) -> None:
    state = tiny_state()
    path = save_checkpoint(state, tmp_path, SIDECAR)
    file = path / name
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    with pytest.raises(FoundryError, match="truncated|cannot be read") as e:
        load_checkpoint(path, tiny_state(steps=0), SIDECAR)
    assert str(file) in e.value.message
    file.unlink()
    with pytest.raises(FoundryError, match="missing") as e:
        load_checkpoint(path, tiny_state(steps=0), SIDECAR)
    assert str(file) in e.value.message


def test_a_state_file_with_a_pickled_object_is_refused(tmp_path: Path) -> None:
    state = tiny_state()
    path = save_checkpoint(state, tmp_path, SIDECAR)
    sidecar = read_sidecar(path)
    torch.save({"evil": object()}, path / STATE_FILE)  # weights_only=True refuses arbitrary objects
    sidecar["files"][STATE_FILE] = (path / STATE_FILE).stat().st_size
    (path / SIDECAR_NAME).write_text(json.dumps(sidecar))
    with pytest.raises(FoundryError, match="cannot be read") as e:
        load_checkpoint(path, tiny_state(steps=0), SIDECAR)
    assert str(path / STATE_FILE) in e.value.message


def test_keep_last_and_latest(tmp_path: Path) -> None:
    assert latest_checkpoint(tmp_path / "none") is None
    state = tiny_state(steps=0)
    for step in (3, 12, 7, 100):
        state.step = step
        save_checkpoint(state, tmp_path, SIDECAR)
    (tmp_path / "step-000200").mkdir()  # no sidecar: not a complete checkpoint
    (tmp_path / "notes").mkdir()
    assert latest_checkpoint(tmp_path) == step_dir(tmp_path, 100)
    assert keep_last(tmp_path, 2) == [step_dir(tmp_path, 3), step_dir(tmp_path, 7)]
    left = ["notes", "step-000012", "step-000100", "step-000200"]
    assert sorted(p.name for p in tmp_path.iterdir()) == left
    with pytest.raises(FoundryError):
        keep_last(tmp_path, 0)


def test_the_hook_saves_every_interval_and_restores_signal_handlers(tmp_path: Path) -> None:
    previous = signal.getsignal(signal.SIGTERM)
    hook = CheckpointHook(tmp_path, interval=4, keep=2, sidecar=SIDECAR)
    state = tiny_state(steps=0)
    from model_foundry.config import TrainConfig

    hook.on_train_start(state, TrainConfig())
    assert signal.getsignal(signal.SIGTERM) == hook._on_signal
    for step in range(1, 9):
        state.step = step
        hook.on_step_end(step, state)
        assert not hook.should_stop()
    assert [p.name for p in hook.saved] == ["step-000004", "step-000008"]
    os.kill(os.getpid(), signal.SIGTERM)  # the first signal: save at the end of this step, then stop
    state.step = 9
    hook.on_step_end(9, state)
    assert hook.should_stop() and hook.saved[-1].name == "step-000009"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step-000008", "step-000009"]
    hook.on_train_end(state)
    assert signal.getsignal(signal.SIGTERM) == previous


def test_a_second_sigint_stops_at_once(tmp_path: Path) -> None:
    previous = signal.getsignal(signal.SIGINT)
    with CheckpointHook(tmp_path, interval=100, keep=1, sidecar=SIDECAR) as hook:
        os.kill(os.getpid(), signal.SIGINT)  # the first: remembered, training goes on to the step's end
        assert hook.signalled == signal.SIGINT and not hook.should_stop()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # the second: the previous handler (Python's) at once
        assert signal.getsignal(signal.SIGINT) == previous
    assert signal.getsignal(signal.SIGINT) == previous and not list(tmp_path.iterdir())
