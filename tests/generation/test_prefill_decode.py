"""The adapter contract's prefill/decode: reading a prompt, then a few tokens at a time through the adapter's
cache (KV cache, recurrent state), gives the logits of recomputing every position from scratch — for every
causal registry entry, scratch and Hub (fp32, atol 1e-5)."""

from __future__ import annotations

import pytest
import torch

from generation.generation_helpers import tiny_scratch, token_ids, vocab_of
from model_foundry.adapters.base import BaseAdapter
from model_foundry.errors import FoundryError

ATOL = RTOL = 1e-5


def window_logits(adapter: BaseAdapter, ids: torch.Tensor) -> torch.Tensor:
    """(B, T, V): the logits of each position t computed from scratch on the last max_context tokens ≤ t."""
    n = adapter.max_context or ids.size(1)
    with torch.no_grad():
        head = adapter.logits(ids[:, :n])  # positions < n see everything before them
        tail = [adapter.logits(ids[:, t + 1 - n : t + 1])[:, -1:] for t in range(n, ids.size(1))]
    return torch.cat([head, *tail], dim=1)


def test_prefill_then_decode_equals_recompute(causal_adapter: BaseAdapter) -> None:
    ids = token_ids(2, 14, vocab_of(causal_adapter))
    with torch.no_grad():
        logits, state = causal_adapter.prefill(ids[:, :5])  # (B, 5, V)
        assert logits.shape == (2, 5, vocab_of(causal_adapter))
        pieces = [logits]
        chunk, state = causal_adapter.decode(ids[:, 5:8], state)  # three tokens at once
        pieces.append(chunk)
        for t in range(8, 14):  # then one at a time, past the prompt
            step, state = causal_adapter.decode(ids[:, t : t + 1], state)
            assert step.shape == (2, 1, vocab_of(causal_adapter))
            pieces.append(step)
        reference = causal_adapter.logits(ids)
    torch.testing.assert_close(torch.cat(pieces, dim=1), reference, atol=ATOL, rtol=RTOL)


def test_decoding_past_the_context_recomputes_the_last_window(causal_adapter: BaseAdapter) -> None:
    """At max_context the cache is full: the next tokens are read from the last max_context tokens."""
    n = causal_adapter.max_context
    if n is None:
        pytest.skip(f"{causal_adapter.spec.name} has no context limit")
    ids = token_ids(1, n + 3, vocab_of(causal_adapter), seed=1)
    with torch.no_grad():
        logits, state = causal_adapter.prefill(ids[:, : n - 3])
        pieces = [logits]
        for t in range(n - 3, n + 3):
            step, state = causal_adapter.decode(ids[:, t : t + 1], state)
            pieces.append(step)
    torch.testing.assert_close(
        torch.cat(pieces, dim=1), window_logits(causal_adapter, ids), atol=ATOL, rtol=RTOL
    )


def test_a_prompt_longer_than_the_context_is_read_from_its_end() -> None:
    adapter = tiny_scratch("gpt")
    n = adapter.max_context
    assert n is not None
    ids = token_ids(1, n + 5, vocab_of(adapter))
    with torch.no_grad():
        logits, _ = adapter.prefill(ids)
        torch.testing.assert_close(logits, adapter.logits(ids[:, -n:]), rtol=0, atol=0)


def test_the_default_contract_recomputes_and_agrees_with_the_cache() -> None:
    """BaseAdapter's own prefill/decode (state = the ids so far) give the cached adapter's logits."""
    adapter = tiny_scratch("gpt")
    ids = token_ids(2, 10, vocab_of(adapter))
    with torch.no_grad():
        cached, state = adapter.prefill(ids[:, :4])
        plain, ids_so_far = BaseAdapter.prefill(adapter, ids[:, :4])
        assert torch.equal(ids_so_far, ids[:, :4])
        for t in range(4, 10):
            a, state = adapter.decode(ids[:, t : t + 1], state)
            b, ids_so_far = BaseAdapter.decode(adapter, ids[:, t : t + 1], ids_so_far)
            torch.testing.assert_close(a, b, atol=ATOL, rtol=RTOL)
        assert torch.equal(ids_so_far, ids)
    torch.testing.assert_close(cached, plain, atol=0, rtol=0)


def test_bidirectional_recurrent_models_do_not_decode() -> None:
    adapter = tiny_scratch("lstm", bidirectional=True)
    with pytest.raises(FoundryError, match="bidirectional"):
        adapter.prefill(token_ids(1, 4, vocab_of(adapter)))
