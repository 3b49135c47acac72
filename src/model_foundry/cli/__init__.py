"""The `foundry` command. Commands parse and report; the work happens in model_foundry.stages & co.

Nothing heavy (torch, transformers, mlflow) is imported at module level, so `foundry --help` is instant.
"""

from __future__ import annotations

import os
import sys

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
    try:
        app(standalone_mode=True)
    except FoundryError as e:
        print(f"error: {e.message}", file=sys.stderr)
        if e.hint:
            print(f"  hint: {e.hint}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
