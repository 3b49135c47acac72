"""Generation never samples an id the tokenizer cannot decode, and bad sampling settings are clean errors."""

from __future__ import annotations

import pytest
import torch

from generation.generation_helpers import tiny_scratch
from model_foundry.errors import FoundryError
from model_foundry.generation import SamplingParams
from model_foundry.generation.generate import generate


def _word_tokenizer(words: list[str]):  # noqa: ANN202 — a transformers tokenizer
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token=words[0]))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=words[0])


def test_padding_rows_of_a_padded_vocabulary_are_never_sampled():
    """vocab_size 64 with a 10-token tokenizer (rows 10..63 are padding, as with `vocab_size` set larger than
    the tokenizer): even when the padding rows have by far the largest logits, every sampled id is < 10."""
    adapter = tiny_scratch("gpt", vocab_size=64)
    adapter.tokenizer = _word_tokenizer([f"w{i}" for i in range(10)])
    with torch.no_grad():
        adapter.model.transformer.wte.weight[10:] *= 50.0  # tied head: padding rows dominate the logits
    logits = adapter.logits(torch.tensor([[1, 2, 3]]))[0, -1]
    assert int(logits.argmax()) >= 10  # without the rule, greedy would pick a padding row
    gen = torch.Generator().manual_seed(0)
    sampled = generate(adapter, torch.tensor([[1, 2, 3]] * 4), 20, SamplingParams(temperature=1.0), (), gen)
    greedy = generate(adapter, torch.tensor([[1, 2, 3]]), 20, SamplingParams(temperature=0.0))
    ids = [t for row in sampled.tokens + greedy.tokens for t in row]
    assert len(ids) == 4 * 20 + 20 and max(ids) < 10


@pytest.mark.parametrize("temperature", [float("nan"), float("inf"), -0.5])
def test_non_finite_or_negative_temperature_is_refused(temperature):
    with pytest.raises(FoundryError) as e:
        SamplingParams(temperature=temperature)
    assert "temperature" in e.value.message and e.value.hint
