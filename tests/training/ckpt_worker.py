"""A training process for tests/training/test_checkpoint.py: trains a tiny scratch GPT or masked BERT (dropout
0.1, grad_accum 2, one torch thread) with a CheckpointHook, optionally resuming from the latest checkpoint.

    python ckpt_worker.py CASE ROOT OUT [--steps N] [--interval K] [--resume] [--hang-at S]
                          [--fsize-limit-at S BYTES]

Writes OUT/losses.json ([[step, float.hex(loss)], ...]: per-step losses, log_interval 1, the resumed part of
the history included) and OUT/final.safetensors (the final weights) when training ends; prints "stopped at
N" when a signal stopped it. --hang-at S: after step S, write OUT/hanging and wait (up to 60 s) for a signal,
so the test can kill it between two checkpoints. --fsize-limit-at S BYTES: after step S, limit the size of
any file written (RLIMIT_FSIZE, SIGXFSZ ignored), so the next checkpoint fails as on a full disk.
A FoundryError exits 2 with its message on stderr, as the CLI does.
"""

from __future__ import annotations

import argparse
import json
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model_foundry.adapters.base import BaseAdapter
from model_foundry.config import TrainConfig
from model_foundry.data.collators import CausalCollator, MaskedCollator
from model_foundry.errors import FoundryError
from model_foundry.training.checkpoint import CheckpointHook, latest_checkpoint, load_checkpoint
from model_foundry.training.device import Runtime
from model_foundry.training.hooks import TrainHook
from model_foundry.training.loop import train
from model_foundry.training.state import TrainState

VOCAB = 16
SPECIAL = (0, 1, 2, 3)
TOKENS = np.random.default_rng(0).integers(len(SPECIAL), VOCAB, 4000).astype(np.uint16)
SIDECAR = {
    "model": "tiny",
    "method": "full",
    "parent_checksum": "p0",
    "params_digest": "d0",
    "data_hash": "h0",
}


def build(case: str) -> tuple[BaseAdapter, Any]:
    torch.manual_seed(0)
    if case == "gpt":
        from model_foundry.adapters.gpt import SPEC as GPT_SPEC
        from model_foundry.adapters.gpt import GPTConfig
        from model_foundry.adapters.gpt.model import GPTAdapter

        config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, dropout=0.1, vocab_size=VOCAB)
        return GPTAdapter.build(config, GPT_SPEC), CausalCollator()
    from model_foundry.adapters.bert import SPEC as BERT_SPEC
    from model_foundry.adapters.bert import BertConfig
    from model_foundry.adapters.bert.model import BertAdapter

    bert_config = BertConfig(**BertConfig.TINY, dropout=0.1, vocab_size=VOCAB)
    return BertAdapter.build(bert_config, BERT_SPEC), MaskedCollator(3, VOCAB, SPECIAL, 0.3)


class Hang(TrainHook):
    def __init__(self, at: int, out: Path, ckpt: CheckpointHook) -> None:
        self.at, self.out, self.ckpt = at, out, ckpt

    def on_step_end(self, step: int, state: TrainState) -> None:
        if step == self.at:
            (self.out / "hanging").write_text(str(step))
            deadline = time.monotonic() + 60
            while self.ckpt.signalled is None and time.monotonic() < deadline:
                time.sleep(0.02)


class LimitFileSize(TrainHook):
    def __init__(self, at: int, size: int) -> None:
        self.at, self.size = at, size

    def on_step_end(self, step: int, state: TrainState) -> None:
        if step == self.at:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing us
            resource.setrlimit(resource.RLIMIT_FSIZE, (self.size, resource.RLIM_INFINITY))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("case", choices=["gpt", "bert"])
    parser.add_argument("root", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--interval", type=int, default=5)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--hang-at", type=int, default=0)
    parser.add_argument("--fsize-limit-at", type=int, nargs=2, default=None)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)

    runtime = Runtime.create("cpu", "fp32", threads=1)
    cfg = TrainConfig(
        steps=args.steps, batch_size=4, block_size=16, grad_accum=2, lr=3e-3, warmup_steps=3, grad_clip=1.0,
        eval_interval=4, eval_batches=2, log_interval=1, seed=7, device="cpu", precision="fp32",
    )  # fmt: skip
    adapter, collator = build(args.case)
    state = TrainState.create(adapter, cfg, runtime)
    ckpt = CheckpointHook(args.root, interval=args.interval, keep=2, sidecar=SIDECAR)
    hooks: list[TrainHook] = []
    if args.hang_at:
        hooks.append(Hang(args.hang_at, args.out, ckpt))
    if args.fsize_limit_at:
        hooks.append(LimitFileSize(*args.fsize_limit_at))
    hooks.append(ckpt)
    try:
        if args.resume:
            latest = latest_checkpoint(args.root)
            assert latest is not None, "nothing to resume from"
            load_checkpoint(latest, state, SIDECAR)
            print(f"resumed from {latest.name}", flush=True)
        with ckpt:
            result = train(state, TOKENS[:3500], TOKENS[3500:], cfg, collator, runtime, hooks)
    except FoundryError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if result.stopped:
        print(f"stopped at {state.step}", flush=True)
        return 0
    from safetensors.torch import save_file

    losses = [[step, float(loss).hex()] for step, loss in state.train_history]
    (args.out / "losses.json").write_text(json.dumps(losses))
    save_file(
        {k: v.contiguous() for k, v in adapter.export_state_dict().items()},
        str(args.out / "final.safetensors"),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
