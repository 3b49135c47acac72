"""AdamW with decay on matrices only, and linear warmup + cosine decay (nanoGPT / LitGPT defaults)."""

from __future__ import annotations

import math

import torch
from torch import nn

# Devices with a fused AdamW kernel (one kernel for all parameters; CPU since torch 2.4). On CPU it is ~4×
# faster than the default per-parameter loop for a small GPT (benchmarks/bench_trainer.py).
FUSED_DEVICES = ("cuda", "cpu")


def make_optimizer(
    model: nn.Module, lr: float, weight_decay: float, betas: tuple[float, float], device: torch.device
) -> torch.optim.AdamW:
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]  # matrices and embeddings
    no_decay = [p for p in params if p.dim() < 2]  # biases and norm gains
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    floating = all(p.is_floating_point() for p in params)
    if device.type in FUSED_DEVICES and floating:
        try:
            return torch.optim.AdamW(groups, lr=lr, betas=betas, fused=True)
        except (RuntimeError, ValueError):  # an older torch or an unsupported dtype: torch's default path
            pass
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale gradients to total L2 norm ≤ max_norm without a host sync (multi-tensor ops on CPU and CUDA).

    Returns the total norm before clipping, a 0-dim tensor (FSDP's sharded gradients: the norm over all
    shards, gathered from its DTensor)."""
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
    full_tensor = getattr(norm, "full_tensor", None)  # a DTensor under FSDP
    return full_tensor() if callable(full_tensor) else norm


def lr_at(step: int, *, lr: float, warmup: int, total: int, min_ratio: float) -> float:
    """Learning rate for optimizer step `step` (0-based)."""
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    coeff = 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    return lr * (min_ratio + (1.0 - min_ratio) * coeff)
