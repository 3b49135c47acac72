"""Next-token choice: logits → probabilities → token, as a chain of small functions (after gpt-fast's
`generate.py`: https://github.com/pytorch-labs/gpt-fast/blob/main/generate.py).

The order is transformers' (temperature, then top-k, then top-p, then one `torch.multinomial` draw), so a
seeded `torch.Generator` draws the token `model.generate(do_sample=True)` draws after `torch.manual_seed`
with the same seed and settings. Temperature 0 is greedy (argmax, no draw).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from model_foundry.errors import FoundryError


@dataclass(frozen=True)
class SamplingParams:
    """How the next token is chosen.

    temperature: logits are divided by it; 0 picks the likeliest token (greedy).
    top_k:       sample among the k likeliest tokens only (None or 0: all).
    top_p:       sample among the likeliest tokens whose probabilities add up to top_p (None or 1: all).
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):  # NaN fails the comparison
            raise FoundryError(
                f"temperature = {self.temperature} must be a finite number, 0 (greedy) or more.",
                "Use 0 for greedy decoding, or e.g. 0.7-1.0 for sampling.",
            )
        if self.top_k is not None and self.top_k < 0:
            raise FoundryError(f"top_k = {self.top_k} must be 0 (all tokens) or more.")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise FoundryError(f"top_p = {self.top_p} must be in (0, 1].")

    @property
    def greedy(self) -> bool:
        """Temperature 0: the likeliest token, no draw."""
        return self.temperature == 0


GREEDY = SamplingParams(temperature=0.0)


def require_finite(logits: torch.Tensor) -> None:
    """FoundryError when a row of (B, V) logits has a NaN, a +inf, or only -inf (no token can be chosen)."""
    if not bool(torch.isfinite(logits.float().logsumexp(-1)).all()):
        raise FoundryError(
            "The model gave non-finite logits (NaN or infinity): it cannot generate.",
            "Its weights are damaged or diverged: retrain it or restore it with `dvc checkout`.",
        )


def apply_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """(B, V) logits with all but the k largest per row set to -inf (ties with the k-th are kept)."""
    kth = torch.topk(logits, min(k, logits.size(-1))).values[:, -1, None]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def apply_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """(B, V) logits with -inf outside the smallest set of likeliest tokens whose probability reaches p
    (nucleus sampling: Holtzman et al., 2020, https://arxiv.org/abs/1904.09751; the likeliest token is
    always kept)."""
    sorted_logits, order = torch.sort(logits, descending=False)  # (B, V), ascending as transformers does
    cumulative = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    drop = cumulative <= 1 - p  # the unlikely tail that holds at most 1 - p
    drop[:, -1] = False
    return logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))


def logits_to_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """(B, V) logits → (B, V) fp32 probabilities under temperature, top-k and top-p (not for greedy)."""
    logits = logits.float() / params.temperature
    if params.top_k:
        logits = apply_top_k(logits, params.top_k)
    if params.top_p is not None and params.top_p < 1:
        logits = apply_top_p(logits, params.top_p)
    return F.softmax(logits, dim=-1)


def sample(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None = None
) -> torch.Tensor:
    """(B, V) logits of the next position → (B,) int64 token ids; FoundryError on non-finite logits.

    `generator` makes the draws reproducible (None: torch's global generator).
    """
    require_finite(logits)
    if params.greedy:
        return logits.argmax(dim=-1)
    probs = logits_to_probs(logits, params)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
