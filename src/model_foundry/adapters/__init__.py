"""The architecture registry: the one place that maps an architecture name to its spec.

A new scratch architecture is one package (`adapters/<name>/`: torch-free config + spec in `__init__.py`,
the modules and adapter in `model.py`) and one line here. A new Hub family is one row of
`adapters/hf/families.py`: its entry is derived below.
"""

from __future__ import annotations

from model_foundry.adapters import bert, gpt, rnn
from model_foundry.adapters.hf.families import FAMILIES, HFFamily, HFModelConfig
from model_foundry.adapters.spec import OBJECTIVES, ArchitectureSpec
from model_foundry.errors import FoundryError


def _hub_spec(family: HFFamily) -> ArchitectureSpec:
    return ArchitectureSpec(
        name=family.name,
        config_cls=HFModelConfig,
        adapter=family.adapter,
        objectives=(family.objective,),
        description=f"{family.note} (Hub import)",
        family=family,
    )


ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "gpt": gpt.SPEC,
    "bert": bert.SPEC,
    "lstm": rnn.LSTM_SPEC,
    "gru": rnn.GRU_SPEC,
    "rnn": rnn.RNN_SPEC,
    # Imported from the Hugging Face Hub or a local folder (`foundry import-model`, `source:` in the catalog).
    **{family.name: _hub_spec(family) for family in FAMILIES},
}


def get_spec(name: str | None) -> ArchitectureSpec:
    """The registered spec of `name`; FoundryError listing the known names when it is missing or unknown."""
    if not name or name not in ARCHITECTURES:
        what = "is missing" if not name else f"{name!r} is not a known architecture"
        raise FoundryError(
            f"The architecture {what}.", f"Set `architecture:` to one of: {', '.join(sorted(ARCHITECTURES))}."
        )
    return ARCHITECTURES[name]


__all__ = ["ARCHITECTURES", "OBJECTIVES", "ArchitectureSpec", "get_spec"]
