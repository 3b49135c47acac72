"""OpenAI request checking without a server: which field a 400 names, and the settings a request gets."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from model_foundry.serving.schemas import (
    APIError,
    ChatBody,
    CompletionBody,
    chat_messages,
    check_sampling,
    parse_body,
    single_prompt,
)


def error_of(call: Callable[[], object]) -> APIError:
    with pytest.raises(APIError) as e:
        call()
    return e.value


def test_validation_errors_name_the_field() -> None:
    assert error_of(lambda: parse_body(CompletionBody, {"prompt": "x"})).param == "model"
    assert error_of(lambda: parse_body(CompletionBody, {"model": "m", "prompt": 3})).param == "prompt"
    bad_message = {"model": "m", "messages": [{"role": "user", "content": 7}]}
    assert error_of(lambda: parse_body(ChatBody, bad_message)).param == "messages.0.content"
    assert error_of(
        lambda: parse_body(ChatBody, {"model": "m", "messages": [], "max_tokens": 2.5})
    ).param == ("max_tokens")
    not_object = error_of(lambda: parse_body(ChatBody, ["model"]))
    assert not_object.status == 400 and not_object.param is None and "JSON object" in not_object.message


def test_sampling_defaults_and_unknown_fields() -> None:
    body = parse_body(
        CompletionBody, {"model": "m", "prompt": ["hi"], "user": "u", "logit_bias": {}, "echo": False}
    )
    sampling = check_sampling(body, 16, 64)
    assert single_prompt(body) == "hi"
    # Sampling settings left out stay None: the worker fills in the model's own (generation_config.json).
    assert (sampling.max_tokens, sampling.max_tokens_given, sampling.temperature) == (16, False, None)
    assert (sampling.top_p, sampling.stop, sampling.stream, sampling.include_usage) == (
        None,
        (),
        False,
        False,
    )
    streamed = parse_body(
        CompletionBody,
        {
            "model": "m",
            "prompt": "x",
            "max_tokens": 8,
            "stop": "\n",
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    )
    checked = check_sampling(streamed, 16, 64)
    assert (checked.stop, checked.include_usage, checked.max_tokens, checked.max_tokens_given) == (
        ("\n",),
        True,
        8,
        True,
    )


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"temperature": -0.5}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"top_p": 1.01}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"max_tokens": 65}, "max_tokens"),
        ({"n": 3}, "n"),
        ({"seed": -1}, "seed"),
        ({"top_k": -1}, "top_k"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"stop": [""]}, "stop"),
        ({"stop": ""}, "stop"),
    ],
)
def test_bad_settings_are_400(fields: dict[str, object], param: str) -> None:
    body = parse_body(CompletionBody, {"model": "m", "prompt": "x", **fields})
    error = error_of(lambda: check_sampling(body, 16, 64))
    assert (error.status, error.param, error.type) == (400, param, "invalid_request_error")


def test_chat_messages() -> None:
    parts = [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]
    body = parse_body(ChatBody, {"model": "m", "messages": [{"role": "user", "content": parts}]})
    assert chat_messages(body) == [{"role": "user", "content": "ab"}]
    image = [{"type": "image_url", "image_url": {"url": "x"}}]
    body = parse_body(ChatBody, {"model": "m", "messages": [{"role": "user", "content": image}]})
    assert error_of(lambda: chat_messages(body)).param == "messages.0.content"
    empty = parse_body(ChatBody, {"model": "m", "messages": []})
    assert error_of(lambda: chat_messages(empty)).param == "messages"
    roles = [{"role": r, "content": r} for r in ("developer", "system", "user", "assistant")]
    body = parse_body(ChatBody, {"model": "m", "messages": roles})
    assert [m["role"] for m in chat_messages(body)] == ["system", "system", "user", "assistant"]
    for role in ("wizard", "tool", "function"):
        body = parse_body(ChatBody, {"model": "m", "messages": [{"role": role, "content": "x"}]})
        assert error_of(lambda b=body: chat_messages(b)).param == "messages.0.role"
    newer = parse_body(ChatBody, {"model": "m", "messages": [], "max_completion_tokens": 0})
    assert error_of(lambda: check_sampling(newer, 64, 64)).param == "max_completion_tokens"


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"max_tokens": True}, "max_tokens"),
        ({"max_tokens": 2.5}, "max_tokens"),
        ({"max_tokens": "8"}, "max_tokens"),
        ({"max_completion_tokens": True}, "max_completion_tokens"),
        ({"top_k": False}, "top_k"),
        ({"top_k": 1.5}, "top_k"),
        ({"n": True}, "n"),
        ({"seed": 0.5}, "seed"),
        ({"seed": True}, "seed"),
        ({"temperature": True}, "temperature"),
        ({"temperature": "0.7"}, "temperature"),
        ({"top_p": False}, "top_p"),
        ({"stream": "yes"}, "stream"),
        ({"stream": 1}, "stream"),
        ({"stream": True, "stream_options": {"include_usage": "true"}}, "stream_options.include_usage"),
    ],
)
def test_numbers_are_not_coerced_from_booleans_strings_or_fractions(
    fields: dict[str, object], param: str
) -> None:
    error = error_of(lambda: parse_body(ChatBody, {"model": "m", "messages": [], **fields}))
    assert (error.status, error.param, error.type) == (400, param, "invalid_request_error")
    assert error.message.startswith(f"{param}: Input should be a valid")


def test_whole_numbers_are_numbers() -> None:
    """An int for a float field (OpenAI takes `"temperature": 1`), a whole float for an int field."""
    fields = {"max_tokens": 8.0, "top_k": 0, "n": 1.0, "seed": 3, "temperature": 1, "top_p": 1}
    body = parse_body(CompletionBody, {"model": "m", "prompt": "x", **fields})
    sampling = check_sampling(body, 16, 64)
    assert (sampling.max_tokens, sampling.top_k, sampling.seed) == (8, 0, 3)
    assert all(type(v) is int for v in (body.max_tokens, body.top_k, body.n, body.seed))
    assert (sampling.temperature, sampling.top_p) == (1.0, 1.0)
    assert type(sampling.temperature) is float


def test_a_boolean_max_tokens_is_400_over_http(tmp_path: Path) -> None:
    """A real `foundry serve` (the body is checked before the model is needed: it is left loading)."""
    from registry.registry_repo import build_base
    from serving.server_helpers import http, start_server

    build_base(tmp_path / "gpt-plain")
    server = start_server(
        [str(tmp_path / "gpt-plain")], env={"FOUNDRY_SERVE_TEST_LOAD_DELAY": "60"}, wait_ready=False
    )
    try:
        body = {"model": "gpt-plain", "prompt": "the", "max_tokens": True}
        answer = http(f"{server.url}/v1/completions", body)
        loading = http(f"{server.url}/v1/completions", {**body, "max_tokens": 2})
    finally:
        server.stop()
    assert answer.status == 400, answer.body
    assert answer.json()["error"]["param"] == "max_tokens"
    assert answer.json()["error"]["type"] == "invalid_request_error"
    assert loading.status == 503  # the same request with a number gets past the check
