"""The one way user text becomes token ids: corpus documents, prompts and chat message contents.

User text is data. A loaded tokenizer carries state meant for other uses, and none of it may act here:
- truncation and fixed-length padding (a Hugging Face `tokenizer.json` may enable both) would cut documents
  and put pad ids into the training stream;
- a post-processor template would add [CLS]/[SEP] or bos/eos around every text;
- special-token strings in the text (`</s>`, `<|endoftext|>`, `<|im_end|>`, `[SEP]`, `[MASK]`) would become
  control tokens. Only the code inserts special tokens (the document separator, the chat template's markers).

`TextEncoder` therefore encodes with a private copy of the backend `tokenizers.Tokenizer` with truncation,
padding and the post-processor removed and `encode_special_tokens = True` (the added-token matcher leaves
special tokens in the text alone, tokenizers >= 0.15). Unigram models also hold the special tokens as pieces
with score 0 (more likely than any real piece), so the copy gives those pieces a score no segmentation picks.
Whatever still yields a special id from text is refused: that would be a wrong training stream.

A long text is encoded in pieces of about CHUNK_CHARS characters (`split_long`), cut only before a single
space between two words, where every pre-tokenizer we use (byte-level, BERT, Metaspace, our bounded runs)
splits anyway: the ids equal those of the whole text, and memory follows the piece, not the longest line (a
50 MB single-line document would otherwise take gigabytes in the tokenizer's per-token records).
"""

from __future__ import annotations

import contextlib
import json
import re
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from model_foundry.errors import FoundryError

if TYPE_CHECKING:  # type-only: transformers is imported by whoever built the tokenizer
    from tokenizers import Tokenizer
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    # What `TextEncoder` accepts: a transformers fast tokenizer (any PreTrainedTokenizerBase with a
    # `tokenizers` backend) or a bare `tokenizers.Tokenizer`.
    AnyTokenizer = PreTrainedTokenizerBase | Tokenizer

# Whitespace-free runs longer than this are split into pieces of at most this many characters before any
# tokenizer trainer sees them (an inline base64 image is one 200k-character "word": the Unigram trainer
# crashes on it, BPE learns junk, WordPiece maps it to one [UNK]). 100 is BERT's `max_input_chars_per_word`
# (google-research/bert tokenization.py, transformers' WordpieceTokenizer), above which WordPiece gives [UNK].
MAX_RUN = 100
OVERLONG_RUN = re.compile(rf"\S{{{MAX_RUN + 1},}}")
UNIGRAM_SPECIAL_SCORE = -1e6  # far below any learned log-probability (those are > -100)
CHUNK_CHARS = 1 << 16  # a longer text is encoded in pieces of about this many characters
# A whitespace-free run longer than this is cut at a multiple of MAX_RUN from its start (where our own
# tokenizers cut it too); other tokenizers may encode that cut otherwise (such runs are reported as overlong).
HARD_CHARS = MAX_RUN * 10_000
_SPACE = re.compile(r"\s")


def _soft_cut(text: str, start: int, end: int) -> int | None:
    """The last position in (start, end) holding a single space between two non-space characters."""
    cut = text.rfind(" ", start + 1, end)
    while cut > start:
        if not text[cut - 1].isspace() and cut + 1 < len(text) and not text[cut + 1].isspace():
            return cut
        cut = text.rfind(" ", start + 1, cut)
    return None


def _next_soft_cut(text: str, start: int, end: int) -> int | None:
    """The first position in [start, end) holding a single space between two non-space characters."""
    cut = text.find(" ", max(start, 1), end)
    while cut != -1:
        if not text[cut - 1].isspace() and cut + 1 < len(text) and not text[cut + 1].isspace():
            return cut
        cut = text.find(" ", cut + 1, end)
    return None


def _hard_cut(text: str, start: int) -> int:
    """A cut inside a whitespace-free run at most HARD_CHARS after `start`, a multiple of MAX_RUN from the
    run's start (so our bounded-run pre-tokenizer splits there too)."""
    end = start + HARD_CHARS
    last_space = max((m.end() for m in _SPACE.finditer(text, start, end)), default=start)
    cut = last_space + (end - last_space) // MAX_RUN * MAX_RUN
    return cut if cut > start else end


def split_long(text: str, size: int = CHUNK_CHARS) -> Iterator[tuple[int, str]]:
    """(offset, piece) pieces of `text`, each about `size` characters, cut only before a space between words.

    A piece grows past `size` to the end of a whitespace-free run, up to HARD_CHARS (then `_hard_cut`).
    """
    start = 0
    while len(text) - start > size:
        cut = _soft_cut(text, start, start + size) or _next_soft_cut(text, start + size, start + HARD_CHARS)
        cut = cut or _hard_cut(text, start)
        if cut >= len(text):
            break
        yield start, text[start:cut]
        start = cut
    yield start, text[start:]


def overlong_runs(text: str) -> int:
    """Number of whitespace-free runs longer than MAX_RUN characters in `text`."""
    return sum(1 for _ in OVERLONG_RUN.finditer(text))


@dataclass
class EncodingStats:
    """What encoding a list of texts did to them; all counts are summed over the texts.

    dropped_characters: non-whitespace characters no token covers (0 unless the tokenizer's normalizer
    removes text, e.g. control characters). unk_characters: characters covered by unknown tokens.
    overlong_runs: whitespace-free runs longer than MAX_RUN characters.
    """

    documents: int = 0
    characters: int = 0
    tokens: int = 0
    unk_tokens: int = 0
    unk_characters: int = 0
    dropped_characters: int = 0
    overlong_runs: int = 0
    extra: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        share = self.unk_characters / self.characters if self.characters else 0.0
        return {
            "documents": self.documents,
            "characters": self.characters,
            "tokens": self.tokens,
            "unk_tokens": self.unk_tokens,
            "unk_characters": self.unk_characters,
            "unk_share": round(share, 6),
            "dropped_characters": self.dropped_characters,
            "overlong_runs": self.overlong_runs,
        }

    def problems(self) -> str:
        """A one-line summary of the non-zero problem counts ('' when there are none)."""
        parts = []
        if self.dropped_characters:
            parts.append(f"{self.dropped_characters} characters dropped by the tokenizer")
        if self.unk_tokens:
            share = self.unk_characters / max(self.characters, 1)
            parts.append(f"{self.unk_tokens} unknown tokens covering {share:.2%} of the characters")
        if self.overlong_runs:
            parts.append(f"{self.overlong_runs} whitespace-free runs over {MAX_RUN} characters")
        return ", ".join(parts)


def backend_tokenizer(tokenizer: AnyTokenizer) -> Tokenizer:
    """The `tokenizers.Tokenizer` behind a fast tokenizer (or the one given).

    Raises FoundryError for a tokenizer without one (a slow, pure-Python transformers tokenizer).
    """
    from tokenizers import Tokenizer

    if isinstance(tokenizer, Tokenizer):
        return tokenizer
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if not isinstance(backend, Tokenizer):
        raise FoundryError(
            f"The tokenizer ({type(tokenizer).__name__}) is not a fast tokenizer: it has no `tokenizers` "
            "backend, which encoding user text needs.",
            "Use a folder with a tokenizer.json (re-import the model, or set tokenizer_override).",
        )
    return backend


def _data_backend(backend: Tokenizer) -> Tokenizer:
    """A copy of the backend tokenizer for user text: no truncation, padding or post-processor."""
    from tokenizers import Tokenizer

    state = json.loads(backend.to_str())
    state["truncation"] = None
    state["padding"] = None
    state["post_processor"] = None
    special = {t["content"] for t in state.get("added_tokens", []) if t.get("special")}
    model = state.get("model") or {}
    if model.get("type") == "Unigram":
        model["vocab"] = [
            [piece, UNIGRAM_SPECIAL_SCORE if piece in special else score] for piece, score in model["vocab"]
        ]
    copy = Tokenizer.from_str(json.dumps(state))
    copy.encode_special_tokens = True
    return copy


class TextEncoder:
    """Encodes user text as data with a tokenizer (a transformers fast tokenizer or a `tokenizers.Tokenizer`).

    `encode(text)` and `encode_batch(texts)` give plain token ids; `encode_markup(text)` is for text the code
    wrote (a rendered chat template), where special-token strings are meant as control tokens.
    """

    def __init__(self, tokenizer: AnyTokenizer) -> None:
        backend = backend_tokenizer(tokenizer)
        self.backend = _data_backend(backend)
        self.markup = _data_backend(backend)
        self.markup.encode_special_tokens = False
        added = backend.get_added_tokens_decoder()
        self.unk_id = _model_unk_id(backend)  # the model's own: GPT-2's wrapper calls <|endoftext|> "unk"
        self.special_ids = {i for i, t in added.items() if t.special} - {self.unk_id}
        self.special_ids |= set(getattr(tokenizer, "all_special_ids", [])) - {self.unk_id}

    def _check(self, text: str, ids: list[int]) -> list[int]:
        leaked = self.special_ids.intersection(ids)
        if leaked:
            token = self.backend.id_to_token(min(leaked))
            raise FoundryError(
                f"The tokenizer turned text into the control token {token!r} ({text[:60]!r}…).",
                "This tokenizer's model holds its special tokens as ordinary pieces; use another tokenizer "
                "(or tokenizer_override) for this text, and please report it.",
            )
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of user text: no special tokens added, none recognised in the text, nothing cut."""
        return [i for ids in self.encode_pieces(text) for i in ids]

    def encode_pieces(self, text: str, stats: EncodingStats | None = None) -> Iterator[list[int]]:
        """The ids of `text` piece by piece (see `split_long`): together, exactly the ids of the whole text.

        Memory stays bounded by the piece size however long the text; what encoding did to the text is
        added into `stats` when given.
        """
        if stats is not None:
            stats.documents += 1
            stats.characters += len(text)
            stats.overlong_runs += overlong_runs(text)
        for _, piece in split_long(text):
            enc = self.backend.encode(piece, add_special_tokens=False)
            ids = self._check(piece, enc.ids)
            if stats is not None:
                self._cover(piece, ids, enc.offsets, stats)
            yield ids

    def encode_markup(self, text: str) -> list[int]:
        """Token ids of text written by the code (special-token strings in it are control tokens)."""
        return self.markup.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: list[str], stats: EncodingStats | None = None) -> list[list[int]]:
        """Ids of each text, adding what happened to them into `stats` when given."""
        short: dict[int, list[int]] = {}  # index → ids of the texts encoded whole, in one batch
        indices = [i for i, text in enumerate(texts) if len(text) <= CHUNK_CHARS]
        encodings = self.backend.encode_batch([texts[i] for i in indices], add_special_tokens=False)
        for i, enc in zip(indices, encodings, strict=True):
            short[i] = self._check(texts[i], enc.ids)
            if stats is not None:
                self._count(texts[i], short[i], enc.offsets, stats)
        return [  # the long texts piece by piece
            short[i] if i in short else [token for ids in self.encode_pieces(text, stats) for token in ids]
            for i, text in enumerate(texts)
        ]

    def _count(self, text: str, ids: list[int], offsets: list[tuple[int, int]], stats: EncodingStats) -> None:
        stats.documents += 1
        stats.characters += len(text)
        stats.overlong_runs += overlong_runs(text)
        self._cover(text, ids, offsets, stats)

    def _cover(self, text: str, ids: list[int], offsets: list[tuple[int, int]], stats: EncodingStats) -> None:
        """Add the tokens, unknown and dropped characters of one encoded text (or piece) into `stats`."""
        stats.tokens += len(ids)
        covered_to = 0
        unk_to = 0
        for tid, (start, end) in sorted(zip(ids, offsets, strict=True), key=lambda p: p[1]):
            if start > covered_to:
                stats.dropped_characters += _non_space(text[covered_to:start])
            covered_to = max(covered_to, end)
            if tid == self.unk_id:
                stats.unk_tokens += 1
                stats.unk_characters += max(0, end - max(start, unk_to))
                unk_to = max(unk_to, end)
        stats.dropped_characters += _non_space(text[covered_to:])


def _model_unk_id(backend: Tokenizer) -> int | None:
    """The unknown id of a bare `tokenizers.Tokenizer` (its model's unk_token or unk_id)."""
    model = json.loads(backend.to_str()).get("model") or {}
    if isinstance(model.get("unk_token"), str):
        return backend.token_to_id(model["unk_token"])
    return model.get("unk_id") if isinstance(model.get("unk_id"), int) else None


def _non_space(s: str) -> int:
    return len(s) - sum(c.isspace() for c in s)


_ENCODERS: weakref.WeakKeyDictionary[AnyTokenizer, TextEncoder] = weakref.WeakKeyDictionary()


def text_encoder(tokenizer: AnyTokenizer) -> TextEncoder:
    """The `TextEncoder` of a tokenizer, built once per tokenizer object."""
    try:
        return _ENCODERS[tokenizer]
    except (KeyError, TypeError):
        encoder = TextEncoder(tokenizer)
        with contextlib.suppress(TypeError):  # not weak-referenceable: built on each call
            _ENCODERS[tokenizer] = encoder
        return encoder


def encode_text(tokenizer: AnyTokenizer, text: str) -> list[int]:
    """Token ids of user text (a prompt, a message): see `TextEncoder.encode`."""
    return text_encoder(tokenizer).encode(text)


def encode_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    chat_template: str | None = None,
    add_generation_prompt: bool = True,
) -> list[int]:
    """Token ids of a conversation: the template's markup as control tokens, message contents as data.

    Each string content is replaced by a placeholder, the template is rendered to text, and the text is
    encoded piece by piece (template pieces with special tokens recognised, contents without). Templates that
    inspect the content itself (e.g. split reasoning at `</think>`) see the placeholder instead.
    Raises FoundryError when the template has an error.
    """
    marks = {}
    rendered_messages = []
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, str):
            mark = f"\ue000{i}\ue001"
            marks[mark] = content
            message = {**message, "content": mark}
        rendered_messages.append(message)
    try:
        rendered: str = tokenizer.apply_chat_template(  # type: ignore[assignment]  # text, as tokenize=False
            rendered_messages,
            chat_template=chat_template,
            add_generation_prompt=add_generation_prompt,
            tokenize=False,
        )
    except Exception as e:  # jinja2 errors, a template raising on its own (e.g. roles must alternate)
        raise FoundryError(f"The chat template failed on these messages: {e}") from None
    encoder = text_encoder(tokenizer)
    ids: list[int] = []
    for piece in re.split("(\ue000\\d+\ue001)", rendered):
        if piece in marks:
            ids += encoder.encode(marks[piece])
        elif piece:
            ids += encoder.encode_markup(piece)
    return ids
