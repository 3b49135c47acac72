"""Masked-loss causal LM batches from packed chat windows: loss only on the trained (assistant) tokens.

Windows come from `data.chat_data.PackedWindows.draw` (or `join_windows`) in one int64 tensor that carries
ids and loss mask together: the id where the token is a training target, `~id` (= -id - 1) where it is not.
That keeps the `data.collators.Collator` protocol (windows in, (inputs, labels) out) without a second tensor.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model_foundry.data.collators import IGNORE_INDEX


@dataclass
class MaskedCausalCollator:
    """Next-token prediction with a loss mask: windows (B, T + 1) int64 in the joined encoding →
    input_ids (B, T) = ids[:, :-1] and labels (B, T) = ids[:, 1:], IGNORE_INDEX (-100) where the target
    token's mask is 0 (prompt, user and system turns, template markup, padding)."""

    extra_tokens: int = 1

    def __call__(
        self, windows: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        trained = windows >= 0
        ids = torch.where(trained, windows, torch.bitwise_not(windows))
        labels = ids[:, 1:].masked_fill(~trained[:, 1:], IGNORE_INDEX)
        return ids[:, :-1], labels
