"""Collators: BERT masking statistics (rate, 80/10/10, -100 labels, specials kept) and the causal shift."""

from __future__ import annotations

import pytest
import torch

from model_foundry.data.collators import IGNORE_INDEX, CausalCollator, Collator, MaskedCollator, make_collator
from model_foundry.data.tokenizer_training import train_tokenizer
from model_foundry.errors import FoundryError

V = 1000
PAD, UNK, CLS, SEP, MASK = range(5)
SPECIAL = (PAD, CLS, SEP, MASK)  # unk is maskable, as make_collator arranges


def _windows(b: int = 256, t: int = 128, seed: int = 0) -> torch.Tensor:
    w = torch.randint(5, V, (b, t), generator=torch.Generator().manual_seed(seed))
    w[:, ::10] = SEP  # document separators in the packed stream
    w[:, 5::50] = CLS
    w[:, 7::40] = UNK
    return w


@pytest.fixture(scope="module")
def masked() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    windows = _windows()
    inputs, labels = MaskedCollator(MASK, V, SPECIAL, probability=0.15)(
        windows, torch.Generator().manual_seed(1)
    )
    return windows, inputs, labels


def test_masking_rate(masked):
    windows, _, labels = masked
    maskable = ~torch.isin(windows, torch.tensor(SPECIAL))
    rate = (labels != IGNORE_INDEX).sum() / maskable.sum()  # ~29k maskable tokens: sd of the rate ≈ 0.002
    assert abs(rate.item() - 0.15) < 0.01


def test_80_10_10_split(masked):
    windows, inputs, labels = masked
    picked = labels != IGNORE_INDEX
    n = picked.sum().item()
    to_mask = (inputs[picked] == MASK).sum().item() / n
    kept = (inputs[picked] == windows[picked]).sum().item() / n
    random = 1 - to_mask - kept
    assert abs(to_mask - 0.8) < 0.02 and abs(kept - 0.1) < 0.015 and abs(random - 0.1) < 0.015, (
        to_mask,
        kept,
        random,
    )


def test_labels_are_the_originals_on_masked_positions_only(masked):
    windows, inputs, labels = masked
    picked = labels != IGNORE_INDEX
    assert torch.equal(labels[picked], windows[picked])
    assert torch.equal(inputs[~picked], windows[~picked])  # nothing else changes


def test_special_tokens_are_never_masked(masked):
    windows, inputs, labels = masked
    special = torch.isin(windows, torch.tensor(SPECIAL))
    assert (labels[special] == IGNORE_INDEX).all()
    assert torch.equal(inputs[special], windows[special])
    assert (labels[windows == UNK] != IGNORE_INDEX).any()  # unk is ordinary text


def test_masking_is_seeded():
    collator = MaskedCollator(MASK, V, SPECIAL)
    w = _windows(8, 64)
    a = collator(w, torch.Generator().manual_seed(5))
    b = collator(w, torch.Generator().manual_seed(5))
    c = collator(w, torch.Generator().manual_seed(6))
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert not torch.equal(a[1], c[1])
    assert collator.extra_tokens == 0


def test_probability_is_respected():
    windows = _windows()
    _, labels = MaskedCollator(MASK, V, SPECIAL, probability=0.4)(windows, torch.Generator().manual_seed(2))
    rate = (labels != IGNORE_INDEX).sum() / (~torch.isin(windows, torch.tensor(SPECIAL))).sum()
    assert abs(rate.item() - 0.4) < 0.015


def test_causal_shift():
    collator = CausalCollator()
    windows = torch.arange(20).view(2, 10)
    x, y = collator(windows)
    assert collator.extra_tokens == 1
    assert torch.equal(x, windows[:, :-1]) and torch.equal(y, windows[:, 1:])
    assert torch.equal(x[:, 1:], y[:, :-1])  # the label at t is the input at t + 1


def test_make_collator_reads_the_tokenizer():
    tok = train_tokenizer(
        "wordpiece", ["some text to learn from, with words and more words"] * 10, 120, "masked_lm"
    )
    collator = make_collator("masked_lm", tok, 0.2)
    assert isinstance(collator, MaskedCollator)
    assert collator.mask_token_id == tok.mask_token_id and collator.vocab_size == len(tok)
    assert collator.probability == 0.2
    names = set(tok.convert_ids_to_tokens(list(collator.special_ids)))
    assert names == {"[PAD]", "[CLS]", "[SEP]", "[MASK]"}  # not [UNK]
    assert isinstance(make_collator("causal_lm", tok), CausalCollator)


@pytest.mark.parametrize(
    "collator", [CausalCollator(), MaskedCollator(MASK, V, SPECIAL)], ids=["causal", "masked"]
)
def test_collators_keep_the_protocol(collator: Collator):
    """Windows (B, T + extra_tokens) int64 → input_ids and labels (B, T) int64, as the loop expects."""
    windows = _windows(4, 16 + collator.extra_tokens)
    x, y = collator(windows, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 16)
    assert x.dtype == y.dtype == torch.int64


def test_masked_lm_needs_a_mask_token():
    tok = train_tokenizer(
        "bpe", ["some text to learn from, with words and more words"] * 10, 300, "causal_lm"
    )
    with pytest.raises(FoundryError, match="no mask token"):
        make_collator("masked_lm", tok)
