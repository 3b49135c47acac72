"""tokenize stage: a tokenizer (trained on the train split for scratch models, the model's own otherwise)
and the train/val token ids as flat memmap arrays."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_foundry.config import Params
from model_foundry.data.corpus import read_split
from model_foundry.data.encoding import EncodingStats
from model_foundry.data.tokenizer_training import SPECIAL_TOKENS, check_tokenizer_fits, train_tokenizer
from model_foundry.data.tokens import META_NAME, TOKENIZER_DIR, dtype_for, encode_documents
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir, read_json, write_json

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase


def load_or_train_tokenizer(
    params: Params, model_dir: Path, train_docs: list[str]
) -> tuple[PreTrainedTokenizerBase, str]:
    """(tokenizer, kind): an override or the model's own tokenizer wins over training a new one.

    kind is "override:<folder>", "native" (the model folder's tokenizer.json) or the trained type
    (tokenizer.type: bpe, wordpiece, unigram, char), trained on `train_docs` with tokenizer.vocab_size.
    Raises FoundryError when the override holds no tokenizer.json, or an imported model has none (a new
    tokenizer would not match its embeddings).
    """
    from model_foundry.model_folder import load_tokenizer

    override = params.model.tokenizer_override
    folder, kind = None, ""
    if override:
        if not (Path(override) / "tokenizer.json").is_file():
            raise FoundryError(
                f"tokenizer_override {override!r} holds no tokenizer.json.",
                "Point it at a folder with a saved fast tokenizer (e.g. another model's folder).",
            )
        folder, kind = Path(override), f"override:{override}"
    elif (Path(model_dir) / "tokenizer.json").is_file():
        folder, kind = Path(model_dir), "native"
    if folder is not None:
        return load_tokenizer(folder), kind
    if not params.model.is_scratch:  # a new tokenizer would not match the imported embeddings
        raise FoundryError(
            f"The imported model in {model_dir} has no tokenizer.json.",
            "Re-import it (`foundry import-model` builds one from slow tokenizer files), "
            "or set tokenizer_override to a folder with the model's tokenizer.",
        )
    t = params.tokenizer
    return train_tokenizer(t.type, train_docs, t.vocab_size, params.train.objective, t.min_frequency), t.type


def run(params: Params, corpus: Path, model_dir: Path, out: Path) -> dict[str, Any]:
    """The tokenize stage: the tokenizer and the train/val token ids of `corpus` (the import stage's output),
    written atomically to `out`.

    `out` holds tokenizer/ (saved with `save_pretrained`), train.bin and val.bin (the documents packed as
    `doc0 SEP doc1 SEP …`, SEP the eos token for causal_lm or the sep token for masked_lm; flat arrays of
    uint16 or uint32, whichever holds the vocabulary: `data.tokens.dtype_for`) and meta.json. Returns
    meta.json: tokenizer kind, objective, vocab_size (len(tokenizer), added tokens included), dtype,
    separator_id, tokens per split (separators included), UTF-8 bytes per split (the documents' text,
    without separators: evaluation's bits per byte divides by it), what encoding did to the text per split
    and the corpus's normalisation. Raises FoundryError when `corpus` holds no imported corpus, the tokenizer
    does not fit the objective (`check_tokenizer_fits`) or has no separator token.
    """
    corpus = Path(corpus)
    if not (corpus / "train.jsonl").is_file():
        raise FoundryError(f"{corpus} holds no imported corpus (train.jsonl).", "Run the import stage first.")
    train_docs, val_docs = read_split(corpus / "train.jsonl"), read_split(corpus / "val.jsonl")
    tokenizer, kind = load_or_train_tokenizer(params, Path(model_dir), train_docs)
    check_tokenizer_fits(tokenizer, params.train.objective)
    sep_token = tokenizer.eos_token if params.train.objective == "causal_lm" else tokenizer.sep_token
    sep_token = sep_token or SPECIAL_TOKENS[params.train.objective].separator
    separator_id = tokenizer.convert_tokens_to_ids(sep_token)  # unk_token_id (None without one) if unknown
    if not isinstance(separator_id, int) or separator_id == tokenizer.unk_token_id:
        raise FoundryError(
            f"The tokenizer has no document separator token ({sep_token!r}).",
            "Use a tokenizer with an eos (causal_lm) or sep (masked_lm) token.",
        )
    vocab_size = len(tokenizer)
    dtype = dtype_for(vocab_size)
    stats = {"train": EncodingStats(), "val": EncodingStats()}
    with atomic_dir(out) as tmp:
        tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        counts = {
            split: encode_documents(tokenizer, docs, separator_id, tmp / f"{split}.bin", dtype, stats[split])
            for split, docs in (("train", train_docs), ("val", val_docs))
        }
        meta = {
            "tokenizer": kind,
            "objective": params.train.objective,
            "vocab_size": vocab_size,
            "dtype": dtype.name,
            "separator_id": separator_id,
            "tokens": counts,
            "bytes": {
                "train": sum(len(d.encode()) for d in train_docs),
                "val": sum(len(d.encode()) for d in val_docs),
            },
            "text": {split: s.as_dict() for split, s in stats.items()},
            "corpus_normalisation": _corpus_normalisation(corpus),
        }
        write_json(tmp / META_NAME, meta, atomic=False)
    for split, s in stats.items():
        if s.problems():
            print(f"note: {split} split: {s.problems()} (see text.{split} in {out / META_NAME})")
    return meta


def _corpus_normalisation(corpus: Path) -> dict[str, Any]:
    """What the import stage normalised on read (from the corpus's stats.json; {} for older corpora)."""
    stats = corpus / "stats.json"
    return read_json(stats).get("normalisation", {}) if stats.is_file() else {}
