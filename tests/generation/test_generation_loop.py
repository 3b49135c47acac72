"""The generation loop: greedy and seeded sampling pick transformers' own tokens, token for token; stop tokens
stop a row; masked LMs and non-finite logits are refused."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers

from generation.generation_helpers import HUB_CAUSAL, tiny_scratch, token_ids, vocab_of, without_cache
from model_foundry.adapters.base import BaseAdapter
from model_foundry.errors import FoundryError
from model_foundry.generation import GREEDY, SamplingParams, generate, stop_token_ids
from model_foundry.model_folder import load_adapter

SAMPLING = [
    SamplingParams(temperature=0.8, top_k=50),  # the CLI's defaults
    SamplingParams(temperature=1.0, top_p=0.9),
    SamplingParams(temperature=0.7, top_k=20, top_p=0.8),
]


def reference(source: Path) -> transformers.PreTrainedModel:
    return transformers.AutoModelForCausalLM.from_pretrained(str(source), dtype=torch.float32).eval()


def hf_generate(model: transformers.PreTrainedModel, x: torch.Tensor, n: int, **kwargs: object) -> list[int]:
    """transformers' generate (its own KV cache): the n new tokens of the single row of x."""
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, **kwargs)
    return out[0, x.size(1) :].tolist()


@pytest.mark.parametrize("family", HUB_CAUSAL)
def test_greedy_tokens_equal_transformers_generate(
    family: str, hub_model: Callable[[str], BaseAdapter], hub_source: Callable[[str], Path]
) -> None:
    adapter, ref = hub_model(family), reference(hub_source(family))
    x = token_ids(1, 12, vocab_of(adapter))
    stop = stop_token_ids(adapter)
    expected = hf_generate(ref, x, 20, do_sample=False, eos_token_id=stop)
    assert generate(adapter, x, 20, GREEDY, stop).tokens[0] == expected
    # recomputing every step instead of the cache (the contract's default) picks the same tokens
    assert generate(without_cache(adapter), x, 20, GREEDY, stop).tokens[0] == expected


@pytest.mark.parametrize("params", SAMPLING, ids=["t0.8-k50", "p0.9", "t0.7-k20-p0.8"])
@pytest.mark.parametrize("family", HUB_CAUSAL)
def test_seeded_sampling_equals_transformers_sampling(
    family: str,
    params: SamplingParams,
    hub_model: Callable[[str], BaseAdapter],
    hub_source: Callable[[str], Path],
) -> None:
    """Same order of warpers and one multinomial draw per step: a seeded generator draws transformers'
    tokens after torch.manual_seed with the same seed."""
    adapter, ref = hub_model(family), reference(hub_source(family))
    x = token_ids(1, 12, vocab_of(adapter), seed=2)
    stop = stop_token_ids(adapter)
    torch.manual_seed(5)
    expected = hf_generate(
        ref, x, 24, do_sample=True, temperature=params.temperature, top_k=params.top_k or 0,
        top_p=params.top_p or 1.0, eos_token_id=stop,
    )  # fmt: skip
    got = generate(adapter, x, 24, params, stop, torch.Generator().manual_seed(5))
    assert got.tokens[0] == expected


def test_scratch_gpt_greedy_equals_gpt2lmheadmodel(tmp_path: Path) -> None:
    """A scratch gpt folder is a GPT-2 checkpoint: transformers generates the same tokens from it."""
    adapter = tiny_scratch("gpt")
    adapter.save_checkpoint(tmp_path / "m", {"model_name": "m"})
    loaded = load_adapter(tmp_path / "m")
    hf = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert isinstance(hf, transformers.GPT2LMHeadModel)
    x = token_ids(1, 6, vocab_of(adapter))
    expected = hf_generate(hf, x, 24, do_sample=False, pad_token_id=0)
    assert generate(loaded, x, 24, GREEDY).tokens[0] == expected
    assert generate(without_cache(loaded), x, 24, GREEDY).tokens[0] == expected


def test_seeded_sampling_is_reproducible(causal_adapter: BaseAdapter) -> None:
    x = token_ids(2, 5, vocab_of(causal_adapter))
    params = SamplingParams(temperature=1.0, top_k=40)

    def run(seed: int) -> list[list[int]]:
        return generate(causal_adapter, x, 12, params, generator=torch.Generator().manual_seed(seed)).tokens

    first = run(3)
    assert run(3) == first and [len(row) for row in first] == [12, 12]
    assert any(run(seed) != first for seed in (4, 5, 6))


def test_a_sequence_longer_than_the_context_keeps_generating() -> None:
    """15 prompt tokens + 10 new ones in a block of 16: the cache falls back to the last 16 tokens, as the
    recomputing loop does, and picks the same tokens."""
    adapter = tiny_scratch("gpt", block_size=16)
    x = token_ids(1, 15, vocab_of(adapter))
    params = SamplingParams(temperature=1.0, top_k=5)
    out = generate(adapter, x, 10, params, generator=torch.Generator().manual_seed(3))
    plain = generate(without_cache(adapter), x, 10, params, generator=torch.Generator().manual_seed(3))
    assert len(out.tokens[0]) == 10 and out.tokens == plain.tokens and out.finish_reasons == ["length"]


def test_stop_tokens_end_their_row_only() -> None:
    adapter = tiny_scratch("gpt")
    x = token_ids(2, 4, vocab_of(adapter), seed=4)
    free = generate(adapter, x, 12, GREEDY).tokens
    assert free[0] != free[1]
    stop = next(t for t in free[0][2:] if t not in free[1])  # ends row 0 (not at once), never row 1
    cut = free[0].index(stop) + 1
    out = generate(adapter, x, 12, GREEDY, stop_token_ids=[stop])
    assert out.tokens == [free[0][:cut], free[1]]  # the stop token is kept as the row's last token
    assert out.finish_reasons == ["stop", "length"]
    both = generate(adapter, x, 12, GREEDY, stop_token_ids=[stop, free[1][0]])
    assert both.tokens == [free[0][:cut], free[1][:1]] and both.finish_reasons == ["stop", "stop"]


def test_max_new_tokens_zero_and_empty_prompts() -> None:
    adapter = tiny_scratch("gru")
    out = generate(adapter, token_ids(1, 3, vocab_of(adapter)), 0)
    assert out.tokens == [[]] and out.finish_reasons == ["length"]
    with pytest.raises(FoundryError, match="no tokens"):
        generate(adapter, torch.zeros(1, 0, dtype=torch.long), 3)


@pytest.mark.parametrize(("arch", "settings"), [("bert", {}), ("lstm", {"bidirectional": True})])
def test_masked_models_do_not_generate(arch: str, settings: dict[str, object]) -> None:
    adapter = tiny_scratch(arch, **settings)
    with pytest.raises(FoundryError, match="masked"):
        generate(adapter, token_ids(1, 3, vocab_of(adapter)), 3)


@pytest.mark.parametrize("params", [GREEDY, SamplingParams(temperature=0.8, top_k=50)])
def test_non_finite_logits_are_refused(params: SamplingParams) -> None:
    adapter = tiny_scratch("gpt")
    with torch.no_grad():
        adapter.model.transformer.ln_f.bias[0] = float("nan")
    with pytest.raises(FoundryError, match="non-finite logits"):
        generate(adapter, token_ids(1, 3, vocab_of(adapter)), 3, params)


def test_generation_leaves_the_train_mode_as_it_was() -> None:
    adapter = tiny_scratch("gpt", dropout=0.1)
    adapter.model.train()
    x = token_ids(1, 3, vocab_of(adapter))
    assert generate(adapter, x, 5, GREEDY).tokens == generate(adapter, x, 5, GREEDY).tokens  # no dropout
    assert adapter.model.training
