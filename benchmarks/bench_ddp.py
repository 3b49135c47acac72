"""Data-parallel throughput: tokens/s of 1 vs 2 training processes (DDP on gloo, one CPU thread each).

Two models: the default gpt-tiny (4 layers, 4 heads, 128 dims, block 128, vocabulary 4096) and a tiny Qwen2
(transformers' Qwen2ForCausalLM through the hf-qwen2 adapter: 2 layers, hidden 128, 4 query / 2 KV heads,
SwiGLU 256, vocabulary 4096). Global batch 16 × block 128 for both, fp32, random tokens. Three runs each,
every one a fresh process (group):

  1p×1t   one process, one thread: the reference a 2-process run must match (the tests' reference)
  1p×2t   one process, two threads: what `train.nproc: 1` gets on this 2-core machine
  2p×1t   `torchrun --standalone --nproc_per_node=2`, one thread per process: `train.nproc: 2`

tokens/s counts the global batch (16 × 128 per step), over the steps after the first 5 (median step time).
The figures depend on the machine (the first line says which) and on what else runs on it.

    .venv/bin/python benchmarks/bench_ddp.py             # 30 steps per run
    .venv/bin/python benchmarks/bench_ddp.py --steps 10  # a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve()
VOCAB, BATCH, BLOCK = 4096, 16, 128


def build(model: str) -> object:
    import torch

    torch.manual_seed(0)
    if model == "gpt-tiny":
        from model_foundry.adapters.gpt import SPEC, GPTConfig
        from model_foundry.adapters.gpt.model import GPTAdapter

        config = GPTConfig(n_layer=4, n_head=4, n_embd=128, block_size=BLOCK, dropout=0.0, vocab_size=VOCAB)
        return GPTAdapter.build(config, SPEC)
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from model_foundry.adapters import get_spec

    config = Qwen2Config(
        hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=256, vocab_size=VOCAB, tie_word_embeddings=True, max_position_embeddings=512,
    )  # fmt: skip
    spec = get_spec("hf-qwen2")
    return spec.adapter_cls()(Qwen2ForCausalLM(config), config, spec, None)


def worker(model: str, steps: int, out: Path) -> None:
    """One training process (alone or one rank of torchrun): train `steps` steps, rank 0 writes the result."""
    import numpy as np

    from model_foundry.config import TrainConfig
    from model_foundry.data.collators import CausalCollator
    from model_foundry.training.device import Runtime
    from model_foundry.training.distributed import destroy
    from model_foundry.training.loop import train
    from model_foundry.training.state import TrainState

    threads = int(os.environ.get("BENCH_THREADS", "1"))
    cfg = TrainConfig(
        steps=steps, batch_size=BATCH, block_size=BLOCK, lr=1e-3, warmup_steps=0, eval_interval=10**6,
        eval_batches=1, log_interval=steps, threads=threads, device="cpu", precision="fp32",
    )  # fmt: skip
    runtime = Runtime.create(cfg.device, cfg.precision, cfg.threads)
    state = TrainState.create(build(model), cfg, runtime)  # type: ignore[arg-type]
    tokens = np.random.default_rng(0).integers(4, VOCAB, 200_000).astype(np.uint16)
    result = train(state, tokens, tokens[:5000], cfg, CausalCollator(), runtime)
    if runtime.dist.is_main:
        step = statistics.median(result.step_seconds[5:])
        out.write_text(json.dumps({"tokens_per_s": BATCH * BLOCK / step, "threads": threads}))
    destroy()


def measure(model: str, steps: int, procs: int, threads: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.json"
        launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={procs}"]
        command = [sys.executable, *(launcher if procs > 1 else []), str(HERE), "--worker", model]
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "BENCH_THREADS": str(threads)}
        subprocess.run([*command, "--steps", str(steps), "--out", str(out)], check=True, env=env)
        return float(json.loads(out.read_text())["tokens_per_s"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--worker")
    ap.add_argument("--out", type=Path)
    args = ap.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.out)
        return
    import platform

    import torch

    cpu = platform.processor() or platform.machine()
    print(f"machine: {cpu}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"{'model':10} {'1p×1t':>10} {'1p×2t':>10} {'2p×1t':>10} {'2p/1p×1t':>9} {'2p/1p×2t':>9}")
    for model in ("gpt-tiny", "qwen2-tiny"):
        one = measure(model, args.steps, 1, 1)
        two_threads = measure(model, args.steps, 1, 2)
        two = measure(model, args.steps, 2, 1)
        ratios = f"{two / one:9.2f} {two / two_threads:9.2f}"
        print(f"{model:10} {one:10,.0f} {two_threads:10,.0f} {two:10,.0f} {ratios}")


if __name__ == "__main__":
    main()
