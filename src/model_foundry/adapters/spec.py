"""What the registry knows about an architecture, without importing torch."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter

OBJECTIVES = ("causal_lm", "masked_lm")


def check_heads(n_embd: int, n_head: int) -> None:
    """Attention splits the width into equal heads: a rule every transformer config shares."""
    from model_foundry.errors import FoundryError

    if n_embd % n_head:
        raise FoundryError(
            f"n_embd = {n_embd} does not divide by n_head = {n_head}.",
            "Pick n_embd as a multiple of n_head (e.g. n_embd 128 with n_head 4).",
        )


@dataclass(frozen=True)
class ArchitectureSpec:
    """One architecture: its torch-free config dataclass and where its adapter lives.

    The adapter is named as "module:Class" and imported on first use, so `foundry validate` and
    `foundry --help` can check every catalog entry without importing torch.
    """

    name: str
    config_cls: type
    adapter: str
    objectives: tuple[str, ...]
    description: str
    # True for architectures whose weights come from an imported checkpoint (Hub families).
    pretrained: bool = False

    def adapter_cls(self) -> type[BaseAdapter]:
        module, _, cls = self.adapter.partition(":")
        return getattr(importlib.import_module(module), cls)
