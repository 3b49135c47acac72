"""What the registry knows about an architecture, without importing torch."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter

OBJECTIVES = ("causal_lm", "masked_lm")


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
