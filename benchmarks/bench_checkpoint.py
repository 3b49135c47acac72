"""Checkpoint write/read time and size: `training.checkpoint.save_checkpoint` / `load_checkpoint` against one
plain `torch.save(state.state_dict())` of the same state (the reference, same process, same disk).

Two GPTs (dropout 0, fp32, AdamW state filled by one optimizer step on CPU):
  tiny   n_layer 1, n_head 2, n_embd 32, vocab 320
  100M   n_layer 12, n_head 12, n_embd 768, vocab 32,000, block 1024 (~110M parameters)
Each figure is the median of `--repeats` saves into a temp folder on the disk holding `--dir` (page cache
warm: the time to hand the bytes to the OS, as in training; no fsync, as `io.atomic_dir` does none).

    .venv/bin/python benchmarks/bench_checkpoint.py                 # both models, 3 repeats
    .venv/bin/python benchmarks/bench_checkpoint.py --only tiny --repeats 5
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from model_foundry.adapters.gpt import SPEC, GPTConfig
from model_foundry.adapters.gpt.model import GPTAdapter
from model_foundry.config import TrainConfig
from model_foundry.data.collators import CausalCollator
from model_foundry.training.checkpoint import load_checkpoint, save_checkpoint
from model_foundry.training.device import Runtime
from model_foundry.training.loop import train
from model_foundry.training.state import TrainState

MODELS = {
    "tiny": dict(n_layer=1, n_head=2, n_embd=32, block_size=64, vocab_size=320),
    "100M": dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=32_000),
}
SIDECAR = {"model": "bench", "method": "full", "parent_checksum": "-", "params_digest": "-", "data_hash": "-"}


def make_state(name: str) -> TrainState:
    torch.manual_seed(0)
    config = GPTConfig(**MODELS[name], dropout=0.0)  # type: ignore[arg-type]
    adapter = GPTAdapter.build(config, SPEC)
    runtime = Runtime.create("cpu", "fp32")
    cfg = TrainConfig(steps=1, batch_size=1, block_size=32, warmup_steps=0, eval_batches=1, device="cpu")
    state = TrainState.create(adapter, cfg, runtime)
    tokens = np.random.default_rng(0).integers(0, config.vocab_size, 4096).astype(np.uint16)
    train(state, tokens, tokens, cfg, CausalCollator(), runtime)  # one step: AdamW's moments exist
    return state


def folder_bytes(path: Path) -> dict[str, int]:
    return {p.name: p.stat().st_size for p in sorted(path.iterdir())}


def bench(name: str, base: Path, repeats: int) -> None:
    state = make_state(name)
    params = sum(p.numel() for p in state.adapter.model.parameters())
    saves, loads, refs = [], [], []
    sizes: dict[str, int] = {}
    for i in range(repeats):
        root = base / f"{name}-{i}"
        t = time.perf_counter()
        path = save_checkpoint(state, root, SIDECAR)
        saves.append(time.perf_counter() - t)
        sizes = folder_bytes(path)
        t = time.perf_counter()
        load_checkpoint(path, state, SIDECAR)  # the same state: reading costs the same
        loads.append(time.perf_counter() - t)
        ref = base / f"{name}-{i}-ref.pt"
        t = time.perf_counter()
        torch.save(state.state_dict(), ref)
        refs.append(time.perf_counter() - t)
        ref_bytes = ref.stat().st_size
        shutil.rmtree(root)
        ref.unlink()
    total = sum(sizes.values())
    save, load, ref_s = statistics.median(saves), statistics.median(loads), statistics.median(refs)
    print(f"\n{name}: {params:,} parameters, threads={torch.get_num_threads()}")
    for file, size in sizes.items():
        print(f"  {file:<18} {size / 1e6:10.2f} MB")
    print(f"  {'total':<18} {total / 1e6:10.2f} MB   (torch.save of state_dict(): {ref_bytes / 1e6:.2f} MB)")
    print(
        f"  save {save * 1e3:9.1f} ms  ({total / save / 1e9:.2f} GB/s; {save / ref_s:.2f}× the torch.save "
        f"reference, {ref_s * 1e3:.1f} ms)"
    )
    print(f"  load {load * 1e3:9.1f} ms  ({total / load / 1e9:.2f} GB/s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", choices=list(MODELS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {sys.platform}, folder {args.dir}")
    with tempfile.TemporaryDirectory(dir=args.dir, prefix="bench-ckpt-") as tmp:
        for name in [args.only] if args.only else list(MODELS):
            bench(name, Path(tmp), args.repeats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
