"""A model's own generation settings: generation_config.json → default SamplingParams and stop token ids.

transformers reads generation_config.json beside the weights (`GenerationConfig.from_pretrained`); this
module reads the same file the same way, so `foundry generate` with no sampling flags decodes as
`model.generate(**inputs)` does:

    do_sample false or absent          greedy (temperature 0); the repetition penalty still applies
    do_sample true                     temperature, top_k, top_p, min_p, repetition_penalty from the file,
                                       transformers' defaults for the keys it lacks (1.0, 50, 1.0, none, 1.0)
    no generation_config.json          SamplingParams(): temperature 1 over every token

`eos_token_id` (an int or a list) adds to the stop tokens (`chat.stop_token_ids`). A request overrides any
of the settings (`resolve`): its None fields mean "the model's default".
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_foundry.errors import FoundryError
from model_foundry.generation.sampling import SamplingParams

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter

GENERATION_CONFIG = "generation_config.json"
TRANSFORMERS_TOP_K = 50  # GenerationConfig._get_default_generation_params()["top_k"] (transformers 5.x)
SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")


def read_generation_config(folder: str | Path | None) -> dict[str, Any]:
    """generation_config.json of a model folder as a dict ({} when the folder or the file is absent).

    Raises FoundryError naming the file when it is not a JSON object.
    """
    from model_foundry.model_folder.checks import read_json_object

    if folder is None or not (Path(folder) / GENERATION_CONFIG).is_file():
        return {}
    return read_json_object(Path(folder) / GENERATION_CONFIG)


def generation_config_of(adapter: BaseAdapter) -> dict[str, Any]:
    """The generation_config.json of the folder `adapter` was loaded from ({} when it is not known: scratch
    adapters do not record their folder; `Engine.from_folder` reads it from the path instead)."""
    return read_generation_config(getattr(adapter, "source_dir", None))


def eos_ids(generation_config: dict[str, Any]) -> list[int]:
    """generation_config's `eos_token_id` as a list (an int, a list of ints, or absent → [])."""
    eos = generation_config.get("eos_token_id")
    values = eos if isinstance(eos, list) else [eos]
    return [int(v) for v in values if isinstance(v, int) and not isinstance(v, bool)]


def default_params(generation_config: dict[str, Any]) -> SamplingParams:
    """The SamplingParams generation_config.json asks for (see the module docstring); SamplingParams() for
    an empty one. Raises FoundryError (from SamplingParams) when the file holds a setting out of range."""
    if not generation_config:
        return SamplingParams()
    g = generation_config
    return SamplingParams(
        temperature=float(g.get("temperature") or 1.0) if g.get("do_sample") else 0.0,
        top_k=int(g["top_k"]) if g.get("top_k") is not None else TRANSFORMERS_TOP_K,
        top_p=float(g["top_p"]) if g.get("top_p") is not None else None,
        min_p=float(g["min_p"]) if g.get("min_p") is not None else None,
        repetition_penalty=(
            float(g["repetition_penalty"]) if g.get("repetition_penalty") is not None else None
        ),
    )


def resolve(defaults: SamplingParams, overrides: dict[str, Any]) -> SamplingParams:
    """`defaults` with the not-None values of `overrides` (keys: SamplingParams' fields) put in.

    Raises FoundryError for an unknown key or a value out of range.
    """
    unknown = sorted(set(overrides) - set(SAMPLING_KEYS))
    if unknown:
        raise FoundryError(
            f"Unknown sampling setting(s): {', '.join(unknown)}.", f"Use {', '.join(SAMPLING_KEYS)}."
        )
    return dataclasses.replace(defaults, **{k: v for k, v in overrides.items() if v is not None})
