"""Decoder-only causal LMs imported from the Hub (Qwen, Llama, Mistral, GPT-2): logits, prefill and decode.

Generation reuses transformers' own KV cache (`DynamicCache`, `use_cache=True`), updated in place by each
forward; positions continue from the cache length. Sampling, stop tokens and chat templates are
`model_foundry.generation`'s, the same for every causal model.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from model_foundry.adapters.base import CachedState
from model_foundry.adapters.hf.adapter import HFAdapter


class HFCausalAdapter(HFAdapter):
    """Decoder-only causal LMs (Qwen, Llama, Mistral, GPT-2): next-token logits, with or without a cache."""

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 ids → (B, T, V) next-token logits (no cache kept)."""
        return self.model(input_ids=input_ids, use_cache=False).logits  # (B, T, V)

    def prefill(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, CachedState]:
        """(B, T) prompt → (B, T', V) logits and a `CachedState` over a new `DynamicCache` (T' = min(T,
        max_context): a longer prompt is read from its last max_context tokens)."""
        from transformers import DynamicCache

        ids = self._window(input_ids)
        cache = DynamicCache(config=self.model.config)  # sliding-window layers where the config has them
        return self._forward(ids, cache), CachedState(cache, ids)

    def decode(self, input_ids: torch.Tensor, state: CachedState) -> tuple[torch.Tensor, CachedState]:
        """(B, n) next ids → (B, n, V) logits through the cache (updated in place).

        Past max_context, the last max_context tokens are recomputed into a new cache at every step.
        """
        n = input_ids.size(1)
        if self.max_context is not None and state.length + n > self.max_context:
            logits, state = self.prefill(torch.cat([state.ids, input_ids], dim=1))
            return logits[:, -n:], state
        logits = self._forward(input_ids, state.cache)
        return logits, CachedState(state.cache, torch.cat([state.ids, input_ids], dim=1))

    def _forward(self, input_ids: torch.Tensor, cache: Any) -> torch.Tensor:
        """(B, n) ids after the cached ones → (B, n, V) logits; their keys and values are added to `cache`.

        transformers 5 renamed the argument `past_key_values` to `cache` (the old name warns until 5.40).
        """
        name = "cache" if "cache" in inspect.signature(self.model.forward).parameters else "past_key_values"
        return self.model(input_ids=input_ids, use_cache=True, **{name: cache}).logits
