"""The request side of generation: what a request asks for, what comes back, and the text of one answer.

`Request`, `Delta` and `Completion` are the engine's public types (re-exported by `generation.engine` and
`generation`); `Answer` turns one request's generated ids into final text, applying stop tokens and stop
strings, and is what `Engine` and `Scheduler` share (it knows nothing of the model).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from model_foundry.errors import FoundryError
from model_foundry.generation.detokenize import REPLACEMENT, IncrementalDetokenizer
from model_foundry.generation.sampling import SamplingParams

if TYPE_CHECKING:
    from model_foundry.generation.engine import Engine

FinishReason = Literal["stop", "length"]


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


class Answer:
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


def check_request(request: Request) -> None:
    """FoundryError for an empty prompt or max_new_tokens < 1."""
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
