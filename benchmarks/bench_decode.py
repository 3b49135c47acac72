"""Decoding speed at batch 1: the project's engine vs Hugging Face `generate`, and the memory-bandwidth bound.

The ~100M-parameter Qwen2-shaped model of `qwen_shaped.py` (hidden 768, 12 layers, vocabulary 32,000, tied
embeddings) continues a 16-token prompt greedily by 128 tokens (no stop tokens), in each dtype:

  (a) engine:   `Engine.complete` (generation/engine.py → scheduler.py → llama_decoder.py: the fused decode
                loop over the model's own weights), text decoded as it goes, as `foundry generate` does;
  (b) generate: `model.generate(do_sample=False, min_new_tokens=128)`, transformers' own loop and cache.

Both must pick the same tokens in fp32 (checked; in bf16 rounding may differ, reported). Each side runs once
as a warm-up, then `--rounds` times alternating; figures are medians. tokens/s = new tokens / wall time
(prefill included).

The bound: decoding one token reads every weight once, so tokens/s ≤ read bandwidth ÷ weight bytes. The read
bandwidth is measured here (1 GiB of fp32 read by `sum` and by `mv`, all threads, the best), and each side
is reported as a % of the bound. bf16 is run only where it is native (AVX512-BF16 or AMX; elsewhere bf16
matmuls are emulated, 30-60× slower than fp32); `--dtypes` overrides.

    .venv/bin/python benchmarks/bench_decode.py                  # fp32 (+ bf16 where native), 3 rounds
    .venv/bin/python benchmarks/bench_decode.py --rounds 1 --new-tokens 32   # a quick look
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from qwen_shaped import as_adapter, build_model, machine_line, prompt_ids  # noqa: E402

from model_foundry.generation import GREEDY, Engine, Request  # noqa: E402
from model_foundry.training.device import cpu_has_fast_bf16  # noqa: E402

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def read_bandwidth() -> float:
    """Bytes per second of reading memory, the best of two ways over 1 GiB of fp32 (5 tries each): a `sum`,
    and a matrix-vector product (`torch.mv`, the access pattern of decoding one token)."""
    x = torch.ones(16384, 16384)  # 1 GiB: far larger than any cache
    v = torch.ones(16384)
    best = float("inf")
    for read in (x.sum, lambda: torch.mv(x, v)):
        for _ in range(5):
            start = time.perf_counter()
            read()
            best = min(best, time.perf_counter() - start)
    return x.numel() * 4 / best


def weight_bytes(model: torch.nn.Module) -> int:
    """Bytes of the weights (tied ones once): what one decode step reads."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


def run_engine(engine: Engine, prompt: list[int], new: int) -> tuple[float, list[int]]:
    start = time.perf_counter()
    out = engine.complete(Request(prompt, new, GREEDY))
    return time.perf_counter() - start, out.token_ids


def run_generate(model: torch.nn.Module, prompt: list[int], new: int) -> tuple[float, list[int]]:
    ids = torch.tensor([prompt])
    start = time.perf_counter()
    with torch.no_grad():
        out = model.generate(  # type: ignore[operator]
            ids, max_new_tokens=new, min_new_tokens=new, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    return time.perf_counter() - start, out[0, len(prompt) :].tolist()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=128)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--dtypes", default="", help="comma-separated (default: fp32, and bf16 where native)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)
    dtypes = args.dtypes.split(",") if args.dtypes else ["fp32"] + (["bf16"] if cpu_has_fast_bf16() else [])

    print(machine_line(), flush=True)
    bandwidth = read_bandwidth()
    print(f"read bandwidth: {bandwidth / 1e9:.1f} GB/s (1 GiB fp32: best of sum and mv)", flush=True)
    prompt = prompt_ids(args.prompt_tokens, seed=1)
    model = build_model()
    params = sum(p.numel() for p in model.parameters())
    print(f"model: Qwen2-shaped, {params / 1e6:.1f}M parameters; prompt {args.prompt_tokens}, "
          f"{args.new_tokens} new tokens, greedy, batch 1, {args.rounds} round(s)\n", flush=True)  # fmt: skip
    for name in dtypes:
        model = model.to(DTYPES[name])
        engine = Engine(as_adapter(model), generation_config={})
        engine.stop_token_ids = frozenset()  # 128 tokens on both sides, as min_new_tokens does
        sides = {
            "engine": lambda n, e=engine: run_engine(e, prompt, n),
            "generate": lambda n, m=model: run_generate(m, prompt, n),
        }
        for side in sides.values():
            side(4)  # warm-up
        walls: dict[str, list[float]] = {s: [] for s in sides}
        tokens: dict[str, list[int]] = {}
        for r in range(args.rounds):
            for s in list(sides) if r % 2 == 0 else list(sides)[::-1]:
                wall, tokens[s] = sides[s](args.new_tokens)
                walls[s].append(wall)
                print(f"{name} round {r}: {s:8s} {args.new_tokens / wall:7.1f} tokens/s", flush=True)
        bound = bandwidth / weight_bytes(model)
        rate = {s: args.new_tokens / statistics.median(w) for s, w in walls.items()}
        same = tokens["engine"] == tokens["generate"]
        share = {s: f"{100 * r / bound:.0f}%" for s, r in rate.items()}
        print(
            f"{name}: engine {rate['engine']:.1f} tokens/s ({share['engine']} of the bound), "
            f"generate {rate['generate']:.1f} tokens/s ({share['generate']}), "
            f"bound {bound:.1f} tokens/s; engine/generate = {rate['engine'] / rate['generate']:.2f}× "
            f"(same tokens: {same})\n",
            flush=True,
        )


if __name__ == "__main__":
    main()
