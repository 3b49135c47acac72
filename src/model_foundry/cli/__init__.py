"""The `foundry` command. Commands parse and report; the work happens in model_foundry.stages & co.

Nothing heavy (torch, transformers, mlflow) is imported at module level, so `foundry --help` is instant.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer

from model_foundry.cli import hub, models, pipeline
from model_foundry.errors import FoundryError

app = typer.Typer(
    name="foundry",
    help="Model Foundry: import, train, evaluate and compare language models, reproducibly (DVC + MLflow).",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
pipeline.register(app)
models.register(app)
hub.register(app)


def main() -> None:
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    sys.stderr = _RedactingStream(sys.stderr)  # usage errors echo the args, which may hold a URL's token
    try:
        app(standalone_mode=True)
    except FoundryError as e:
        _report(e)
    except Exception as e:  # a full disk, a read-only folder...: one error wherever it happened
        from model_foundry.envfaults import environment_error

        error = environment_error(e)
        if error is None:
            raise
        _report(error)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)


class _RedactingStream:
    """A text stream that strips credentials (URL userinfo, token query parameters, hf_… tokens) from what
    is written through it: nothing we or a library print to the terminal or a CI log carries a secret."""

    def __init__(self, stream: Any) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        from model_foundry.credentials import redact_text

        self._stream.write(redact_text(text) if ("://" in text or "_" in text) else text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _report(e: FoundryError) -> None:
    """Print a user error as `error:` and `hint:` lines and exit 2."""
    print(f"error: {e.message}", file=sys.stderr)
    if e.hint:
        print(f"  hint: {e.hint}", file=sys.stderr)
    sys.exit(2)
