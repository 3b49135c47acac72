"""The generation loop over the adapter contract: prefill the prompt, then decode one token at a time.

Every causal adapter has `prefill(ids) -> (logits, state)` and `decode(ids, state) -> (logits, state)`
(`adapters/base.py`; a KV cache for GPT and the Hub families, the hidden state for RNNs), so this loop is the
same for all of them. `stream_tokens` yields one column of tokens per step and leaves stopping to its caller:
`generate` stops on stop tokens and max_new_tokens; a streaming or batching server can drive it the same way.
Shape after gpt-fast's `generate.py` and nanochat's `engine.py`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import torch

from model_foundry.errors import FoundryError
from model_foundry.generation.sampling import SamplingParams, sample

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter

FinishReason = Literal["stop", "length"]  # a stop token was generated | max_new_tokens were generated


@dataclass(frozen=True)
class Generation:
    """What `generate` made, per row of the prompt batch.

    tokens:         the new token ids (not the prompt); the stop token is the last one when a row stopped.
    finish_reasons: "stop" (the row generated one of the stop tokens) or "length" (max_new_tokens reached).
    """

    tokens: list[list[int]]
    finish_reasons: list[FinishReason]


def require_causal(adapter: BaseAdapter) -> None:
    """FoundryError unless the adapter's architecture is a causal LM (masked LMs fill masks, not continue)."""
    if "causal_lm" not in adapter.spec.objectives:
        raise FoundryError(
            f"{adapter.spec.name} is a masked LM: it fills in masks and cannot continue a prompt.",
            "Use a causal model (gpt, lstm, gru, rnn, or a causal Hub family such as hf-qwen2) to generate.",
        )


@contextmanager
def inference(adapter: BaseAdapter) -> Iterator[None]:
    """Eval mode (no dropout) and no autograd while generating; the model's train/eval mode is restored."""
    was_training = adapter.model.training
    adapter.model.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        adapter.model.train(was_training)


def decodable_ids(adapter: BaseAdapter, vocab_size: int) -> int:
    """How many of the model's `vocab_size` output ids the tokenizer can decode: a model whose embedding was
    padded past its tokenizer (`vocab_size` larger than the tokenizer, as nanoGPT pads to 50304) never samples
    a padding row. Hub checkpoints that pad their vocabulary (Qwen2.5: 151,936 rows, 151,665 tokens) are
    treated the same way."""
    tokenizer = adapter.tokenizer
    return min(vocab_size, len(tokenizer)) if tokenizer is not None else vocab_size


def stream_tokens(
    adapter: BaseAdapter,
    input_ids: torch.Tensor,
    params: SamplingParams,
    generator: torch.Generator | None = None,
) -> Iterator[torch.Tensor]:
    """Yield the next token of every row, (B,) int64, step after step, for as long as the caller asks.

    input_ids: (B, T) int64 prompt, T ≥ 1, on the model's device. Run it inside `inference(adapter)`.
    The repetition penalty (if any) counts the whole prompt and every token yielded so far.
    The next step's decode runs only when the next token is asked for, so stopping costs nothing.
    Raises FoundryError when the model gives non-finite logits.
    """
    logits, state = adapter.prefill(input_ids)  # (B, T, V)
    usable = decodable_ids(adapter, logits.size(-1))
    seen = input_ids if params.penalised else None  # (B, T + steps): what the repetition penalty lowers
    while True:
        token = sample(logits[:, -1, :usable], params, generator, seen)  # (B,)
        yield token
        if seen is not None:
            seen = torch.cat([seen, token[:, None]], dim=1)
        logits, state = adapter.decode(token[:, None], state)  # (B, 1, V)


def generate(
    adapter: BaseAdapter,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    params: SamplingParams | None = None,
    stop_token_ids: Collection[int] = (),
    generator: torch.Generator | None = None,
) -> Generation:
    """Continue each row of a (B, T) int64 prompt by up to max_new_tokens tokens.

    A row stops at the first of `stop_token_ids` it generates (kept as its last token); the loop ends when
    every row has stopped or max_new_tokens steps were taken. `params` None samples at temperature 1 from
    all tokens; `generator` (on the model's device) makes sampling reproducible.
    Raises FoundryError for a masked LM, an empty prompt or non-finite logits.
    """
    require_causal(adapter)
    if input_ids.ndim != 2 or input_ids.size(1) == 0:
        raise FoundryError("The prompt has no tokens: generation needs at least one to start from.")
    rows = input_ids.size(0)
    tokens: list[list[int]] = [[] for _ in range(rows)]
    reasons: list[FinishReason | None] = [None] * rows
    stop = set(stop_token_ids)
    if max_new_tokens <= 0:
        return Generation(tokens, ["length"] * rows)
    with inference(adapter):
        steps = stream_tokens(adapter, input_ids, params or SamplingParams(), generator)
        for step, column in enumerate(steps):
            for row, token in enumerate(column.tolist()):
                if reasons[row] is None:  # rows that stopped are still decoded (in the batch), not kept
                    tokens[row].append(token)
                    if token in stop:
                        reasons[row] = "stop"
            if all(reasons) or step + 1 == max_new_tokens:
                break
    return Generation(tokens, [reason or "length" for reason in reasons])


def continue_text(
    adapter: BaseAdapter,
    prompt: str,
    max_new_tokens: int,
    params: SamplingParams | None = None,
    seed: int = 0,
) -> str:
    """The prompt and its continuation as text (special tokens left out), sampled reproducibly from `seed`.

    Stops at the model's stop tokens (`chat.stop_token_ids`). Raises FoundryError as `generate` does, and
    when the model has no tokenizer.
    """
    from model_foundry.generation.chat import prompt_ids, require_tokenizer, stop_token_ids

    tok = require_tokenizer(adapter)
    ids = prompt_ids(adapter, prompt)
    device = adapter.device
    result = generate(
        adapter,
        torch.tensor([ids], device=device),
        max_new_tokens,
        params,
        stop_token_ids(adapter),
        torch.Generator(device).manual_seed(seed),
    )
    return str(tok.decode(ids + result.tokens[0], skip_special_tokens=True))
