"""The golden loss list: a short seeded run of a tiny GPT on a fixed tiny corpus, on one CPU thread.

`tests/training/test_loop.py::test_golden_losses` reruns it and compares with golden_losses.json, so a change
that alters what the training loop computes (schedule, clipping, loss scaling, batch order, optimizer, the
model's math) shows up as a failing test instead of a silently different model. A deliberate change of that
kind regenerates the file (and the diff of the JSON goes into the commit):

    .venv/bin/python tests/training/make_golden.py

Float noise between CPUs and library versions (summation order) stays far below the test's tolerance.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

GOLDEN = Path(__file__).with_name("golden_losses.json")
TEXT = "the quick brown fox jumps over the lazy dog; pack my box with five dozen liquor jugs. " * 30


def golden_run() -> dict[str, Any]:
    """8 steps of a 2-layer GPT (fp32, one thread) with warmup, cosine decay and clipping all in play."""
    import numpy as np
    import torch

    from model_foundry.adapters.gpt import SPEC as GPT_SPEC
    from model_foundry.adapters.gpt import GPTConfig
    from model_foundry.adapters.gpt.model import GPTAdapter
    from model_foundry.config import TrainConfig
    from model_foundry.data.collators import CausalCollator
    from model_foundry.training.device import Runtime
    from model_foundry.training.loop import train
    from model_foundry.training.state import TrainState

    chars = sorted(set(TEXT))
    tokens = np.array([chars.index(c) for c in TEXT], dtype=np.uint16)
    split = int(len(tokens) * 0.9)
    threads = torch.get_num_threads()
    try:
        runtime = Runtime.create("cpu", "fp32", threads=1)
        torch.manual_seed(0)
        config = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, dropout=0.0, vocab_size=len(chars))
        adapter = GPTAdapter.build(config, GPT_SPEC)
        cfg = TrainConfig(
            steps=8, batch_size=4, block_size=16, lr=1e-2, min_lr_ratio=0.1, warmup_steps=3, weight_decay=0.1,
            grad_clip=0.5, eval_interval=4, eval_batches=2, log_interval=1, seed=5, threads=1, device="cpu",
            precision="fp32",
        )  # fmt: skip
        state = TrainState.create(adapter, cfg, runtime)
        result = train(state, tokens[:split], tokens[split:], cfg, CausalCollator(), runtime)
    finally:
        torch.set_num_threads(threads)
    return {
        "train_loss": [round(loss, 6) for _, loss in result.train_history],
        "val_loss": [[step, round(loss, 6)] for step, loss in result.val_history],
    }


if __name__ == "__main__":
    golden = golden_run()
    GOLDEN.write_text(json.dumps(golden, indent=2) + "\n")
    json.dump(golden, sys.stdout, indent=2)
    print(f"\nwrote {GOLDEN}")
