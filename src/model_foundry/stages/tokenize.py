"""tokenize stage: a tokenizer (trained on the train split for scratch models, the model's own otherwise)
and the train/val token ids as flat memmap arrays."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_foundry.config import Params
from model_foundry.data.corpus import corpus_format, read_split
from model_foundry.data.encoding import EncodingStats
from model_foundry.data.tokenizer_training import SPECIAL_TOKENS, check_tokenizer_fits, train_tokenizer
from model_foundry.data.tokens import META_NAME, TOKENIZER_DIR, dtype_for, encode_documents
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir, read_json, write_json

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase


def tokenizer_folder(params: Params, model_dir: Path) -> tuple[Path | None, str]:
    """(folder, kind) of the tokenizer to load — "override:<folder>" or "native" (the model folder's
    tokenizer.json) — or (None, "") when a new one is to be trained: for a scratch model, and for a repo
    model (`source: model:<name>`) whose folder has neither tokenizer.json nor weights (a scratch config).

    Raises FoundryError when the override holds no tokenizer.json, or a model with weights has none (a new
    tokenizer would not match its embeddings).
    """
    override = params.model.tokenizer_override
    if override:
        if not (Path(override) / "tokenizer.json").is_file():
            raise FoundryError(
                f"tokenizer_override {override!r} holds no tokenizer.json.",
                "Point it at a folder with a saved fast tokenizer (e.g. another model's folder).",
            )
        return Path(override), f"override:{override}"
    if (model_dir / "tokenizer.json").is_file():
        return model_dir, "native"
    if params.model.is_scratch:
        return None, ""
    if params.model.parent_model is not None:
        if not any(model_dir.glob("*.safetensors")):  # a scratch config, no weights yet: like a scratch model
            return None, ""
        raise FoundryError(
            f"The model in {model_dir} has weights but no tokenizer.json.",
            "Restore the folder's tokenizer (`dvc checkout`, or copy it from the model it was trained from), "
            "or set tokenizer_override to a folder with the model's tokenizer.",
        )
    raise FoundryError(  # a new tokenizer would not match the imported embeddings
        f"The imported model in {model_dir} has no tokenizer.json.",
        "Re-import it (`foundry import-model` builds one from slow tokenizer files), "
        "or set tokenizer_override to a folder with the model's tokenizer.",
    )


def load_or_train_tokenizer(
    params: Params, model_dir: Path, train_docs: list[str]
) -> tuple[PreTrainedTokenizerBase, str]:
    """(tokenizer, kind): an override or the model's own tokenizer wins over training a new one.

    kind is "override:<folder>", "native" (the model folder's tokenizer.json) or the trained type
    (tokenizer.type: bpe, wordpiece, unigram, char), trained on `train_docs` with tokenizer.vocab_size when
    `tokenizer_folder` says so. Raises FoundryError as `tokenizer_folder` does.
    """
    from model_foundry.model_folder import load_tokenizer

    folder, kind = tokenizer_folder(params, Path(model_dir))
    if folder is not None:
        return load_tokenizer(folder), kind
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

    A chat or prompt/completion corpus (stats.json's "format") is rendered and packed instead: `run_records`.
    """
    corpus = Path(corpus)
    if not (corpus / "train.jsonl").is_file():
        raise FoundryError(f"{corpus} holds no imported corpus (train.jsonl).", "Run the import stage first.")
    fmt = corpus_format(corpus)
    if fmt != "text":
        return run_records(params, corpus, Path(model_dir), Path(out), fmt)
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


def run_records(params: Params, corpus: Path, model_dir: Path, out: Path, fmt: str) -> dict[str, Any]:
    """The tokenize stage on chat or prompt/completion records (`data.chat_data`): render each record with a
    loss mask over the assistant/completion tokens, pack the examples into windows of train.block_size + 1
    tokens, and write `out`: tokenizer/ (with the chat template used, when it had none), train.bin/val.bin
    (ids, n_windows × window), train.mask.bin/val.mask.bin (uint8, 1 = trained target) and meta.json.

    The tokenizer is the model's own (or the override), or trained on the records' texts for a scratch model;
    the chat template is `chat_data.chat_template_for` (the tokenizer's, else the family's). Examples keep at
    most train.example_tokens tokens (longer ones cut or dropped per data.overlong). Every bad record is
    counted per kind: meta.json's `chat: {train, val}` (`ChatStats.as_dict`) and printed lines.

    Returns meta.json: tokenizer, objective, vocab_size, format, chat_template ("tokenizer", "family" or
    None), pad_id, layout "windows", window, windows {split: n}, dtype, tokens and trained_tokens per split
    (padding excluded), chat and corpus_normalisation. Raises FoundryError — before any tokenizer is trained
    or record rendered — for masked_lm, and for chat data with no chat template (tokenizer or family); then
    for a split with no usable record.
    """
    from model_foundry.data.chat_data import (
        ChatDataSettings,
        ChatStats,
        DataFormat,
        chat_template_for,
        pack,
        packed_meta,
        prepare_examples,
        read_jsonl,
        record_texts,
        write_packed,
    )
    from model_foundry.model_folder import load_tokenizer

    cfg = params.train
    if cfg.objective != "causal_lm":
        raise FoundryError(
            f"{corpus} holds {fmt} records, which train causal language models (loss on the assistant's "
            f"tokens), but train.objective is {cfg.objective}.",
            "Set train.objective: causal_lm and a causal model, or give masked_lm plain text "
            "(data.format: text).",
        )
    data_format: DataFormat = "chat" if fmt == "chat" else "prompt_completion"
    folder, kind = tokenizer_folder(params, model_dir)
    tokenizer = load_tokenizer(folder) if folder is not None else None
    template = None
    if fmt == "chat":
        template = chat_template_for(tokenizer, params.model.spec.family, f"The model {params.model_name}")
    splits = ("train", "val")
    stats = {split: ChatStats(source=str(corpus / f"{split}.jsonl")) for split in splits}
    records = {split: read_jsonl(corpus / f"{split}.jsonl", stats[split].normalisation) for split in splits}
    if tokenizer is None:
        texts = record_texts(records["train"], data_format)
        if not texts:
            raise FoundryError(
                f"{corpus / 'train.jsonl'} has no well-formed {fmt} record to train a tokenizer on.",
                "Fix the records (the tokenize stage counts each kind of bad record), or add some.",
            )
        t = params.tokenizer
        tokenizer, kind = train_tokenizer(t.type, texts, t.vocab_size, cfg.objective, t.min_frequency), t.type
    check_tokenizer_fits(tokenizer, cfg.objective)
    template_source = None if template is None else "tokenizer" if tokenizer.chat_template else "family"
    settings = ChatDataSettings(data_format, cfg.example_tokens, params.data.overlong)
    pad = tokenizer.pad_token_id if isinstance(tokenizer.pad_token_id, int) else tokenizer.eos_token_id
    pad_id = pad if isinstance(pad, int) else 0  # padding has mask 0: never a target
    vocab_size = len(tokenizer)
    dtype = dtype_for(vocab_size)
    packed = {}
    for split in splits:
        source = stats[split].source
        examples, _ = prepare_examples(tokenizer, records[split], settings, template, source, stats[split])
        packed[split] = pack(examples, cfg.block_size, pad_id, params.data.overlong, stats[split], dtype)
    if template is not None and not tokenizer.chat_template:
        tokenizer.chat_template = template  # the fine-tuned model chats in the format it was trained on
    with atomic_dir(out) as tmp:
        tokenizer.save_pretrained(str(tmp / TOKENIZER_DIR))
        for split in splits:
            write_packed(tmp, split, *packed[split])
        meta = {
            "tokenizer": kind,
            "objective": cfg.objective,
            "vocab_size": vocab_size,
            "format": fmt,
            "chat_template": template_source,
            "pad_id": pad_id,
            **packed_meta(cfg.block_size + 1, {s: len(packed[s][0]) for s in splits}, dtype),
            "tokens": {s: stats[s].tokens for s in splits},
            "trained_tokens": {s: stats[s].trained_tokens for s in splits},
            "chat": {s: stats[s].as_dict() for s in splits},
            "corpus_normalisation": _corpus_normalisation(corpus),
        }
        write_json(tmp / META_NAME, meta, atomic=False)
    for split in splits:
        print("\n".join(stats[split].report()))
    return meta


def _corpus_normalisation(corpus: Path) -> dict[str, Any]:
    """What the import stage normalised on read (from the corpus's stats.json; {} for older corpora)."""
    stats = corpus / "stats.json"
    return read_json(stats).get("normalisation", {}) if stats.is_file() else {}
