"""Windows of token ids → (input_ids, labels) for each objective. Labels are aligned: -100 = no target."""

from __future__ import annotations

from dataclasses import dataclass

import torch

IGNORE_INDEX = -100


@dataclass
class CausalCollator:
    """Next-token prediction: windows of block_size + 1 tokens, inputs = [:-1], labels = [1:]."""

    extra_tokens: int = 1

    def __call__(self, windows: torch.Tensor, generator: torch.Generator | None = None):
        return windows[:, :-1], windows[:, 1:]


@dataclass
class MaskedCollator:
    """BERT masking: pick `probability` of the (non-special) tokens; 80% → [MASK], 10% → random, 10% kept."""

    mask_token_id: int
    vocab_size: int
    special_ids: tuple[int, ...]
    probability: float = 0.15
    extra_tokens: int = 0

    def __call__(self, windows: torch.Tensor, generator: torch.Generator | None = None):
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


def make_collator(objective: str, tokenizer, mlm_probability: float = 0.15):
    if objective == "causal_lm":
        return CausalCollator()
    special = tuple(i for i in tokenizer.all_special_ids if i is not None and i != tokenizer.unk_token_id)
    return MaskedCollator(tokenizer.mask_token_id, len(tokenizer), special, mlm_probability)
