"""The `foundry chat` command: a conversation with a model in the terminal (model_foundry.chat_repl).

Nothing heavy is imported here or before the prompt: the model loads in a background thread.
"""

from __future__ import annotations

from typing import Annotated

import typer

from model_foundry.cli.options import NoVerifyOpt


def chat(
    model: Annotated[
        str, typer.Argument(help="A model name (models/<name> of this project) or a model folder.")
    ],
    system: Annotated[str | None, typer.Option(help="A system message that starts the conversation.")] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens per answer, at most.", min=1)] = 256,
    temperature: Annotated[
        float | None, typer.Option(help="0 = greedy; a finite number ≥ 0. Default: the model's own.")
    ] = None,
    top_k: Annotated[
        int | None,
        typer.Option(help="Sample among the k likeliest tokens; 0 = all. Default: the model's.", min=0),
    ] = None,
    top_p: Annotated[
        float | None, typer.Option(help="Sample within this probability mass; 1 = all. Default: the model's.")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed (every answer starts from it).")] = 0,
    no_verify: NoVerifyOpt = False,
) -> None:
    """Chat with a model: the prompt comes at once, the model loads meanwhile; /help lists the commands.

    Exits 2 with an error and a hint when the model cannot chat (no chat template, a masked LM, a damaged
    folder), and, when the messages are piped in (not a terminal), when any message failed: the chat goes
    on after a failed message, then the end of the input reports how many failed.
    """
    from model_foundry.chat_repl import ChatSession, ChatSettings, resolve_model

    settings = ChatSettings(max_new_tokens, temperature, top_k, top_p, seed, system, not no_verify)
    ChatSession(resolve_model(model), settings).run()


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
