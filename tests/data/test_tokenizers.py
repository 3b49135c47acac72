"""Tokenizer training for the four types × two objectives: round trips, special tokens, unknowns, sizes."""

from __future__ import annotations

import itertools
from pydoc_data.topics import topics

import pytest
from transformers import PreTrainedTokenizerFast

from model_foundry.data.tokenizer_training import SPECIAL_TOKENS, check_tokenizer_fits, train_tokenizer
from model_foundry.errors import FoundryError

KINDS = ("bpe", "wordpiece", "unigram", "char")
OBJECTIVES = ("causal_lm", "masked_lm")
TEXTS = [topics[k] for k in sorted(topics)[:25]]  # ~60k characters of English prose and code
VOCAB = {"bpe": 400, "wordpiece": 400, "unigram": 400, "char": 256}
SAMPLE = (
    "The 'with' statement wraps a block:\n    with open(path) as f:  # two  spaces\n        data = f.read()"
)


@pytest.fixture(scope="module")
def tokenizers(tmp_path_factory) -> dict[tuple[str, str], PreTrainedTokenizerFast]:
    """Every (kind, objective) tokenizer, saved and reloaded the way the pipeline does."""
    out = {}
    for kind, objective in itertools.product(KINDS, OBJECTIVES):
        folder = tmp_path_factory.mktemp(f"{kind}-{objective}")
        train_tokenizer(kind, TEXTS, VOCAB[kind], objective).save_pretrained(str(folder))
        out[kind, objective] = PreTrainedTokenizerFast.from_pretrained(str(folder))
    return out


def _encode(tok, text: str) -> list[int]:
    return tok.backend_tokenizer.encode(text, add_special_tokens=False).ids  # as the tokenize stage does


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("kind", KINDS)
def test_round_trip(tokenizers, kind, objective):
    tok = tokenizers[kind, objective]
    ids = _encode(tok, SAMPLE)
    assert tok.unk_token_id not in ids
    text = tok.decode(ids)
    if kind == "wordpiece":  # BERT-style pre-tokenization keeps the words, not the spacing
        assert text.split() != [] and "".join(text.split()) == "".join(SAMPLE.split())
    else:
        assert text == SAMPLE
    assert len(tok) <= VOCAB[kind]


@pytest.mark.parametrize("kind", KINDS)
def test_special_tokens_follow_the_objective(tokenizers, kind):
    causal, masked = tokenizers[kind, "causal_lm"], tokenizers[kind, "masked_lm"]
    assert (causal.bos_token, causal.eos_token, causal.pad_token, causal.unk_token) == (
        "<s>",
        "</s>",
        "<pad>",
        "<unk>",
    )
    assert causal.mask_token is None and causal.sep_token is None
    assert (masked.cls_token, masked.sep_token, masked.mask_token) == ("[CLS]", "[SEP]", "[MASK]")
    assert (masked.pad_token, masked.unk_token) == ("[PAD]", "[UNK]") and masked.bos_token is None
    for tok, objective in ((causal, "causal_lm"), (masked, "masked_lm")):
        for token in SPECIAL_TOKENS[objective].all:  # each is one id, never split into pieces
            (only,) = _encode(tok, token)
            assert only == tok.convert_tokens_to_ids(token) < len(tok)


@pytest.mark.parametrize("kind", ["wordpiece", "unigram", "char"])
def test_unseen_characters_become_unk(tokenizers, kind):
    tok = tokenizers[kind, "masked_lm"]
    ids = _encode(tok, "snow ☃ man")
    assert tok.unk_token_id in ids
    assert "[UNK]" in tok.decode(ids)


def test_byte_level_bpe_has_no_unknowns(tokenizers):
    tok = tokenizers["bpe", "causal_lm"]
    text = "snow ☃ man, 日本語, emoji 🎉"
    ids = _encode(tok, text)
    assert tok.unk_token_id not in ids and tok.decode(ids) == text


@pytest.mark.parametrize(
    ("kind", "vocab_size", "words"),
    [
        ("bpe", 100, ["vocab_size = 100", "at least 262"]),
        ("wordpiece", 20, ["vocab_size = 20", "WordPiece"]),
        ("unigram", 20, ["vocab_size = 20", "Unigram", "characters"]),
        ("char", 5, ["vocab_size = 5", "no room"]),
    ],
)
def test_vocab_too_small_is_a_clear_error(kind, vocab_size, words):
    with pytest.raises(FoundryError) as err:
        train_tokenizer(kind, TEXTS[:3], vocab_size, "masked_lm")
    assert all(w in str(err.value) for w in words), str(err.value)
    assert err.value.hint


def test_char_vocab_is_an_upper_bound_keeping_the_frequent_characters():
    tok = train_tokenizer("char", ["aaaa bbb cc d"], 5 + 3, "masked_lm")  # 5 specials + room for 3 characters
    assert len(tok) == 8
    assert _encode(tok, "abcd")[-1] == tok.unk_token_id  # the rarest one is out


def test_unknown_type_is_rejected():
    with pytest.raises(FoundryError, match="tokenizer.type = 'sentencepiece'"):
        train_tokenizer("sentencepiece", TEXTS[:2], 300, "causal_lm")


@pytest.mark.parametrize("kind", KINDS)
def test_check_tokenizer_fits(tokenizers, kind):
    check_tokenizer_fits(tokenizers[kind, "masked_lm"], "masked_lm")
    check_tokenizer_fits(tokenizers[kind, "causal_lm"], "causal_lm")
    check_tokenizer_fits(tokenizers[kind, "masked_lm"], "causal_lm")
    with pytest.raises(FoundryError, match="no mask token"):
        check_tokenizer_fits(tokenizers[kind, "causal_lm"], "masked_lm")
