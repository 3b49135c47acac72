"""Causal-LM metrics over the whole validation split (capped), each target token scored exactly once.

Perplexity depends on the tokenizer; bits per byte does not, so it compares models across tokenizers. The
unigram baseline (token frequencies of the train split) says what a model that ignores context would score.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from model_foundry.adapters.base import BaseAdapter
from model_foundry.data.tokens import sequential_windows
from model_foundry.evaluation.finite import safe_exp
from model_foundry.training.device import Runtime


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
    """Cross-entropy of the add-one-smoothed train token frequencies on the validation tokens."""
    counts = np.bincount(np.asarray(train, dtype=np.int64), minlength=vocab_size).astype(np.float64) + 1.0
    logp = np.log(counts / counts.sum())
    loss = float(-logp[np.asarray(val, dtype=np.int64)].mean())
    return {
        "val_loss": loss,
        "perplexity": math.exp(loss),
        "bits_per_byte": loss / (math.log(2) * bytes_per_token),
    }
