"""Data-parallel training under a real torchrun: two gloo processes on the CPU, one thread each.

The reference is one process, one thread, with the same global batch (`ddp_worker.py`): 2 processes × b/2
rows train as 1 process × b rows. Each torchrun start costs a few seconds of imports per process, so the
runs are shared: one uninterrupted 2-process run per strategy (with checkpoints) serves the equality, the
weights and the resume tests.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from model_foundry.config import TrainConfig
from model_foundry.errors import FoundryError

WORKER = Path(__file__).with_name("ddp_worker.py")


def run_worker(out: Path, *args: str, nproc: int = 1, timeout: float = 120, **env: str) -> Any:
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}"]
    command = [sys.executable, *(launcher if nproc > 1 else []), str(WORKER), str(out), *args]
    environ = {**os.environ, "OMP_NUM_THREADS": "1", **env}
    environ.pop("WORLD_SIZE", None)
    environ.pop("RANK", None)
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environ)


def probe(out: Path, rank: int) -> list[float]:
    """Three draws of rank `rank`'s dropout generator as it was at the end of the run."""
    return list(json.loads((out / f"rank{rank}.json").read_text())["probe"])


def losses(out: Path, rank: int = 0, key: str = "losses") -> list[float]:
    record = json.loads((out / f"rank{rank}.json").read_text())
    return [float.fromhex(v) for _, v in record[key]]


def weights(out: Path, rank: int) -> dict[str, Any]:
    from safetensors.torch import load_file

    return load_file(str(out / f"rank{rank}.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One process, one thread, global batch 4, 6 steps."""
    out = tmp_path_factory.mktemp("ref")
    done = run_worker(out)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two processes, the same global batch (2 rows each), checkpoints at steps 3 and 6 under out/ckpt."""
    out = tmp_path_factory.mktemp("ddp")
    done = run_worker(out, "--ckpt", str(out / "ckpt"), "--interval", "3", nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


@pytest.fixture(scope="module")
def fsdp(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two FSDP processes, as `two`: sharded checkpoints at steps 3 and 6 under out/ckpt."""
    out = tmp_path_factory.mktemp("fsdp")
    done = run_worker(out, "--strategy", "fsdp", "--ckpt", str(out / "ckpt"), "--interval", "3", nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    return out


def test_two_processes_train_as_one_with_the_same_global_batch(reference: Path, two: Path) -> None:
    import torch

    assert json.loads((two / "rank1.json").read_text())["threads"] == 1
    assert losses(two) == pytest.approx(losses(reference), rel=1e-5)
    assert losses(two, 1) == losses(two)  # the logged loss is the mean over ranks
    assert losses(two, key="val") == pytest.approx(losses(reference, key="val"), rel=1e-5)
    w0, w1, ref = weights(two, 0), weights(two, 1), weights(reference, 0)
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # DDP keeps the replicas identical
    # Adam turns float-level gradient differences into differences of ~lr × 1e-3 in near-zero weights
    assert all(torch.allclose(w0[k], ref[k], rtol=1e-4, atol=1e-5) for k in ref)
    saved = two / "ckpt" / "step-000006"  # rank 0 wrote the checkpoint: the same weights
    from safetensors.torch import load_file

    assert all(torch.equal(v, w0[k]) for k, v in load_file(str(saved / "model.safetensors")).items())
    assert json.loads((saved / "checkpoint.json").read_text())["world_size"] == 2
    assert probe(two, 0) != probe(two, 1)  # each rank its own dropout stream


def test_resume_under_two_processes_equals_the_uninterrupted_run(two: Path, tmp_path: Path) -> None:
    shutil.copytree(two / "ckpt" / "step-000003", tmp_path / "ckpt" / "step-000003")
    done = run_worker(tmp_path, "--ckpt", str(tmp_path / "ckpt"), "--interval", "3", "--resume", nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    assert losses(tmp_path) == losses(two)  # same world size: the same floats
    assert "re-split" not in done.stderr
    # rank 0's checkpoint holds every rank's dropout generator: each continues its own stream
    assert [probe(tmp_path, r) for r in (0, 1)] == [probe(two, r) for r in (0, 1)]


def test_a_two_process_checkpoint_resumes_in_one_process(two: Path, tmp_path: Path) -> None:
    shutil.copytree(two / "ckpt" / "step-000003", tmp_path / "ckpt" / "step-000003")
    done = run_worker(tmp_path, "--ckpt", str(tmp_path / "ckpt"), "--interval", "3", "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "saved by 2 process(es), this run has 1" in done.stderr and "re-split" in done.stderr
    assert losses(tmp_path) == pytest.approx(losses(two), rel=1e-5)


def test_a_dead_rank_stops_the_others_within_the_timeout(tmp_path: Path) -> None:
    start = time.monotonic()
    done = run_worker(tmp_path, "--die-at", "2", nproc=2, FOUNDRY_DIST_TIMEOUT="20")
    assert done.returncode != 0
    assert time.monotonic() - start < 60
    assert not (tmp_path / "rank0.json").exists()  # rank 0 never finished as if nothing happened


def test_fsdp_trains_as_one_process_and_writes_the_whole_model(reference: Path, fsdp: Path) -> None:
    import torch
    from safetensors.torch import load_file

    assert losses(fsdp) == pytest.approx(losses(reference), rel=1e-5)
    w0, w1 = weights(fsdp, 0), weights(fsdp, 1)  # gathered from the shards
    assert all(torch.equal(w0[k], w1[k]) for k in w0)
    final, ref = load_file(str(fsdp / "model.safetensors")), weights(reference, 0)  # rank 0's full state dict
    assert set(final) == set(ref)
    assert all(torch.allclose(final[k], ref[k], rtol=1e-4, atol=1e-5) for k in ref)
    saved = fsdp / "ckpt" / "step-000003"  # every rank wrote its shards; rank 0 the index and the rest
    sidecar = json.loads((saved / "checkpoint.json").read_text())
    assert sidecar["sharded"] and sidecar["world_size"] == 2
    assert {"shards/.metadata", "shards/__0_0.distcp", "shards/__1_0.distcp", "state.pt"} == set(
        sidecar["files"]
    )
    assert not (saved / "model.safetensors").exists()


def test_an_fsdp_checkpoint_resumes_under_two_processes(fsdp: Path, tmp_path: Path) -> None:
    shutil.copytree(fsdp / "ckpt" / "step-000003", tmp_path / "ckpt" / "step-000003")
    args = ("--strategy", "fsdp", "--ckpt", str(tmp_path / "ckpt"), "--interval", "3", "--resume")
    done = run_worker(tmp_path, *args, nproc=2)
    assert done.returncode == 0, done.stderr[-2000:]
    assert losses(tmp_path) == losses(fsdp)  # the shards load back into the same sharding: the same floats
    assert [probe(tmp_path, r) for r in (0, 1)] == [probe(fsdp, r) for r in (0, 1)]


def test_fsdp_checkpoints_in_one_process_and_the_whole_model_from_the_shards(
    fsdp: Path, two: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """In this process, one thread (as the workers): the FSDP run's step-3 checkpoint trains on to the
    FSDP run's losses; a model sharded by `fully_shard` (a process group of one) refuses the DDP run's
    checkpoint, and the train stage turns it back into a whole model (`_unsharded`)."""
    import importlib.util

    import torch
    import torch.distributed as dist
    from torch.distributed.fsdp import fully_shard

    from model_foundry.adapters.gpt import SPEC, GPTConfig
    from model_foundry.adapters.gpt.model import GPTAdapter
    from model_foundry.data.collators import CausalCollator
    from model_foundry.stages.train import _unsharded
    from model_foundry.training.checkpoint import load_checkpoint
    from model_foundry.training.device import Runtime
    from model_foundry.training.distributed import full_state_dict, is_sharded
    from model_foundry.training.loop import train
    from model_foundry.training.state import TrainState

    spec = importlib.util.spec_from_file_location("ddp_worker", WORKER)
    assert spec is not None and spec.loader is not None
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    cfg = TrainConfig(
        steps=6, batch_size=4, block_size=16, lr=3e-3, warmup_steps=2, eval_interval=3, eval_batches=2,
        log_interval=1, threads=1, device="cpu", precision="fp32",
    )  # fmt: skip

    def fresh() -> TrainState:
        config = GPTConfig(
            n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0, vocab_size=worker.VOCAB
        )
        return TrainState.create(GPTAdapter.build(config, SPEC), cfg, runtime)

    threads = torch.get_num_threads()
    try:
        runtime = Runtime.create(cfg.device, cfg.precision, cfg.threads)
        state = fresh()
        load_checkpoint(fsdp / "ckpt" / "step-000003", state, worker.SIDECAR)
        assert "saved by 2 process(es), this run has 1" in capsys.readouterr().err
        split = int(len(worker.TOKENS) * 0.9)
        tokens = worker.TOKENS
        train(state, tokens[:split], tokens[split:], cfg, CausalCollator(), runtime)
        assert [v for _, v in state.train_history] == pytest.approx(losses(fsdp), rel=1e-5)

        state = fresh()
        dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
        try:
            fully_shard(state.adapter.model)
            with pytest.raises(FoundryError, match="resumes only sharded checkpoints") as e:
                load_checkpoint(two / "ckpt" / "step-000003", state, worker.SIDECAR)
            # the train stage's final write: the shards gathered, the model rebuilt whole from its folder
            parent = fresh().adapter  # other weights than the sharded model's
            parent.save_checkpoint(tmp_path / "parent", {"model_name": "parent"})
            whole = _unsharded(state.adapter, tmp_path / "parent", worker.VOCAB, cfg, True, False)
            sharded = full_state_dict(state.adapter.model)
        finally:
            dist.destroy_process_group()
        assert "train.nproc: 2" in e.value.hint
        assert not is_sharded(whole.model)
        assert all(torch.equal(v, sharded[k]) for k, v in whole.model.state_dict().items())
        assert not all(torch.equal(v, sharded[k]) for k, v in parent.model.state_dict().items())
    finally:
        torch.set_num_threads(threads)


# In-process checks (no torchrun): sharding, the batch rule, the rendezvous errors, the launcher.


def test_each_rank_takes_its_own_rows_of_the_global_batch() -> None:
    import torch

    from model_foundry.training.distributed import local_batch_size, shard

    batch = torch.arange(12).view(6, 2)
    parts = [shard(batch, r, 3) for r in range(3)]
    assert torch.equal(torch.cat(parts), batch)
    assert local_batch_size(6, 3) == 2
    with pytest.raises(FoundryError, match="does not divide among 4") as e:
        local_batch_size(6, 4)
    assert "4, 8" in e.value.hint


def test_a_port_in_use_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from model_foundry.training.distributed import Dist

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
        monkeypatch.setenv("MASTER_PORT", str(port))
        with pytest.raises(FoundryError, match=f"port 127.0.0.1:{port} is already in use") as e:
            Dist(rank=0, local_rank=0, world_size=2).init(torch.device("cpu"))
    assert "--rdzv-endpoint" in e.value.hint
    with pytest.raises(FoundryError, match="Apple MPS"):
        Dist(rank=0, local_rank=0, world_size=2).init(torch.device("mps"))


def test_the_launcher_reruns_the_command_under_torchrun(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from model_foundry.training import launch

    command = launch.torchrun_command(2, ["foundry", "train", "--out", "m"])
    assert command[1:] == [
        "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "foundry", "train", "--out", "m",
    ]  # fmt: skip
    assert launch.resolve_nproc("auto", "cpu") == 1 and launch.resolve_nproc(3, "cpu") == 3
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    launch.check_nproc(4, "cpu")
    assert "4 processes on 2 CPU core(s)" in capsys.readouterr().err
    with pytest.raises(FoundryError, match="Apple MPS"):
        launch.check_nproc(2, "mps")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    launch.relaunch_if_needed(TrainConfig(nproc=2), ["never-run"])  # already under torchrun: returns
