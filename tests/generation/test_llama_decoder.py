"""The fused decoder of the Llama-shaped families (generation/llama_decoder.py) against transformers itself,
and continuous batching (generation/scheduler.py) against one request at a time.

Parametrized over the family table: every row whose `decoder` is "llama" is checked with its own tiny
fixture repo (tests/localhub/repos.py: Qwen2 with q/k/v biases, Qwen3 with q/k norms, Llama, Mistral).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from model_foundry.adapters.base import BaseAdapter
from model_foundry.adapters.hf.families import FAMILIES
from model_foundry.generation import GREEDY, Engine, Request, SamplingParams
from model_foundry.generation.llama_decoder import LlamaDecoder
from model_foundry.generation.scheduler import Scheduler, batched_decoder

FUSED = [f.name for f in FAMILIES if f.decoder == "llama"]


def test_the_llama_shaped_families_have_the_fused_decoder() -> None:
    assert set(FUSED) == {"hf-qwen2", "hf-qwen3", "hf-llama", "hf-mistral"}


def _ids(adapter: BaseAdapter, length: int, seed: int) -> list[int]:
    vocab = len(adapter.tokenizer) if adapter.tokenizer is not None else 100
    return torch.randint(0, vocab, (length,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("family", FUSED)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_logits_match_transformers_at_every_step(
    family: str, dtype: torch.dtype, hub_model: Callable[[str], BaseAdapter]
) -> None:
    adapter = hub_model(family)
    model = adapter.model.to(dtype)
    adapter_ids = _ids(adapter, 12, seed=1)
    decoder = batched_decoder(adapter, rows=1)
    assert isinstance(decoder, LlamaDecoder)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    with torch.no_grad():
        ids = list(adapter_ids)
        ours = decoder.prefill(0, ids, total=len(ids) + 6)  # (V,)
        for step in range(6):
            theirs = model(torch.tensor([ids])).logits[0, -1]  # (V,): transformers, no cache
            assert ours.dtype == theirs.dtype == dtype
            torch.testing.assert_close(ours.float(), theirs.float(), atol=tol, rtol=tol, msg=f"step {step}")
            ids.append(int(theirs.argmax()))
            ours = decoder.decode(torch.tensor([ids[-1]]))[0]


@pytest.mark.parametrize("family", FUSED)
def test_rows_admitted_at_different_steps_decode_as_alone(
    family: str, hub_model: Callable[[str], BaseAdapter]
) -> None:
    """Three prompts of different lengths join a running batch at different steps; a row leaves in the
    middle (its place is taken by the last row); every row's logits are those it has alone."""
    adapter = hub_model(family)
    prompts = [_ids(adapter, n, seed=n) for n in (3, 9, 5)]

    def alone(prompt: list[int], steps: int) -> list[torch.Tensor]:
        decoder = LlamaDecoder(adapter.model, rows=1)
        out, ids = [decoder.prefill(0, prompt, len(prompt) + steps + 1)], list(prompt)
        for _ in range(steps):
            ids.append(int(out[-1].argmax()))
            out.append(decoder.decode(torch.tensor([ids[-1]]))[0])
        return out

    with torch.no_grad():
        want = [alone(p, 8) for p in prompts]
        decoder = LlamaDecoder(adapter.model, rows=3)
        got: dict[int, list[torch.Tensor]] = {0: [decoder.prefill(0, prompts[0], 20)]}
        order = [0]  # the prompt held by each row
        for step in range(8):
            if step == 2:  # a second and a third request join the batch
                got[1] = [decoder.prefill(1, prompts[1], 20)]
                got[2] = [decoder.prefill(2, prompts[2], 20)]
                order += [1, 2]
            if step == 5:  # the first leaves: the last row moves into its place
                decoder.remove(0)
                order = [order[-1]] + order[1:-1]
            tokens = torch.tensor([int(got[p][-1].argmax()) for p in order])
            for p, logits in zip(order, decoder.decode(tokens), strict=True):
                got[p].append(logits)
    for p, logits in got.items():
        assert len(logits) == (6 if p == 0 else 7)  # the first left after 5 steps
        for k, row in enumerate(logits):
            torch.testing.assert_close(row, want[p][k], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("family", FUSED)
def test_greedy_tokens_equal_transformers_generate(
    family: str, hub_model: Callable[[str], BaseAdapter]
) -> None:
    adapter = hub_model(family)
    engine = Engine(adapter)
    prompt = _ids(adapter, 7, seed=3)
    with torch.no_grad():
        theirs = adapter.model.generate(
            torch.tensor([prompt]), max_new_tokens=24, min_new_tokens=24, do_sample=False, eos_token_id=None
        )[0, len(prompt) :].tolist()
    assert Scheduler(engine, 1).fused
    request = Request(prompt, 24, GREEDY)
    ours: list[int] = []
    scheduler = Scheduler(engine, 1)
    engine.stop_token_ids = frozenset()  # the same 24 tokens as generate without an eos
    with torch.no_grad():
        scheduler.add(request, "only")
        while scheduler.running:
            for _, delta in scheduler.step():
                ours += delta.token_ids
    assert ours == theirs


def test_continuous_batch_equals_one_by_one(hub_model: Callable[[str], BaseAdapter]) -> None:
    """Requests (greedy and sampled, different lengths and budgets) joining a running batch as others leave
    give exactly the answers they give alone."""
    engine = Engine(hub_model("hf-qwen2"))
    prompts = ["Hi", "The quick brown fox jumps over the lazy dog", "Once upon a time", "Hi there", "A"]
    requests = [Request(engine.encode_prompt(p), 6 + 5 * i, GREEDY) for i, p in enumerate(prompts)]
    requests.append(Request(engine.encode_prompt("Sampled"), 9, SamplingParams(0.9, top_k=30), seed=5))
    alone = [engine.complete(r) for r in requests]
    scheduler = Scheduler(engine, max_batch_size=3)
    waiting = list(range(len(requests)))
    texts = {i: "" for i in waiting}
    ids: dict[int, list[int]] = {i: [] for i in waiting}
    largest = 0
    with torch.no_grad():
        while waiting or scheduler.running:
            while waiting and not scheduler.full:
                i = waiting.pop(0)
                scheduler.add(requests[i], i)
            largest = max(largest, scheduler.running)
            for key, delta in scheduler.step():
                assert isinstance(key, int)
                texts[key] += delta.text
                ids[key] += delta.token_ids
    assert largest == 3
    assert [ids[i] for i in range(len(requests))] == [c.token_ids for c in alone]
    assert [texts[i] for i in range(len(requests))] == [c.text for c in alone]


def test_sequences_past_a_sliding_window_or_the_context_do_not_fit() -> None:
    """A Mistral layer with a 8-token window is exact on the fused path only up to 8 tokens: longer
    requests are refused by `fits`, and the engine then takes the adapter's path (`Engine.stream_batch`)."""
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
        num_key_value_heads=2, max_position_embeddings=64, sliding_window=8,
    )  # fmt: skip
    decoder = LlamaDecoder(MistralForCausalLM(config).eval(), rows=1)
    assert decoder.fits(8) and not decoder.fits(9)
    with pytest.raises(ValueError, match="does not fit"):
        decoder.prefill(0, [1, 2, 3], total=9)
    config.sliding_window = None
    decoder = LlamaDecoder(MistralForCausalLM(config).eval(), rows=1)
    assert decoder.fits(64) and not decoder.fits(65)
