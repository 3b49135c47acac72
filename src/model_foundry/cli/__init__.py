"""The `foundry` command. Commands parse and report; the work happens in model_foundry.stages & co.

Nothing heavy (torch, transformers, mlflow) is imported at module level, so `foundry --help` is instant.
"""

from __future__ import annotations

import importlib
import os
import sys
from types import ModuleType
from typing import Annotated, Any, TextIO

import typer
from typer.core import TyperGroup

from model_foundry.cli import chat, hub, lora, models, pipeline, recommend, registry, serve
from model_foundry.errors import FoundryError

COMMANDS_PANEL = "Commands"


class _Group(TyperGroup):
    """Click's plain help, with the commands in sections: the ones a person types first ("Commands", in the
    order they are registered), then each `rich_help_panel` (the pipeline stages). Plain rather than Typer's
    rich panels: rich adds ~0.1-0.2 s to every `--help`, box characters to piped help, and reads `[...]` in
    help texts as markup."""

    def format_commands(self, ctx: Any, formatter: Any) -> None:
        commands = [(name, self.get_command(ctx, name)) for name in self.list_commands(ctx)]
        shown = [(name, command) for name, command in commands if command is not None and not command.hidden]
        if not shown:
            return
        limit = formatter.width - 6 - max(len(name) for name, _ in shown)
        sections: dict[str, list[tuple[str, str]]] = {COMMANDS_PANEL: []}
        for name, command in shown:
            panel = getattr(command, "rich_help_panel", None) or COMMANDS_PANEL
            sections.setdefault(panel, []).append((name, command.get_short_help_str(limit)))
        for title, rows in sections.items():
            if rows:
                with formatter.section(title):
                    formatter.write_dl(rows)


app = typer.Typer(
    name="foundry",
    help="Model Foundry: import, train, evaluate and compare language models, reproducibly (DVC + MLflow).",
    epilog="\b\nExamples:\n"
    "  dvc repro                         # the pipeline: train and evaluate\n"
    "  foundry import-model Qwen/Qwen2.5-0.5B-Instruct --accept-license\n"
    '  foundry generate gpt-tiny-trained --prompt "Once upon a time"\n'
    "  foundry info gpt-tiny-trained\n"
    "  foundry list-models",
    cls=_Group,
    no_args_is_help=True,
    add_completion=True,  # --install-completion / --show-completion for bash, zsh, fish, PowerShell
    # -h as well as --help; help as wide as the terminal up to 100 columns (click's default stops at 80)
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"foundry (model-foundry) {version('model-foundry')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_print_version, is_eager=True, help="Print the version."),
    ] = False,
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose",
            "-v",
            envvar="FOUNDRY_VERBOSE",
            help="Show third-party warnings and log lines (MLflow, transformers, DVC), hidden by default.",
        ),
    ] = False,
) -> None:
    """Model Foundry: import, train, evaluate and compare language models, reproducibly (DVC + MLflow)."""
    from model_foundry.logs import configure

    configure(verbose)


# The order of `foundry --help`: what a person types first, then the registry, then the pipeline stages.
hub.register(app)
models.register(app)
chat.register(app)
serve.register(app)
lora.register(app)
registry.register(app)
recommend.register(app)
pipeline.register(app)


def main() -> None:
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    sys.stderr = _RedactingStream(sys.stderr)  # usage errors echo the args, which may hold a URL's token
    usage = _usage_exceptions()
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except usage.NoArgsIsHelpError as e:  # bare `foundry`: the help text, as click prints it
        e.show()
        sys.exit(2)
    except usage.UsageError as e:  # a bad option or value: our error format, pointing at the command's help
        where = e.ctx.command_path if e.ctx is not None else "foundry"
        _report(FoundryError(e.format_message(), f"See `{where} --help` for the options and their values."))
    except usage.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except typer.Abort:  # end of input at a prompt
        print("aborted", file=sys.stderr)
        sys.exit(1)
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


def _usage_exceptions() -> ModuleType:
    """Click's exception classes as Typer raises them (recent Typer vendors click as `typer._click`)."""
    try:
        return importlib.import_module("typer._click.exceptions")
    except ImportError:  # older Typer uses click itself
        return importlib.import_module("click.exceptions")


class _RedactingStream:
    """A text stream that strips credentials (URL userinfo, token query parameters, hf_… tokens) from what
    is written through it: nothing we or a library print to the terminal or a CI log carries a secret."""

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream

    def write(self, text: str) -> int:
        from model_foundry.credentials import redact_text

        self._stream.write(redact_text(text) if ("://" in text or "_" in text) else text)
        return len(text)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stream, name)


def _report(e: FoundryError) -> None:
    """Print a user error as `error:` and `hint:` lines and exit 2. Under torchrun, processes other than 0
    name themselves (`error: (process 1) …`): every process may meet the same error."""
    rank = os.environ.get("RANK", "0")
    who = f"(process {rank}) " if rank != "0" else ""
    print(f"error: {who}{e.message}", file=sys.stderr)
    if e.hint:
        print(f"  hint: {e.hint}", file=sys.stderr)
    sys.exit(2)
