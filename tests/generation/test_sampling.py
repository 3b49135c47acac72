"""logits → probabilities → token: greedy, temperature, top-k, top-p, and the refusal of non-finite logits."""

from __future__ import annotations

import pytest
import torch

from model_foundry.errors import FoundryError
from model_foundry.generation.sampling import (
    GREEDY,
    SamplingParams,
    apply_min_p,
    apply_repetition_penalty,
    logits_to_probs,
    sample,
)

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


# --- repetition penalty and min-p, against transformers' own processors -----------------------------------
def hf_chain(params: SamplingParams, seen: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """transformers' processors in `_get_logits_processor`'s order → probabilities."""
    from transformers.generation import logits_process as lp

    chain = lp.LogitsProcessorList()
    if params.repetition_penalty is not None:
        chain.append(lp.RepetitionPenaltyLogitsProcessor(params.repetition_penalty))
    chain.append(lp.TemperatureLogitsWarper(params.temperature))
    if params.top_k:
        chain.append(lp.TopKLogitsWarper(params.top_k))
    if params.top_p is not None:
        chain.append(lp.TopPLogitsWarper(params.top_p))
    if params.min_p is not None:
        chain.append(lp.MinPLogitsWarper(params.min_p))
    return chain(seen, logits.clone()).softmax(-1)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=1.0, repetition_penalty=1.7),
        SamplingParams(temperature=1.0, repetition_penalty=0.6),
        SamplingParams(temperature=0.7, min_p=0.2),
        SamplingParams(temperature=1.3, top_k=12, top_p=0.9, min_p=0.05, repetition_penalty=1.2),
    ],
    ids=["rep1.7", "rep0.6", "min_p", "all"],
)
def test_processing_equals_transformers_processors(params: SamplingParams) -> None:
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(3, 40, generator=g) * 3  # (B, V), positive and negative
    seen = torch.randint(0, 40, (3, 9), generator=g)  # (B, S) with repeats
    expected = hf_chain(params, seen, logits)
    penalised = logits
    if params.repetition_penalty is not None:
        penalised = apply_repetition_penalty(logits, seen, params.repetition_penalty)
    torch.testing.assert_close(logits_to_probs(penalised, params), expected)
    # and one seeded draw per row from those probabilities, as transformers' sample does
    torch.manual_seed(3)
    want = torch.multinomial(expected, 1).squeeze(1)
    assert sample(logits, params, torch.Generator().manual_seed(3), seen).tolist() == want.tolist()


def test_repetition_penalty_changes_greedy_and_ignores_ids_past_the_vocabulary() -> None:
    logits = torch.tensor([[2.0, 1.9, -1.0]])
    assert sample(logits, GREEDY).tolist() == [0]
    penalised = SamplingParams(temperature=0.0, repetition_penalty=2.0)
    assert sample(logits, penalised, seen=torch.tensor([[0]])).tolist() == [1]
    assert sample(logits, penalised, seen=torch.tensor([[7, 7]])).tolist() == [0]  # id 7 ≥ V: no effect
    assert apply_repetition_penalty(logits, torch.tensor([[2]]), 2.0)[0, 2] == -2.0  # negative: multiplied


def test_min_p_keeps_the_likeliest_token() -> None:
    logits = torch.tensor([[0.0, 3.0, 1.0, 2.9]])
    kept = apply_min_p(logits, 0.5).isfinite()[0].tolist()
    assert kept == [False, True, False, True]
    assert apply_min_p(logits, 1.0).isfinite()[0].tolist() == [False, True, False, False]


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"min_p": -0.1}, "min_p = -0.1"),
        ({"min_p": 1.5}, "min_p = 1.5"),
        ({"repetition_penalty": 0.0}, "repetition_penalty = 0.0"),
        ({"repetition_penalty": float("nan")}, "repetition_penalty = nan"),
        ({"top_p": 1.2}, "top_p = 1.2"),
    ],
)
def test_bad_new_settings_are_refused(settings: dict[str, float], words: str) -> None:
    with pytest.raises(FoundryError, match=words):
        SamplingParams(**settings)  # type: ignore[arg-type]
