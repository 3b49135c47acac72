"""The shared training loop: convergence, determinism, gradient accumulation, host syncs, golden losses."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model_foundry.adapters.gpt import SPEC as GPT_SPEC
from model_foundry.adapters.gpt import GPTConfig
from model_foundry.adapters.gpt.model import GPTAdapter
from model_foundry.config import TrainConfig
from model_foundry.data.collators import CausalCollator
from model_foundry.training.device import Runtime
from model_foundry.training.loop import TrainResult, train
from model_foundry.training.state import TrainState

HERE = Path(__file__).parent
REPETITIVE = np.array([i % 7 for i in range(3000)], dtype=np.uint16)  # 0 1 2 3 4 5 6 0 1 ...


def tiny_gpt(vocab: int = 8, seed: int = 0, **changes: Any) -> GPTAdapter:
    torch.manual_seed(seed)
    config = GPTConfig(
        **{"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 16, "dropout": 0.0, **changes}
    )
    config.vocab_size = vocab
    return GPTAdapter.build(config, GPT_SPEC)


def cfg(**changes: Any) -> TrainConfig:
    base = dict(
        steps=10, batch_size=8, block_size=16, lr=1e-2, warmup_steps=2, eval_interval=10, eval_batches=2,
        log_interval=1, seed=3, device="cpu", precision="fp32",
    )  # fmt: skip
    return TrainConfig(**{**base, **changes})


def run(adapter: GPTAdapter, config: TrainConfig, tokens: np.ndarray = REPETITIVE) -> TrainResult:
    split = len(tokens) * 9 // 10
    runtime = Runtime.create("cpu", config.precision)
    state = TrainState.create(adapter, config, runtime)
    return train(state, tokens[:split], tokens[split:], config, CausalCollator(), runtime)


def test_tiny_run_converges_on_a_repetitive_corpus() -> None:
    result = run(tiny_gpt(), cfg(steps=60, eval_interval=60, log_interval=10))
    first, last = result.train_history[0][1], result.train_history[-1][1]
    assert first > 1.0  # about ln(8) at the start
    assert last < 0.1, result.train_history  # the sequence is fully predictable after one token
    assert result.val_history[-1][1] < 0.1
    assert len(result.step_seconds) == 60 and all(t > 0 for t in result.step_seconds)
    assert result.tokens == 60 * 8 * 16 and result.tokens_per_second > 0


def test_same_seed_gives_identical_losses_and_weights() -> None:
    tokens = np.random.default_rng(0).integers(0, 8, 3000).astype(np.uint16)
    a, b = tiny_gpt(), tiny_gpt()
    ra, rb = run(a, cfg(), tokens), run(b, cfg(), tokens)
    assert ra.train_history == rb.train_history
    assert ra.val_history == rb.val_history
    for pa, pb in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(pa, pb)


def test_same_seed_is_deterministic_with_dropout() -> None:
    tokens = np.random.default_rng(1).integers(0, 8, 3000).astype(np.uint16)
    first = run(tiny_gpt(dropout=0.2), cfg(steps=5, eval_interval=5), tokens)
    second = run(tiny_gpt(dropout=0.2), cfg(steps=5, eval_interval=5), tokens)
    assert first.train_history == second.train_history


def test_other_seed_gives_other_batches() -> None:
    tokens = np.random.default_rng(0).integers(0, 8, 3000).astype(np.uint16)
    first = run(tiny_gpt(), cfg(steps=3, eval_interval=3), tokens)
    second = run(tiny_gpt(), cfg(steps=3, eval_interval=3, seed=4), tokens)
    assert first.train_history != second.train_history


def test_grad_accumulation_matches_one_big_batch() -> None:
    """Batch 8 × accum 1 and batch 4 × accum 2 draw the same windows and take the same steps.

    Equal up to float rounding, which Adam magnifies for near-zero gradients (its update is ~lr·sign(g)),
    hence the parameter tolerance of a tenth of lr."""
    tokens = np.random.default_rng(2).integers(0, 8, 3000).astype(np.uint16)
    big, small = tiny_gpt(), tiny_gpt()
    r_big = run(big, cfg(steps=6, eval_interval=6, batch_size=8, grad_accum=1), tokens)
    r_small = run(small, cfg(steps=6, eval_interval=6, batch_size=4, grad_accum=2), tokens)
    assert r_big.tokens == r_small.tokens
    np.testing.assert_allclose(
        [v for _, v in r_big.train_history], [v for _, v in r_small.train_history], atol=1e-5
    )
    for pa, pb in zip(big.model.parameters(), small.model.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=1e-3, rtol=0)


def test_logged_losses_follow_log_interval() -> None:
    result = run(tiny_gpt(), cfg(steps=7, log_interval=3, eval_interval=4))
    assert [s for s, _ in result.train_history] == [3, 6, 7]
    assert [s for s, _ in result.val_history] == [4, 7]


def test_no_host_sync_except_when_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host read-back (`.item()`/`.tolist()`) runs once per log and once per evaluation, never on the
    other steps: the divergence check reads the buffered losses and gradient norms in the log's one sync."""
    calls = []

    def counting(name: str) -> Any:
        original = getattr(torch.Tensor, name)

        def wrapper(self: torch.Tensor) -> Any:
            calls.append(name)
            return original(self)

        return wrapper

    for name in ("item", "tolist"):
        monkeypatch.setattr(torch.Tensor, name, counting(name))
    run(tiny_gpt(), cfg(steps=12, log_interval=6, eval_interval=12))
    assert sorted(calls) == ["item", "tolist", "tolist"]  # logs at 6 and 12, one evaluation


def test_golden_losses() -> None:
    """A fixed 8-step run reproduces tests/training/golden_losses.json (regenerate: make_golden.py)."""
    spec = importlib.util.spec_from_file_location("make_golden", HERE / "make_golden.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    golden = json.loads((HERE / "golden_losses.json").read_text())
    got = module.golden_run()
    np.testing.assert_allclose(got["train_loss"], golden["train_loss"], atol=2e-4, rtol=0)
    assert [s for s, _ in got["val_loss"]] == [s for s, _ in golden["val_loss"]]
    np.testing.assert_allclose([v for _, v in got["val_loss"]], [v for _, v in golden["val_loss"]], atol=2e-4)
