"""The adapter contract, checked for every scratch architecture in the registry.

Data-driven: an architecture's tiny size comes from its config class (`TINY`), its objective from its spec
(`spec.objectives[0]`), so a new registry entry is tested without new test code.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

from model_foundry.adapters import ARCHITECTURES
from model_foundry.adapters.base import BaseAdapter, load_adapter
from model_foundry.adapters.spec import ArchitectureSpec
from model_foundry.config import TrainConfig
from model_foundry.data.collators import CausalCollator, MaskedCollator
from model_foundry.schema import build
from model_foundry.training.device import Runtime
from model_foundry.training.loop import train

VOCAB = 64
SPECIAL = (0, 1, 2, 3, 4)  # pad, unk, cls, sep, mask: as the masked_lm tokenizers number them
MASK_ID = 4
SCRATCH = sorted(name for name, spec in ARCHITECTURES.items() if not spec.pretrained)


def tiny_adapter(spec: ArchitectureSpec, seed: int = 0) -> BaseAdapter:
    config = build(spec.config_cls, {**getattr(spec.config_cls, "TINY", {}), "vocab_size": VOCAB}, spec.name)
    torch.manual_seed(seed)
    return spec.adapter_cls().build(config)


def tiny_collator(objective: str) -> Any:
    if objective == "causal_lm":
        return CausalCollator()
    return MaskedCollator(MASK_ID, VOCAB, SPECIAL, probability=0.3)


def seq_len(adapter: BaseAdapter) -> int:
    return min(16, adapter.max_context or 16)


def batch(
    adapter: BaseAdapter, objective: str, batch_size: int = 4, seed: int = 0
) -> tuple[torch.Tensor, ...]:
    collator = tiny_collator(objective)
    gen = torch.Generator().manual_seed(seed)
    windows = torch.randint(
        len(SPECIAL), VOCAB, (batch_size, seq_len(adapter) + collator.extra_tokens), generator=gen
    )
    return collator(windows, gen)


@pytest.fixture(params=SCRATCH)
def spec(request: pytest.FixtureRequest) -> ArchitectureSpec:
    return ARCHITECTURES[request.param]


def test_registry_has_the_issue_architectures() -> None:
    assert {"gpt", "bert", "lstm", "gru", "rnn"} <= set(SCRATCH)


def test_forward_shapes(spec: ArchitectureSpec) -> None:
    adapter = tiny_adapter(spec)
    x, y = batch(adapter, spec.objectives[0], batch_size=3)
    out = adapter(x, y)
    assert out.logits.shape == (3, seq_len(adapter), VOCAB)  # (B, T, V)
    assert out.loss is not None and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert adapter(x).loss is None
    assert adapter.num_parameters() > 0


def test_overfits_one_batch(spec: ArchitectureSpec) -> None:
    adapter = tiny_adapter(spec)
    x, y = batch(adapter, spec.objectives[0])
    opt = torch.optim.Adam(adapter.model.parameters(), lr=2e-2)
    losses = []
    for _ in range(40):
        loss = adapter(x, y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"{spec.name}: {losses[0]:.3f} → {losses[-1]:.3f}"


def test_save_load_gives_identical_logits(spec: ArchitectureSpec, tmp_path) -> None:
    adapter = tiny_adapter(spec)
    with torch.no_grad():  # move every weight off its init so that nothing matches by accident
        for p in adapter.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    adapter.model.eval()
    adapter.save_checkpoint(tmp_path / "m", {"model_name": "m"})
    loaded = load_adapter(tmp_path / "m")
    loaded.model.eval()
    assert type(loaded) is type(adapter)
    assert dataclasses.asdict(loaded.config) == dataclasses.asdict(adapter.config)
    x, _ = batch(adapter, spec.objectives[0])
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(x), adapter.logits(x), rtol=0, atol=0)


def _five_steps(spec: ArchitectureSpec) -> list[tuple[int, float]]:
    adapter = tiny_adapter(spec, seed=7)
    objective = spec.objectives[0]
    T = seq_len(adapter)
    cfg = TrainConfig(
        objective=objective, steps=5, batch_size=4, block_size=T, lr=1e-2, warmup_steps=1, eval_interval=5,
        eval_batches=1, log_interval=1, seed=3, device="cpu", precision="fp32",
    )  # fmt: skip
    tokens = np.random.default_rng(0).integers(len(SPECIAL), VOCAB, 2000).astype(np.uint16)
    collator, runtime = tiny_collator(objective), Runtime.create("cpu", "fp32")
    result = train(adapter, tokens[:1500], tokens[1500:], cfg, collator, runtime, progress=False)
    assert [s for s, _ in result.train_history] == [1, 2, 3, 4, 5]
    return result.train_history + result.val_history


def test_seeded_training_is_reproducible(spec: ArchitectureSpec) -> None:
    first, second = _five_steps(spec), _five_steps(spec)
    assert first == second
