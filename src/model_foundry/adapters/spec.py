"""What the registry knows about an architecture, without importing torch.

The spec is the single owner of an architecture's identity: adapters do not name their spec back, they are
given it (`build(config, spec)`, `load_checkpoint(path, spec)`), so one adapter class serves several entries
(the three recurrent cells, every Hub family of one objective).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # type-only: nothing here imports torch or an adapter module at runtime
    from _typeshed import DataclassInstance

    from model_foundry.adapters.base import BaseAdapter
    from model_foundry.adapters.hf.families import HFFamily

OBJECTIVES = ("causal_lm", "masked_lm")


def check_heads(n_embd: int, n_head: int) -> None:
    """Attention splits the width into equal heads: a rule every transformer config shares.

    Raises FoundryError when `n_embd` is not a multiple of `n_head`.
    """
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
    `family` is set for the Hub families (a row of `adapters/hf/families.py`), None for scratch models.
    """

    name: str
    config_cls: type[DataclassInstance]  # validated from params.yaml by `schema.build`
    adapter: str
    objectives: tuple[str, ...]
    description: str
    # The Hub family this entry imports (its weights come from an imported checkpoint); None: built here.
    family: HFFamily | None = None

    @property
    def pretrained(self) -> bool:
        """True for architectures whose weights come from an imported checkpoint (Hub families)."""
        return self.family is not None

    def adapter_cls(self) -> type[BaseAdapter]:
        """The adapter class named by `adapter` ("module:Class"), imported now (this imports torch)."""
        module, _, cls = self.adapter.partition(":")
        adapter: type[BaseAdapter] = getattr(importlib.import_module(module), cls)
        return adapter
