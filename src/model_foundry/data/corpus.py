"""Read a corpus into documents and split it into train/val, deterministically.

Sources: the builtin English prose shipped with Python (`pydoc_data.topics`, ~465k characters, so the default
pipeline needs no network), or the user's .txt/.jsonl files and folders.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterable
from pathlib import Path

from model_foundry.config import BUILTIN_CORPUS, DataConfig
from model_foundry.errors import FoundryError
from model_foundry.io import write_json

SUFFIXES = (".txt", ".jsonl")
MIN_DOCUMENTS = 10  # below this, documents are cut into paragraphs so both splits get text


def _decode(path: Path, data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FoundryError(
            f"{path} is not UTF-8 text (invalid byte {data[e.start]:#04x} at offset {e.start}).",
            f"Convert it first, e.g. `iconv -f latin1 -t utf-8 {path} > {path.stem}.utf8{path.suffix}`.",
        ) from None


def _read_file(path: Path, text_field: str) -> list[str]:
    text = _decode(path, path.read_bytes())
    if path.suffix == ".txt":
        return [text]
    docs = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise FoundryError(
                f"{path}:{lineno} is not valid JSON ({e.msg}).", "Each line must be one JSON object."
            ) from None
        if not isinstance(record, dict) or not isinstance(record.get(text_field), str):
            raise FoundryError(
                f"{path}:{lineno} has no string field {text_field!r}.",
                "Set data.text_field to the field that holds the text.",
            )
        docs.append(record[text_field])
    return docs


def _files(source: str) -> list[Path]:
    path = Path(source)
    if not path.exists():
        raise FoundryError(
            f"data.source {source!r} does not exist.",
            f"Point data.source at a .txt/.jsonl file or a folder of them, or use {BUILTIN_CORPUS!r}.",
        )
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise FoundryError(f"data.source {source!r} is not a .txt or .jsonl file.")
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    if not files:
        raise FoundryError(f"The folder {source!r} holds no .txt or .jsonl files.")
    return files


def load_documents(cfg: DataConfig) -> list[str]:
    """All documents of the configured sources, in a stable order."""
    sources = cfg.source if isinstance(cfg.source, list) else [cfg.source]
    docs: list[str] = []
    for source in sources:
        if source == BUILTIN_CORPUS:
            from pydoc_data.topics import topics

            docs.extend(topics[k] for k in sorted(topics))
        else:
            for f in _files(source):
                docs.extend(_read_file(f, cfg.text_field))
    docs = [d.strip() for d in docs if d.strip()]
    if not docs:
        raise FoundryError(
            f"The corpus {cfg.source!r} is empty (no text after stripping whitespace).",
            "Add text to the files, or point data.source elsewhere.",
        )
    return docs


def _paragraphs(docs: Iterable[str]) -> list[str]:
    return [p.strip() for d in docs for p in d.split("\n\n") if p.strip()]


def split_documents(docs: list[str], val_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """Shuffle with `seed`, hold out `val_fraction` of the documents (at least one)."""
    if len(docs) < MIN_DOCUMENTS:
        docs = _paragraphs(docs)
    if len(docs) < 2:
        raise FoundryError(
            "The corpus is too small to split into train and validation (one paragraph).",
            "Add more text: at least two paragraphs separated by a blank line.",
        )
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_val = min(len(docs) - 1, max(1, round(len(docs) * val_fraction)))
    val = sorted(order[:n_val])
    train = sorted(order[n_val:])
    return [docs[i] for i in train], [docs[i] for i in val]


def write_split(docs: list[str], path: Path) -> dict[str, int]:
    with open(path, "w", encoding="utf-8") as f:
        for d in docs:
            f.write(json.dumps({"text": d}, ensure_ascii=False) + "\n")
    return {
        "documents": len(docs),
        "characters": sum(map(len, docs)),
        "bytes": sum(len(d.encode()) for d in docs),
    }


def read_split(path: Path) -> list[str]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def import_corpus(cfg: DataConfig, out: Path) -> dict[str, dict[str, int]]:
    """Write `train.jsonl`, `val.jsonl` and `stats.json` into `out` (a folder written whole or not at all)."""
    from model_foundry.io import atomic_dir

    train, val = split_documents(load_documents(cfg), cfg.val_fraction, cfg.seed)
    with atomic_dir(out) as tmp:
        stats = {"train": write_split(train, tmp / "train.jsonl"), "val": write_split(val, tmp / "val.jsonl")}
        write_json(tmp / "stats.json", stats, atomic=False)
    return stats
