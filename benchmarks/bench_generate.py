"""Generation speed: the scratch gpt's KV cache against recomputing every step (the contract's fallback).

One process, one model: the registry's `gpt` at GPT-2 small size (12 layers, 12 heads, 768 dims, block 1024,
GPT-2's 50257-token vocabulary; random weights, seeded) continues a random prompt greedily by N tokens (no
stop tokens), through `model_foundry.generation.generate`:

  (a) cache:     `GPTAdapter.prefill`/`decode`, one token per step through the per-layer KV cache;
  (b) recompute: `BaseAdapter.prefill`/`decode`, every step reads the whole sequence so far again (what
                 generation did before the cache, and what an adapter without a cache still does).

Both pick the same tokens (checked). Each side runs once briefly as a warm-up, then `--rounds` times,
alternating; the figures are the medians of wall time. tokens/s = new tokens / wall time (prefill included).

    .venv/bin/python benchmarks/bench_generate.py                     # gpt-small, prompt 16, 256 new tokens
    .venv/bin/python benchmarks/bench_generate.py --size tiny --new-tokens 64   # a quick smoke run
"""

from __future__ import annotations

import argparse
import copy
import functools
import os
import platform
import statistics
import time

import torch

from model_foundry.adapters import get_spec
from model_foundry.adapters.base import BaseAdapter
from model_foundry.generation import GREEDY, generate
from model_foundry.schema import build

SIZES = {
    "small": {"n_layer": 12, "n_head": 12, "n_embd": 768, "block_size": 1024, "vocab_size": 50257},
    "tiny": {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 256, "vocab_size": 512},
}


def recomputing(adapter: BaseAdapter) -> BaseAdapter:
    """A shallow copy of `adapter` generating through BaseAdapter's default prefill/decode (no cache)."""
    plain = copy.copy(adapter)
    plain.prefill = functools.partial(BaseAdapter.prefill, plain)  # type: ignore[method-assign]
    plain.decode = functools.partial(BaseAdapter.decode, plain)  # type: ignore[method-assign]
    return plain


def timed(adapter: BaseAdapter, prompt: torch.Tensor, new_tokens: int) -> tuple[float, list[int]]:
    """Wall seconds of one greedy generation of `new_tokens` tokens, and the tokens."""
    start = time.perf_counter()
    out = generate(adapter, prompt, new_tokens, GREEDY)
    return time.perf_counter() - start, out.tokens[0]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", choices=sorted(SIZES), default="small", help="gpt size (default: GPT-2 small)")
    ap.add_argument("--prompt-tokens", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=1, help="timed runs of each side (medians)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: all cores)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads or os.cpu_count() or 1)

    spec = get_spec("gpt")
    config = build(spec.config_cls, SIZES[args.size], "gpt")
    torch.manual_seed(0)
    adapter = spec.adapter_cls().build(config, spec)
    prompt = torch.randint(
        0, config.vocab_size, (1, args.prompt_tokens), generator=torch.Generator().manual_seed(1)
    )
    sides = {"cache": adapter, "recompute": recomputing(adapter)}
    c = config
    print(
        f"gpt {args.size}: {adapter.num_parameters() / 1e6:.1f}M parameters ({c.n_layer}L/{c.n_head}H/"
        f"{c.n_embd}d, block {c.block_size}, vocab {c.vocab_size}); prompt {args.prompt_tokens}, "
        f"{args.new_tokens} new tokens, greedy, fp32, {args.rounds} round(s)\n"
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, "
        f"cpu_capability {torch.backends.cpu.get_cpu_capability()}",
        flush=True,
    )
    for side in sides.values():  # warm-up: allocator, kernels
        timed(side, prompt, 4)
    walls: dict[str, list[float]] = {name: [] for name in sides}
    tokens: dict[str, list[int]] = {}
    for r in range(args.rounds):
        for name in list(sides) if r % 2 == 0 else list(sides)[::-1]:
            wall, tokens[name] = timed(sides[name], prompt, args.new_tokens)
            walls[name].append(wall)
            print(f"round {r}: {name:9s} {wall:8.2f} s  {args.new_tokens / wall:8.1f} tokens/s", flush=True)
    rate = {name: args.new_tokens / statistics.median(w) for name, w in walls.items()}
    same = tokens["cache"] == tokens["recompute"]
    print(
        f"\ncache {rate['cache']:.1f} tokens/s, recompute {rate['recompute']:.1f} tokens/s: "
        f"ratio {rate['cache'] / rate['recompute']:.1f}× (same tokens: {same})"
    )


if __name__ == "__main__":
    main()
