"""Token ids on disk as flat uint16/uint32 arrays (np.memmap), and seeded batches drawn from them.

Documents are packed into one stream, separated by the tokenizer's separator token (eos or [SEP]), so
causal training wastes nothing on padding.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

from model_foundry.data.encoding import CHUNK_CHARS, EncodingStats, text_encoder
from model_foundry.errors import FoundryError

if TYPE_CHECKING:  # torch and transformers only when a function needs them
    import torch
    from tokenizers import Tokenizer
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from model_foundry.data.chat_data import PackedWindows

META_NAME = "meta.json"
TOKENIZER_DIR = "tokenizer"


def dtype_for(vocab_size: int) -> np.dtype:
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def encode_documents(
    tokenizer: PreTrainedTokenizerBase | Tokenizer,
    docs: list[str],
    separator_id: int,
    path: Path,
    dtype: np.dtype,
    stats: EncodingStats | None = None,
) -> int:
    """Encode and write the packed stream `doc0 SEP doc1 SEP ...`; returns the token count.

    Documents are encoded as data (see `data.encoding`): whole, with no special tokens but the separator the
    code puts between them. What encoding did to the text is added into `stats` when given. Short documents
    are encoded in batches, a long one piece by piece, each piece written as it comes: memory follows the
    piece size (CHUNK_CHARS), not the longest document.
    """
    encoder = text_encoder(tokenizer)
    n = 0
    with open(path, "wb") as f:

        def write(ids: list[int]) -> None:
            nonlocal n
            arr = np.asarray(ids, dtype=dtype)
            f.write(arr.tobytes())
            n += arr.size

        batch: list[str] = []

        def flush() -> None:
            for ids in encoder.encode_batch(batch, stats):
                write([*ids, separator_id])
            batch.clear()

        for doc in docs:
            if len(doc) > CHUNK_CHARS:
                flush()
                for ids in encoder.encode_pieces(doc, stats):
                    write(ids)
                write([separator_id])
            else:
                batch.append(doc)
                if len(batch) == 256:
                    flush()
        flush()
    return n


class WindowSource(Protocol):
    """Where training and validation windows come from: `draw(batch_size, length, generator)` → (batch_size,
    length) int64 windows at seeded random places (the collator turns them into inputs and labels)."""

    def draw(self, batch_size: int, length: int, generator: torch.Generator | None) -> torch.Tensor: ...


@dataclass
class TokenStream:
    """Packed plain text: one flat array of token ids; windows start anywhere (`random_windows`)."""

    tokens: np.ndarray

    def draw(self, batch_size: int, length: int, generator: torch.Generator | None) -> torch.Tensor:
        return random_windows(self.tokens, batch_size, length, generator)


@dataclass
class PackedSource:
    """Packed chat windows as a `WindowSource`: whole windows at seeded random indices, in the joined
    ids/mask encoding `chat_collator.MaskedCausalCollator` reads."""

    windows: PackedWindows

    def draw(self, batch_size: int, length: int, generator: torch.Generator | None) -> torch.Tensor:
        """(batch_size, length) int64; FoundryError when `length` is not the packed window (train.block_size
        changed since the tokenize stage packed the data)."""
        window = int(self.windows.ids.shape[1])
        if length != window:
            raise FoundryError(
                f"The chat data is packed into windows of {window} tokens (block_size {window - 1}), but "
                f"training asks for windows of {length} (block_size {length - 1}).",
                "Run the tokenize stage again after changing train.block_size (dvc repro does).",
            )
        return self.windows.draw(batch_size, generator)


def as_source(data: WindowSource | np.ndarray) -> WindowSource:
    """A flat token array becomes a `TokenStream`; a source is returned as it is."""
    return TokenStream(data) if isinstance(data, np.ndarray) else data


@dataclass
class TokenizedData:
    """The tokenize stage's output folder: train.bin, val.bin, meta.json and tokenizer/."""

    root: Path
    meta: dict[str, Any]

    @classmethod
    def open(cls, root: str | Path) -> TokenizedData:
        root = Path(root)
        if not (root / META_NAME).is_file():
            raise FoundryError(
                f"{root} holds no tokenized data ({META_NAME} missing).", "Run the tokenize stage first."
            )
        return cls(root, json.loads((root / META_NAME).read_text()))

    def tokens(self, split: str) -> np.ndarray:
        return np.memmap(self.root / f"{split}.bin", dtype=np.dtype(self.meta["dtype"]), mode="r")

    @property
    def packed(self) -> bool:
        """Whether the splits are packed chat/prompt-completion windows with loss masks (`data.chat_data`)."""
        return self.meta.get("layout") == "windows"

    def packed_windows(self, split: str) -> PackedWindows:
        """The packed windows of `split` (ids and mask, each (n, window)); FoundryError for plain text."""
        from model_foundry.data.chat_data import PackedWindows

        if not self.packed:
            raise FoundryError(f"{self.root} holds plain text, not packed windows.", "Use tokens(split).")
        return PackedWindows.open(self.root, split, self.meta)

    def windows(self, split: str) -> WindowSource:
        """The training windows of `split` ("train" or "val"): a `TokenStream` over plain text, or a
        `PackedSource` over packed chat windows (ids and loss mask joined: `chat_data.join_windows`)."""
        if self.packed:
            return PackedSource(self.packed_windows(split))
        return TokenStream(self.tokens(split))

    def check_objective(self, objective: str) -> None:
        """Raise FoundryError when this data cannot train `objective` (packed chat data is causal only)."""
        if self.packed and objective != "causal_lm":
            raise FoundryError(
                f"{self.root} holds {self.meta.get('format', 'chat')} data, which trains causal language "
                f"models (loss on the assistant's tokens), but the objective is {objective}.",
                "Set train.objective: causal_lm (a causal model), or train masked_lm on plain text "
                "(data.format: text).",
            )

    def collator(self, objective: str, tokenizer: PreTrainedTokenizerBase, mlm_probability: float) -> Any:
        """The collator that turns this data's windows into (inputs, labels) for `objective`: the objective's
        own for plain text (`collators.make_collator`), `MaskedCausalCollator` (loss on the trained tokens
        only) for packed chat data. Raises FoundryError for masked_lm on chat data."""
        self.check_objective(objective)
        if self.packed:
            from model_foundry.data.chat_collator import MaskedCausalCollator

            return MaskedCausalCollator()
        from model_foundry.data.collators import make_collator

        return make_collator(objective, tokenizer, mlm_probability)

    @property
    def tokenizer_dir(self) -> Path:
        return self.root / TOKENIZER_DIR

    @property
    def vocab_size(self) -> int:
        return int(self.meta["vocab_size"])


def random_windows(
    tokens: np.ndarray, batch_size: int, length: int, generator: torch.Generator | None
) -> torch.Tensor:
    """(batch_size, length) int64 tensor of windows at seeded random offsets."""
    import torch

    if len(tokens) <= length:
        raise FoundryError(
            f"The split has {len(tokens)} tokens, too few for windows of {length}.",
            "Lower train.block_size or add more text.",
        )
    starts = torch.randint(len(tokens) - length, (batch_size,), generator=generator).numpy()
    idx = starts[:, None] + np.arange(length)[None, :]  # (B, length)
    return torch.from_numpy(tokens[idx].astype(np.int64))


def sequential_windows(
    tokens: np.ndarray, batch_size: int, length: int, max_batches: int
) -> Iterator[torch.Tensor]:
    """Windows (at most batch_size, length) int64 from the start, for evaluation: consecutive windows share
    one token, so every target is scored exactly once; at most `max_batches` batches."""
    import torch

    n_windows = (
        min((len(tokens) - 1) // (length - 1), batch_size * max_batches) if len(tokens) > length else 0
    )
    if n_windows == 0:
        raise FoundryError(
            f"The validation split has {len(tokens)} tokens, too few for one window of {length}.",
            "Raise data.val_fraction, add text, or lower train.block_size.",
        )
    stride = length - 1  # windows share one token so that every target is predicted exactly once
    for b in range(0, n_windows, batch_size):
        rows = [tokens[i * stride : i * stride + length] for i in range(b, min(b + batch_size, n_windows))]
        yield torch.from_numpy(np.stack(rows).astype(np.int64))
