"""Helpers for the generation tests: causal models of every registry entry, picked up from the registry.

Scratch architectures are built tiny (their config's `TINY`); each causal Hub family is imported from the
fixture repo tests/localhub/repos.py names for it (`FAMILY_FIXTURES`), so a new row of
`adapters/hf/families.py` with a fixture repo is tested without new test code (and fails without one).
"""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch

from model_foundry.adapters import ARCHITECTURES
from model_foundry.adapters.base import BaseAdapter
from model_foundry.adapters.hf.families import FAMILIES, HFFamily
from model_foundry.schema import build

VOCAB = 64
SCRATCH_CAUSAL = sorted(
    n for n, s in ARCHITECTURES.items() if not s.pretrained and "causal_lm" in s.objectives
)
HUB_CAUSAL = [f.name for f in FAMILIES if f.objective == "causal_lm"]
BY_NAME: dict[str, HFFamily] = {f.name: f for f in FAMILIES}


def tiny_scratch(name: str, seed: int = 0, **settings: object) -> BaseAdapter:
    """A tiny scratch model of registry entry `name`, its weights moved off their init (no lucky matches)."""
    spec = ARCHITECTURES[name]
    config = build(spec.config_cls, {**spec.config_cls.TINY, "vocab_size": VOCAB, **settings}, name)
    torch.manual_seed(seed)
    adapter = spec.adapter_cls().build(config, spec)
    with torch.no_grad():
        for p in adapter.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    adapter.model.eval()
    return adapter


def fixture_repo(hub_repos: dict[str, Path], family: HFFamily) -> Path:
    """The build folder of `family`'s fixture repo (`FAMILY_FIXTURES` of tests/localhub/repos.py)."""
    from localhub.repos import FAMILY_FIXTURES

    if family.name not in FAMILY_FIXTURES:
        pytest.fail(f"tests/localhub/repos.py has no fixture repo of the {family.name} family")
    return hub_repos[FAMILY_FIXTURES[family.name]]


def without_cache(adapter: BaseAdapter) -> BaseAdapter:
    """A shallow copy of `adapter` that generates through the contract's default prefill/decode: every step
    recomputes the window of the last max_context tokens (the reference the caches are checked against)."""
    plain = copy.copy(adapter)
    plain.prefill = functools.partial(BaseAdapter.prefill, plain)  # type: ignore[method-assign]
    plain.decode = functools.partial(BaseAdapter.decode, plain)  # type: ignore[method-assign]
    return plain


def token_ids(batch: int, length: int, vocab: int, seed: int = 0) -> torch.Tensor:
    """(batch, length) int64 ids in [5, vocab): clear of the fixtures' special tokens at 0…4."""
    return torch.randint(5, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))


def vocab_of(adapter: BaseAdapter) -> int:
    """The model's vocabulary size (scratch config dataclass or Hugging Face config)."""
    return int(adapter.config.vocab_size)
