"""Imported masked-LM encoders (BERT, RoBERTa): logits at every position, loss where labels are set.

Labels come from the masked collator already aligned (no shift), -100 where nothing is predicted.
Generation refuses masked LMs (`model_foundry.generation`).
"""

from __future__ import annotations

import torch

from model_foundry.adapters.hf.adapter import HFAdapter
from model_foundry.errors import FoundryError


class HFMaskedAdapter(HFAdapter):
    """Masked-LM encoders: logits (B, T, V) at every position; `fill_mask` for a quick look."""

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 ids → (B, T, V) logits of the token at every position (no attention mask: packed)."""
        return self.model(input_ids=input_ids).logits  # (B, T, V)

    @torch.no_grad()
    def fill_mask(self, input_ids: torch.Tensor, top_k: int = 5) -> list[list[tuple[int, float]]]:
        """For each [MASK] of a (1, T) input: the top_k (token id, probability)."""
        mask_id = getattr(self.tokenizer, "mask_token_id", None)
        if mask_id is None:
            raise FoundryError("The tokenizer has no mask token.")
        probs = self.logits(input_ids)[0].float().softmax(-1)  # (T, V)
        rows = (input_ids[0] == mask_id).nonzero().flatten().tolist()
        out = []
        for row in rows:
            p, ids = probs[row].topk(top_k)
            out.append(list(zip(ids.tolist(), p.tolist(), strict=True)))
        return out
