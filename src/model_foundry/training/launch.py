"""`train.nproc: N` (or auto): re-run this `foundry train …` command under `torchrun`, one process per device.

`foundry train` (and the train stage `dvc repro` runs) calls `relaunch_if_needed(cfg)` first: with nproc > 1
and no torchrun around it (no WORLD_SIZE in the environment) it runs

    python -m torch.distributed.run --standalone --nproc_per_node=N <this command's argv>

and exits with its status; every process then runs the same command and finds itself under torchrun
(`distributed.Dist.from_env`). A user's own `torchrun` (multi-node: --nnodes, --rdzv-endpoint) is left as
it is: nproc only decides how many processes to start on one machine. torchrun is PyTorch's launcher: it
picks a free rendezvous port (--standalone), sets one CPU thread per process (OMP_NUM_THREADS=1) and stops
every process when one fails.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import TYPE_CHECKING

from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    from model_foundry.config import TrainConfig


def resolve_nproc(nproc: int | str, device: str) -> int:
    """Processes to start on this machine: `nproc`, or for 'auto' one per visible CUDA GPU (1 without:
    on a CPU one process with all cores is faster than N one-thread processes, benchmarks/bench_ddp.py)."""
    if nproc != "auto":
        return int(nproc)
    if device in ("auto", "cuda"):
        import torch

        if torch.cuda.is_available():
            return max(1, torch.cuda.device_count())
    return 1


def under_torchrun() -> bool:
    """Whether this process was started by torchrun (or another launcher that sets WORLD_SIZE/RANK)."""
    return "WORLD_SIZE" in os.environ and "RANK" in os.environ


def check_nproc(n: int, device: str) -> None:
    """FoundryError for N > 1 on MPS or more CUDA processes than GPUs; a warning (stderr) when N processes
    outnumber the CPU cores on a CPU run (each process gets one thread: the cores are oversubscribed)."""
    if n <= 1:
        return
    import torch

    mps = getattr(torch.backends, "mps", None)
    cuda = torch.cuda.is_available()
    if device == "mps" or (device == "auto" and not cuda and mps is not None and mps.is_available()):
        raise FoundryError(
            f"train.nproc = {n} but the device is Apple MPS, which torch.distributed cannot use.",
            "Set train.nproc: 1 on a Mac, or train.device: cpu to run the processes on the CPU.",
        )
    if cuda and device in ("auto", "cuda"):
        gpus = torch.cuda.device_count()
        if n > gpus:
            raise FoundryError(
                f"train.nproc = {n} but only {gpus} CUDA GPU(s) are visible: each process needs its own.",
                f"Set train.nproc: {gpus} (or auto).",
            )
        return
    cores = os.cpu_count() or 1
    if n > cores:
        print(
            f"warning: train.nproc = {n} processes on {cores} CPU core(s): they take turns on the cores, "
            f"so each step takes about {n / cores:.1f}× as long as with {cores} processes, with the same "
            f"result. Set train.nproc to at most {cores}.",
            file=sys.stderr,
        )


def torchrun_command(n: int, argv: list[str]) -> list[str]:
    """The torchrun command that runs `argv` (this process's sys.argv: a script and its arguments) N times."""
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}", *argv]


def relaunch_if_needed(cfg: TrainConfig, argv: list[str] | None = None) -> None:
    """With train.nproc > 1 outside torchrun: run `argv` (default sys.argv) under torchrun and exit
    (SystemExit 0 when every process succeeded). Returns at once when there is nothing to launch.

    Raises FoundryError for nproc on MPS or beyond the GPUs (`check_nproc`), and when the processes fail
    (their own error, e.g. a rank that died, is printed above torchrun's summary).
    """
    if under_torchrun():
        return
    n = resolve_nproc(cfg.nproc, cfg.device)
    if n <= 1:
        return
    check_nproc(n, cfg.device)
    command = torchrun_command(n, list(sys.argv if argv is None else argv))
    print(f"training with {n} processes: {' '.join(command[1:5])} …", file=sys.stderr)
    code = subprocess.run(command, check=False).returncode
    if code != 0:
        raise FoundryError(
            f"Training under torchrun with {n} processes failed (exit status {code}).",
            "The failing process's error is printed above torchrun's summary. Fix it and run again: "
            "train.resume: auto continues from the last checkpoint.",
        )
    raise SystemExit(0)
