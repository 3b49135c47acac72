"""A training process for tests/training/test_distributed.py, run alone or under torchrun:

    python -m torch.distributed.run --standalone --nproc_per_node=2 ddp_worker.py OUT [--batch B] ...

Trains a tiny scratch GPT (dropout 0, one torch thread) on fixed random tokens with `training.loop.train`,
`log_interval` 1. Each rank writes OUT/rank<R>.json ({"losses": [[step, float.hex(loss)], ...], "val": ...,
"world_size", "probe": three draws of its dropout generator at the end, taken on a fork so they change
nothing}) and OUT/rank<R>.safetensors (its full weights at the end, gathered from the shards under FSDP),
and rank 0 OUT/model.safetensors (`distributed.gather_full_state`: what the train stage writes).
--ckpt ROOT: checkpoints every --interval steps; --resume: every rank loads the newest one first; --until
S: stop after step S. --die-at S: rank 1 exits abruptly (os._exit) after step S, as a crashed process does.
A FoundryError exits 2 with its message on stderr, as the CLI does.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from model_foundry.config import TrainConfig
from model_foundry.errors import FoundryError
from model_foundry.training.checkpoint import CheckpointHook, latest_checkpoint, load_checkpoint
from model_foundry.training.device import Runtime
from model_foundry.training.distributed import current, destroy, full_state_dict, gather_full_state
from model_foundry.training.hooks import TrainHook
from model_foundry.training.loop import train
from model_foundry.training.state import TrainState

VOCAB = 32
TOKENS = np.random.default_rng(0).integers(4, VOCAB, 6000).astype(np.uint16)
SIDECAR = {
    "model": "tiny",
    "method": "full",
    "parent_checksum": "p0",
    "params_digest": "d0",
    "data_hash": "h0",
}


class DieAt(TrainHook):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, step: int, state: TrainState) -> None:
        if step == self.step:
            os._exit(3)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--grad-accum", type=int, default=1)
    ap.add_argument("--strategy", default="ddp")
    ap.add_argument("--method", default="full")
    ap.add_argument("--ckpt", type=Path)
    ap.add_argument("--interval", type=int, default=2)
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--until", type=int)
    ap.add_argument("--die-at", type=int)
    args = ap.parse_args()

    from model_foundry.adapters.gpt import SPEC, GPTConfig
    from model_foundry.adapters.gpt.model import GPTAdapter
    from model_foundry.data.collators import CausalCollator

    cfg = TrainConfig(
        steps=args.steps, batch_size=args.batch, block_size=16, grad_accum=args.grad_accum, lr=3e-3,
        warmup_steps=2, eval_interval=3, eval_batches=2, log_interval=1, threads=1, device="cpu",
        precision="fp32", strategy=args.strategy, method=args.method,
    )  # fmt: skip
    runtime = Runtime.create(cfg.device, cfg.precision, cfg.threads)
    torch.manual_seed(0)
    config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0, vocab_size=VOCAB)
    adapter = GPTAdapter.build(config, SPEC)
    if args.method == "lora":
        from model_foundry.adapters.lora import apply_lora

        apply_lora(adapter, cfg.lora)
    state = TrainState.create(adapter, cfg, runtime)
    job = current()
    hooks: list[TrainHook] = []
    if args.ckpt is not None:  # every rank: rank 0 writes
        hooks.append(CheckpointHook(args.ckpt, args.interval, 10, SIDECAR, handle_signals=False))
    if args.die_at is not None and job.rank == 1:
        hooks.append(DieAt(args.die_at))
    if args.resume:
        start = latest_checkpoint(args.ckpt)
        assert start is not None
        load_checkpoint(start, state, SIDECAR)
    split = int(len(TOKENS) * 0.9)
    train(state, TOKENS[:split], TOKENS[split:], cfg, CausalCollator(), runtime, hooks, until=args.until)
    from safetensors.torch import save_file

    weights = {k: v.detach().clone() for k, v in full_state_dict(adapter.model).items()}
    args.out.mkdir(parents=True, exist_ok=True)
    save_file(weights, str(args.out / f"rank{job.rank}.safetensors"))
    final = gather_full_state(adapter.model)  # every rank takes part; rank 0 gets the tensors
    if job.is_main:
        save_file({k: v.clone() for k, v in final.items()}, str(args.out / "model.safetensors"))
    with torch.random.fork_rng():
        probe = torch.rand(3).tolist()
    record = {
        "losses": [[s, float.hex(v)] for s, v in state.train_history],
        "val": [[s, float.hex(v)] for s, v in state.val_history],
        "world_size": job.world_size,
        "threads": torch.get_num_threads(),
        "probe": probe,
    }
    (args.out / f"rank{job.rank}.json").write_text(json.dumps(record))
    destroy()


if __name__ == "__main__":
    try:
        main()
    except FoundryError as e:
        print(f"error: {e.message}\nhint: {e.hint}", file=sys.stderr)
        sys.exit(2)
