"""One worker thread in front of the engine, fed by a bounded queue, decoding with continuous batching.

The engine is not thread-safe, so every use of the model and its tokenizer (encoding the prompt, generating,
decoding) happens on this one thread. It runs `generation.scheduler.Scheduler`: between two decode steps it
admits waiting jobs into the running batch (at most `max_batch_size` at once), then one step gives every
running job its next token. The event loop hands the worker a `Job` and reads the job's events:

    ("start", prompt_tokens)   the prompt was encoded and the job joined the batch
    ("delta", Delta)           a piece of the answer (engine.Delta)
    ("error", exception)       the job failed (an APIError or FoundryError is the client's fault)
    ("end", None)              nothing more comes

A job whose client went away is cancelled: the worker drops it from the batch before the next step (or skips
it if it was still waiting), so its row is free at once.

Test hook: FOUNDRY_SERVE_TEST_TOKEN_DELAY (seconds, default 0) sleeps that long after each decode step, so
tests can hold the worker busy with a tiny model (queue-full and disconnect tests). Unset in real use.
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
    from model_foundry.generation.scheduler import Scheduler

TOKEN_DELAY_ENV = "FOUNDRY_SERVE_TEST_TOKEN_DELAY"
MAX_BATCH_SIZE = 8  # requests decoded together by default (`foundry serve --max-batch-size`)


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
    """The queue of waiting jobs (at most `max_queue`) and the thread that decodes up to `max_batch_size` of
    them together. A cancelled job leaves the queue at once: it no longer counts towards `max_queue`."""

    def __init__(self, max_queue: int, max_batch_size: int = MAX_BATCH_SIZE) -> None:
        self.max_queue = max_queue
        self.max_batch_size = max_batch_size
        self._waiting: deque[Job] = deque()
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None
        self.running = 0  # jobs in the batch
        self.largest_batch = 0  # the most jobs decoded in one step so far
        self.batched_decode: bool | None = None  # one fused forward per step (None: not started)
        self._delay = float(os.environ.get(TOKEN_DELAY_ENV) or 0)

    @property
    def waiting(self) -> int:
        """Jobs queued, not yet in the batch (cancelled ones not counted)."""
        with self._changed:
            return sum(not job.cancelled.is_set() for job in self._waiting)

    def start(self, engine: Engine) -> None:
        """Start the worker thread over a loaded engine (once)."""
        from model_foundry.generation.scheduler import Scheduler

        scheduler = Scheduler(engine, self.max_batch_size)  # (its cache is allocated by the first request)
        self.batched_decode = scheduler.fused
        self._thread = threading.Thread(
            target=self._run, args=(engine, scheduler), name="foundry-engine", daemon=True
        )
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

    def _next_job(self, block: bool) -> Job | None:
        """The first waiting job; None when there is none and `block` is False (else wait for one)."""
        with self._changed:
            self._drop_cancelled()
            while not self._waiting:
                if not block:
                    return None
                self._changed.wait()
                self._drop_cancelled()
            return self._waiting.popleft()

    def _run(self, engine: Engine, scheduler: Scheduler) -> None:
        from model_foundry.generation.generate import inference

        jobs: set[Job] = set()  # in the batch
        with inference(engine.adapter):
            while True:
                while not scheduler.full:  # admit waiting jobs; wait for one only when nothing runs
                    job = self._next_job(block=not jobs)
                    if job is None:
                        break
                    if self._admit(engine, scheduler, job):
                        jobs.add(job)
                for job in [job for job in jobs if job.cancelled.is_set()]:  # their clients left
                    scheduler.cancel(job)
                    jobs.discard(job)
                self.running = len(jobs)
                if not jobs:
                    continue
                self.largest_batch = max(self.largest_batch, len(jobs))
                self._step(scheduler, jobs)
                if self._delay:
                    time.sleep(self._delay)

    def _admit(self, engine: Engine, scheduler: Scheduler, job: Job) -> bool:
        """Encode the job's prompt and add it to the batch (prefill); False (and the job ended with its
        error) when that fails."""
        if job.cancelled.is_set():  # cancelled between leaving the queue and now: nobody reads it
            return False
        try:
            request = job.prepare(engine)
            scheduler.add(request, job)
        except Exception as e:
            _fail(job, e)
            return False
        job.post("start", len(request.prompt_ids))
        return True

    def _step(self, scheduler: Scheduler, jobs: set[Job]) -> None:
        """One decode step: each job's delta; a finished job ends. An error (non-finite logits) ends every
        job of the batch with it."""
        try:
            for key, delta in scheduler.step():
                assert isinstance(key, Job)
                key.post("delta", delta)
                if delta.finish_reason is not None:
                    key.post("end")
                    jobs.discard(key)
        except Exception as e:
            for job in jobs:
                _fail(job, e)
            jobs.clear()
            while scheduler.running:  # (the scheduler empties itself on non-finite logits already)
                scheduler.cancel(scheduler.rows[0].key)
        self.running = len(jobs)


def _fail(job: Job, error: Exception) -> None:
    """End `job` with `error` (a traceback on stderr unless it is the client's fault)."""
    from model_foundry.errors import FoundryError
    from model_foundry.serving.schemas import APIError

    if not isinstance(error, (APIError, FoundryError)):
        traceback.print_exc(file=sys.stderr)
    job.post("error", error)
    job.post("end")
