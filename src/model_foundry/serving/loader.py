"""The served model: which folder NAME|PATH means, and its loading on a background thread.

The server listens before the model is loaded (loading imports torch and reads the weights: seconds to
minutes). `ModelLoader.status()` says where loading is, for `GET /ready`.

Test hook: the environment variable FOUNDRY_SERVE_TEST_LOAD_DELAY (seconds, default 0) makes the loader
wait that long before it starts, so tests can watch `/ready` answer 503 on a tiny model. It changes nothing
else; leave it unset in real use.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    from model_foundry.generation.engine import Engine

LOAD_DELAY_ENV = "FOUNDRY_SERVE_TEST_LOAD_DELAY"
Phase = Literal["loading", "ready", "failed"]


class ModelLoader:
    """Loads `path` with `generation.load_causal_model` on a daemon thread; `engine` is set once ready.

    The state moves loading → ready, or loading → failed (a FoundryError's message and hint, or an
    unexpected exception's text). Thread-safe to read from the event loop.
    """

    def __init__(self, path: Path, verify: bool = True, device: str = "cpu") -> None:
        self.path = path
        self.verify = verify
        self.device = device
        self.engine: Engine | None = None
        self.phase: Phase = "loading"
        self.step = "starting"
        self.error: str | None = None
        self.hint: str | None = None
        self.started = time.monotonic()
        self.load_seconds: float | None = None
        self._thread = threading.Thread(target=self._load, name="foundry-model-loader", daemon=True)

    def start(self) -> None:
        self.started = time.monotonic()
        self._thread.start()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until loading ended (ready or failed); False on timeout."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def status(self) -> dict[str, Any]:
        """JSON for /ready: status (loading | ready | failed), step, elapsed_s; error and hint when failed."""
        elapsed = round(
            self.load_seconds if self.load_seconds is not None else time.monotonic() - self.started, 2
        )
        status: dict[str, Any] = {"status": self.phase, "step": self.step, "elapsed_s": elapsed}
        if self.phase == "failed":
            status.update(error=self.error, hint=self.hint)
        return status

    def _load(self) -> None:
        try:
            delay = float(os.environ.get(LOAD_DELAY_ENV) or 0)
            if delay > 0:
                self.step = f"waiting {delay:g} s ({LOAD_DELAY_ENV})"
                time.sleep(delay)
            self.step = "importing torch and transformers"
            from model_foundry.generation.engine import Engine

            self.step = f"loading {self.path}" + (" (checking the weights' sha256)" if self.verify else "")
            engine = Engine.from_folder(self.path, verify=self.verify, device=self.device)
            engine.adapter.model.eval()
            self.engine = engine
        except FoundryError as e:
            self._fail(e.message, e.hint)
        except Exception as e:  # a bug or an environment problem: reported by /ready, not lost in a thread
            self._fail(f"Loading {self.path} failed: {type(e).__name__}: {e}", None)
        else:
            self.step = "done"
            self.load_seconds = time.monotonic() - self.started
            self.phase = "ready"
            print(f"model loaded in {self.load_seconds:.1f} s: ready", file=sys.stderr, flush=True)

    def _fail(self, message: str, hint: str | None) -> None:
        self.error, self.hint = message, hint
        self.load_seconds = time.monotonic() - self.started
        self.phase = "failed"
        print(f"error: {message}", file=sys.stderr, flush=True)
        if hint:
            print(f"  hint: {hint}", file=sys.stderr, flush=True)
