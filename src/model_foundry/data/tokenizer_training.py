"""Train a tokenizer on the train split with the `tokenizers` library: bpe, wordpiece, unigram or char.

Each is saved as `tokenizer.json` (+ tokenizer_config.json) loadable by `PreTrainedTokenizerFast`, with the
special tokens its objective needs: causal models get bos/eos/pad/unk, masked models cls/sep/mask/pad/unk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from model_foundry.data.encoding import MAX_RUN
from model_foundry.errors import FoundryError

if TYPE_CHECKING:  # type-only: tokenizers and transformers are imported by the functions that use them
    from tokenizers import Tokenizer
    from tokenizers.pre_tokenizers import PreTokenizer
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase
    from transformers.tokenization_utils_tokenizers import PreTrainedTokenizerFast


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


R = TypeVar("R")

SPECIAL_TOKENS = {
    "causal_lm": SpecialTokens(unk="<unk>", pad="<pad>", bos="<s>", eos="</s>", separator="</s>"),
    "masked_lm": SpecialTokens(
        unk="[UNK]", pad="[PAD]", cls="[CLS]", sep="[SEP]", mask="[MASK]", separator="[SEP]"
    ),
}


def _bounded_runs() -> PreTokenizer:
    """A pre-tokenizer cutting whitespace-free runs over MAX_RUN characters into pieces of MAX_RUN (the last
    shorter); shorter runs are left alone, so ordinary text tokenizes as without it."""
    from tokenizers import Regex, pre_tokenizers

    return pre_tokenizers.Split(Regex(rf"\S{{{MAX_RUN}}}(?=\S)"), behavior="isolated")


def _bpe(vocab_size: int, min_frequency: int, special: list[str], texts: list[str]) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    minimum = len(alphabet) + len(special) + 1
    if vocab_size < minimum:
        raise FoundryError(
            f"tokenizer.vocab_size = {vocab_size} is too small for byte-level BPE.",
            f"It needs at least {minimum} (256 bytes + {len(special)} special tokens + 1 merge); try 4096.",
        )
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [_bounded_runs(), pre_tokenizers.ByteLevel(add_prefix_space=False)]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=special,
        initial_alphabet=alphabet, show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator(texts, trainer=trainer)
    return tok


def _wordpiece(
    vocab_size: int, min_frequency: int, special: list[str], texts: list[str], unk: str
) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.WordPiece(unk_token=unk))
    # CJK ideographs become words of their own, as in BERT (written without spaces, a clause would be one
    # word, and one [UNK]); nothing else of BertNormalizer (no lowercasing, accents kept).
    tok.normalizer = normalizers.Sequence(
        [
            normalizers.NFC(),
            normalizers.BertNormalizer(
                clean_text=False, handle_chinese_chars=True, strip_accents=False, lowercase=False
            ),
        ]
    )
    tok.pre_tokenizer = pre_tokenizers.Sequence([_bounded_runs(), pre_tokenizers.BertPreTokenizer()])
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


def _unigram(
    vocab_size: int, min_frequency: int, special: list[str], texts: list[str], unk: str
) -> Tokenizer:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.Unigram())
    tok.normalizer = normalizers.NFKC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Metaspace(), _bounded_runs()])
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


def _char(vocab_size: int, min_frequency: int, special: list[str], texts: list[str], unk: str) -> Tokenizer:
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


TRAINERS: dict[str, Callable[..., Tokenizer]] = {"bpe": _bpe, "wordpiece": _wordpiece, "unigram": _unigram}


def _train_backend(kind: str, vocab_size: int, min_frequency: int, objective: str, texts: list[str]) -> str:
    """Train a `tokenizers.Tokenizer` and return it as JSON (runs in a child process).

    Long texts are fed in pieces cut between words (`split_long`): the trainer counts the same words, and its
    memory follows the piece size instead of the longest line.
    """
    from model_foundry.data.encoding import split_long

    texts = [piece for text in texts for _, piece in split_long(text)]
    special = SPECIAL_TOKENS[objective]
    args = (vocab_size, min_frequency, special.all, texts)
    tok = TRAINERS[kind](*args) if kind == "bpe" else TRAINERS[kind](*args, special.unk)
    return tok.to_str()


def run_isolated(what: str, fn: Callable[..., R], *args: Any) -> R:
    """`fn(*args)` in a child process (spawned: `fn` and its result must pickle), so that a native crash in
    it (a segfault in a Rust or C++ library) becomes a FoundryError naming `what` instead of killing us.
    A FoundryError raised by `fn` is raised here as it is."""
    from concurrent.futures import ProcessPoolExecutor
    from concurrent.futures.process import BrokenProcessPool
    from multiprocessing import get_context

    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            raise FoundryError(
                f"{what} crashed (the process died in native code).",
                "Look for unusual text in the train split (very long words, binary data), "
                "or try another tokenizer.type.",
            ) from None


def train_tokenizer(
    kind: str, texts: list[str], vocab_size: int, objective: str, min_frequency: int = 2
) -> PreTrainedTokenizerFast:
    """A trained `PreTrainedTokenizerFast` with the objective's special tokens.

    Raises FoundryError for an unknown kind, a vocabulary too small for it, or a crash of the native trainer.
    """
    from transformers import PreTrainedTokenizerFast

    if kind not in (*TRAINERS, "char"):
        raise FoundryError(
            f"tokenizer.type = {kind!r} is unknown.", f"Use one of: {', '.join([*TRAINERS, 'char'])}."
        )
    special = SPECIAL_TOKENS[objective]
    if kind == "char":
        tok = _char(vocab_size, min_frequency, special.all, texts, special.unk)
    else:
        from tokenizers import Tokenizer

        what = f"The {kind} tokenizer trainer (the `tokenizers` library)"
        tok = Tokenizer.from_str(
            run_isolated(what, _train_backend, kind, vocab_size, min_frequency, objective, texts)
        )
    return PreTrainedTokenizerFast(tokenizer_object=tok, **special.transformers_kwargs())


def check_tokenizer_fits(tokenizer: PreTrainedTokenizerBase, objective: str) -> None:
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
