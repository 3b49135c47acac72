"""A model folder loaded for generation: a causal LM with finite weights and a tokenizer (or FoundryError)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    import torch

    from model_foundry.adapters.base import BaseAdapter


def load_causal_model(
    path: str | Path, verify: bool = True, device: str | torch.device = "cpu"
) -> BaseAdapter:
    """Load the canonical model folder `path` to generate with.

    Refused with FoundryError: a masked LM (by architecture, or trained with train.objective masked_lm), a
    damaged folder (`model_folder.load_adapter`; `verify` also checks the weights' sha256), non-finite
    weights, a folder without a tokenizer.
    """
    from model_foundry.evaluation.finite import require_finite_weights
    from model_foundry.model_folder import load_adapter

    if is_masked_model(path):
        raise FoundryError(
            f"{path} is a masked language model: it fills in masked tokens and cannot continue a prompt.",
            "Generate with a causal model (e.g. models/gpt-tiny-trained); `foundry generate` fills the "
            "masks of a masked LM ([MASK] in the prompt).",
        )
    adapter = load_adapter(path, device=device, verify=verify)
    require_finite_weights(adapter.model, path)
    if adapter.tokenizer is None:
        raise FoundryError(f"{path} has no tokenizer.", "Use a trained model folder (models/<name>-trained).")
    return adapter


def is_masked_model(path: str | Path) -> bool:
    """Whether the model folder `path` holds a masked LM (by architecture, or trained with train.objective
    masked_lm): it fills masks (`fill_mask`) rather than continuing text. FoundryError for a damaged
    config.json or metadata.json, or an unknown architecture."""
    from model_foundry.adapters import get_spec
    from model_foundry.model_folder import read_model_info

    config, meta = read_model_info(path)
    objective = (meta.get("training") or {}).get("objective")
    spec = get_spec(meta.get("architecture") or config.get("architecture"))
    return objective == "masked_lm" or "causal_lm" not in spec.objectives


def load_model_for_use(
    path: str | Path, verify: bool = True, device: str | torch.device = "cpu"
) -> BaseAdapter:
    """Load the model folder `path` for what it does: a causal LM as `load_causal_model` does, a masked LM
    for `fill_mask` (the same checks: a sound folder, finite weights, a tokenizer). Raises FoundryError as
    `load_causal_model` does, except that masked LMs load."""
    from model_foundry.evaluation.finite import require_finite_weights
    from model_foundry.model_folder import load_adapter

    if not is_masked_model(path):
        return load_causal_model(path, verify=verify, device=device)
    adapter = load_adapter(path, device=device, verify=verify)
    require_finite_weights(adapter.model, path)
    if adapter.tokenizer is None:
        raise FoundryError(f"{path} has no tokenizer.", "Use a trained model folder (models/<name>-trained).")
    return adapter
