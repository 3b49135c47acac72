"""One worker thread in front of the engine, fed by a bounded queue.

The engine is not thread-safe, so every use of the model and its tokenizer (encoding the prompt, generating,
decoding) happens on this one thread. The event loop hands it a `Job` and reads the job's events:

    ("start", prompt_tokens)   the prompt was encoded and generation begins
    ("delta", Delta)           a piece of the answer (engine.Delta)
    ("error", exception)       the job failed (an APIError or FoundryError is the client's fault)
    ("end", None)              nothing more comes

A job whose client went away is cancelled: the worker checks the flag between tokens and drops the job at
once (or skips it if it was still waiting). Requests run one at a time (batch size 1); continuous batching
would replace `_serve` with a step loop that admits waiting jobs between decode steps, keeping `Job`.

Test hook: FOUNDRY_SERVE_TEST_TOKEN_DELAY (seconds, default 0) sleeps that long after each delta, so tests
can hold the worker busy with a tiny model (queue-full and disconnect tests). Leave it unset in real use.
"""

from __future__ import annotations

import asyncio
import os
import sys
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from model_foundry.generation.engine import Engine, Request

TOKEN_DELAY_ENV = "FOUNDRY_SERVE_TEST_TOKEN_DELAY"
MAX_BATCH_SIZE = 1  # requests decoded together (reported by /ready)


class QueueFull(Exception):
    """The bounded queue has no free place: the server answers 429."""


@dataclass(eq=False)  # compared and hashed by identity (the server keeps a set of running jobs)
class Job:
    """One request on its way through the worker.

    prepare: runs on the worker thread, engine → engine.Request (encodes the prompt; may raise APIError or
             FoundryError for a prompt the model cannot take).
    loop: the event loop that reads `events` (the worker posts to it thread-safely).
    """

    prepare: Callable[[Engine], Request]
    loop: asyncio.AbstractEventLoop
    events: asyncio.Queue[tuple[str, Any]] = field(default_factory=asyncio.Queue)
    cancelled: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        """Stop generating for this job (its client is gone); safe from any thread, idempotent."""
        self.cancelled.set()

    def post(self, kind: str, value: Any = None) -> None:
        """Send an event to the reader (from the worker thread)."""
        try:
            self.loop.call_soon_threadsafe(self.events.put_nowait, (kind, value))
        except RuntimeError:  # the event loop is closed: the server is shutting down
            self.cancel()


class Worker:
    """The queue of waiting jobs (at most `max_queue`) and the thread that runs them one by one.

    A cancelled job leaves the queue at once: it no longer counts towards `max_queue`.
    """

    def __init__(self, max_queue: int) -> None:
        self.max_queue = max_queue
        self._waiting: deque[Job] = deque()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self.busy = False  # a job is being generated
        self._delay = float(os.environ.get(TOKEN_DELAY_ENV) or 0)

    @property
    def waiting(self) -> int:
        """Jobs queued, not yet started (cancelled ones not counted)."""
        with self._changed:
            return sum(not job.cancelled.is_set() for job in self._waiting)

    def start(self, engine: Engine) -> None:
        """Start the worker thread over a loaded engine (once)."""
        self._thread = threading.Thread(target=self._run, args=(engine,), name="foundry-engine", daemon=True)
        self._thread.start()

    def submit(self, job: Job) -> None:
        """Queue `job`; QueueFull when `max_queue` jobs already wait."""
        with self._changed:
            self._drop_cancelled()
            if len(self._waiting) >= self.max_queue:
                raise QueueFull
            self._waiting.append(job)
            self._changed.notify()

    def _drop_cancelled(self) -> None:
        for job in [job for job in self._waiting if job.cancelled.is_set()]:
            self._waiting.remove(job)

    def _next_job(self) -> Job:
        with self._changed:
            self._drop_cancelled()
            while not self._waiting:
                self._changed.wait()
                self._drop_cancelled()
            return self._waiting.popleft()

    def _run(self, engine: Engine) -> None:
        while True:
            job = self._next_job()
            self.busy = True
            try:
                self._serve(engine, job)
            finally:
                self.busy = False

    def _serve(self, engine: Engine, job: Job) -> None:
        """Run one job to its end, its cancellation, or an error (always followed by "end")."""
        if job.cancelled.is_set():  # cancelled between leaving the queue and now: nobody reads it
            return
        try:
            request = job.prepare(engine)
            job.post("start", len(request.prompt_ids))
            deltas = engine.stream(request)
            try:
                for delta in deltas:
                    if job.cancelled.is_set():
                        break
                    job.post("delta", delta)
                    if self._delay and delta.finish_reason is None:
                        time.sleep(self._delay)
            finally:
                close = getattr(deltas, "close", None)  # a generator: end its inference context now
                if close is not None:
                    close()
        except Exception as e:
            from model_foundry.errors import FoundryError
            from model_foundry.serving.schemas import APIError

            if not isinstance(e, (APIError, FoundryError)):
                traceback.print_exc(file=sys.stderr)
            job.post("error", e)
        job.post("end")
