"""Train a tokenizer on the train split with the `tokenizers` library: bpe, wordpiece, unigram or char.

Each is saved as `tokenizer.json` (+ tokenizer_config.json) loadable by `PreTrainedTokenizerFast`, with the
special tokens its objective needs: causal models get bos/eos/pad/unk, masked models cls/sep/mask/pad/unk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from model_foundry.errors import FoundryError


@dataclass(frozen=True)
class SpecialTokens:
    """Special tokens by role; `separator` is put between documents in the packed token stream."""

    unk: str
    pad: str
    separator: str
    bos: str | None = None
    eos: str | None = None
    cls: str | None = None
    sep: str | None = None
    mask: str | None = None

    @property
    def all(self) -> list[str]:
        seen = [self.pad, self.unk, self.bos, self.eos, self.cls, self.sep, self.mask]
        return list(dict.fromkeys(t for t in seen if t))

    def transformers_kwargs(self) -> dict[str, str]:
        roles = ("unk", "pad", "bos", "eos", "cls", "sep", "mask")
        return {f"{r}_token": getattr(self, r) for r in roles if getattr(self, r)}


SPECIAL_TOKENS = {
    "causal_lm": SpecialTokens(unk="<unk>", pad="<pad>", bos="<s>", eos="</s>", separator="</s>"),
    "masked_lm": SpecialTokens(
        unk="[UNK]", pad="[PAD]", cls="[CLS]", sep="[SEP]", mask="[MASK]", separator="[SEP]"
    ),
}


def _bpe(vocab_size: int, min_frequency: int, special: list[str], texts: list[str]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    minimum = len(alphabet) + len(special) + 1
    if vocab_size < minimum:
        raise FoundryError(
            f"tokenizer.vocab_size = {vocab_size} is too small for byte-level BPE.",
            f"It needs at least {minimum} (256 bytes + {len(special)} special tokens + 1 merge); try 4096.",
        )
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special,
        initial_alphabet=alphabet, show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _wordpiece(vocab_size: int, min_frequency: int, special: list[str], texts: list[str], unk: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token=unk))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    if tok.get_vocab_size() > vocab_size:  # the trainer keeps every character (and its ##-form) regardless
        raise FoundryError(
            f"tokenizer.vocab_size = {vocab_size} is too small for WordPiece on this corpus.",
            f"Its characters, their ##-continuations and {len(special)} special tokens alone need "
            f"{tok.get_vocab_size()}; raise it to at least that (e.g. 4096).",
        )
    return tok


def _unigram(vocab_size: int, min_frequency: int, special: list[str], texts: list[str], unk: str) -> Any:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    # Unigram keeps every character as a piece: below that it fails or silently returns a larger vocabulary.
    chars = {c for t in texts for c in tok.normalizer.normalize_str(t).replace(" ", "\u2581")}
    minimum = len(chars) + len(special) + 1
    if vocab_size < minimum:
        raise FoundryError(
            f"tokenizer.vocab_size = {vocab_size} is too small for Unigram on this corpus.",
            f"It needs at least {minimum}: {len(chars)} characters + {len(special)} special tokens + 1.",
        )
    trainer = trainers.UnigramTrainer(
        vocab_size=vocab_size, special_tokens=special, unk_token=unk, show_progress=False
    )
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _char(vocab_size: int, min_frequency: int, special: list[str], texts: list[str], unk: str) -> Any:
    """One token per Unicode character; the `vocab_size - specials` most frequent ones, the rest → unk."""
    from collections import Counter

    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    counts = Counter(ch for t in texts for ch in t)
    room = vocab_size - len(special)
    if room < 1:
        raise FoundryError(
            f"tokenizer.vocab_size = {vocab_size} leaves no room for characters "
            f"after {len(special)} special tokens.",
            f"Raise it above {len(special)}; {len(special) + len(counts)} covers every character here.",
        )
    chars = sorted(ch for ch, n in counts.most_common(room) if n >= min_frequency or len(counts) <= room)
    vocab = {t: i for i, t in enumerate(special + chars)}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=unk))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return tok


def train_tokenizer(
    kind: str, texts: list[str], vocab_size: int, objective: str, min_frequency: int = 2
) -> Any:
    """A trained `PreTrainedTokenizerFast` with the objective's special tokens."""
    from transformers import PreTrainedTokenizerFast

    special = SPECIAL_TOKENS[objective]
    trainers: dict[str, Callable[..., Any]] = {
        "bpe": lambda: _bpe(vocab_size, min_frequency, special.all, texts),
        "wordpiece": lambda: _wordpiece(vocab_size, min_frequency, special.all, texts, special.unk),
        "unigram": lambda: _unigram(vocab_size, min_frequency, special.all, texts, special.unk),
        "char": lambda: _char(vocab_size, min_frequency, special.all, texts, special.unk),
    }
    if kind not in trainers:
        raise FoundryError(f"tokenizer.type = {kind!r} is unknown.", f"Use one of: {', '.join(trainers)}.")
    tok = trainers[kind]()
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special.transformers_kwargs())


def check_tokenizer_fits(tokenizer: Any, objective: str) -> None:
    """Fail early when the tokenizer cannot serve the objective: masked LM replaces tokens with a mask token.

    (No pad token is needed: sequences are packed. The document separator is checked by the tokenize stage.)
    """
    mask_id = getattr(tokenizer, "mask_token_id", None)
    if objective == "masked_lm" and (mask_id is None or mask_id == tokenizer.unk_token_id):
        raise FoundryError(
            "train.objective is masked_lm but the tokenizer has no mask token.",
            "Let the tokenize stage train one for masked_lm (it adds [MASK]), or use a tokenizer_override "
            "with a mask token, or train with objective causal_lm.",
        )


def iter_batches(texts: list[str], size: int = 256) -> Iterator[list[str]]:
    for i in range(0, len(texts), size):
        yield texts[i : i + size]
