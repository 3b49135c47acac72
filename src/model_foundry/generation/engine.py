"""The generation engine: one object behind `foundry generate`, `foundry chat` and `foundry serve`.

    engine = Engine(load_causal_model("models/gpt-tiny-trained"))
    request = Request(engine.encode_prompt("Once upon"), max_new_tokens=64, params=SamplingParams(0.8))
    for delta in engine.stream(request):      # text as it is produced, never half a character
        print(delta.text, end="")
    completion = engine.complete(request)      # the same, all at once, with usage counts

    engine = Engine.from_folder("models/qwen-chat")    # also reads the folder's generation_config.json
    params = engine.resolve({"temperature": None, "top_p": 0.9})   # None: the model's default
    completions = engine.complete_batch([request_a, request_b])    # prompts of any lengths, batched

Settings: a request's `params` None means the model's defaults (`default_params`: generation_config.json's
do_sample, temperature, top_k, top_p, min_p, repetition_penalty, as transformers reads them; see
`generation/defaults.py`). A request stops at the model's stop tokens (`chat.stop_token_ids`:
generation_config.json, config.json, the tokenizer, the family table), at the first of its `stop` strings
(the string itself is not returned, as OpenAI's API does), or after `max_new_tokens` tokens: `finish_reason`
is "stop" or "length".

Text: decoded incrementally (`detokenize.IncrementalDetokenizer`): each new token is decoded with a few
tokens before it (the prompt's tail at first), so a SentencePiece word's leading space, multi-token
characters and merges come out as in the full decode; never half a UTF-8 character until the very end;
special tokens left out. Nothing generated is dropped but the stop token (and the text from a stop string on).

Batching (`stream_batch`, `complete_batch`): Hub causal models (transformers' own attention mask) read
prompts of different lengths together, left-padded; other adapters batch the requests whose prompts have
the same length (the adapter contract has no padding) and run the groups one after another. Each row keeps
its own sampling settings, seed and stop rules, so a batch gives each request what it gives alone.

Torch is imported by the modules this one imports: the CLI and the server import it inside functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import torch

from model_foundry.errors import FoundryError
from model_foundry.generation.detokenize import IncrementalDetokenizer
from model_foundry.generation.sampling import SamplingParams, sample

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter

FinishReason = Literal["stop", "length"]
REPLACEMENT = "\ufffd"  # what a tokenizer decodes half a UTF-8 character to


@dataclass(frozen=True)
class Request:
    """One generation request.

    prompt_ids: the prompt's token ids (≥ 1), from `Engine.encode_prompt` or `Engine.encode_chat`.
    max_new_tokens: at most this many tokens are generated (≥ 1).
    params: how each token is chosen (`SamplingParams`; greedy at temperature 0). None: the model's
            defaults (`Engine.default_params`; build partial settings with `Engine.resolve`).
    stop: strings that end the text (the first one found; it is not part of the returned text).
    seed: the sampling seed (None: 0); the same request and seed give the same tokens.
    """

    prompt_ids: Sequence[int]
    max_new_tokens: int
    params: SamplingParams | None = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer: `text` new since the previous delta (possibly empty while a character
    or a possible stop string is incomplete), the `token_ids` generated since, and `finish_reason` on the
    last."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason | None = None


@dataclass(frozen=True)
class Completion:
    """A whole answer, with OpenAI's usage counts (prompt_tokens, completion_tokens: generated tokens, the
    stop token included)."""

    text: str
    token_ids: list[int]
    finish_reason: FinishReason
    prompt_tokens: int
    completion_tokens: int


class Engine:
    """Generation over a loaded causal adapter (`generation.load_causal_model`). Not thread-safe: one
    request (or one batch) at a time per engine (the server runs requests on one worker).

    generation_config: the model's generation_config.json as a dict (None: read from the folder the adapter
    was loaded from, when the adapter records it; `from_folder` reads it from the path).
    """

    def __init__(self, adapter: BaseAdapter, generation_config: dict[str, Any] | None = None) -> None:
        from model_foundry.generation.chat import require_tokenizer, stop_token_ids
        from model_foundry.generation.defaults import generation_config_of
        from model_foundry.generation.generate import require_causal

        require_causal(adapter)
        self.adapter = adapter
        self.tokenizer = require_tokenizer(adapter)
        self.generation_config = (
            generation_config if generation_config is not None else generation_config_of(adapter)
        )
        self.stop_token_ids = frozenset(stop_token_ids(adapter, self.generation_config))

    @classmethod
    def from_folder(cls, path: str | Path, verify: bool = True, device: str | torch.device = "cpu") -> Engine:
        """An engine over the model folder `path` (`load_causal_model`: FoundryError for a masked LM, a
        damaged folder, non-finite weights, no tokenizer), with the folder's generation_config.json (a LoRA
        folder without one: its parent's)."""
        from model_foundry.generation.defaults import generation_config_of, read_generation_config
        from model_foundry.generation.loading import load_causal_model

        adapter = load_causal_model(path, verify=verify, device=device)
        return cls(adapter, read_generation_config(path) or generation_config_of(adapter))

    @property
    def max_context(self) -> int | None:
        """The longest sequence the model reads (None: no limit, e.g. an RNN)."""
        return self.adapter.max_context

    def default_params(self) -> SamplingParams:
        """The model's own sampling settings (generation_config.json; SamplingParams() without one)."""
        from model_foundry.generation.defaults import default_params

        return default_params(self.generation_config)

    def resolve(self, params_overrides: dict[str, Any]) -> SamplingParams:
        """The model's defaults with the not-None entries of `params_overrides` (temperature, top_k, top_p,
        min_p, repetition_penalty) put in. Raises FoundryError for an unknown key or a value out of range."""
        from model_foundry.generation.defaults import resolve

        return resolve(self.default_params(), params_overrides)

    def encode_prompt(self, text: str) -> list[int]:
        """A prompt's ids: user text is data (special-token strings stay text). Raises FoundryError for an
        empty prompt on a model without a start token."""
        from model_foundry.generation.chat import prompt_ids

        return prompt_ids(self.adapter, text)

    def encode_chat(self, messages: list[dict[str, str]]) -> list[int]:
        """Chat messages ([{role, content}]) → ids with the model's chat template (or the family's fallback)
        and the generation prompt. Raises FoundryError when the model has neither."""
        from model_foundry.generation.chat import chat_ids

        return chat_ids(self.adapter, messages)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of `ids`, special tokens left out."""
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    # --- one request ----------------------------------------------------------------------------------
    def stream(self, request: Request) -> Iterator[Delta]:
        """Generate for `request`, yielding text as it becomes final; the last delta has a finish_reason.

        Raises FoundryError for an empty prompt, max_new_tokens < 1, or non-finite logits.
        """
        for deltas in self.stream_batch([request]):
            if deltas[0] is not None:
                yield deltas[0]

    def complete(self, request: Request) -> Completion:
        """`stream` collected: the whole text, its ids, the finish reason and the usage counts."""
        return self.complete_batch([request])[0]

    # --- several requests at once ---------------------------------------------------------------------
    def stream_batch(self, requests: Sequence[Request]) -> Iterator[list[Delta | None]]:
        """Generate for every request together, yielding one list per step: for each request its Delta, or
        None when it has nothing new (or has finished). Each request's last Delta has its finish_reason.

        Greedy rows give the tokens they give alone; sampled rows too (each row draws from its own seeded
        generator), up to the floating-point differences of batched matmuls. Raises FoundryError as
        `stream` does, before anything is generated.
        """
        from model_foundry.generation.generate import inference

        for request in requests:
            _check(request)
        if not requests:
            return
        answers = [_Answer(self, r) for r in requests]
        with inference(self.adapter):
            for group in self._groups(requests):
                steps = self._steps([requests[i] for i in group], [answers[i].params for i in group])
                for column in steps:
                    deltas: list[Delta | None] = [None] * len(requests)
                    for i, token in zip(group, column, strict=True):
                        if not answers[i].finished:
                            deltas[i] = answers[i].push(token)
                    yield deltas
                    if all(answers[i].finished for i in group):
                        break

    def complete_batch(self, requests: Sequence[Request]) -> list[Completion]:
        """`stream_batch` collected: one Completion per request, in order."""
        texts = [""] * len(requests)
        ids: list[list[int]] = [[] for _ in requests]
        reasons: list[FinishReason | None] = [None] * len(requests)
        for deltas in self.stream_batch(requests):
            for i, delta in enumerate(deltas):
                if delta is not None:
                    texts[i] += delta.text
                    ids[i] += delta.token_ids
                    reasons[i] = delta.finish_reason or reasons[i]
        return [
            Completion(texts[i], ids[i], reason, len(r.prompt_ids), len(ids[i]))
            for i, (r, reason) in enumerate(zip(requests, reasons, strict=True))
            if reason is not None  # the last delta of every request carries one
        ]

    def _groups(self, requests: Sequence[Request]) -> list[list[int]]:
        """Indices of the requests decoded together: all of them where prompts can be padded (Hub causal
        models that stay within their context), else those of equal prompt length."""
        if self._paddable(requests):
            return [list(range(len(requests)))]
        by_length: dict[int, list[int]] = {}
        for i, r in enumerate(requests):
            by_length.setdefault(len(r.prompt_ids), []).append(i)
        return list(by_length.values())

    def _paddable(self, requests: Sequence[Request]) -> bool:
        from model_foundry.adapters.hf.causal import HFCausalAdapter

        if len({len(r.prompt_ids) for r in requests}) == 1 or not isinstance(self.adapter, HFCausalAdapter):
            return False
        longest = max(len(r.prompt_ids) + r.max_new_tokens for r in requests)
        return self.max_context is None or longest <= self.max_context

    def _steps(self, requests: list[Request], params: list[SamplingParams]) -> Iterator[list[int]]:
        """The next token of each request, step after step (as long as asked): prompts of equal length
        through the adapter contract's prefill/decode, else left-padded through the Hub model."""
        from model_foundry.generation.generate import decodable_ids

        device = self.adapter.device
        prompts = [list(r.prompt_ids) for r in requests]
        generators = [torch.Generator(device).manual_seed(r.seed or 0) for r in requests]
        seen = [torch.tensor([p], device=device) for p in prompts]  # (1, T_i + steps) each
        if len({len(p) for p in prompts}) == 1:
            logits, state = self.adapter.prefill(torch.tensor(prompts, device=device))  # (B, T, V)

            def step(tokens: torch.Tensor) -> torch.Tensor:
                nonlocal state
                out, state = self.adapter.decode(tokens, state)
                return out

        else:
            logits, step = _padded_prefill(self.adapter, prompts)
        usable = decodable_ids(self.adapter, logits.size(-1))
        while True:
            last = logits[:, -1, :usable]  # (B, V)
            tokens = [
                int(sample(last[i : i + 1], p, g, s)[0])
                for i, (p, g, s) in enumerate(zip(params, generators, seen, strict=True))
            ]
            yield tokens
            column = torch.tensor(tokens, device=device)[:, None]  # (B, 1)
            seen = [torch.cat([s, column[i : i + 1]], dim=1) if p.penalised else s for i, (s, p) in
                    enumerate(zip(seen, params, strict=True))]  # fmt: skip
            logits = step(column)


def _padded_prefill(adapter: BaseAdapter, prompts: list[list[int]]) -> tuple[torch.Tensor, Any]:
    """Prompts of different lengths through a transformers causal LM, left-padded with an attention mask.

    Returns the (B, T, V) logits of the padded prompt and `step`: (B, 1) next ids → (B, 1, V) logits (its
    KV cache and mask grow in place). Positions count real tokens only, so each row sees what it sees alone.
    """
    import inspect

    from transformers import DynamicCache

    device = adapter.device
    width = max(len(p) for p in prompts)
    ids = torch.zeros(len(prompts), width, dtype=torch.long, device=device)  # (B, T), pad id 0 (masked)
    mask = torch.zeros(len(prompts), width, dtype=torch.long, device=device)  # (B, T)
    for i, p in enumerate(prompts):
        ids[i, width - len(p) :] = torch.tensor(p, device=device)
        mask[i, width - len(p) :] = 1
    cache = DynamicCache(config=adapter.model.config)
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)  # (B, T)
    model = adapter.model
    # transformers 5 renamed `past_key_values` to `cache` (as in adapters/hf/causal.py)
    name = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"

    def forward(x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        return model(
            input_ids=x, attention_mask=mask, position_ids=pos, use_cache=True, **{name: cache}
        ).logits

    logits = forward(ids, positions)
    last = positions[:, -1:]  # (B, 1)

    def step(tokens: torch.Tensor) -> torch.Tensor:
        nonlocal mask, last
        mask = torch.cat([mask, torch.ones_like(tokens)], dim=1)
        last = last + 1
        return forward(tokens, last)

    return logits, step


class _Answer:
    """The text side of one request: generated ids → final text, stop tokens and strings, finish reason."""

    def __init__(self, engine: Engine, request: Request) -> None:
        self.request = request
        self.params = request.params if request.params is not None else engine.default_params()
        self.stop_ids = engine.stop_token_ids
        self.detok = IncrementalDetokenizer(engine.tokenizer, request.prompt_ids)
        self.longest_stop = max((len(s) for s in request.stop), default=0)
        self.text = ""  # the text decoded so far (without the stop token)
        self.sent = 0  # how much of it was yielded
        self.pending: list[int] = []  # ids not yet reported in a delta
        self.count = 0
        self.finished = False

    def push(self, token: int) -> Delta | None:
        """Take the next generated token; returns the Delta to yield, or None when there is nothing new."""
        self.count += 1
        self.pending.append(token)
        if token in self.stop_ids:
            return self._finish("stop")
        self.text += self.detok.push(token)
        cut = _first_stop(self.text, self.request.stop, max(0, self.sent - self.longest_stop))
        if cut is not None:
            return self._emit(cut, "stop")
        if self.count == self.request.max_new_tokens:
            return self._finish("length")
        ready = len(_final_prefix(self.text, self.request.stop))
        return self._emit(ready, None) if ready > self.sent else None

    def _finish(self, reason: FinishReason) -> Delta:
        self.text += self.detok.flush()  # a last unfinished character is not dropped
        cut = _first_stop(self.text, self.request.stop, max(0, self.sent - self.longest_stop))
        return self._emit(len(self.text) if cut is None else cut, reason if cut is None else "stop")

    def _emit(self, end: int, reason: FinishReason | None) -> Delta:
        delta = Delta(self.text[self.sent : end] if end > self.sent else "", self.pending, reason)
        self.sent, self.pending = max(self.sent, end), []
        self.finished = reason is not None
        return delta


def _check(request: Request) -> None:
    if not request.prompt_ids:
        raise FoundryError("The prompt has no tokens: generation needs at least one to start from.")
    if request.max_new_tokens < 1:
        raise FoundryError(f"max_new_tokens = {request.max_new_tokens} must be 1 or more.")


def _first_stop(text: str, stops: tuple[str, ...], start: int = 0) -> int | None:
    """Where the first stop string begins in `text` (searched from `start`), or None."""
    found = [i for i in (text.find(s, start) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _final_prefix(text: str, stops: tuple[str, ...]) -> str:
    """The part of `text` no later token can change: without a tail that could still grow into a stop
    string (and without a trailing half character, which the detokenizer already holds back)."""
    end = len(text)
    while end and text[end - 1] == REPLACEMENT:
        end -= 1
    for stop in stops:
        for n in range(min(len(stop) - 1, end), 0, -1):  # the longest tail that starts a stop string
            if text[end - n : end] == stop[:n]:
                end -= n
                break
    return text[:end]
