"""The engine through the production loader (`Engine.from_folder`): transformers' greedy and seeded tokens,
generation_config.json's stop ids and defaults, stop strings, finish reasons, batches."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import transformers

from generation.generation_helpers import tiny_scratch, without_cache
from model_foundry.errors import FoundryError
from model_foundry.generation import GREEDY, Engine, Request, SamplingParams
from model_foundry.generation.scheduler import Scheduler
from model_foundry.model_folder import load_adapter, load_tokenizer

PARITY = ["hf-qwen2", "hf-llama", "hf-gpt2"]
PROMPT = "The quick brown fox jumps over"


def reference(folder: Path) -> transformers.PreTrainedModel:
    return transformers.AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()


def hf_tokens(model: transformers.PreTrainedModel, ids: list[int], n: int, **kwargs: object) -> list[int]:
    """transformers' generate: the new tokens of one prompt (the eos it stopped at included)."""
    x = torch.tensor([ids])
    with torch.no_grad():
        out = model.generate(x, attention_mask=torch.ones_like(x), max_new_tokens=n, pad_token_id=0, **kwargs)
    return out[0, x.size(1) :].tolist()


@pytest.fixture(scope="module")
def scratch_gpt_folder(hub_repos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny scratch gpt saved with the GPT-2 fixture's byte-level BPE tokenizer (a GPT-2 checkpoint)."""
    from localhub.repos import GPT2

    tok = load_tokenizer(hub_repos[GPT2])
    adapter = tiny_scratch("gpt", vocab_size=len(tok), block_size=64)
    adapter.tokenizer = tok
    folder = tmp_path_factory.mktemp("scratch") / "gpt"
    adapter.save_checkpoint(folder, {"model_name": "gpt"})
    return folder


@pytest.mark.parametrize("family", PARITY)
def test_greedy_32_tokens_equal_transformers_generate(family: str, hub_folder: Callable[[str], Path]) -> None:
    folder = hub_folder(family)
    engine = Engine.from_folder(folder)
    ids = engine.encode_prompt(PROMPT)
    got = engine.complete(Request(ids, 32, GREEDY))
    expected = hf_tokens(
        reference(folder), ids, 32, do_sample=False, eos_token_id=sorted(engine.stop_token_ids)
    )
    assert got.token_ids == expected
    assert got.finish_reason == ("stop" if expected[-1] in engine.stop_token_ids else "length")
    assert (got.prompt_tokens, got.completion_tokens) == (len(ids), len(expected))
    assert got.text == engine.decode([t for t in expected if t not in engine.stop_token_ids])


def test_scratch_gpt_greedy_equals_transformers_and_recomputation(scratch_gpt_folder: Path) -> None:
    engine = Engine.from_folder(scratch_gpt_folder)
    ids = engine.encode_prompt(PROMPT)
    got = engine.complete(Request(ids, 32, GREEDY))
    expected = hf_tokens(reference(scratch_gpt_folder), ids, 32, do_sample=False, eos_token_id=None)
    cut = next((i + 1 for i, t in enumerate(expected) if t in engine.stop_token_ids), len(expected))
    assert got.token_ids == expected[:cut]
    # the KV cache against the contract's recomputing prefill/decode, through the engine
    assert Engine(without_cache(engine.adapter)).complete(Request(ids, 32, GREEDY)) == got


@pytest.mark.parametrize("arch", ["gpt", "lstm", "gru", "rnn"])
def test_scratch_state_and_cache_match_recomputation(arch: str, hub_repos: dict[str, Path]) -> None:
    from localhub.repos import GPT2

    tok = load_tokenizer(hub_repos[GPT2])
    adapter = tiny_scratch(arch, vocab_size=len(tok))
    adapter.tokenizer = tok
    request = Request(tok("Hello world")["input_ids"], 20, SamplingParams(temperature=1.0, top_k=40), seed=3)
    assert Engine(adapter).complete(request) == Engine(without_cache(adapter)).complete(request)


def test_two_eos_ids_in_generation_config_stop_as_in_transformers(
    hub_folder: Callable[[str], Path], tmp_path: Path
) -> None:
    source = hub_folder("hf-qwen2")
    engine = Engine.from_folder(source)
    ids = engine.encode_prompt(PROMPT)
    free = engine.complete(Request(ids, 32, GREEDY)).token_ids
    first_stop = next((i for i, t in enumerate(free) if t in engine.stop_token_ids), len(free))
    assert first_stop >= 4, "the fixture stops too early for this test"
    eos = [free[3], 7]  # a token the model does generate, and one more
    folder = tmp_path / "qwen2-two-eos"
    shutil.copytree(source, folder)
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": eos, "do_sample": False}))

    engine = Engine.from_folder(folder)
    assert set(eos) <= engine.stop_token_ids
    assert set(eos) <= Engine(load_adapter(folder)).stop_token_ids  # read from the folder it was loaded from
    got = engine.complete(Request(ids, 32, GREEDY))
    expected = hf_tokens(reference(folder), ids, 32)  # transformers reads eos_token_id from the same file
    assert got.token_ids == expected == free[: free.index(free[3]) + 1]
    assert got.finish_reason == "stop"


PARAMS = [
    SamplingParams(temperature=0.8, top_k=50, repetition_penalty=1.3),
    SamplingParams(temperature=1.0, top_p=0.9, min_p=0.05),
    SamplingParams(temperature=0.7, top_k=20, top_p=0.8, min_p=0.1, repetition_penalty=0.8),
]


@pytest.mark.parametrize("params", PARAMS, ids=["k50-rep1.3", "p0.9-minp", "all"])
@pytest.mark.parametrize("family", ["hf-qwen2", "hf-gpt2"])
def test_seeded_sampling_equals_transformers_sampling(
    family: str, params: SamplingParams, hub_folder: Callable[[str], Path]
) -> None:
    folder = hub_folder(family)
    engine = Engine.from_folder(folder)
    ids = engine.encode_prompt(PROMPT)
    stops = sorted(engine.stop_token_ids)
    torch.manual_seed(11)
    expected = hf_tokens(
        reference(folder), ids, 24, do_sample=True, temperature=params.temperature, top_k=params.top_k or 0,
        top_p=params.top_p or 1.0, min_p=params.min_p, repetition_penalty=params.repetition_penalty or 1.0,
        eos_token_id=stops,
    )  # fmt: skip
    got = engine.complete(Request(ids, 24, params, seed=11))
    assert got.token_ids == expected
    assert engine.complete(Request(ids, 24, params, seed=11)) == got  # reproducible
    assert any(
        engine.complete(Request(ids, 24, params, seed=s)).token_ids != got.token_ids for s in (1, 2, 3)
    )


def test_greedy_repetition_penalty_equals_transformers(hub_folder: Callable[[str], Path]) -> None:
    folder = hub_folder("hf-llama")
    engine = Engine.from_folder(folder)
    ids = engine.encode_prompt(PROMPT)
    params = SamplingParams(temperature=0.0, repetition_penalty=1.5)
    expected = hf_tokens(
        reference(folder),
        ids,
        32,
        do_sample=False,
        repetition_penalty=1.5,
        eos_token_id=sorted(engine.stop_token_ids),
    )
    assert engine.complete(Request(ids, 32, params)).token_ids == expected


def test_generation_config_sampling_defaults_and_overrides(
    hub_folder: Callable[[str], Path], tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    shutil.copytree(hub_folder("hf-gpt2"), folder)
    (folder / "generation_config.json").write_text(
        json.dumps({"do_sample": True, "temperature": 0.6, "top_p": 0.8, "repetition_penalty": 1.1})
    )
    engine = Engine.from_folder(folder)
    assert engine.default_params() == SamplingParams(0.6, top_k=50, top_p=0.8, repetition_penalty=1.1)
    assert engine.resolve({"temperature": None, "top_k": 5}) == SamplingParams(
        0.6, top_k=5, top_p=0.8, repetition_penalty=1.1
    )
    ids = engine.encode_prompt(PROMPT)
    defaulted = engine.complete(Request(ids, 10, None, seed=4))
    assert defaulted == engine.complete(Request(ids, 10, engine.default_params(), seed=4))

    (folder / "generation_config.json").write_text(json.dumps({"do_sample": False, "top_k": 3}))
    greedy = Engine.from_folder(folder)
    assert greedy.default_params().greedy and greedy.resolve({"temperature": 0.9}).top_k == 3
    (folder / "generation_config.json").unlink()
    assert Engine.from_folder(folder).default_params() == SamplingParams()
    with pytest.raises(FoundryError, match="min_p = 2"):
        engine.resolve({"min_p": 2.0})
    with pytest.raises(FoundryError, match="beam"):
        engine.resolve({"beam": 2})


def test_stop_strings_split_across_tokens_end_the_text(hub_folder: Callable[[str], Path]) -> None:
    engine = Engine.from_folder(hub_folder("hf-gpt2"))
    ids = engine.encode_prompt(PROMPT)
    free = engine.complete(Request(ids, 32, GREEDY))
    assert free.finish_reason == "length" and len(free.text) > 12, "the fixture must generate some text"
    # a stop string that starts inside one token and ends inside a later one
    pieces = [engine.decode(free.token_ids[:n]) for n in range(len(free.token_ids) + 1)]
    start = next(i for i in range(2, len(pieces)) if len(pieces[i]) - len(pieces[i - 1]) >= 2)
    begin = len(pieces[start]) - 1  # the last character of token `start`
    stop = free.text[begin : begin + 4]
    assert len(stop) == 4
    deltas = list(engine.stream(Request(ids, 32, GREEDY, stop=(stop,))))
    text = "".join(d.text for d in deltas)
    assert text == free.text[: free.text.index(stop)] and stop not in text
    assert deltas[-1].finish_reason == "stop" and all(d.finish_reason is None for d in deltas[:-1])
    assert sum(len(d.token_ids) for d in deltas) < len(free.token_ids)  # stopped early
    # a stop string that never comes: the whole text, finish_reason "length"
    assert engine.complete(Request(ids, 32, GREEDY, stop=("\u2603never",))) == free


def test_stop_token_is_counted_but_not_in_the_text(hub_folder: Callable[[str], Path]) -> None:
    engine = Engine.from_folder(hub_folder("hf-qwen2"))
    ids = engine.encode_prompt(PROMPT)
    free = engine.complete(Request(ids, 32, GREEDY))
    target = free.token_ids[2]
    engine.stop_token_ids = engine.stop_token_ids | {target}  # as if the model's eos
    got = engine.complete(Request(ids, 32, GREEDY))
    n = free.token_ids.index(target) + 1
    assert got.token_ids == free.token_ids[:n] and got.completion_tokens == n
    assert got.finish_reason == "stop" and got.text == engine.decode(free.token_ids[: n - 1])


@pytest.mark.parametrize("family", ["hf-qwen2", "hf-llama", "hf-gpt2"])
def test_batched_greedy_equals_one_by_one_for_prompts_of_different_lengths(
    family: str, hub_folder: Callable[[str], Path]
) -> None:
    engine = Engine.from_folder(hub_folder(family))
    prompts = ["Hi", "The quick brown fox jumps over the lazy dog", "Once upon a time", "Hi"]
    requests = [
        Request(engine.encode_prompt(p), 16 + 4 * i, GREEDY, stop=("zz",)) for i, p in enumerate(prompts)
    ]
    requests.append(Request(engine.encode_prompt("Sampled"), 12, SamplingParams(0.9, top_k=30), seed=5))
    assert Scheduler(engine, 1).fused == (family != "hf-gpt2")  # the Llama-shaped ones: one batched step
    assert engine.complete_batch(requests) == [engine.complete(r) for r in requests]


@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_batched_scratch_models_decode_row_by_row(arch: str, hub_repos: dict[str, Path]) -> None:
    from localhub.repos import GPT2

    tok = load_tokenizer(hub_repos[GPT2])
    adapter = tiny_scratch(arch, vocab_size=len(tok))
    adapter.tokenizer = tok
    engine = Engine(adapter)
    ids = [tok(t)["input_ids"] for t in ("one two three", "four five six", "a much longer prompt than those")]
    requests = [Request(i, 10, GREEDY) for i in ids] + [Request(ids[0], 10, SamplingParams(1.0), seed=2)]
    assert not Scheduler(engine, 1).fused  # the adapter's own prefill/decode (KV cache, hidden state)
    assert engine.complete_batch(requests) == [engine.complete(r) for r in requests]
    steps = list(engine.stream_batch(requests))
    assert all(len(step) == len(requests) for step in steps)
    assert [sum(1 for s in steps if s[i] is not None and s[i].finish_reason) for i in range(4)] == [1] * 4


def test_bad_requests_are_refused(hub_folder: Callable[[str], Path]) -> None:
    engine = Engine.from_folder(hub_folder("hf-gpt2"))
    with pytest.raises(FoundryError, match="no tokens"):
        engine.complete(Request([], 4))
    with pytest.raises(FoundryError, match="max_new_tokens = 0"):
        engine.complete_batch([Request([1, 2], 4), Request([1], 0)])
    assert engine.complete_batch([]) == []
