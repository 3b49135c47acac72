"""Non-finite numbers (NaN, ±Infinity) are never a result: find them in weights and metrics, and refuse them.

A diverged run or a damaged checkpoint shows up as NaN/Infinity in its weights, logits or losses. Training,
evaluation and generation check for them and raise a FoundryError instead of saving or printing garbage.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    from torch import nn

DAMAGED_HINT = (
    "The model's weights are damaged or diverged: retrain it (lower train.lr, set train.grad_clip) "
    "or restore the saved version with `dvc checkout`."
)


def safe_exp(x: float) -> float:
    """math.exp, but +inf instead of OverflowError for x > ~709 (the caller then refuses the non-finite)."""
    try:
        return math.exp(x)
    except OverflowError:
        return math.inf


def nonfinite_values(tree: object, prefix: str = "") -> list[str]:
    """Dotted keys of the NaN/±Infinity floats in a nested dict/list of metrics (empty if all are finite)."""
    if isinstance(tree, dict):
        return [k for key, v in tree.items() for k in nonfinite_values(v, f"{prefix}{key}.")]
    if isinstance(tree, (list, tuple)):
        return [k for i, v in enumerate(tree) for k in nonfinite_values(v, f"{prefix}{i}.")]
    if isinstance(tree, float) and not math.isfinite(tree):
        return [prefix.rstrip(".")]
    return []


def nonfinite_parameters(model: nn.Module) -> list[str]:
    """Names of the model's parameters that hold a NaN or ±Infinity (one host sync for all of them)."""
    import torch

    named = [(name, p) for name, p in model.named_parameters() if p.is_floating_point()]
    if not named:
        return []
    finite = torch.stack([torch.isfinite(p.detach()).all() for _, p in named]).tolist()
    return [name for (name, _), ok in zip(named, finite, strict=True) if not ok]


def require_finite_weights(model: nn.Module, folder: str | Path) -> None:
    """Raise FoundryError naming `folder` (and a few tensors) if any parameter of `model` is non-finite."""
    bad = nonfinite_parameters(model)
    if bad:
        shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise FoundryError(f"{folder} has non-finite weights (NaN or infinity) in {shown}.", DAMAGED_HINT)


def require_finite_metrics(metrics: dict[str, Any], folder: str | Path) -> None:
    """Raise FoundryError naming `folder` if any metric is NaN or ±Infinity (nothing is written then)."""
    bad = nonfinite_values(metrics)
    if bad:
        values = ", ".join(f"{key} = {_lookup(metrics, key)}" for key in bad)
        raise FoundryError(f"Evaluating {folder} gave non-finite metrics: {values}.", DAMAGED_HINT)


def _lookup(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        tree = tree[int(part)] if isinstance(tree, (list, tuple)) else tree[part]
    return tree
