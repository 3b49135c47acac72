"""Causal-LM metrics over the whole validation split (capped), each target token scored exactly once.

Units: the loss is the mean cross-entropy in nats per predicted token; perplexity = exp(loss); bits per
byte = loss × tokens / bytes / ln 2, with the bytes of UTF-8 text the split's tokens encode (so
bytes_per_token = split bytes / split tokens). Perplexity depends on the tokenizer; bits per byte does not,
so it compares models across tokenizers (the measure of Gao et al., "The Pile", 2020,
https://arxiv.org/abs/2101.00027). The unigram baseline (token frequencies of the train split) says what a
model that ignores context would score.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from model_foundry.adapters.base import BaseAdapter
from model_foundry.data.tokens import sequential_windows
from model_foundry.evaluation.finite import safe_exp
from model_foundry.training.device import Runtime

if TYPE_CHECKING:
    from model_foundry.data.chat_data import PackedWindows


@torch.no_grad()
def causal_metrics(
    adapter: BaseAdapter,
    tokens: np.ndarray,
    block_size: int,
    batch_size: int,
    max_batches: int,
    runtime: Runtime,
    bytes_per_token: float,
) -> dict[str, float]:
    """Next-token loss of `adapter` on consecutive windows of the (N,) token stream `tokens`.

    Windows of block_size + 1 tokens (inputs block_size, targets shifted by one), consecutive windows sharing
    one token so that every target is predicted once, batch_size windows a batch, at most max_batches
    batches (`data.tokens.sequential_windows`), under `runtime`'s device and autocast. The model is left in
    eval mode. Returns:
      val_loss:      mean cross-entropy, nats per predicted token (summed in fp32);
      perplexity:    exp(val_loss) (inf when it overflows: `finite.safe_exp`);
      bits_per_byte: val_loss / (ln 2 × bytes_per_token), bytes_per_token the UTF-8 bytes per token of the
                     whole split (the scored windows are assumed to have the split's average);
      tokens_scored: number of predicted tokens (an int).
    Raises FoundryError when `tokens` is too short for one window.
    """
    adapter.model.eval()
    total_nats, n_targets = 0.0, 0
    for windows in sequential_windows(tokens, batch_size, block_size + 1, max_batches):
        x, y = windows[:, :-1].to(runtime.device), windows[:, 1:].to(runtime.device)
        with runtime.autocast():
            logits = adapter.logits(x)
        total_nats += F.cross_entropy(logits.float().flatten(0, 1), y.flatten(), reduction="sum").item()
        n_targets += y.numel()
    loss = total_nats / n_targets
    return {
        "val_loss": loss,
        "perplexity": safe_exp(loss),
        "bits_per_byte": loss / (math.log(2) * bytes_per_token),
        "tokens_scored": n_targets,
    }


def unigram_baseline(
    train: np.ndarray, val: np.ndarray, vocab_size: int, bytes_per_token: float
) -> dict[str, float]:
    """Cross-entropy of the add-one-smoothed train token frequencies on all the validation tokens.

    p(t) = (count of t in `train` + 1) / (len(train) + vocab_size) (Laplace smoothing, so no validation
    token has probability 0). Returns val_loss (mean nats per validation token), perplexity (exp(val_loss))
    and bits_per_byte (val_loss / (ln 2 × bytes_per_token)), as `causal_metrics` does for a model.
    """
    counts = np.bincount(np.asarray(train, dtype=np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    loss = float(-logp[np.asarray(val, dtype=np.int64)].mean())
    return {
        "val_loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": loss / (math.log(2) * bytes_per_token),
    }


@torch.no_grad()
def packed_causal_metrics(
    adapter: BaseAdapter, windows: PackedWindows, batch_size: int, max_batches: int, runtime: Runtime
) -> dict[str, float | int | str]:
    """Next-token loss of `adapter` on the trained (assistant/completion) tokens of packed chat windows.

    The windows (n, L) are scored in order, batch_size a batch, at most max_batches batches: inputs [:-1],
    targets [1:] where the target's loss mask is 1 (`chat_collator.MaskedCausalCollator`), so prompts, user
    turns, template markup and padding are not scored. Returns val_loss (mean nats per trained target,
    summed in fp32), perplexity (exp(val_loss); inf when it overflows), tokens_scored, windows_scored and a
    note. No bits per byte: the scored tokens are not a contiguous text. Raises FoundryError when no
    trained target is scored (nothing to average).
    """
    from model_foundry.data.chat_collator import MaskedCausalCollator
    from model_foundry.data.chat_data import join_windows
    from model_foundry.data.collators import IGNORE_INDEX
    from model_foundry.errors import FoundryError

    adapter.model.eval()
    collate = MaskedCausalCollator()
    n = min(len(windows), batch_size * max_batches)
    total_nats, n_targets = 0.0, 0
    for start in range(0, n, batch_size):
        rows = slice(start, min(start + batch_size, n))
        x, y = collate(join_windows(windows.ids[rows], windows.mask[rows]))
        x, y = x.to(runtime.device), y.to(runtime.device)
        with runtime.autocast():
            logits = adapter.logits(x)
        nats = F.cross_entropy(
            logits.float().flatten(0, 1), y.flatten(), ignore_index=IGNORE_INDEX, reduction="sum"
        )
        total_nats += nats.item()
        n_targets += int((y != IGNORE_INDEX).sum().item())
    if n_targets == 0:
        raise FoundryError(
            f"The validation windows hold no trained (assistant) token to score ({n} windows).",
            "Check the tokenize stage's report: the validation split needs usable records.",
        )
    loss = total_nats / n_targets
    return {
        "val_loss": loss,
        "perplexity": safe_exp(loss),
        "tokens_scored": n_targets,
        "windows_scored": n,
        "note": ASSISTANT_NOTE,
    }


ASSISTANT_NOTE = (
    "chat/prompt_completion data: loss and perplexity over the trained (assistant/completion) tokens only; "
    "no bits per byte"
)


def trained_targets(windows: PackedWindows) -> np.ndarray:
    """The ids of the trained targets of packed windows (mask 1, first column excluded: never predicted)."""
    return np.asarray(windows.ids[:, 1:][np.asarray(windows.mask[:, 1:], dtype=bool)], dtype=np.int64)


def masked_unigram_baseline(train: PackedWindows, val: PackedWindows, vocab_size: int) -> dict[str, float]:
    """`unigram_baseline` over the trained targets only: add-one-smoothed frequencies of the train split's
    trained tokens, scored on the validation split's trained targets. Returns val_loss (nats per token) and
    perplexity; no bits per byte."""
    counts = np.bincount(trained_targets(train), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    loss = float(-logp[trained_targets(val)].mean())
    return {"val_loss": loss, "perplexity": safe_exp(loss)}
