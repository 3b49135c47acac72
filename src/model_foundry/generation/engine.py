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

Batching (`stream_batch`, `complete_batch`, and the server): `generation/scheduler.py` runs requests
together with continuous batching: the Llama-shaped Hub families through one fused, batched decode step over
a shared KV cache (`llama_decoder.py`: prompts of any lengths, admitted at any step), other causal models
through the adapter's prefill/decode row by row. Each row keeps its own sampling settings, seed and stop
rules, so a batch gives each request what it gives alone.

Torch is imported by the modules this one imports: the CLI and the server import it inside functions.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from model_foundry.generation.answer import Completion, Delta, FinishReason, Request, check_request
from model_foundry.generation.sampling import SamplingParams

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter

__all__ = ["BATCH_SIZE", "Completion", "Delta", "Engine", "FinishReason", "Request"]

BATCH_SIZE = 16  # requests `stream_batch` decodes at once (the others wait for a free row)


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

        Runs on a `Scheduler` (continuous batching, at most BATCH_SIZE requests at a time; the rest join as
        rows finish): the fused decoder of the Llama-shaped families, else the adapter's prefill/decode row by
        row, and also when a request would run past the context or a sliding window. Greedy rows give the
        tokens they give alone; sampled rows too (each row draws from its own seeded generator), up to the
        floating-point differences of batched matmuls. Raises FoundryError as `stream` does, before anything
        is generated.
        """
        from model_foundry.generation.generate import inference
        from model_foundry.generation.scheduler import Scheduler

        for request in requests:
            check_request(request)
        if not requests:
            return
        with inference(self.adapter):
            size = min(len(requests), BATCH_SIZE)
            scheduler = Scheduler(self, size)
            if not all(scheduler.fits(r) for r in requests):
                scheduler = Scheduler(self, size, batched=False)
            waiting = list(range(len(requests)))[::-1]  # popped from the end: in order
            while waiting or scheduler.running:
                while waiting and not scheduler.full:
                    i = waiting.pop()
                    scheduler.add(requests[i], i)
                deltas: list[Delta | None] = [None] * len(requests)
                for key, delta in scheduler.step():
                    assert isinstance(key, int)  # the request's index, as added
                    deltas[key] = delta
                yield deltas

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
