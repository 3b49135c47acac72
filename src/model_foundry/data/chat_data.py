"""Chat and instruction data for fine-tuning: JSONL records → (token ids, loss mask) → packed windows.

Formats (one JSON object a line, blank lines skipped):
- chat:              {"messages": [{"role": "system" | "user" | "assistant", "content": "..."}, ...]}
- prompt_completion: {"prompt": "...", "completion": "..."}
- text:              {"text": "..."} (plain text: the existing packed causal-LM path, detected here only)
`detect_format` picks the format when every classifiable record agrees and raises FoundryError otherwise.

Nothing is dropped silently: every non-blank line is either a usable example or counted under one kind in
`ChatStats.counts` (with the first line numbers in `ChatStats.examples`); over-long examples are truncated
or dropped per `ChatDataSettings.overlong` and counted under "overlong" either way.
`records == usable + dropped`.

The loss mask (1 = the token is a training target) covers exactly the assistant's tokens: the ids of each
assistant content, plus the end-of-turn token the template emits right after it (ChatML's `<|im_end|>`,
Llama 3's `<|eot_id|>`): the model must learn to end its turn. Markup before the content (`<|im_start|>
assistant\\n`) and after the end token (ChatML's "\\n") is not trained: it is the template's, not the model's
to choose. The mask comes from rendering the conversation incrementally with `data.encoding.encode_chat`
(contents are data, never control tokens): the ids before an assistant turn (with the generation prompt),
after it, and of the whole conversation must extend each other; a template that rewrites earlier turns
(e.g. strips past reasoning) is not prefix-consistent and its records are refused
("template_not_incremental").
prompt/completion: the prompt's ids are not trained, the completion's ids and an appended eos are.

Packing and the layout on disk (the tokenize stage writes it, `PackedWindows` + `chat_collator` read it):
- examples are packed first-fit (over the last OPEN_WINDOWS windows) into windows of `block_size + 1` tokens
  (the causal collator's inputs are [:-1], labels [1:]); an example that fits is never split across
  windows; the tail of a window is padded with `pad_id` and mask 0. Examples in one window attend to each
  other (no per-example attention mask), as in packed pretraining; their loss masks stay their own.
- `<split>.bin`: the ids, n_windows × window row-major, dtype meta["dtype"] (uint16 or uint32, as for text);
  `<split>.mask.bin`: uint8, same shape, 1 = trained target; meta.json gets `layout: "windows"`,
  `window` (= block_size + 1) and `windows: {split: n}` (see `packed_meta`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import numpy.typing as npt

from model_foundry.data.corpus import (  # noqa: F401  (read_jsonl, jsonl_format: re-exported)
    FORMATS,
    KEYS,
    DataFormat,
    JsonlRecord,
    Normalisation,
    jsonl_format,
    kinds_of,
    mixed_formats,
    normalise_text,
    read_jsonl,
)
from model_foundry.data.encoding import encode_chat, text_encoder
from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    import torch
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from model_foundry.adapters.hf.families import HFFamily

Overlong = Literal["truncate", "drop"]
ROLES = ("system", "user", "assistant")
MAX_EXAMPLES = 5  # line numbers kept per kind of bad record
OPEN_WINDOWS = 64  # packing tries the last this many windows for room before opening a new one

# Kinds of bad records, in the order they are checked (a record is counted under its first problem).
KINDS = {
    "invalid_json": "not a JSON object",
    "missing_fields": "missing or misshapen fields (messages list of {role, content}; prompt and completion)",
    "unknown_role": "a role other than " + "/".join(ROLES),
    "non_string_content": "a content, prompt or completion that is not a string",
    "invalid_text": "text with an unpaired surrogate escape (not Unicode)",
    "empty_conversation": "an empty messages list",
    "no_assistant_turn": "nothing to train: no assistant message (or an empty completion)",
    "template_error": "the chat template raised an error on the messages",
    "template_not_incremental": "the chat template renders earlier turns differently once later ones follow",
    "overlong": "longer than the length limit (truncated or dropped per the overlong setting)",
}


@dataclass(frozen=True)
class ChatDataSettings:
    """How chat/instruction records become examples (torch-free; the wiring fills it from params).

    format: "auto" detects it (`detect_format`). max_seq_len: the most tokens an example keeps (None: no
    limit here; `pack` still applies its window). overlong: cut an over-long example to the limit (keeping its
    start; dropped if no trained token is left) or drop it. roles: the accepted message roles.
    """

    format: DataFormat | Literal["auto"] = "auto"
    max_seq_len: int | None = None
    overlong: Overlong = "truncate"
    roles: tuple[str, ...] = ROLES


@dataclass
class ChatExample:
    """One rendered record: ids and loss mask (1 = trained target) of the same length, and its line."""

    ids: list[int]
    mask: list[int]
    line: int = 0
    truncated: bool = False  # already cut to max_seq_len (counted as overlong once)


@dataclass
class ChatStats:
    """What became of the records of one file (meta.json's "chat" entry and the printed report).

    records: non-blank lines; usable: examples kept (truncated ones included); truncated: of those, cut to
    the limit; counts: kind (see KINDS) → records; examples: kind → first line numbers; reasons: kind → the
    first message (template errors). tokens / trained_tokens: of the usable examples. windows /
    padding_tokens: set by `pack`.
    """

    source: str = ""
    format: str = ""
    records: int = 0
    usable: int = 0
    truncated: int = 0
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[int]] = field(default_factory=dict)
    reasons: dict[str, str] = field(default_factory=dict)
    tokens: int = 0
    trained_tokens: int = 0
    windows: int = 0
    padding_tokens: int = 0
    normalisation: Normalisation = field(default_factory=Normalisation)

    @property
    def dropped(self) -> int:
        return self.records - self.usable

    def count(self, kind: str, line: int, reason: str | None = None) -> None:
        """Count one record under `kind` (a key of KINDS)."""
        self.counts[kind] = self.counts.get(kind, 0) + 1
        lines = self.examples.setdefault(kind, [])
        if len(lines) < MAX_EXAMPLES:
            lines.append(line)
        if reason and kind not in self.reasons:
            self.reasons[kind] = reason

    def as_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "format": self.format,
            "records": self.records,
            "usable": self.usable,
            "dropped": self.dropped,
            "truncated": self.truncated,
            "bad_records": dict(sorted(self.counts.items())),
            "bad_record_lines": dict(sorted(self.examples.items())),
            "reasons": dict(sorted(self.reasons.items())),
            "tokens": self.tokens,
            "trained_tokens": self.trained_tokens,
            "windows": self.windows,
            "padding_tokens": self.padding_tokens,
            "normalisation": self.normalisation.as_dict(),
        }

    def report(self) -> list[str]:
        """Lines for the stage output: the totals, then one line per kind of bad record."""
        windows = f", {_count(self.windows, 'window')} ({self.padding_tokens:,} padding tokens)"
        lines = [
            f"{self.source}: {_count(self.records, f'{self.format} record')}, {self.usable:,} usable "
            f"({self.truncated:,} truncated), {self.dropped:,} dropped; {_count(self.tokens, 'token')}, "
            f"{self.trained_tokens:,} trained" + (windows if self.windows else "")
        ]
        for kind in KINDS:
            if self.counts.get(kind):
                at = ", ".join(str(n) for n in self.examples.get(kind, []))
                more = "…" if self.counts[kind] > len(self.examples.get(kind, [])) else ""
                reason = f" — {self.reasons[kind]}" if kind in self.reasons else ""
                lines.append(f"  {self.counts[kind]} {KINDS[kind]} (lines {at}{more}){reason}")
        return lines


def _count(n: int, noun: str) -> str:
    """'1 record', '2,048 records'."""
    return f"{n:,} {noun}{'' if n == 1 else 's'}"


# --- reading --------------------------------------------------------------------------------------------


def detect_format(records: Sequence[JsonlRecord], source: str = "the data") -> DataFormat:
    """The format every classifiable record has (by its keys: messages, prompt/completion, text).

    Records of no format (not objects, none of the keys) are left to validation to count. Raises FoundryError
    with a hint when records of several formats are mixed, or when no record has any format's keys.
    """
    seen: dict[DataFormat, list[int]] = {}
    for rec in records:
        for fmt in kinds_of(rec.value):
            seen.setdefault(fmt, []).append(rec.line)
    if len(seen) == 1:
        return next(iter(seen))
    if not seen:
        raise FoundryError(
            f"{source}: no record has the fields of a known format ({len(records)} records).",
            'Write one JSON object a line: {"messages": [{"role": ..., "content": ...}, ...]}, '
            '{"prompt": ..., "completion": ...} or {"text": ...}.',
        )
    raise mixed_formats(source, {str(fmt): lines for fmt, lines in seen.items()})


def record_texts(records: Sequence[JsonlRecord], fmt: DataFormat) -> list[str]:
    """The user texts of the well-formed records (message contents; prompt and completion), normalised as
    for training: what a new tokenizer for this data is trained on."""
    norm = Normalisation()
    texts: list[str] = []
    for rec in records:
        if rec.error is not None:
            continue
        if fmt == "chat":
            checked = check_messages(rec.value)
            if not isinstance(checked, str):
                texts.extend(m["content"] for m in checked)
        else:
            pc = check_prompt_completion(rec.value)
            if not isinstance(pc, str):
                texts.extend(pc)
    return [normalise_text(t, norm) for t in texts if t]


# --- validation -----------------------------------------------------------------------------------------


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in text)


def check_messages(value: Any, roles: Sequence[str] = ROLES) -> str | list[dict[str, str]]:
    """The messages of a chat record ([{role, content}], contents normalised later), or the kind of problem
    (a key of KINDS)."""
    if not isinstance(value, dict):
        return "invalid_json"
    messages = value.get("messages")
    if not isinstance(messages, list):
        return "missing_fields"
    if not messages:
        return "empty_conversation"
    out = []
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or "content" not in m:
            return "missing_fields"
        if m["role"] not in roles:
            return "unknown_role"
        if not isinstance(m["content"], str):
            return "non_string_content"
        if _has_surrogate(m["content"]):
            return "invalid_text"
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        return "no_assistant_turn"
    return out


def check_prompt_completion(value: Any) -> str | tuple[str, str]:
    """(prompt, completion) of a prompt/completion record, or the kind of problem (a key of KINDS)."""
    if not isinstance(value, dict):
        return "invalid_json"
    if "prompt" not in value or "completion" not in value:
        return "missing_fields"
    prompt, completion = value["prompt"], value["completion"]
    if not isinstance(prompt, str) or not isinstance(completion, str):
        return "non_string_content"
    if _has_surrogate(prompt) or _has_surrogate(completion):
        return "invalid_text"
    if not completion:
        return "no_assistant_turn"
    return prompt, completion


# --- rendering ------------------------------------------------------------------------------------------


class TemplateNotIncremental(FoundryError):
    """The chat template renders a conversation's earlier turns differently once later turns follow."""


TRAIN_WITHOUT_TEMPLATE = (
    "Chat data cannot be rendered for it: fine-tune on data.format: prompt_completion or text, or use a "
    "model whose tokenizer has a chat template (an instruct checkpoint)."
)


def chat_template_for(
    tokenizer: PreTrainedTokenizerBase | None,
    family: HFFamily | None,
    name: str = "This model",
    hint: str = TRAIN_WITHOUT_TEMPLATE,
) -> str:
    """The Jinja chat template of a model: its tokenizer's own, else its family's fallback (ChatML for Qwen).

    The one place this rule lives: the tokenize stage calls it with the tokenizer and spec it has, generation
    (`generation.chat.chat_template`) with a loaded adapter's; `tokenizer` None stands for a tokenizer
    still to be trained (which ships no template), so the check comes before that work. Raises FoundryError
    with `hint` when there is neither."""
    own = tokenizer.chat_template if tokenizer is not None else None
    template = own or (family.chat_template if family is not None else None)
    if not template:
        raise FoundryError(
            f"{name} has no chat template (its tokenizer ships none and its family has no fallback).", hint
        )
    return str(template)


def end_of_turn_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """The ids that can end an assistant turn: the tokenizer's special tokens (added special tokens and
    eos/pad/...), i.e. ids no user text can produce (`data.encoding`)."""
    return set(text_encoder(tokenizer).special_ids)


def render_chat(
    tokenizer: PreTrainedTokenizerBase,
    messages: list[dict[str, Any]],
    template: str,
    end_ids: set[int] | None = None,
) -> tuple[list[int], list[int]]:
    """(ids, loss_mask) of a conversation: mask 1 on each assistant content's ids and the end-of-turn token
    the template puts right after it (the first of `end_ids`, default `end_of_turn_ids`), 0 elsewhere.

    Contents are encoded as data (special-token strings in them are text). Raises TemplateNotIncremental
    when the renderings before/after an assistant turn and of the whole conversation are not prefixes of each
    other (or the template changes the content), FoundryError when the template fails or emits no special
    token after an assistant content (the model could not learn to end its turn).
    """
    end_ids = end_of_turn_ids(tokenizer) if end_ids is None else end_ids
    encoder = text_encoder(tokenizer)
    full = encode_chat(tokenizer, messages, template, add_generation_prompt=False)
    mask = [0] * len(full)
    for i, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        before = encode_chat(tokenizer, messages[:i], template, add_generation_prompt=True)
        after = encode_chat(tokenizer, messages[: i + 1], template, add_generation_prompt=False)
        content = encoder.encode(message["content"])
        start, stop = len(before), len(before) + len(content)
        if after[:start] != before or full[: len(after)] != after or after[start:stop] != content:
            raise TemplateNotIncremental(
                f"The chat template is not prefix-consistent at message {i + 1} (assistant): rendering the "
                "conversation up to that turn and the whole conversation give different ids for the same "
                "turns.",
                "Use a template that renders each turn the same whatever follows (ChatML does), e.g. set the "
                "tokenizer's chat_template, or train on data.format: prompt_completion.",
            )
        end = next((k for k in range(stop, len(after)) if after[k] in end_ids), None)
        if end is None:
            raise FoundryError(
                f"The chat template emits no special end-of-turn token after the assistant's content "
                f"(message {i + 1}): the model could not learn to end its turn.",
                "Use a template that closes each turn with a special token (ChatML's <|im_end|>).",
            )
        mask[start : end + 1] = [1] * (end + 1 - start)
    return full, mask


def render_prompt_completion(
    tokenizer: PreTrainedTokenizerBase, prompt: str, completion: str
) -> tuple[list[int], list[int]]:
    """(ids, loss_mask) = prompt ids (mask 0) + completion ids + eos (mask 1); texts encoded as data.

    Raises FoundryError when the tokenizer has no eos token.
    """
    eos = tokenizer.eos_token_id
    if not isinstance(eos, int):
        raise FoundryError(
            "prompt/completion data needs an eos token to end each completion, and this tokenizer has none.",
            "Use a tokenizer with an eos token.",
        )
    encoder = text_encoder(tokenizer)
    p = encoder.encode(prompt) if prompt else []
    c = encoder.encode(completion)
    return [*p, *c, eos], [0] * len(p) + [1] * (len(c) + 1)


def _limit(
    ids: list[int], mask: list[int], limit: int | None, overlong: Overlong
) -> tuple[list[int], list[int]] | None | Literal[False]:
    """(ids, mask) within `limit` tokens; False: not over the limit; None: to drop (per `overlong`, or nothing
    trained left after the cut; the first token is never a target)."""
    if limit is None or len(ids) <= limit:
        return False
    if overlong == "drop":
        return None
    ids, mask = ids[:limit], mask[:limit]
    return (ids, mask) if any(mask[1:]) else None


def prepare_examples(
    tokenizer: PreTrainedTokenizerBase,
    records: Sequence[JsonlRecord],
    settings: ChatDataSettings,
    template: str | None = None,
    source: str = "the data",
    stats: ChatStats | None = None,
) -> tuple[list[ChatExample], ChatStats]:
    """Validate and render records (chat or prompt_completion) into examples, counting every bad one.

    `template`: the chat template (`chat_template_for`), needed for chat records. Raises FoundryError for the
    text format (not handled here), a chat format without a template, and when no record is usable (naming
    `source` and the counts per kind).
    """
    fmt = detect_format(records, source) if settings.format == "auto" else settings.format
    stats = stats if stats is not None else ChatStats(source=source)
    stats.format = fmt
    if fmt == "text":
        raise FoundryError(
            f"{source} holds plain-text records ({{'text': ...}}), not chat or prompt/completion records.",
            "Set data.format: text to train on it as plain text.",
        )
    if fmt == "chat" and not template:
        raise FoundryError(
            f"{source} is chat data, but no chat template was given.", "See chat_template_for."
        )
    end_ids = end_of_turn_ids(tokenizer)
    examples = []
    for rec in records:
        stats.records += 1
        if rec.error is not None:
            stats.count("invalid_json", rec.line, rec.error)
            continue
        if fmt == "chat":
            checked = check_messages(rec.value, settings.roles)
            if isinstance(checked, str):
                stats.count(checked, rec.line)
                continue
            messages = [{**m, "content": normalise_text(m["content"], stats.normalisation)} for m in checked]
            try:
                ids, mask = render_chat(tokenizer, messages, str(template), end_ids)
            except TemplateNotIncremental as e:
                stats.count("template_not_incremental", rec.line, e.message)
                continue
            except FoundryError as e:
                stats.count("template_error", rec.line, e.message)
                continue
        else:
            pc = check_prompt_completion(rec.value)
            if isinstance(pc, str):
                stats.count(pc, rec.line)
                continue
            prompt, completion = (normalise_text(t, stats.normalisation) for t in pc)
            ids, mask = render_prompt_completion(tokenizer, prompt, completion)
        limited = _limit(ids, mask, settings.max_seq_len, settings.overlong)
        if limited is not False:
            stats.count("overlong", rec.line)
            if limited is None:
                continue
            ids, mask = limited
            stats.truncated += 1
        examples.append(ChatExample(ids, mask, rec.line, truncated=limited is not False))
        stats.usable += 1
        stats.tokens += len(ids)
        stats.trained_tokens += sum(mask)
    if not examples:
        raise no_usable_records(stats)
    return examples, stats


def no_usable_records(stats: ChatStats) -> FoundryError:
    """The error for a file none of whose records can be trained on, with the counts per kind."""
    counts = ", ".join(f"{n} {kind}" for kind, n in sorted(stats.counts.items())) or "no records"
    reasons = "".join(f" {kind}: {why}" for kind, why in sorted(stats.reasons.items()))
    return FoundryError(
        f"{stats.source} has no usable {stats.format} record ({stats.records} records: {counts}).{reasons}",
        "Fix the records (see the kinds above and KINDS in data/chat_data.py), or raise max_seq_len / set "
        "overlong: truncate for over-long ones.",
    )


def load_chat_file(
    path: Path,
    tokenizer: PreTrainedTokenizerBase,
    settings: ChatDataSettings,
    template: str | None = None,
) -> tuple[list[ChatExample], ChatStats]:
    """Read, detect, validate and render one JSONL file (see `prepare_examples`, `read_jsonl`)."""
    stats = ChatStats(source=str(path))
    records = read_jsonl(path, stats.normalisation)
    return prepare_examples(tokenizer, records, settings, template, str(path), stats)


# --- packing and the files on disk ----------------------------------------------------------------------


def pack(
    examples: Sequence[ChatExample],
    block_size: int,
    pad_id: int,
    overlong: Overlong = "truncate",
    stats: ChatStats | None = None,
    dtype: npt.DTypeLike = np.uint32,
) -> tuple[np.ndarray, np.ndarray]:
    """Pack examples into windows of `block_size + 1` tokens: ids (n, block_size + 1) of `dtype` and
    mask (n, block_size + 1) uint8 (1 = trained target).

    Each example goes whole into the first of the last OPEN_WINDOWS windows with room for it, else into a new
    window: it is never split (deterministic; in input order within a window). An example longer than the
    window is cut to it or dropped per `overlong` (counted in `stats` as "overlong"; dropped when nothing
    trained is left). Window tails are `pad_id` with mask 0. Raises FoundryError when no
    example is left.
    """
    window = block_size + 1
    rows: list[tuple[list[int], list[int]]] = []
    for ex in examples:
        limited = _limit(ex.ids, ex.mask, window, overlong)
        ex_ids, ex_mask = (ex.ids, ex.mask) if limited is False else limited or ([], [])
        if limited is not False and stats is not None:
            if not ex.truncated:  # counted once per record
                stats.count("overlong", ex.line)
            if limited is None:
                stats.usable -= 1
                stats.truncated -= ex.truncated
            elif not ex.truncated:
                stats.truncated += 1
        if not ex_ids:
            continue
        # first fit among the most recent windows (bounded: linear time), else a new window
        target = next(
            (
                r
                for r in range(max(0, len(rows) - OPEN_WINDOWS), len(rows))
                if len(rows[r][0]) + len(ex_ids) <= window
            ),
            None,
        )
        if target is None:
            rows.append(([], []))
            target = len(rows) - 1
        rows[target][0].extend(ex_ids)
        rows[target][1].extend(ex_mask)
    if not rows:
        raise no_usable_records(stats) if stats is not None else FoundryError("No example fits the window.")
    out_ids = np.full((len(rows), window), pad_id, dtype=dtype)
    out_mask = np.zeros((len(rows), window), dtype=np.uint8)
    for r, (row_ids, row_mask) in enumerate(rows):
        out_ids[r, : len(row_ids)] = row_ids
        out_mask[r, : len(row_mask)] = row_mask
    if stats is not None:
        stats.windows += len(rows)
        stats.padding_tokens += int(out_ids.size - sum(len(i) for i, _ in rows))
    return out_ids, out_mask


def mask_path(folder: Path, split: str) -> Path:
    return folder / f"{split}.mask.bin"


def write_packed(folder: Path, split: str, ids: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
    """Write `<split>.bin` (ids) and `<split>.mask.bin` (uint8) into `folder` (the stage's temp output
    folder, made atomic by the caller) and return the meta.json entries (see `packed_meta`)."""
    if ids.shape != mask.shape or ids.ndim != 2:
        raise ValueError(f"ids {ids.shape} and mask {mask.shape} must be the same (windows, window) shape")
    ids.tofile(folder / f"{split}.bin")
    mask.astype(np.uint8).tofile(mask_path(folder, split))
    return packed_meta(ids.shape[1], {split: ids.shape[0]}, ids.dtype)


def packed_meta(window: int, windows: dict[str, int], dtype: npt.DTypeLike) -> dict[str, Any]:
    """meta.json entries of packed windows: layout, window length, windows per split, ids dtype."""
    return {"layout": "windows", "window": window, "windows": windows, "dtype": np.dtype(dtype).name}


@dataclass
class PackedWindows:
    """Packed windows of one split, memory-mapped: ids and mask, each (n_windows, window)."""

    ids: np.ndarray
    mask: np.ndarray

    @classmethod
    def open(cls, folder: Path, split: str, meta: dict[str, Any]) -> PackedWindows:
        """The windows written by `write_packed`, read with meta.json's `dtype` and `window`.

        Raises FoundryError when the files are missing or their sizes do not match meta.json.
        """
        window, n = int(meta["window"]), int(meta["windows"][split])
        paths = (folder / f"{split}.bin", mask_path(folder, split))
        dtypes = (np.dtype(meta["dtype"]), np.dtype(np.uint8))
        arrays = []
        for path, dtype in zip(paths, dtypes, strict=True):
            if not path.is_file() or path.stat().st_size != n * window * dtype.itemsize:
                raise FoundryError(
                    f"{path} is missing or does not hold {n} windows of {window} {dtype.name} values.",
                    "Run the tokenize stage again (dvc repro).",
                )
            arrays.append(np.memmap(path, dtype=dtype, mode="r", shape=(n, window)))
        return cls(arrays[0], arrays[1])

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    def draw(self, batch_size: int, generator: torch.Generator | None) -> torch.Tensor:
        """(batch_size, window) int64 windows at seeded random indices, in the masked collator's encoding:
        the id where the mask is 1, `~id` (= -id - 1, negative) where it is 0 (see `join_windows`)."""
        import torch

        rows = torch.randint(len(self), (batch_size,), generator=generator).numpy()
        return join_windows(self.ids[rows], self.mask[rows])


def join_windows(ids: np.ndarray, mask: np.ndarray) -> torch.Tensor:
    """ids and mask (B, L) → one int64 tensor: id where mask is 1, `~id` (negative) where it is 0.

    One tensor keeps the Collator protocol (windows in, (inputs, labels) out); `chat_collator.
    MaskedCausalCollator` splits it again.
    """
    import torch

    joined = np.where(mask.astype(bool), ids.astype(np.int64), ~ids.astype(np.int64))
    return torch.from_numpy(np.ascontiguousarray(joined))
