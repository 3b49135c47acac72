"""Masked-LM metrics: MLM loss and masked-token accuracy over the validation split (capped), and
pseudo-perplexity on a few sequences.

The MLM numbers depend on which tokens get masked, so masking uses its own fixed seed: the same model and
data always give the same metrics. Pseudo-perplexity (Salazar et al., "Masked Language Model Scoring", ACL
2020, https://arxiv.org/abs/1910.14659) masks each position in turn and scores the true token from everything
else; it costs one sequence of compute per token, hence the cap (`evaluate.pseudo_ppl_sequences`). Special
tokens (separators) are neither masked nor scored. Losses are in nats per scored token.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from model_foundry.adapters.base import IGNORE_INDEX, BaseAdapter
from model_foundry.data.collators import MaskedCollator
from model_foundry.data.tokens import sequential_windows
from model_foundry.errors import FoundryError
from model_foundry.evaluation.finite import safe_exp
from model_foundry.training.device import Runtime

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

EVAL_SEED = 20240  # masking seed of evaluation, independent of train.seed


@torch.no_grad()
def mlm_metrics(
    adapter: BaseAdapter,
    tokens: np.ndarray,
    collator: MaskedCollator,
    block_size: int,
    batch_size: int,
    max_batches: int,
    runtime: Runtime,
    seed: int = EVAL_SEED,
) -> dict[str, float]:
    """Cross-entropy and top-1 accuracy on the masked positions of consecutive validation windows.

    `tokens` is the (N,) validation stream; windows of block_size tokens (consecutive, sharing one token;
    batch_size a batch, at most max_batches batches: `data.tokens.sequential_windows`) are masked by
    `collator` (BERT's 80/10/10 on `collator.probability` of the non-special tokens) with a generator seeded
    with `seed`, so the same model and data give the same numbers. Returns mlm_loss (mean nats per masked
    token, fp32), mlm_accuracy (fraction of masked tokens whose argmax is the original token) and
    masked_tokens (an int). Raises FoundryError when no token was masked or `tokens` is too short.
    """
    gen = torch.Generator().manual_seed(seed)
    total_nats, correct, n_masked = 0.0, 0, 0
    for windows in sequential_windows(tokens, batch_size, block_size, max_batches):
        x, y = collator(windows, gen)
        with runtime.autocast():
            logits = adapter.logits(x.to(runtime.device))  # (B, T, V)
        y = y.to(runtime.device)
        target = y != IGNORE_INDEX  # (B, T)
        picked = logits.float()[target]  # (N, V)
        total_nats += F.cross_entropy(picked, y[target], reduction="sum").item()
        correct += int((picked.argmax(-1) == y[target]).sum())
        n_masked += int(target.sum())
    if n_masked == 0:
        raise FoundryError(
            "No validation token was masked.", "Raise train.mlm_probability or evaluate.max_batches."
        )
    loss = total_nats / n_masked
    return {"mlm_loss": loss, "mlm_accuracy": correct / n_masked, "masked_tokens": n_masked}


@torch.no_grad()
def pseudo_perplexity(
    adapter: BaseAdapter,
    sequences: torch.Tensor,
    mask_token_id: int,
    special_ids: tuple[int, ...],
    batch_size: int,
    runtime: Runtime,
) -> dict[str, float]:
    """Pseudo-perplexity of (S, T) int64 `sequences`: exp(mean over scored tokens t of -log p(x_t | x with
    only t replaced by `mask_token_id`)), in nats before the exp.

    Every token not in `special_ids` is scored; the masked copies of one sequence run batch_size at a time
    (one forward per token in all). Returns pseudo_perplexity (inf when it overflows) and pseudo_ppl_tokens
    (the number of scored tokens). Raises FoundryError when no token could be scored.
    """
    total_nats, n_scored = 0.0, 0
    special = torch.tensor(special_ids, dtype=sequences.dtype)
    for seq in sequences:  # (T,)
        positions = torch.nonzero(~torch.isin(seq, special)).flatten()  # the tokens to score
        for chunk in positions.split(batch_size):
            rows = torch.arange(len(chunk))
            copies = seq.repeat(len(chunk), 1)  # (n, T): copy i has position chunk[i] masked
            copies[rows, chunk] = mask_token_id
            with runtime.autocast():
                logits = adapter.logits(copies.to(runtime.device))  # (n, T, V)
            logp = F.log_softmax(logits.float()[rows, chunk.to(logits.device)], dim=-1)  # (n, V)
            total_nats -= logp.gather(1, seq[chunk].to(logp.device)[:, None]).sum().item()
            n_scored += len(chunk)
    if n_scored == 0:
        raise FoundryError("Pseudo-perplexity found no token to score.", "Check the validation split.")
    return {"pseudo_perplexity": safe_exp(total_nats / n_scored), "pseudo_ppl_tokens": n_scored}


def masked_metrics(
    adapter: BaseAdapter,
    tokens: np.ndarray,
    tokenizer: PreTrainedTokenizerBase,
    block_size: int,
    batch_size: int,
    max_batches: int,
    mlm_probability: float,
    pseudo_ppl_sequences: int,
    runtime: Runtime,
    seed: int = EVAL_SEED,
) -> dict[str, float]:
    """All masked-LM metrics of the evaluate stage, in eval mode (the model's mode is restored after).

    `mlm_metrics` on up to max_batches batches of block_size windows of `tokens`, masked as in training
    (`tokenizer`'s mask and special tokens, mlm_probability), plus `pseudo_perplexity` on the first
    pseudo_ppl_sequences windows. Returns mlm_loss (nats per masked token), mlm_accuracy, masked_tokens,
    pseudo_perplexity, pseudo_ppl_tokens and pseudo_ppl_sequences. Raises FoundryError when the tokenizer
    has no mask token, the split is too short for one window, or nothing was masked or scored.
    """
    collator = MaskedCollator.for_tokenizer(tokenizer, mlm_probability)
    was_training = adapter.model.training
    adapter.model.eval()
    try:
        metrics = mlm_metrics(adapter, tokens, collator, block_size, batch_size, max_batches, runtime, seed)
        sequences = next(sequential_windows(tokens, pseudo_ppl_sequences, block_size, 1))  # (N, T)
        metrics.update(
            pseudo_perplexity(
                adapter, sequences, collator.mask_token_id, collator.special_ids, batch_size, runtime
            )
        )
        metrics["pseudo_ppl_sequences"] = len(sequences)
    finally:
        adapter.model.train(was_training)
    return metrics
