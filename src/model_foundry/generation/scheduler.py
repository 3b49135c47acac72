"""Continuous batching: requests join the running batch at the next decode step and leave when they finish.

    scheduler = Scheduler(engine, max_batch_size=8)
    scheduler.add(request_a, key="a")           # prefill now; the first token comes with the next step
    for key, delta in scheduler.step(): ...     # one token for every running request
    scheduler.add(request_b, key="b")           # joins the batch between two steps
    scheduler.cancel("a")                       # its row is freed at once

The scheduler owns the per-request side (`answer.Answer`: sampling settings, seeded generator, stop rules,
incremental text) and drives a decoder that owns the model side:

    LlamaDecoder   (generation/llama_decoder.py) the Llama-shaped Hub families: one batched forward per step
                   over a shared KV cache; rows of different lengths decode together.
    SerialDecoder  every other causal model, through the adapter contract's prefill/decode (the scratch gpt's
                   KV cache, the RNNs' hidden state, transformers' cache for GPT-2): each row keeps its own
                   state and a step decodes the rows one after another. Requests still interleave token by
                   token (a long answer does not hold up a short one), but the forward passes are not fused.

Which decoder a model gets is the family table's `decoder` column (adapters/hf/families.py), looked up in
`DECODERS` below; a LoRA model applied unmerged, or a request that would run past the context or a
sliding window, takes the serial path (whose adapter windows the sequence as `generate` does).

Greedy rows give exactly the tokens they give alone up to float rounding of batched matmuls (fp32: the same
tokens, tested); each sampled row draws from its own generator seeded with the request's seed.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Protocol

import torch

from model_foundry.errors import FoundryError
from model_foundry.generation.answer import Answer, Delta, Request, check_request
from model_foundry.generation.sampling import require_finite, sample

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter
    from model_foundry.generation.engine import Engine


class BatchDecoder(Protocol):
    """The model side of continuous batching: rows [0, used) hold sequences."""

    rows: int

    def fits(self, total: int) -> bool:
        """Whether a sequence of `total` tokens (prompt + new) decodes exactly."""
        ...

    def prefill(self, row: int, ids: list[int], total: int) -> torch.Tensor:
        """Read a prompt into the next free `row`; its next-token logits (V,)."""
        ...

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B,) next tokens of rows [0, B) → (B, V) logits."""
        ...

    def remove(self, row: int) -> None:
        """Free `row`; the last row moves into its place."""
        ...


class SerialDecoder:
    """Any causal adapter through its prefill/decode contract, one row at a time (see the module doc)."""

    def __init__(self, adapter: BaseAdapter, rows: int) -> None:
        self.adapter = adapter
        self.rows = rows
        self.states: list[Any] = []

    def fits(self, total: int) -> bool:
        return True  # the adapter windows a sequence past its context itself

    def prefill(self, row: int, ids: list[int], total: int) -> torch.Tensor:
        if row != len(self.states) or row >= self.rows:
            raise ValueError(f"row {row}: the next free row is {len(self.states)} (of {self.rows})")
        logits, state = self.adapter.prefill(torch.tensor([ids], device=self.adapter.device))  # (1, T, V)
        self.states.append(state)
        return logits[0, -1]

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        out = []
        for row, token in enumerate(tokens.tolist()):
            ids = torch.tensor([[token]], device=self.adapter.device)  # (1, 1)
            logits, self.states[row] = self.adapter.decode(ids, self.states[row])  # (1, 1, V)
            out.append(logits[0, -1])
        return torch.stack(out)  # (B, V)

    def remove(self, row: int) -> None:
        self.states[row] = self.states[-1]
        self.states.pop()


def _llama_decoder(adapter: BaseAdapter, rows: int) -> BatchDecoder:
    from model_foundry.generation.llama_decoder import LlamaDecoder

    return LlamaDecoder(adapter.model, rows)


# The family table's `decoder` column → the batched decoder that runs it.
DECODERS = {"llama": _llama_decoder}


def batched_decoder(adapter: BaseAdapter, rows: int) -> BatchDecoder | None:
    """The fused decoder of `adapter`'s family (None: there is none, or the model is wrapped by peft)."""
    from model_foundry.adapters.hf.causal import HFCausalAdapter

    if not isinstance(adapter, HFCausalAdapter) or adapter.family.decoder is None:
        return None
    if type(adapter.model).__name__ != adapter.family.model_class:  # e.g. a PeftModel (LoRA unmerged)
        return None
    try:
        return DECODERS[adapter.family.decoder](adapter, rows)
    except TypeError:  # LoRA layers injected into the model itself
        return None


class _Row:
    """A running request: its answer (text side), the logits its next token is drawn from, and what the
    repetition penalty counts."""

    def __init__(self, key: Hashable, answer: Answer, logits: torch.Tensor) -> None:
        self.key = key
        self.answer = answer
        self.logits = logits  # (V,)
        self.generator = torch.Generator(logits.device).manual_seed(answer.request.seed or 0)
        # (1, S) prompt + answer ids, kept only where a repetition penalty reads them
        penalised = answer.params.penalised
        ids = list(answer.request.prompt_ids) if penalised else []
        self.seen = torch.tensor([ids], dtype=torch.long, device=logits.device)
        self.token = -1  # the token sampled last


class Scheduler:
    """Continuous batching over `engine` with at most `max_batch_size` requests running at once.

    Not thread-safe: one thread calls `add`, `step` and `cancel` (the server's worker, `Engine.stream_batch`).
    """

    def __init__(self, engine: Engine, max_batch_size: int, batched: bool = True) -> None:
        self.engine = engine
        self.max_batch_size = max_batch_size
        fused = batched_decoder(engine.adapter, max_batch_size) if batched else None
        self.fused = fused is not None
        self.decoder: BatchDecoder = fused or SerialDecoder(engine.adapter, max_batch_size)
        self.rows: list[_Row] = []  # in the decoder's row order

    @property
    def running(self) -> int:
        """Requests in the batch."""
        return len(self.rows)

    @property
    def full(self) -> bool:
        """No room for another request until one finishes."""
        return len(self.rows) >= self.max_batch_size

    def fits(self, request: Request) -> bool:
        """Whether `request` decodes on this scheduler's batched decoder (else it needs the serial path)."""
        return self.decoder.fits(len(request.prompt_ids) + request.max_new_tokens)

    def add(self, request: Request, key: Hashable) -> None:
        """Prefill `request` as a new row; its first token comes with the next `step`.

        Raises FoundryError for an empty prompt, max_new_tokens < 1, a full batch, or a request that does
        not fit the decoder (`fits`).
        """
        check_request(request)
        if self.full:
            raise FoundryError(f"The batch is full ({self.max_batch_size} requests).")
        if not self.fits(request):
            raise FoundryError(
                f"{len(request.prompt_ids)} prompt tokens + {request.max_new_tokens} new tokens do not fit "
                f"the model's context ({self.engine.max_context} tokens) or its sliding attention window.",
                "Ask for fewer new tokens, or shorten the prompt.",
            )
        total = len(request.prompt_ids) + request.max_new_tokens
        logits = self.decoder.prefill(len(self.rows), list(request.prompt_ids), total)  # (V,)
        self.rows.append(_Row(key, Answer(self.engine, request), logits))

    def cancel(self, key: Hashable) -> bool:
        """Drop the request `key` from the batch (its row is free for the next `add`); False if not there."""
        for i, row in enumerate(self.rows):
            if row.key == key:
                self._remove(i)
                return True
        return False

    def step(self) -> list[tuple[Hashable, Delta]]:
        """One token for every running request: [(key, Delta)] for those with something new (the last Delta
        of a request has its finish_reason; it has then left the batch). Raises FoundryError when the model
        gives non-finite logits (the batch is then emptied)."""
        if not self.rows:
            return []
        try:
            tokens = self._sample()
        except FoundryError:
            while self.rows:
                self._remove(len(self.rows) - 1)
            raise
        out: list[tuple[Hashable, Delta]] = []
        for row, token in zip(self.rows, tokens, strict=True):
            row.token = token
            delta = row.answer.push(token)
            if delta is not None:
                out.append((row.key, delta))
            if row.answer.params.penalised:
                row.seen = torch.cat([row.seen, row.seen.new_tensor([[token]])], dim=1)
        for i in reversed(range(len(self.rows))):
            if self.rows[i].answer.finished:
                self._remove(i)
        if self.rows:
            column = torch.tensor([row.token for row in self.rows], device=self.rows[0].logits.device)  # (B,)
            logits = self.decoder.decode(column)  # (B, V)
            for row, row_logits in zip(self.rows, logits, strict=True):
                row.logits = row_logits
        return out

    def _sample(self) -> list[int]:
        """The next token of each row, in row order: one argmax for an all-greedy batch, else row by row
        with each row's settings and generator."""
        from model_foundry.generation.generate import decodable_ids

        logits = torch.stack([row.logits for row in self.rows])  # (B, V)
        logits = logits[:, : decodable_ids(self.engine.adapter, logits.size(-1))]  # no padding rows
        require_finite(logits)
        params = [row.answer.params for row in self.rows]
        if all(p.greedy and not p.penalised for p in params):
            return [int(t) for t in logits.argmax(dim=-1).tolist()]
        return [
            int(sample(logits[i : i + 1], p, row.generator, row.seen)[0])
            for i, (row, p) in enumerate(zip(self.rows, params, strict=True))
        ]

    def _remove(self, i: int) -> None:
        self.decoder.remove(i)
        self.rows[i] = self.rows[-1]
        self.rows.pop()
