"""Windows of token ids → (input_ids, labels) for each objective. Labels are aligned: -100 = no target."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import torch

from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

IGNORE_INDEX = -100


class Collator(Protocol):
    """Turns windows of token ids into one batch of (input_ids, labels) for an objective.

    `extra_tokens`: how many more tokens than the model's sequence length T a window holds (1 for next-token
    prediction, whose labels are the inputs shifted by one).
    `__call__(windows, generator)`: windows (B, T + extra_tokens) int64 → input_ids (B, T) int64 and labels
    (B, T) int64 (IGNORE_INDEX where nothing is predicted); `generator` seeds any randomness (masking).
    """

    extra_tokens: int

    def __call__(
        self, windows: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


@dataclass
class CausalCollator:
    """Next-token prediction: windows of block_size + 1 tokens, inputs = [:-1], labels = [1:]."""

    extra_tokens: int = 1

    def __call__(
        self, windows: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return windows[:, :-1], windows[:, 1:]


@dataclass
class MaskedCollator:
    """BERT masking: pick `probability` of the (non-special) tokens; 80% → [MASK], 10% → random, 10% kept."""

    mask_token_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    probability: float = 0.15
    extra_tokens: int = 0

    @classmethod
    def for_tokenizer(cls, tokenizer: PreTrainedTokenizerBase, probability: float = 0.15) -> MaskedCollator:
        """Mask token, vocabulary and special ids (all but unk, which is maskable) read from `tokenizer`.

        Raises FoundryError when the tokenizer has no mask token.
        """
        mask_id = tokenizer.mask_token_id
        if not isinstance(mask_id, int) or mask_id == tokenizer.unk_token_id:
            raise FoundryError(
                "train.objective is masked_lm but the tokenizer has no mask token.",
                "Use a tokenizer with a mask token (the tokenize stage trains one for masked_lm), "
                "or train with objective causal_lm.",
            )
        # (None too: transformers gives unk_token_id, None without an unk token, for a token not in the vocab)
        special = tuple(i for i in tokenizer.all_special_ids if i is not None and i != tokenizer.unk_token_id)
        return cls(mask_id, len(tokenizer), special, probability)

    def __call__(
        self, windows: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = windows.clone()
        labels = windows.clone()
        probs = torch.full(windows.shape, self.probability)
        special = torch.isin(windows, torch.tensor(self.special_ids, dtype=windows.dtype))
        probs.masked_fill_(special, 0.0)
        masked = torch.bernoulli(probs, generator=generator).bool()
        labels[~masked] = IGNORE_INDEX
        draw = torch.rand(windows.shape, generator=generator)
        to_mask = masked & (draw < 0.8)
        to_random = masked & (draw >= 0.8) & (draw < 0.9)
        inputs[to_mask] = self.mask_token_id
        random_ids = torch.randint(self.vocab_size, windows.shape, generator=generator)
        inputs[to_random] = random_ids[to_random]
        return inputs, labels


def make_collator(
    objective: str, tokenizer: PreTrainedTokenizerBase, mlm_probability: float = 0.15
) -> Collator:
    """The collator of `objective` ("causal_lm" or "masked_lm"; see `MaskedCollator.for_tokenizer`)."""
    if objective == "causal_lm":
        return CausalCollator()
    return MaskedCollator.for_tokenizer(tokenizer, mlm_probability)
