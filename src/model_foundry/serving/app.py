"""The HTTP side of `foundry serve`: Starlette routes over the worker, and `run_server`.

    GET  /health                 200 as soon as the process listens
    GET  /ready                  503 + Retry-After while loading (step, elapsed_s), 500 if loading failed, 200
    GET  /v1/models              the one served model
    POST /v1/completions         prompt → text (stream: server-sent events)
    POST /v1/chat/completions    messages → assistant message, through the model's chat template

Errors use OpenAI's format (schemas.APIError), unknown routes (404) and methods (405) too. With an API key
set, /v1/* need `Authorization: Bearer KEY`; /health and /ready stay open (for load balancers and probes).
The `model` field must name the served model (its folder name, as /v1/models lists it): another name is a
404, as OpenAI answers.

The order of a request's checks: key (401), body (400), model name (404), loading (503), queue (429), then on
the worker the prompt itself (400: too long for the context, no chat template).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import secrets
import socket
import sys
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from model_foundry.errors import FoundryError
from model_foundry.serving import schemas
from model_foundry.serving.loader import ModelLoader
from model_foundry.serving.schemas import APIError, ChatBody, CompletionBody, Sampling
from model_foundry.serving.worker import MAX_BATCH_SIZE, Job, QueueFull, Worker

if TYPE_CHECKING:
    from model_foundry.generation.engine import Engine
    from model_foundry.generation.engine import Request as EngineRequest

RETRY_AFTER = "1"  # seconds a client is told to wait while loading or when the queue is full
DISCONNECT_POLL = 0.25  # seconds between two checks that the client is still there
COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions; chat defaults to the cap


@dataclass
class ServeSettings:
    """What `foundry serve` was started with."""

    model_id: str  # the name clients send as `model`
    api_key: str | None = None
    max_queue: int = 16  # requests waiting for a place in the batch (those being generated not counted)
    max_batch_size: int = MAX_BATCH_SIZE  # requests decoded together (continuous batching)
    truncate_prompts: bool = False  # cut too-long prompts from the left (with a warning) instead of 400
    max_tokens_cap: int = 2048  # the largest max_tokens a request may ask for


class ClientGone(Exception):
    """The client disconnected while its request waited or ran."""


class Server:
    """The state the routes share: settings, the loader, the worker."""

    def __init__(self, settings: ServeSettings, loader: ModelLoader) -> None:
        self.settings = settings
        self.loader = loader
        self.worker = Worker(settings.max_queue, settings.max_batch_size)
        self.created = int(time.time())
        self.jobs: set[Job] = set()  # submitted and not yet answered
        self.closing = False
        self._worker_started = False

    def shutdown(self) -> None:
        """The process was told to stop (Ctrl-C, SIGTERM): cancel every job and end its answer now (503, or
        an error event in a stream), so the graceful shutdown does not wait for long generations. Runs on
        the event loop's thread."""
        self.closing = True
        for job in list(self.jobs):
            job.cancel()
            job.post("end")

    def engine_ready(self) -> None:
        """APIError 503 (loading) or 500 (loading failed) unless the model is loaded; starts the worker on
        the first request after loading."""
        loader = self.loader
        if self.closing:
            raise _shutting_down()
        if loader.phase == "loading":
            raise APIError(
                503,
                f"The model is still loading ({loader.step}); retry shortly.",
                type="server_error",
                code="model_loading",
                headers={"Retry-After": RETRY_AFTER},
            )
        if loader.phase == "failed" or loader.engine is None:
            hint = f" Hint: {loader.hint}" if loader.hint else ""
            raise APIError(500, f"The model failed to load: {loader.error}{hint}", type="server_error")
        self.start_worker(loader.engine)

    def start_worker(self, engine: Engine) -> None:
        """Start the worker over the loaded engine (once: the first request, or /ready, starts it)."""
        if not self._worker_started:
            self.worker.start(engine)
            self._worker_started = True

    def authorize(self, request: Request) -> None:
        """APIError 401 when an API key is set and the request does not carry it (constant-time compare)."""
        key = self.settings.api_key
        if not key:
            return
        header = request.headers.get("authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise APIError(
                401,
                "Missing API key: send `Authorization: Bearer <key>`.",
                type="authentication_error",
                code="invalid_api_key",
            )
        if not hmac.compare_digest(given.strip().encode(), key.encode()):
            raise APIError(401, "Incorrect API key.", type="authentication_error", code="invalid_api_key")

    def check_model(self, name: str) -> None:
        if name != self.settings.model_id:
            raise APIError(
                404,
                f"The model {name!r} does not exist: this server serves {self.settings.model_id!r}.",
                param="model",
                code="model_not_found",
            )


def create_app(server: Server) -> Starlette:
    """The ASGI app over `server`; its startup starts the loader (so the port listens first).

    Starlette, not FastAPI: bodies are validated by hand with pydantic (schemas.py) to control the order of
    checks and OpenAI's error format, and FastAPI's import costs half of the one second to listen in.
    """

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        if server.loader.phase == "loading":
            server.loader.start()
        yield

    async def api_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, APIError)
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    async def http_error(request: Request, e: Exception) -> Response:
        assert isinstance(e, HTTPException)
        kind = "invalid_request_error" if e.status_code < 500 else "server_error"
        error = APIError(e.status_code, f"{e.detail}: {request.method} {request.url.path}", type=kind)
        return await api_error(request, error)

    async def unexpected(request: Request, e: Exception) -> Response:  # a bug: its traceback is logged
        message = f"Internal error: {type(e).__name__}: {e}"
        return await api_error(request, APIError(500, message, type="server_error"))

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def ready(request: Request) -> Response:
        status = server.loader.status()
        if server.loader.phase == "loading":
            return JSONResponse(status, status_code=503, headers={"Retry-After": RETRY_AFTER})
        if server.loader.phase == "failed":
            return JSONResponse(status, status_code=500)
        engine = server.loader.engine
        worker = server.worker
        if engine is not None:
            server.start_worker(engine)
        status.update(
            model=server.settings.model_id,
            max_context=engine.max_context if engine is not None else None,
            max_batch_size=worker.max_batch_size,
            batched_decode=worker.batched_decode,
            largest_batch=worker.largest_batch,
            queue={"waiting": worker.waiting, "max": server.settings.max_queue, "running": worker.running},
        )
        return JSONResponse(status)

    async def models(request: Request) -> Response:
        server.authorize(request)
        return JSONResponse({"object": "list", "data": [_model_card(server)]})

    async def model(request: Request) -> Response:
        server.authorize(request)
        server.check_model(request.path_params["name"])
        return JSONResponse(_model_card(server))

    async def completions(request: Request) -> Response:
        server.authorize(request)
        body = schemas.parse_body(CompletionBody, await _json(request))
        server.check_model(body.model)
        cap = server.settings.max_tokens_cap
        sampling = schemas.check_sampling(body, COMPLETION_DEFAULT_MAX_TOKENS, cap)
        prompt = schemas.single_prompt(body)
        server.engine_ready()
        prepare = _preparer(lambda engine: engine.encode_prompt(prompt), sampling, "prompt", server)
        return await _answer(server, request, prepare, sampling, chat=False)

    async def chat_completions(request: Request) -> Response:
        server.authorize(request)
        body = schemas.parse_body(ChatBody, await _json(request))
        server.check_model(body.model)
        cap = server.settings.max_tokens_cap
        sampling = schemas.check_sampling(body, cap, cap)
        messages = schemas.chat_messages(body)
        server.engine_ready()
        prepare = _preparer(lambda engine: engine.encode_chat(messages), sampling, "messages", server)
        return await _answer(server, request, prepare, sampling, chat=True)

    routes = [
        Route("/health", health),
        Route("/ready", ready),
        Route("/v1/models", models),
        Route("/v1/models/{name:path}", model),
        Route("/v1/completions", completions, methods=["POST"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
    ]
    handlers = {APIError: api_error, HTTPException: http_error, Exception: unexpected}
    return Starlette(routes=routes, exception_handlers=handlers, lifespan=lifespan)


def _model_card(server: Server) -> dict[str, Any]:
    engine = server.loader.engine
    return {
        "id": server.settings.model_id,
        "object": "model",
        "created": server.created,
        "owned_by": "model-foundry",
        "ready": server.loader.phase == "ready",
        "max_context": engine.max_context if engine is not None else None,
        "max_batch_size": server.worker.max_batch_size,
    }


async def _json(request: Request) -> Any:
    """The request body as JSON; APIError 400 when it is not JSON."""
    raw = await request.body()
    try:
        return json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise APIError(400, f"The request body is not valid JSON: {e}.") from None


def _preparer(
    encode: Callable[[Engine], list[int]], sampling: Sampling, param: str, server: Server
) -> Callable[[Engine], EngineRequest]:
    """The job's first step on the worker: encode the prompt, check it fits the context, build the request."""

    def prepare(engine: Engine) -> EngineRequest:
        from model_foundry.generation.engine import Request as EngineRequest

        try:
            ids = encode(engine)
        except FoundryError as e:
            raise APIError(400, e.message + (f" Hint: {e.hint}" if e.hint else ""), param=param) from None
        if not ids:
            raise APIError(
                400, f"The {param} has no tokens: the model needs at least one to start from.", param
            )
        context = engine.max_context
        if context is not None and server.settings.truncate_prompts:
            ids = _truncated(ids, context, sampling.max_tokens, param, server)
        if context is not None and len(ids) > context:
            raise APIError(
                400,
                f"The {param} {'are' if param == 'messages' else 'is'} {len(ids)} tokens long; "
                f"{server.settings.model_id} reads at most "
                f"{context} tokens.",
                param=param,
                code="context_length_exceeded",
            )
        max_new = sampling.max_tokens
        if not sampling.max_tokens_given and context is not None:  # as OpenAI: up to the end of the context
            max_new = max(1, min(max_new, context - len(ids)))
        elif context is not None and len(ids) + max_new > context:  # OpenAI's answer too: refused, not cut
            raise APIError(
                400,
                f"{server.settings.model_id} reads at most {context} tokens; this request asks for "
                f"{len(ids) + max_new} ({len(ids)} in the {param}, {max_new} in the completion). Ask for "
                "fewer tokens (max_tokens) or send a shorter prompt.",
                param="max_tokens",
                code="context_length_exceeded",
            )
        overrides = {"temperature": sampling.temperature, "top_k": sampling.top_k, "top_p": sampling.top_p}
        params = engine.resolve(overrides)  # a setting left out takes the model's (generation_config.json)
        seed = sampling.seed if sampling.seed is not None else secrets.randbits(63)  # OpenAI: varies by call
        return EngineRequest(ids, max_new, params, sampling.stop, seed)

    return prepare


def _truncated(ids: list[int], context: int, max_new: int, param: str, server: Server) -> list[int]:
    """`--truncate-prompts`: the last tokens of a prompt that would not leave room for `max_new` new tokens
    in the context (at least one prompt token kept), with a warning on stderr giving the counts."""
    keep = max(1, context - max_new)
    if len(ids) <= keep:
        return ids
    print(
        f"warning: the {param} of a request lost its first {len(ids) - keep} of {len(ids)} tokens to fit "
        f"{server.settings.model_id}'s context of {context} with {max_new} new tokens (--truncate-prompts).",
        file=sys.stderr,
        flush=True,
    )
    return ids[-keep:]


async def _next_event(job: Job, request: Request) -> tuple[str, Any]:
    """The job's next event; ClientGone (and the job cancelled) when the client disconnected meanwhile."""
    while True:
        try:
            return await asyncio.wait_for(job.events.get(), DISCONNECT_POLL)
        except TimeoutError:
            if await request.is_disconnected():
                job.cancel()
                raise ClientGone from None


def _raise(error: BaseException) -> None:
    """Re-raise a worker's error as the HTTP error it means."""
    if isinstance(error, APIError):
        raise error
    if isinstance(error, FoundryError):
        hint = f" Hint: {error.hint}" if error.hint else ""
        raise APIError(400, error.message + hint)
    raise APIError(500, f"Generation failed: {type(error).__name__}: {error}", type="server_error")


async def _answer(
    server: Server,
    request: Request,
    prepare: Callable[[Engine], EngineRequest],
    sampling: Sampling,
    chat: bool,
) -> Response:
    """Queue the job, wait until it starts (errors before that are plain HTTP errors), then answer whole or
    as a stream of server-sent events."""
    job = Job(prepare, asyncio.get_running_loop())
    try:
        server.worker.submit(job)
    except QueueFull:
        raise APIError(
            429,
            f"The server is busy: {server.settings.max_queue} requests are already waiting. Retry shortly.",
            type="rate_limit_error",
            code="queue_full",
            headers={"Retry-After": RETRY_AFTER},
        ) from None
    server.jobs.add(job)
    streaming = False
    try:
        kind, value = await _next_event(job, request)
        if kind == "error":
            _raise(value)
        if kind == "end":
            raise _shutting_down()
        answer = _Answer(server.settings.model_id, chat, sampling.include_usage, prompt_tokens=value)
        if sampling.stream:
            streaming = True
            headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
            events = _sse(server, job, request, answer)
            return StreamingResponse(events, media_type="text/event-stream", headers=headers)
        while (event := await _next_event(job, request))[0] != "end":
            kind, value = event
            if kind == "error":
                _raise(value)
            answer.add(value)
        if answer.finish_reason is None:
            raise _shutting_down()
        return JSONResponse(answer.whole())
    except ClientGone:
        return Response(status_code=499)  # nobody reads it
    finally:
        if not streaming:  # the stream's generator ends the job when it ends
            job.cancel()
            server.jobs.discard(job)


def _shutting_down() -> APIError:
    return APIError(503, "The server is shutting down.", type="server_error", code="shutting_down")


class _Answer:
    """One answer's id, creation time and counts, and its OpenAI shapes (whole, or as stream chunks)."""

    def __init__(self, model: str, chat: bool, include_usage: bool, prompt_tokens: int) -> None:
        self.id = f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}"
        self.created = int(time.time())  # the same in every chunk of a stream
        self.model = model
        self.chat = chat
        self.include_usage = include_usage
        self.prompt_tokens = prompt_tokens
        self.completion_tokens = 0
        self.text = ""
        self.finish_reason: str | None = None

    def add(self, delta: Any) -> None:
        """Count an engine.Delta in."""
        self.text += delta.text
        self.completion_tokens += len(delta.token_ids)
        self.finish_reason = delta.finish_reason or self.finish_reason

    def usage(self) -> dict[str, int]:
        return schemas.usage(self.prompt_tokens, self.completion_tokens)

    def whole(self) -> dict[str, Any]:
        build = schemas.chat_completion if self.chat else schemas.completion
        return build(self.id, self.created, self.model, self.text, self.finish_reason or "stop", self.usage())

    def chunk(self, text: str, finish_reason: str | None, first: bool = False) -> dict[str, Any]:
        head = (self.id, self.created, self.model)
        if not self.chat:
            return schemas.completion_chunk(*head, text, finish_reason, self.include_usage)
        delta = {"role": "assistant", "content": ""} if first else ({"content": text} if text else {})
        return schemas.chat_chunk(*head, delta, finish_reason, self.include_usage)

    def usage_chunk(self) -> dict[str, Any]:
        obj = "chat.completion.chunk" if self.chat else "text_completion"
        return schemas.usage_chunk(self.id, self.created, self.model, obj, self.usage())


async def _sse(server: Server, job: Job, request: Request, answer: _Answer) -> AsyncIterator[str]:
    """The job's deltas as server-sent events: `data: {chunk}\\n\\n` …, `data: [DONE]\\n\\n`. Every chunk
    has the same id and created; with include_usage the last chunk has empty choices and the usage. An
    error after the first chunk travels as a `data: {"error": …}` event. A client that goes away cancels
    the job: the worker stops before its next token."""

    def event(data: dict[str, Any]) -> str:
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    try:
        if answer.chat:
            yield event(answer.chunk("", None, first=True))
        while (item := await _next_event(job, request))[0] != "end":
            kind, value = item
            if kind == "error":
                try:
                    _raise(value)
                except APIError as e:
                    yield event(e.body())
                break
            answer.add(value)
            if value.text or value.finish_reason:
                yield event(answer.chunk(value.text, value.finish_reason))
        else:
            if answer.finish_reason is None:  # ended by a shutdown
                yield event(_shutting_down().body())
            elif answer.include_usage:
                yield event(answer.usage_chunk())
        yield "data: [DONE]\n\n"
    except ClientGone:
        return
    finally:
        job.cancel()  # no-op once the job ended; stops the worker when the client left mid-stream
        server.jobs.discard(job)


# ------------------------------------------------------------------------------------------ running


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port (SO_REUSEADDR, as uvicorn binds); FoundryError when the port is
    taken or the address cannot be used."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise FoundryError(f"Cannot listen on {host}:{port}: {e.strerror}.", "Check --host.") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as e:
        sock.close()
        import errno

        if e.errno == errno.EADDRINUSE:
            raise FoundryError(
                f"Port {port} on {host} is already in use.",
                f"Stop the process that holds it (`lsof -i :{port}`) or pick another: --port {port + 1}.",
            ) from None
        if e.errno == errno.EACCES:
            raise FoundryError(
                f"Not allowed to listen on {host}:{port}.",
                "Ports below 1024 need privileges: use e.g. --port 8000.",
            ) from None
        raise FoundryError(
            f"Cannot listen on {host}:{port}: {e.strerror}.", "Check --host and --port."
        ) from None
    return sock


def run_server(
    path: Path, settings: ServeSettings, host: str, port: int, verify: bool = True, device: str = "cpu"
) -> None:
    """Listen on host:port, then load `path` in the background and serve until interrupted (Ctrl-C).

    Raises FoundryError when the port cannot be used (before anything is loaded).
    """
    import uvicorn

    sock = bind_socket(host, port)
    server = Server(settings, ModelLoader(path, verify=verify, device=device))
    app = create_app(server)
    shown = f"[{host}]" if ":" in host else host
    auth = "API key required" if settings.api_key else "no API key"
    print(
        f"serving {settings.model_id} on http://{shown}:{port}/v1 ({auth}); loading {path} in the "
        "background: GET /ready answers 200 once loaded",
        file=sys.stderr,
        flush=True,
    )

    class Uvicorn(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            server.shutdown()  # end running streams now: uvicorn waits for open requests
            super().handle_exit(sig, frame)

    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=5)
    Uvicorn(config).run(sockets=[sock])
