"""Incremental text: whole UTF-8 characters only, SentencePiece leading spaces as in the full decode,
special tokens left out, nothing dropped."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from model_foundry.generation import GREEDY, Engine, IncrementalDetokenizer, Request
from model_foundry.model_folder import load_tokenizer

WIDE = "你好，世界！🙂🎉 naïve café 👩‍👩‍👧"


def pieces(tok: object, prompt: list[int], new: list[int]) -> list[str]:
    detok = IncrementalDetokenizer(tok, prompt)  # type: ignore[arg-type]
    return [detok.push(t) for t in new] + [detok.flush()]


def test_byte_level_characters_spanning_tokens_come_out_whole(hub_repos: dict[str, Path]) -> None:
    from localhub.repos import GPT2

    tok = load_tokenizer(hub_repos[GPT2])
    prompt, new = tok("Say: ")["input_ids"], tok(WIDE)["input_ids"]
    assert any("\ufffd" in tok.decode([t]) for t in new), "the emoji must span several byte tokens"
    out = pieces(tok, prompt, new)
    assert "".join(out) == tok.decode(new) == WIDE
    assert not any("\ufffd" in p for p in out)
    assert "" in out  # held back while a character was incomplete


def test_an_unfinished_character_is_flushed_not_dropped(hub_repos: dict[str, Path]) -> None:
    from localhub.repos import GPT2

    tok = load_tokenizer(hub_repos[GPT2])
    new = tok("ok 🙂")["input_ids"][:-1]  # the emoji cut short
    out = pieces(tok, [], new)
    assert "".join(out[:-1]) == "ok " and out[-1].startswith("\ufffd")
    assert "".join(out) == tok.decode(new)


def test_special_tokens_are_left_out(hub_repos: dict[str, Path]) -> None:
    from localhub.repos import GPT2

    tok = load_tokenizer(hub_repos[GPT2])
    a, b = tok("Hello")["input_ids"], tok(" world")["input_ids"]
    assert "".join(pieces(tok, [], [*a, tok.eos_token_id, *b])) == "Hello world"


@pytest.fixture(scope="module")
def sentencepiece_tokenizer() -> object:
    """A Llama-style tokenizer: Metaspace (▁ for spaces, the leading one stripped when decoding)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    raw = Tokenizer(models.BPE(unk_token="<unk>"))
    raw.pre_tokenizer = pre_tokenizers.Metaspace()
    raw.decoder = decoders.Metaspace()
    trainer = trainers.BpeTrainer(
        vocab_size=200, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    raw.train_from_iterator(["hello world again and again, the world says hello"] * 20, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=raw, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def test_sentencepiece_leading_spaces_depend_on_the_prompt(sentencepiece_tokenizer: object) -> None:
    tok = sentencepiece_tokenizer
    ids = tok("hello world again and again")["input_ids"]  # type: ignore[operator]
    prompt, new = ids[:2], ids[2:]
    full = tok.decode(ids)  # type: ignore[attr-defined]
    head = tok.decode(prompt)  # type: ignore[attr-defined]
    assert not tok.decode(new).startswith(" ")  # type: ignore[attr-defined]  # decoding alone loses it
    out = pieces(tok, prompt, new)
    assert head + "".join(out) == full and "".join(out).startswith(" ")
    assert sum(1 for p in out if p) > 2  # piece by piece, not all at the end


def test_engine_stream_joins_to_the_full_decode(hub_folder: Callable[[str], Path]) -> None:
    engine = Engine.from_folder(hub_folder("hf-gpt2"))
    request = Request(engine.encode_prompt(f"Emoji {WIDE}"), 40, GREEDY)
    deltas = list(engine.stream(request))
    ids = [t for d in deltas for t in d.token_ids]
    assert "".join(d.text for d in deltas) == engine.decode(
        [t for t in ids if t not in engine.stop_token_ids]
    )
    # a random model may write bytes that never form a character (U+FFFD in the full decode too), but no
    # piece ends with half a character that a later token completes
    assert not any(d.text.endswith("\ufffd") for d in deltas[:-1])
    assert deltas[-1].finish_reason is not None and ids == engine.complete(request).token_ids
