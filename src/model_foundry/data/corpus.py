"""Read a corpus into documents and split it into train/val, deterministically.

Sources: the builtin English prose shipped with Python (`pydoc_data.topics`, ~465k characters, so the default
pipeline needs no network), or the user's .txt/.jsonl files and folders. Chat and prompt/completion JSONL
(`data.format`, or detected) is kept as records, not documents: split as they are, validated and rendered by
the tokenize stage (`data.chat_data`).
"""

from __future__ import annotations

import dataclasses
import json
import random
import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from model_foundry.config import BUILTIN_CORPUS, DataConfig
from model_foundry.errors import FoundryError
from model_foundry.io import write_json

SUFFIXES = (".txt", ".jsonl")
MIN_DOCUMENTS = 10  # below this, documents are cut into paragraphs so both splits get text
PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")  # a blank line (possibly holding spaces or tabs)


# Byte-order marks, longest first (the UTF-32 LE mark starts with the UTF-16 LE one).
BOMS = (
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


@dataclass
class Normalisation:
    """What reading changed, summed over the files and documents of a corpus (recorded in stats.json)."""

    files: int = 0
    byte_order_marks: int = 0  # files that started with one (stripped; UTF-16/32 decoded)
    utf16_or_utf32_files: int = 0
    line_breaks_converted: int = 0  # documents with CRLF or CR line breaks, now LF
    unicode_normalised: int = 0  # documents changed by NFC

    def as_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


def _encoding_hint(path: Path, data: bytes) -> str:
    """How to convert a file that is not UTF-8: a guess only where the bytes make one likely."""
    out = f"{path.stem}.utf8{path.suffix}"
    if data[:2000].count(0) > len(data[:2000]) // 4:  # every other byte zero: UTF-16 text without a mark
        order = "UTF-16LE" if data[1:2] == b"\x00" else "UTF-16BE"
        return f"It looks like {order} without a byte-order mark: `iconv -f {order} -t UTF-8 {path} > {out}`."
    runs = re.findall(rb"[\x80-\xff]+", data)
    if runs and sum(len(r) == 1 for r in runs) >= 0.9 * len(runs):  # lone accented letters: Latin-1 text
        return f"It looks like Latin-1 (ISO-8859-1/Windows-1252): `iconv -f latin1 -t UTF-8 {path} > {out}`."
    return f"Find its encoding with `file -i {path}`, then `iconv -f <ENCODING> -t UTF-8 {path} > {out}`."


def decode_text(path: Path, data: bytes, norm: Normalisation) -> str:
    """Bytes of a corpus file → text: a byte-order mark (UTF-8/16/32) is honoured and removed, anything else
    must be UTF-8. Raises FoundryError with a conversion hint for other encodings."""
    norm.files += 1
    for mark, encoding in BOMS:
        if data.startswith(mark):
            norm.byte_order_marks += 1
            norm.utf16_or_utf32_files += encoding != "utf-8"
            try:
                return data[len(mark) :].decode(encoding)
            except UnicodeDecodeError as e:
                raise FoundryError(
                    f"{path} starts with a {encoding} byte-order mark but is not valid {encoding} "
                    f"(offset {e.start + len(mark)}).",
                    f"Find its encoding with `file -i {path}` and convert it to UTF-8 with `iconv`.",
                ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise FoundryError(
            f"{path} is not UTF-8 text (invalid byte {data[e.start]:#04x} at offset {e.start}).",
            _encoding_hint(path, data),
        ) from None
    if "\x00" in text:  # valid UTF-8, but text has no NUL: UTF-16/32 without a mark, or a binary file
        raise FoundryError(
            f"{path} is not UTF-8 text (NUL byte at offset {data.index(0)}).", _encoding_hint(path, data)
        )
    return text


def normalise_text(text: str, norm: Normalisation) -> str:
    """One document's text as every stage sees it: LF line breaks (from CRLF and CR) and Unicode NFC.

    NFC only joins canonically equivalent sequences (e + combining accent → é), so no tokenizer reads the
    text differently; tokenizers that want more (NFKC, lowercasing) apply their own normalizer on top.
    """
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        norm.line_breaks_converted += 1
    nfc = unicodedata.normalize("NFC", text)
    if nfc != text:
        norm.unicode_normalised += 1
    return nfc


def _read_file(path: Path, text_field: str, norm: Normalisation) -> list[str]:
    text = decode_text(path, path.read_bytes(), norm)
    if path.suffix == ".txt":
        return [normalise_text(text, norm)]
    docs = []
    # Records end at LF (CRLF leaves a \r that JSON reads as whitespace); not str.splitlines(), which also
    # splits at U+2028/U+2029/U+0085, characters valid inside JSON strings.
    for lineno, line in enumerate(text.split("\n"), 1):
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
        text_value = record[text_field]
        surrogate = _SURROGATE.search(text_value)  # JSON allows "\ud800" escapes that are not Unicode text
        if surrogate:
            raise FoundryError(
                f"{path}:{lineno}: field {text_field!r} holds an unpaired surrogate escape "
                f"({surrogate.group()!r}), which is not Unicode text.",
                "Fix the writer of this file (a \\uD800-\\uDFFF escape must come in a valid pair), "
                "or drop the record.",
            )
        docs.append(normalise_text(text_value, norm))
    return docs


_SURROGATE = re.compile("[\ud800-\udfff]")


# What the pipeline writes or keeps, relative to the project root (the working directory of every stage). A
# corpus read from there would feed the pipeline its own outputs (a user folder such as data/raw/ is fine).
OUTPUT_DIRS = (
    "data/corpus", "data/source", "data/tokenized", "data/inputs", "models", "plots", ".dvc", ".git",
    ".foundry-cache",
)  # fmt: skip


def check_source(source: str, root: Path | None = None) -> Path:
    """The path of one `data.source` entry, checked: not empty, existing, neither inside the pipeline's
    outputs (OUTPUT_DIRS under `root`, default the working directory) nor a folder holding one of them.

    Symlinks are resolved first, so a link into models/ is refused too. Raises FoundryError otherwise.
    """
    fix = f"Point data.source at .txt/.jsonl files or a folder of them (corpus/), or use {BUILTIN_CORPUS!r}."
    if not source.strip():  # Path("") is the working directory: every .txt/.jsonl of the project
        raise FoundryError(f"data.source {source!r} is an empty path.", fix)
    path = Path(source)
    if not path.exists():
        raise FoundryError(f"data.source {source!r} does not exist.", fix)
    if path.is_file() and path.suffix not in SUFFIXES:
        raise FoundryError(
            f"data.source {source!r} is not a .txt or .jsonl file.",
            "Convert it to plain text (.txt) or JSON lines (.jsonl), or point at a folder of them.",
        )
    root = (root or Path.cwd()).resolve()
    resolved = path.resolve()
    if resolved == root or resolved in root.parents:
        raise FoundryError(
            f"data.source {source!r} is the project folder (or holds it): it would read the pipeline's own "
            "outputs (data/, models/) as corpus.",
            fix,
        )
    for out in OUTPUT_DIRS:
        target = root / out
        if resolved == target or target in resolved.parents:
            raise FoundryError(f"data.source {source!r} is inside {out}/, where the pipeline writes.", fix)
        if resolved in target.parents and target.exists():
            raise FoundryError(
                f"data.source {source!r} holds {out}/, where the pipeline writes: its outputs would be read "
                "back as corpus.",
                fix,
            )
    return path


def _files(source: str) -> list[Path]:
    path = check_source(source)
    if path.is_file():
        if path.suffix not in SUFFIXES:
            raise FoundryError(
                f"data.source {source!r} is not a .txt or .jsonl file.",
                "Convert it to plain text (.txt) or JSON lines (.jsonl), or point at a folder of them.",
            )
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix in SUFFIXES)
    if not files:
        raise FoundryError(
            f"The folder {source!r} holds no .txt or .jsonl files.",
            "Put the corpus there as .txt or .jsonl files, or point data.source elsewhere.",
        )
    return files


def load_documents(cfg: DataConfig, norm: Normalisation | None = None) -> list[str]:
    """All documents of the configured sources, in a stable order, normalised (see `normalise_text`).

    What normalisation changed is added into `norm` when given. Raises FoundryError for a missing source, a
    file that is not text in a known encoding, bad JSONL, or an empty corpus.
    """
    norm = norm if norm is not None else Normalisation()
    sources = cfg.source if isinstance(cfg.source, list) else [cfg.source]
    docs: list[str] = []
    for source in sources:
        if source == BUILTIN_CORPUS:
            from pydoc_data.topics import topics

            docs.extend(normalise_text(topics[k], norm) for k in sorted(topics))
        else:
            for f in _files(source):
                docs.extend(_read_file(f, cfg.text_field, norm))
    docs = [d.strip() for d in docs if d.strip()]
    if not docs:
        raise FoundryError(
            f"The corpus {cfg.source!r} is empty (no text after stripping whitespace).",
            "Add text to the files, or point data.source elsewhere.",
        )
    return docs


def _paragraphs(docs: Iterable[str]) -> list[str]:
    return [p.strip() for d in docs for p in PARAGRAPH_BREAK.split(d) if p.strip()]


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


# --- JSONL records (chat, prompt/completion or text; `data.chat_data` validates and renders them) ----------

DataFormat = Literal["text", "chat", "prompt_completion"]
FORMATS: tuple[DataFormat, ...] = ("text", "chat", "prompt_completion")
KEYS: dict[DataFormat, tuple[str, ...]] = {
    "chat": ("messages",),
    "prompt_completion": ("prompt", "completion"),
    "text": ("text",),
}


@dataclass
class JsonlRecord:
    """One non-blank JSONL line: its number (1-based) and value (None with `error` when not valid JSON);
    `raw`: the line as read (without its line break), which the import stage writes back unchanged."""

    line: int
    value: Any
    error: str | None = None
    raw: str = field(default="", repr=False)


def read_jsonl(path: Path, norm: Normalisation | None = None) -> list[JsonlRecord]:
    """The non-blank lines of a JSONL file, parsed (a line that is not JSON keeps its error, to be counted).

    Decoding as for corpus files (`data.corpus.decode_text`: UTF-8, byte-order marks honoured). Raises
    FoundryError for an unreadable file or another encoding.
    """
    norm = norm if norm is not None else Normalisation()
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FoundryError(f"Cannot read {path}: {e.strerror}.", "Check data.source.") from None
    text = decode_text(path, data, norm)
    records = []
    for lineno, line in enumerate(text.split("\n"), 1):  # LF only: U+2028 is valid inside JSON strings
        if not line.strip():
            continue
        line = line.removesuffix("\r")  # CRLF files
        try:
            records.append(JsonlRecord(lineno, json.loads(line), raw=line))
        except json.JSONDecodeError as e:
            records.append(JsonlRecord(lineno, None, f"not valid JSON ({e.msg})", raw=line))
    return records


def kinds_of(value: Any) -> set[DataFormat]:
    """The formats whose keys a record has (none for a value that is not a JSON object)."""
    if not isinstance(value, dict):
        return set()
    return {fmt for fmt, keys in KEYS.items() if any(k in value for k in keys)}


def jsonl_format(
    records: Sequence[JsonlRecord], text_field: str = "text", source: str = "the data"
) -> DataFormat:
    """The format of a corpus file for `data.format: auto`: chat or prompt_completion when its records have
    those keys (messages; prompt/completion), else text (read by the text path with `text_field`, which
    reports its own errors).

    Raises FoundryError when a file mixes chat, prompt/completion and text (`text_field`) records.
    """
    seen: dict[str, list[int]] = {}
    for rec in records:
        kinds: set[str] = {fmt for fmt in kinds_of(rec.value) if fmt != "text"}
        if isinstance(rec.value, dict) and text_field in rec.value:
            kinds.add("text")
        for fmt in kinds:
            seen.setdefault(fmt, []).append(rec.line)
    structured = [fmt for fmt in FORMATS if fmt != "text" and fmt in seen]
    if not structured:
        return "text"
    if len(seen) == 1:
        return structured[0]
    raise mixed_formats(source, seen)


def mixed_formats(source: str, seen: Mapping[str, list[int]]) -> FoundryError:
    """The error for a file whose records are of several formats (`seen`: format → its line numbers)."""
    mixed = "; ".join(
        f"{fmt} ({len(lines)} records, lines {', '.join(map(str, lines[:3]))})" for fmt, lines in seen.items()
    )
    return FoundryError(
        f"{source} mixes record formats: {mixed}.",
        "Use one format per file, or set data.format (text, chat or prompt_completion) so the others are "
        "counted as bad records.",
    )


# --- chat and prompt/completion corpora (records kept as they are; the tokenize stage renders them) ---------


def read_records(cfg: DataConfig, norm: Normalisation) -> tuple[str, list[JsonlRecord]]:
    """(format, records) of the configured sources: "text" and no records for a plain-text corpus (read by
    `load_documents`), else "chat" or "prompt_completion" and every non-blank line of the .jsonl files in
    source order (invalid JSON included: the tokenize stage counts it).

    data.format text reads nothing here; auto detects each .jsonl file's format (`chat_data.jsonl_format`);
    .txt files and the builtin corpus are text. Raises FoundryError when text and chat/prompt_completion
    sources are mixed, or data.format names chat or prompt_completion for a plain-text source.
    """
    if cfg.format == "text":
        return "text", []
    sources = cfg.source if isinstance(cfg.source, list) else [cfg.source]
    by_format: dict[str, list[str]] = {}
    records: list[JsonlRecord] = []
    for source in sources:
        files = [] if source == BUILTIN_CORPUS else _files(source)
        if source == BUILTIN_CORPUS:
            by_format.setdefault("text", []).append(source)
        for f in files:
            if f.suffix == ".txt":
                by_format.setdefault("text", []).append(str(f))
                continue
            file_records = read_jsonl(f, norm)
            kind = jsonl_format(file_records, cfg.text_field, str(f)) if cfg.format == "auto" else cfg.format
            by_format.setdefault(kind, []).append(str(f))
            records.extend(file_records)
    if set(by_format) == {"text"}:
        if cfg.format != "auto":
            raise FoundryError(
                f"data.format is {cfg.format}, but data.source is plain text ({by_format['text'][0]}).",
                'Point data.source at .jsonl files of chat records ({"messages": [...]}) or prompt/'
                'completion records ({"prompt": ..., "completion": ...}), or set data.format: text.',
            )
        return "text", []
    if len(by_format) > 1:
        kinds = "; ".join(f"{fmt}: {', '.join(files[:3])}" for fmt, files in sorted(by_format.items()))
        raise FoundryError(
            f"data.source mixes plain-text and chat/instruction files ({kinds}).",
            "Fine-tune on one kind of data: point data.source at the chat (or prompt/completion) .jsonl "
            "files only, or at the plain text only.",
        )
    fmt = next(iter(by_format))
    if not records:
        raise FoundryError(
            f"The corpus {cfg.source!r} is empty (no {fmt} records).",
            "Add records to the files, or point data.source elsewhere.",
        )
    return fmt, records


def split_records(
    records: list[JsonlRecord], val_fraction: float, seed: int
) -> tuple[list[JsonlRecord], list[JsonlRecord]]:
    """Shuffle with `seed`, hold out `val_fraction` of the records (at least one, and one left to train).

    Raises FoundryError for fewer than two records."""
    if len(records) < 2:
        raise FoundryError(
            f"The corpus has {len(records)} record, too few to split into train and validation.",
            "Add records: at least two (one for each split).",
        )
    order = list(range(len(records)))
    random.Random(seed).shuffle(order)
    n_val = min(len(records) - 1, max(1, round(len(records) * val_fraction)))
    return [records[i] for i in sorted(order[n_val:])], [records[i] for i in sorted(order[:n_val])]


def write_records(records: list[JsonlRecord], path: Path) -> dict[str, int]:
    """Write the records' lines as they were read (invalid JSON too, for the tokenize stage to count).

    Returns records, invalid_json (lines that are not JSON), and documents (= records), characters and bytes
    of the lines, as `write_split` reports them for text."""
    text = "".join(r.raw + "\n" for r in records)
    path.write_text(text, encoding="utf-8", newline="")
    return {
        "records": len(records),
        "invalid_json": sum(r.error is not None for r in records),
        "documents": len(records),
        "characters": len(text),
        "bytes": len(text.encode()),
    }


def corpus_format(corpus: Path) -> str:
    """The format the import stage recorded in `corpus`/stats.json: text (also for older corpora), chat or
    prompt_completion."""
    stats = corpus / "stats.json"
    return str(json.loads(stats.read_text()).get("format", "text")) if stats.is_file() else "text"


def import_corpus(cfg: DataConfig, out: Path) -> dict[str, Any]:
    """Write `train.jsonl`, `val.jsonl` and `stats.json` into `out` (a folder written whole or not at all).

    Plain text: the documents, normalised, one {"text": ...} a line; stats.json holds documents/characters/
    bytes per split and what reading normalised (`Normalisation`). Chat or prompt/completion data
    (`read_records`): the records' lines unchanged (the tokenize stage validates and renders them), split by
    data.seed and data.val_fraction; stats.json adds "format" and holds records/invalid_json/bytes per split.
    Raises FoundryError for a missing, mixed, unreadable or too small corpus.
    """
    from model_foundry.io import atomic_dir

    read = Normalisation()
    fmt, records = read_records(cfg, read)
    if fmt != "text":
        return _import_records(cfg, fmt, records, read, out)
    norm = Normalisation()
    train, val = split_documents(load_documents(cfg, norm), cfg.val_fraction, cfg.seed)
    with atomic_dir(out) as tmp:
        stats: dict[str, Any] = {
            "train": write_split(train, tmp / "train.jsonl"),
            "val": write_split(val, tmp / "val.jsonl"),
            "normalisation": norm.as_dict(),
        }
        write_json(tmp / "stats.json", stats, atomic=False)
    changed = {k: v for k, v in norm.as_dict().items() if v and k != "files"}
    if changed:
        print(f"note: normalised on read: {', '.join(f'{k} {v}' for k, v in changed.items())}")
    return stats


def _import_records(
    cfg: DataConfig, fmt: str, records: list[JsonlRecord], norm: Normalisation, out: Path
) -> dict[str, Any]:
    from model_foundry.io import atomic_dir

    train, val = split_records(records, cfg.val_fraction, cfg.seed)
    with atomic_dir(out) as tmp:
        stats: dict[str, Any] = {
            "format": fmt,
            "train": write_records(train, tmp / "train.jsonl"),
            "val": write_records(val, tmp / "val.jsonl"),
            "normalisation": norm.as_dict(),
        }
        write_json(tmp / "stats.json", stats, atomic=False)
    print(f"{fmt} corpus: {len(train)} train / {len(val)} val records (validated at tokenize)")
    return stats
