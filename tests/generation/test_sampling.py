"""logits → probabilities → token: greedy, temperature, top-k, top-p, and the refusal of non-finite logits."""

from __future__ import annotations

import pytest
import torch

from model_foundry.errors import FoundryError
from model_foundry.generation.sampling import GREEDY, SamplingParams, logits_to_probs, sample

LOGITS = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0], [5.0, 0.0, 0.0, 0.0, 4.0]])  # (B=2, V=5)


def draws(params: SamplingParams, n: int = 400) -> list[set[int]]:
    """The tokens each row drew over n seeded draws."""
    gen = torch.Generator().manual_seed(0)
    seen: list[set[int]] = [set(), set()]
    for _ in range(n):
        for row, token in enumerate(sample(LOGITS, params, gen).tolist()):
            seen[row].add(token)
    return seen


def test_greedy_is_the_argmax_and_draws_nothing() -> None:
    gen = torch.Generator().manual_seed(0)
    state = gen.get_state()
    assert sample(LOGITS, GREEDY, gen).tolist() == [1, 0]
    assert torch.equal(gen.get_state(), state)


def test_top_k_and_top_p_limit_the_candidates() -> None:
    assert draws(SamplingParams(temperature=1.0)) == [{0, 1, 2, 3, 4}, {0, 1, 2, 3, 4}]
    assert draws(SamplingParams(temperature=1.0, top_k=2)) == [{1, 3}, {0, 4}]
    assert draws(SamplingParams(temperature=1.0, top_k=1)) == [{1}, {0}]
    # row 0: p = .64 .24 .09 …; row 1: p = .73 .27 …; the smallest sets reaching 0.8
    assert draws(SamplingParams(temperature=1.0, top_p=0.8)) == [{1, 3}, {0, 4}]
    assert draws(SamplingParams(temperature=1.0, top_p=0.01)) == [{1}, {0}]


def test_temperature_sharpens_and_flattens() -> None:
    cold = logits_to_probs(LOGITS, SamplingParams(temperature=0.1))
    warm = logits_to_probs(LOGITS, SamplingParams(temperature=10.0))
    assert cold[0, 1] > 0.99 and warm[0].max() < 0.3
    torch.testing.assert_close(cold.sum(-1), torch.ones(2))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
@pytest.mark.parametrize("params", [GREEDY, SamplingParams()])
def test_non_finite_logits_raise(bad: float, params: SamplingParams) -> None:
    logits = LOGITS.clone()
    logits[1, 2] = bad
    with pytest.raises(FoundryError, match="non-finite logits"):
        sample(logits, params)


def test_a_row_of_only_minus_infinity_raises() -> None:
    logits = LOGITS.clone()
    logits[0] = float("-inf")
    with pytest.raises(FoundryError, match="non-finite logits"):
        sample(logits, GREEDY)


@pytest.mark.parametrize(
    ("settings", "words"),
    [({"temperature": -1.0}, "temperature"), ({"top_k": -2}, "top_k"), ({"top_p": 0.0}, "top_p")],
)
def test_bad_settings_are_refused(settings: dict[str, float], words: str) -> None:
    with pytest.raises(FoundryError, match=words):
        SamplingParams(**settings)  # type: ignore[arg-type]
