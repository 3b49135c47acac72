"""A long text is encoded in pieces (bounded memory) with exactly the ids of the whole text, any tokenizer.

The 50 MB single-line document of the bad-input battery took the tokenize stage past 7 GB; its peak memory
is measured in benchmarks/bench_long_line.py (a benchmark, not a timed test).
"""

# ruff: noqa: F811  (the shared tokenizer fixtures are imported, then used as arguments)
from __future__ import annotations

import random

import numpy as np
import pytest
from test_text_encoding import ALL, TEXTS, imported, tokenizer, trained  # noqa: F401  (fixtures)

from model_foundry.data.encoding import (
    CHUNK_CHARS,
    HARD_CHARS,
    MAX_RUN,
    EncodingStats,
    split_long,
    text_encoder,
)
from model_foundry.data.tokens import encode_documents


def _long_text(n_chars: int, seed: int = 0) -> str:
    """Prose with single and double spaces, newlines, tabs, CJK, a few 150-character words, on one 'line'."""
    rng = random.Random(seed)
    words = " ".join(TEXTS).split() + ["日本語の文章", "naïve", "x" * 150, "  ", "\t", "\n", "café."]
    out, size = [], 0
    while size < n_chars:
        word = rng.choice(words)
        out.append(word)
        size += len(word) + 1
    return " ".join(out)


def _whole(tok, text: str) -> tuple[list[int], EncodingStats]:
    """Ids and stats of the text encoded in one call (the reference the pieces must match)."""
    encoder = text_encoder(tok)
    enc = encoder.backend.encode(text, add_special_tokens=False)
    stats = EncodingStats()
    encoder._count(text, enc.ids, enc.offsets, stats)
    return enc.ids, stats


def test_pieces_cover_the_text_and_cut_only_between_words():
    text = _long_text(5 * CHUNK_CHARS)
    pieces = list(split_long(text))
    assert len(pieces) >= 5
    assert "".join(p for _, p in pieces) == text
    for offset, piece in pieces[1:]:
        assert piece[0] == " " and not piece[1].isspace() and not text[offset - 1].isspace()
    assert max(len(p) for _, p in pieces) <= CHUNK_CHARS


@pytest.mark.parametrize("tokenizer", ALL, indirect=True)
def test_long_text_ids_equal_the_whole_encoding(tokenizer):
    text = _long_text(3 * CHUNK_CHARS + 1234)
    ids, stats = _whole(tokenizer, text)
    pieces_stats = EncodingStats()
    encoder = text_encoder(tokenizer)
    assert [i for piece in encoder.encode_pieces(text, pieces_stats) for i in piece] == ids
    assert pieces_stats.as_dict() == stats.as_dict()
    assert encoder.encode(text) == ids
    assert encoder.encode_batch(["short one", text])[1] == ids


@pytest.mark.parametrize("tokenizer", ALL, indirect=True)
def test_encode_documents_writes_long_documents_like_short_ones(tokenizer, tmp_path):
    docs = ["a short document.", _long_text(2 * CHUNK_CHARS + 7, seed=1), "another one."]
    encoder = text_encoder(tokenizer)
    n = encode_documents(tokenizer, docs, 1, tmp_path / "t.bin", np.dtype(np.uint32))
    expected = [i for doc in docs for i in [*encoder.backend.encode(doc, add_special_tokens=False).ids, 1]]
    assert n == len(expected)
    assert np.fromfile(tmp_path / "t.bin", dtype=np.uint32).tolist() == expected


@pytest.mark.parametrize("name", ["bpe-causal_lm", "wordpiece-masked_lm", "char-causal_lm"])
def test_a_whitespace_free_run_longer_than_the_hard_limit_is_cut_where_our_tokenizers_cut(trained, name):
    tok = trained[name]
    text = "start " + "abcdefghij" * (HARD_CHARS // 10 + 5 * MAX_RUN + 3) + " end"
    pieces = list(split_long(text))
    assert [len(p) for _, p in pieces][:1] == [len("start")] and len(pieces) == 3
    assert max(len(p) for _, p in pieces) <= HARD_CHARS
    assert text_encoder(tok).encode(text) == _whole(tok, text)[0]
