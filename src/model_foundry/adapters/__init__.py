"""The architecture registry: the one place that maps an architecture name to its spec.

A new architecture is one config module (torch-free), one model file and one line here.
"""

from __future__ import annotations

from model_foundry.adapters import gpt_config
from model_foundry.adapters.spec import OBJECTIVES, ArchitectureSpec
from model_foundry.errors import FoundryError

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "gpt": gpt_config.SPEC,
}


def get_spec(name: str | None) -> ArchitectureSpec:
    if not name or name not in ARCHITECTURES:
        what = "is missing" if not name else f"{name!r} is not a known architecture"
        raise FoundryError(
            f"The architecture {what}.", f"Set `architecture:` to one of: {', '.join(sorted(ARCHITECTURES))}."
        )
    return ARCHITECTURES[name]


__all__ = ["ARCHITECTURES", "OBJECTIVES", "ArchitectureSpec", "get_spec"]
