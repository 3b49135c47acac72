"""The generation engine: one object behind `foundry generate`, `foundry chat` and `foundry serve`.

    engine = Engine(load_causal_model("models/gpt-tiny-trained"))
    request = Request(engine.encode_prompt("Once upon"), max_new_tokens=64, params=SamplingParams(0.8))
    for delta in engine.stream(request):      # text as it is produced, never half a character
        print(delta.text, end="")
    completion = engine.complete(request)      # the same, all at once, with usage counts

A request stops at the model's stop tokens (`chat.stop_token_ids`: generation_config.json, config.json, the
tokenizer, the family table), at the first of its `stop` strings (the string itself is not returned, as
OpenAI's API does), or after `max_new_tokens` tokens: `finish_reason` is "stop" or "length". Text is decoded
incrementally from all the ids generated so far, so multi-token characters and tokenizer merges come out
whole; special tokens are left out of the text, the stop token too.

Torch is imported by the modules this one imports: the CLI and the server import it inside functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

import torch

from model_foundry.errors import FoundryError
from model_foundry.generation.sampling import SamplingParams

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter

FinishReason = Literal["stop", "length"]
REPLACEMENT = "\ufffd"  # what a tokenizer decodes half a UTF-8 character to


@dataclass(frozen=True)
class Request:
    """One generation request.

    prompt_ids: the prompt's token ids (≥ 1), from `Engine.encode_prompt` or `Engine.encode_chat`.
    max_new_tokens: at most this many tokens are generated (≥ 1).
    params: how each token is chosen (temperature, top-k, top-p; greedy at temperature 0).
    stop: strings that end the text (the first one found; it is not part of the returned text).
    seed: the sampling seed (None: 0); the same request and seed give the same tokens.
    """

    prompt_ids: Sequence[int]
    max_new_tokens: int
    params: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    seed: int | None = None


@dataclass(frozen=True)
class Delta:
    """A piece of a streamed answer: `text` new since the previous delta (possibly empty while a character or
    a possible stop string is incomplete), the `token_ids` generated since, and `finish_reason` on the last."""

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
    request at a time per engine (the server runs requests on one worker)."""

    def __init__(self, adapter: BaseAdapter) -> None:
        from model_foundry.generation.chat import require_tokenizer, stop_token_ids
        from model_foundry.generation.generate import require_causal

        require_causal(adapter)
        self.adapter = adapter
        self.tokenizer = require_tokenizer(adapter)
        self.stop_token_ids = frozenset(stop_token_ids(adapter))

    @property
    def max_context(self) -> int | None:
        """The longest sequence the model reads (None: no limit, e.g. an RNN)."""
        return self.adapter.max_context

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

    def stream(self, request: Request) -> Iterator[Delta]:
        """Generate for `request`, yielding text as it becomes final; the last delta has a finish_reason.

        Raises FoundryError for an empty prompt, max_new_tokens < 1, or non-finite logits.
        """
        from model_foundry.generation.generate import inference, stream_tokens

        if not request.prompt_ids:
            raise FoundryError("The prompt has no tokens: generation needs at least one to start from.")
        if request.max_new_tokens < 1:
            raise FoundryError(f"max_new_tokens = {request.max_new_tokens} must be 1 or more.")
        device = self.adapter.device
        generator = torch.Generator(device).manual_seed(request.seed or 0)
        prompt = torch.tensor([list(request.prompt_ids)], device=device)  # (1, T)
        generated: list[int] = []
        sent = ""  # the text already yielded
        pending: list[int] = []  # ids not yet reported in a delta
        with inference(self.adapter):
            for step, column in enumerate(stream_tokens(self.adapter, prompt, request.params, generator)):
                token = int(column[0])
                generated.append(token)
                pending.append(token)
                text = self.decode([t for t in generated if t not in self.stop_token_ids])
                cut = _first_stop(text, request.stop)
                if cut is not None:
                    yield Delta(text[len(sent) : cut] if cut > len(sent) else "", pending, "stop")
                    return
                if token in self.stop_token_ids:
                    yield Delta(text[len(sent) :], pending, "stop")
                    return
                if step + 1 == request.max_new_tokens:
                    yield Delta(text[len(sent) :], pending, "length")
                    return
                ready = _final_prefix(text, request.stop)
                if len(ready) > len(sent):
                    yield Delta(ready[len(sent) :], pending)
                    sent, pending = ready, []

    def complete(self, request: Request) -> Completion:
        """`stream` collected: the whole text, its ids, the finish reason and the usage counts."""
        text, ids, reason = "", [], None
        for delta in self.stream(request):
            text += delta.text
            ids += delta.token_ids
            reason = delta.finish_reason
        assert reason is not None  # the last delta always carries one
        return Completion(text, ids, reason, len(request.prompt_ids), len(ids))


def _first_stop(text: str, stops: tuple[str, ...]) -> int | None:
    """Where the first stop string begins in `text`, or None."""
    found = [i for i in (text.find(s) for s in stops if s) if i >= 0]
    return min(found) if found else None


def _final_prefix(text: str, stops: tuple[str, ...]) -> str:
    """The part of `text` no later token can change: without a trailing half character (decoded as U+FFFD)
    and without a tail that could still grow into a stop string."""
    end = len(text)
    while end and text[end - 1] == REPLACEMENT:
        end -= 1
    for stop in stops:
        for n in range(min(len(stop) - 1, end), 0, -1):  # the longest tail that starts a stop string
            if text[end - n : end] == stop[:n]:
                end -= n
                break
    return text[:end]
