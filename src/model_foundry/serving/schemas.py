"""OpenAI's API shapes: request bodies (validated with pydantic), responses, stream chunks and errors.

Reference: https://platform.openai.com/docs/api-reference (completions, chat, models). Unknown request
fields are ignored (clients send many: `user`, `logprobs`, `presence_penalty`, ...); a field we accept but
cannot honour (n > 1) is a 400, never a silent change. Numbers are taken as JSON numbers, not coerced:
an integer field refuses `true`, `"5"` and `2.5` (a whole `2.0` is 2), a float field refuses `true` and
`"0.7"` (an integer is fine: `"temperature": 1`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Strict, ValidationError


class APIError(Exception):
    """An error answered in OpenAI's format: {"error": {"message", "type", "param", "code"}}.

    status: the HTTP status; type: "invalid_request_error" (400, 404), "authentication_error" (401),
    "rate_limit_error" (429), "server_error" (500, 503); headers: e.g. Retry-After.
    """

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        type: str = "invalid_request_error",
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.type = type
        self.code = code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


def _whole_float_as_int(value: Any) -> Any:
    """A JSON number with no fractional part (2.0) as the int it is; anything else is left to the check."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


# pydantic's lax mode would take true as 1 and "5" as 5: these take JSON numbers only
Integer = Annotated[int, Strict(), BeforeValidator(_whole_float_as_int)]
Number = Annotated[float, Strict()]  # an int is a valid float, a bool is not


Flag = Annotated[bool, Strict()]  # true or false, not "yes" or 1
ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}  # OpenAI's
MAX_STOPS = 4  # OpenAI's limit on `stop` strings


class StreamOptions(_Body):
    include_usage: Flag | None = None


class _SamplingBody(_Body):
    """The fields completions and chat share (None: the default)."""

    model: str
    max_tokens: Integer | None = None
    temperature: Number | None = None  # None: the model's own (generation_config.json; else 1, OpenAI's)
    top_p: Number | None = None  # None: the model's own (else 1)
    top_k: Integer | None = None  # not OpenAI's; vLLM and llama.cpp accept it too
    n: Integer | None = None
    stop: str | list[str] | None = None
    seed: Integer | None = None
    stream: Flag | None = None
    stream_options: StreamOptions | None = None


class CompletionBody(_SamplingBody):
    """POST /v1/completions: a prompt string (or a list holding one)."""

    prompt: str | list[str]


class ContentPart(_Body):
    type: str
    text: str | None = None


class ChatMessage(_Body):
    role: str
    content: str | list[ContentPart] | None = None


class ChatBody(_SamplingBody):
    """POST /v1/chat/completions: messages, and `max_completion_tokens` (the newer name of max_tokens)."""

    messages: list[ChatMessage]
    max_completion_tokens: Integer | None = None


@dataclass(frozen=True)
class Sampling:
    """A request's generation settings, checked: plain numbers (the worker builds engine objects)."""

    max_tokens: int
    max_tokens_given: bool  # False: the default (generation also stops where the context is full)
    temperature: float | None  # None: the model's own (generation_config.json), as vLLM does
    top_p: float | None
    top_k: int | None
    stop: tuple[str, ...]
    seed: int | None
    stream: bool
    include_usage: bool


Model = TypeVar("Model", bound=BaseModel)
_UNION_TAGS = {"str", "int", "float", "bool", "list", "dict", "none"}  # pydantic's names of union members


def parse_body(cls: type[Model], data: Any) -> Model:
    """`data` (parsed JSON) validated as `cls`; APIError 400 naming the first bad field (`param`)."""
    if not isinstance(data, dict):
        raise APIError(400, "The request body must be a JSON object.")
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        first = e.errors()[0]
        raise validation_error(first["loc"], first["msg"]) from None


def validation_error(loc: tuple[int | str, ...], msg: str) -> APIError:
    """A pydantic error (location, message) as a 400 naming the field, e.g. param "messages.0.content"."""
    # pydantic names the union member it tried (`str`, `list[str]`) in the location: not a field
    fields = [str(p) for p in loc if not (isinstance(p, str) and ("[" in p or p in _UNION_TAGS))]
    param = ".".join(fields) or None
    return APIError(400, f"{param}: {msg}" if param else msg, param=param)


def check_sampling(body: _SamplingBody, default_max: int, cap: int) -> Sampling:
    """The checked settings of a request (400 for n != 1, temperature < 0, top_p outside (0, 1], max_tokens
    outside [1, cap], a negative seed). No max_tokens (nor chat's max_completion_tokens, which wins when
    both are given) takes `default_max` (at most `cap`)."""
    if body.n is not None and body.n != 1:
        raise APIError(400, f"n = {body.n}: this server returns one choice per request (n = 1).", "n")
    temperature = body.temperature
    if temperature is not None and not (math.isfinite(temperature) and temperature >= 0):
        raise APIError(400, f"temperature = {temperature} must be a number ≥ 0 (0: greedy).", "temperature")
    if body.top_p is not None and not (math.isfinite(body.top_p) and 0 < body.top_p <= 1):
        raise APIError(400, f"top_p = {body.top_p} must be in (0, 1].", "top_p")
    if body.top_k is not None and body.top_k < 0:
        raise APIError(400, f"top_k = {body.top_k} must be 0 (all tokens) or more.", "top_k")
    param, max_tokens = "max_tokens", body.max_tokens
    if isinstance(body, ChatBody) and body.max_completion_tokens is not None:
        param, max_tokens = "max_completion_tokens", body.max_completion_tokens
    tokens = min(default_max, cap) if max_tokens is None else max_tokens
    if tokens <= 0:
        raise APIError(400, f"{param} = {tokens} must be 1 or more.", param)
    if tokens > cap:
        raise APIError(
            400, f"{param} = {tokens} is above this server's cap of {cap} (--max-tokens-cap).", param
        )
    if body.seed is not None and not 0 <= body.seed < 2**63:
        raise APIError(400, f"seed = {body.seed} must be in [0, 2**63).", "seed")
    stops = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
    if len(stops) > MAX_STOPS:
        raise APIError(400, f"stop holds {len(stops)} strings: at most {MAX_STOPS}, as OpenAI's API.", "stop")
    if any(not s for s in stops):
        raise APIError(400, "stop holds an empty string, which would end every answer at once.", "stop")
    return Sampling(
        max_tokens=tokens,
        max_tokens_given=max_tokens is not None,
        temperature=temperature,
        top_p=body.top_p,
        top_k=body.top_k,
        stop=tuple(stops),
        seed=body.seed,
        stream=bool(body.stream),
        include_usage=bool(body.stream and body.stream_options and body.stream_options.include_usage),
    )


def single_prompt(body: CompletionBody) -> str:
    """The one prompt of a completions request (a string, or a list of one string; else 400)."""
    if isinstance(body.prompt, str):
        return body.prompt
    if len(body.prompt) != 1:
        raise APIError(
            400,
            f"prompt holds {len(body.prompt)} strings: this server takes one prompt per request.",
            "prompt",
        )
    return body.prompt[0]


def chat_messages(body: ChatBody) -> list[dict[str, str]]:
    """Messages as the engine takes them ([{role, content}]; text parts joined; 400 for other parts)."""
    if not body.messages:
        raise APIError(400, "messages is empty: give at least one message.", "messages")
    messages = []
    for i, message in enumerate(body.messages):
        if message.role not in ROLES:
            raise APIError(
                400,
                f"messages.{i}.role = {message.role!r}: this server takes {', '.join(ROLES)} "
                "(developer is read as system; no tool or function messages).",
                f"messages.{i}.role",
            )
        content = message.content
        if isinstance(content, list):
            if any(part.type != "text" or part.text is None for part in content):
                raise APIError(400, "Only text content parts are supported.", f"messages.{i}.content")
            content = "".join(part.text or "" for part in content)
        messages.append({"role": ROLES[message.role], "content": content or ""})
    return messages


# ------------------------------------------------------------------------------------------ responses


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def completion(
    id: str, created: int, model: str, text: str, finish_reason: str, counts: dict[str, int]
) -> dict[str, Any]:
    """A whole text completion (object "text_completion")."""
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": counts,
    }


def completion_chunk(
    id: str, created: int, model: str, text: str, finish_reason: str | None, with_usage: bool
) -> dict[str, Any]:
    """One streamed piece of a text completion (OpenAI streams them as object "text_completion")."""
    choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish_reason}
    chunk = {"id": id, "object": "text_completion", "created": created, "model": model, "choices": [choice]}
    if with_usage:
        chunk["usage"] = None
    return chunk


def chat_completion(
    id: str, created: int, model: str, text: str, finish_reason: str, counts: dict[str, int]
) -> dict[str, Any]:
    """A whole chat answer (object "chat.completion")."""
    message = {"role": "assistant", "content": text, "refusal": None}
    choice = {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": [choice],
        "usage": counts,
    }


def chat_chunk(
    id: str, created: int, model: str, delta: dict[str, str], finish_reason: str | None, with_usage: bool
) -> dict[str, Any]:
    """One streamed piece of a chat answer (object "chat.completion.chunk"); the first delta carries the
    role, the last is empty with the finish_reason."""
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    chunk = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [choice],
    }
    if with_usage:
        chunk["usage"] = None
    return chunk


def usage_chunk(id: str, created: int, model: str, obj: str, counts: dict[str, int]) -> dict[str, Any]:
    """The last chunk of a stream with include_usage: empty choices, the usage counts."""
    return {"id": id, "object": obj, "created": created, "model": model, "choices": [], "usage": counts}
