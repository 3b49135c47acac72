"""Optimizer construction and the learning-rate schedule (linear warmup, cosine decay to min_lr_ratio)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from model_foundry.training.optim import clip_grad_norm, lr_at, make_optimizer

LR, WARMUP, TOTAL, MIN = 1e-3, 10, 110, 0.1


def schedule(step: int, warmup: int = WARMUP) -> float:
    return lr_at(step, lr=LR, warmup=warmup, total=TOTAL, min_ratio=MIN)


def test_warmup_is_linear_up_to_the_peak() -> None:
    assert [schedule(s) for s in range(WARMUP)] == pytest.approx(
        [LR * (s + 1) / WARMUP for s in range(WARMUP)]
    )
    assert schedule(WARMUP - 1) == pytest.approx(LR)


def test_cosine_decays_to_min_lr_ratio() -> None:
    assert schedule(WARMUP) == pytest.approx(LR)  # the decay starts at the peak
    assert schedule(WARMUP + (TOTAL - WARMUP) // 2) == pytest.approx(LR * (MIN + (1 - MIN) * 0.5))
    assert schedule(TOTAL) == pytest.approx(LR * MIN)
    assert schedule(TOTAL + 50) == pytest.approx(LR * MIN)  # and stays there
    decay = [schedule(s) for s in range(WARMUP, TOTAL + 1)]
    assert all(a >= b for a, b in zip(decay[:-1], decay[1:], strict=True))
    s = WARMUP + 25
    cosine = 0.5 * (1 + math.cos(math.pi * (s - WARMUP) / (TOTAL - WARMUP)))
    assert schedule(s) == pytest.approx(LR * (MIN + (1 - MIN) * cosine))


def test_no_warmup_starts_at_the_peak() -> None:
    assert schedule(0, warmup=0) == pytest.approx(LR)
    assert schedule(TOTAL, warmup=0) == pytest.approx(LR * MIN)


def test_decay_only_on_matrices_and_embeddings() -> None:
    model = nn.Sequential(nn.Embedding(10, 4), nn.Linear(4, 4), nn.LayerNorm(4))
    opt = make_optimizer(model, LR, 0.1, (0.9, 0.99), torch.device("cpu"))
    decay, no_decay = opt.param_groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert {p.dim() for p in decay["params"]} == {2} and {p.dim() for p in no_decay["params"]} == {1}
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))
    assert opt.defaults["betas"] == (0.9, 0.99)


def test_cpu_optimizer_is_fused_and_matches_the_reference_adamw() -> None:
    """The fused CPU kernel takes the same steps as torch's reference (single-tensor) AdamW."""
    torch.manual_seed(0)
    fast, ref = nn.Linear(8, 8), nn.Linear(8, 8)
    ref.load_state_dict(fast.state_dict())
    opt = make_optimizer(fast, LR, 0.1, (0.9, 0.99), torch.device("cpu"))
    assert opt.defaults["fused"]
    ref_opt = torch.optim.AdamW(
        [{"params": [ref.weight], "weight_decay": 0.1}, {"params": [ref.bias], "weight_decay": 0.0}],
        lr=LR, betas=(0.9, 0.99), foreach=False,
    )  # fmt: skip
    x = torch.randn(16, 8)
    for _ in range(5):
        for model, o in ((fast, opt), (ref, ref_opt)):
            model(x).square().mean().backward()
            o.step()
            o.zero_grad(set_to_none=True)
    for a, b in zip(fast.parameters(), ref.parameters(), strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_clip_grad_norm_scales_to_max_norm() -> None:
    params = [torch.zeros(3, requires_grad=True), torch.zeros(4, requires_grad=True)]
    params[0].grad = torch.full((3,), 3.0)
    params[1].grad = torch.full((4,), 4.0)
    total = clip_grad_norm(params, 1.0)
    assert float(total) == pytest.approx(math.sqrt(3 * 9 + 4 * 16))
    assert float(torch.cat([p.grad for p in params]).norm()) == pytest.approx(1.0, rel=1e-5)
