"""Device and precision choice, bf16 autocast, and the GPT's CPU fast paths (same math as the reference)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import model_foundry.adapters.gpt.model as gpt
from model_foundry.adapters.gpt import SPEC as GPT_SPEC
from model_foundry.adapters.gpt import GPTConfig
from model_foundry.config import TrainConfig
from model_foundry.data.collators import CausalCollator
from model_foundry.training.device import Runtime, autocast, cpu_has_fast_bf16, resolve_precision
from model_foundry.training.loop import train
from model_foundry.training.state import TrainState

CPU = torch.device("cpu")


def test_auto_precision_on_cpu_is_bf16_only_where_it_is_fast() -> None:
    expected = torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    assert resolve_precision("auto", CPU) == expected


def test_explicit_precision_is_obeyed() -> None:
    assert resolve_precision("bf16", CPU) == torch.bfloat16
    assert resolve_precision("fp32", CPU) == torch.float32
    assert Runtime.create("cpu", "bf16").dtype == torch.bfloat16
    assert Runtime.create("cpu", "fp32").dtype == torch.float32


def test_auto_on_other_devices() -> None:
    assert resolve_precision("auto", torch.device("mps")) == torch.float32
    if torch.cuda.is_available():
        expected = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
        assert resolve_precision("auto", torch.device("cuda")) == expected


def tiny_gpt(seed: int = 0) -> gpt.GPTAdapter:
    torch.manual_seed(seed)
    return gpt.GPTAdapter.build(
        GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, vocab_size=16), GPT_SPEC
    )


def test_bf16_autocast_runs_the_forward_in_bf16_and_keeps_the_loss_fp32() -> None:
    adapter = tiny_gpt()
    x = torch.randint(16, (2, 16))
    with autocast(CPU, torch.bfloat16):
        out = adapter(x, x)
    assert out.logits.dtype == torch.bfloat16
    assert out.loss.dtype == torch.float32
    assert all(p.dtype == torch.float32 for p in adapter.model.parameters())


def test_bf16_and_fp32_losses_stay_close() -> None:
    """A few steps of a tiny model: bf16 autocast follows the fp32 loss curve within bf16 noise.

    Kept tiny on purpose: without AVX512-BF16/AMX a CPU emulates bf16 matmuls (far slower than fp32)."""
    tokens = np.random.default_rng(0).integers(0, 16, 2000).astype(np.uint16)
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = TrainConfig(
            steps=8, batch_size=4, block_size=16, lr=3e-3, warmup_steps=2, eval_interval=8, eval_batches=2,
            log_interval=1, seed=1, device="cpu", precision=precision,
        )  # fmt: skip
        runtime = Runtime.create("cpu", precision)
        state = TrainState.create(tiny_gpt(), cfg, runtime)
        result = train(state, tokens[:1800], tokens[1800:], cfg, CausalCollator(), runtime)
        losses[precision] = [v for _, v in result.train_history] + [v for _, v in result.val_history]
    np.testing.assert_allclose(losses["bf16"], losses["fp32"], atol=3e-2)
    assert losses["bf16"] != losses["fp32"]  # bf16 really ran


def test_tanh_gelu_matches_gelu_new() -> None:
    x = torch.randn(4, 8, 16, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gpt.TanhGELU.apply, (x,))
    x = torch.linspace(-8, 8, 4001, requires_grad=True)
    ours = gpt.TanhGELU.apply(x)
    (g_ours,) = torch.autograd.grad(ours.sum(), x)
    ref = F.gelu(x, approximate="tanh")
    (g_ref,) = torch.autograd.grad(ref.sum(), x)
    torch.testing.assert_close(ours, ref, atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(g_ours, g_ref, atol=1e-5, rtol=1e-5)


def test_explicit_cpu_attention_matches_sdpa(monkeypatch: pytest.MonkeyPatch) -> None:
    idx = torch.randint(20, (3, 24), generator=torch.Generator().manual_seed(1))

    def run() -> tuple[torch.Tensor, list[torch.Tensor]]:
        torch.manual_seed(0)
        model = gpt.GPT(GPTConfig(n_layer=2, n_head=4, n_embd=32, block_size=24, vocab_size=20))
        logits = model(idx)
        logits.square().mean().backward()
        return logits.detach(), [p.grad for p in model.parameters()]

    explicit = run()
    monkeypatch.setattr(gpt, "CPU_EXPLICIT_ATTENTION_MAX_T", 0)  # models built now use SDPA on CPU too
    sdpa = run()
    torch.testing.assert_close(explicit[0], sdpa[0], atol=1e-5, rtol=1e-5)
    for a, b in zip(explicit[1], sdpa[1], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


def test_causal_mask_is_not_part_of_the_checkpoint() -> None:
    assert not any("mask" in k for k in tiny_gpt().export_state_dict())
