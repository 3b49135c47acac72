"""Next-token choice: logits → probabilities → token, as a chain of small functions (after gpt-fast's
`generate.py`: https://github.com/pytorch-labs/gpt-fast/blob/main/generate.py).

The order is transformers' 5.x `GenerationMixin._get_logits_processor`: repetition penalty (over the prompt
and the tokens generated so far), then temperature, top-k, top-p, min-p, then one `torch.multinomial` draw.
So a seeded `torch.Generator` draws the token `model.generate(do_sample=True)` draws after
`torch.manual_seed` with the same seed and settings. Temperature 0 is greedy (argmax of the penalised
logits, no draw), as `do_sample=False` is.
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
    min_p:       drop tokens less likely than min_p × the likeliest one's probability (None or 0: none),
                 after temperature (Nguyen et al., 2024, https://arxiv.org/abs/2407.01082).
    repetition_penalty: tokens already in the prompt or the answer get their logit divided by it when
                 positive, multiplied when negative (Keskar et al., 2019; transformers' definition);
                 1 or None: no penalty. Applies to greedy decoding too.

    Raises FoundryError naming the value: temperature negative or not finite, top_k < 0, top_p outside
    (0, 1], min_p outside [0, 1], repetition_penalty ≤ 0 or not finite.
    """

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and math.isfinite(self.temperature)):  # NaN fails the comparison
            raise FoundryError(
                f"temperature = {self.temperature} must be a finite number, 0 (greedy) or more.",
                "Use 0 for greedy decoding, or e.g. 0.7-1.0 for sampling.",
            )
        if self.top_k is not None and self.top_k < 0:
            raise FoundryError(f"top_k = {self.top_k} must be 0 (all tokens) or more.")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise FoundryError(f"top_p = {self.top_p} must be in (0, 1].", "1 keeps every token.")
        if self.min_p is not None and not 0 <= self.min_p <= 1:
            raise FoundryError(f"min_p = {self.min_p} must be in [0, 1].", "0 keeps all; 0.05 is usual.")
        penalty = self.repetition_penalty
        if penalty is not None and not (penalty > 0 and math.isfinite(penalty)):
            raise FoundryError(
                f"repetition_penalty = {penalty} must be a finite number above 0.",
                "1 is no penalty; 1.1-1.3 discourages repeats.",
            )

    @property
    def penalised(self) -> bool:
        """Whether a repetition penalty other than 1 applies."""
        return self.repetition_penalty is not None and self.repetition_penalty != 1

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


def apply_min_p(logits: torch.Tensor, min_p: float) -> torch.Tensor:
    """(B, V) logits with -inf where a token's probability is below min_p × the row's top probability (the
    likeliest token is always kept), as transformers' `MinPLogitsWarper`."""
    probs = logits.softmax(dim=-1)
    drop = probs < min_p * probs.amax(dim=-1, keepdim=True)  # (B, V)
    drop.scatter_(1, probs.argmax(dim=-1, keepdim=True), False)
    return logits.masked_fill(drop, float("-inf"))


def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """(B, V) logits with the logits of the (B, S) int64 `seen` tokens (prompt + generated; repeats count
    once) divided by `penalty` where positive and multiplied where negative (transformers'
    `RepetitionPenaltyLogitsProcessor`)."""
    score = torch.gather(logits, 1, seen)  # (B, S)
    score = torch.where(score < 0, score * penalty, score / penalty)
    return logits.scatter(1, seen, score)


def logits_to_probs(logits: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """(B, V) logits → (B, V) fp32 probabilities under temperature, top-k, top-p and min-p (not for greedy;
    the repetition penalty is applied before, by `sample`)."""
    logits = logits.float() / params.temperature
    if params.top_k:
        logits = apply_top_k(logits, params.top_k)
    if params.top_p is not None and params.top_p < 1:
        logits = apply_top_p(logits, params.top_p)
    if params.min_p:
        logits = apply_min_p(logits, params.min_p)
    return F.softmax(logits, dim=-1)


def sample(
    logits: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None = None,
    seen: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, V) logits of the next position → (B,) int64 token ids; FoundryError on non-finite logits.

    `generator` makes the draws reproducible (None: torch's global generator). `seen`: (B, S) int64 ids of
    the prompt and the tokens generated so far, which the repetition penalty lowers (ignored without one;
    ids ≥ V are skipped).
    """
    require_finite(logits)
    if params.penalised and seen is not None and seen.numel():
        assert params.repetition_penalty is not None
        V = logits.size(-1)
        spare = logits.new_zeros(logits.size(0), 1)  # (B, 1): where ids ≥ V are sent, then cut off
        padded = torch.cat([logits.float(), spare.float()], dim=-1)  # (B, V + 1)
        logits = apply_repetition_penalty(padded, seen.clamp(max=V), params.repetition_penalty)[:, :V]
    if params.greedy:
        return logits.argmax(dim=-1)
    probs = logits_to_probs(logits, params)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)
