"""The `foundry serve` command: an OpenAI-compatible HTTP server over one model (model_foundry.serving)."""

from __future__ import annotations

from typing import Annotated

import typer

from model_foundry.cli.options import ModelArg, NoVerifyOpt
from model_foundry.errors import FoundryError
from model_foundry.serving.worker import MAX_BATCH_SIZE


def serve(
    model: ModelArg,
    host: Annotated[str, typer.Option(help="Address to listen on (0.0.0.0: every interface).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.", min=1, max=65535)] = 8000,
    api_key: Annotated[
        str | None,
        typer.Option(
            envvar="FOUNDRY_API_KEY",
            show_envvar=True,
            help="Require `Authorization: Bearer KEY` on /v1/* (prefer the env var: options show in `ps`).",
        ),
    ] = None,
    max_queue: Annotated[
        int, typer.Option(help="Requests that may wait for a place in the batch; more get 429.", min=1)
    ] = 16,
    max_batch_size: Annotated[
        int, typer.Option(help="Requests decoded together (continuous batching).", min=1, max=256)
    ] = MAX_BATCH_SIZE,
    max_tokens_cap: Annotated[
        int, typer.Option(help="The largest max_tokens a request may ask for.", min=1)
    ] = 2048,
    truncate_prompts: Annotated[
        bool,
        typer.Option(
            help="Cut a prompt that leaves no room for max_tokens in the context from the left (a warning on "
            "stderr) instead of answering 400."
        ),
    ] = False,
    no_verify: NoVerifyOpt = False,
) -> None:
    """Serve a model over OpenAI's HTTP API until Ctrl-C.

    Endpoints: /v1/completions, /v1/chat/completions, /v1/models. The port listens at once; the model loads
    in the background (GET /ready: 503 while loading, then 200).

    \b
    Examples:
      foundry serve qwen2.5-0.5b-instruct --port 8000
      FOUNDRY_API_KEY=secret foundry serve models/gpt-tiny-trained --host 0.0.0.0
      curl -s localhost:8000/v1/completions -H 'Content-Type: application/json' \\
        -d '{"model": "gpt-tiny-trained", "prompt": "Once upon a time", "max_tokens": 20}'
    """
    from pathlib import Path

    from model_foundry.registry.resolve import model_folder
    from model_foundry.serving.app import ServeSettings, run_server

    if api_key is not None and not api_key.strip():
        raise FoundryError(
            "The API key is empty (--api-key or FOUNDRY_API_KEY): the server would be open to anyone.",
            'Give a key (e.g. `export FOUNDRY_API_KEY=$(python -c "import secrets; '
            'print(secrets.token_urlsafe())")`), or unset FOUNDRY_API_KEY to serve without one.',
        )
    if api_key is None and host not in LOOPBACK:
        typer.echo(
            f"warning: listening on {host} without an API key: anyone who can reach this machine can use "
            "the model (set FOUNDRY_API_KEY).",
            err=True,
        )
    path = model_folder(model)
    settings = ServeSettings(
        model_id=Path(path).resolve().name,
        api_key=api_key or None,
        max_queue=max_queue,
        max_batch_size=max_batch_size,
        truncate_prompts=truncate_prompts,
        max_tokens_cap=max_tokens_cap,
    )
    run_server(path, settings, host, port, verify=not no_verify)


LOOPBACK = {"127.0.0.1", "localhost", "::1"}  # hosts only this machine can reach


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
