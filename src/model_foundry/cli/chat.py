"""The `foundry chat` command: a conversation with a model in the terminal (model_foundry.chat_repl).

Nothing heavy is imported here or before the prompt: the model loads in a background thread.
"""

from __future__ import annotations

from typing import Annotated

import typer

from model_foundry.cli.options import ModelArg, NoVerifyOpt


def chat(
    model: ModelArg,
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
    """Chat with a model in the terminal.

    The prompt comes at once; the model loads meanwhile; /help lists the chat's commands. Exits 2 with an
    error and a hint when the model cannot chat (no chat template, a masked LM, a damaged folder), and, when
    the messages are piped in (not a terminal), when any message failed: the chat goes on after a failed
    message, then the end of the input reports how many failed.

    \b
    Examples:
      foundry chat qwen2.5-0.5b-instruct
      foundry chat models/qwen2.5-0.5b-instruct --system "Answer in one sentence." --temperature 0
      printf 'Hi\\nWhat is DVC?\\n' | foundry chat qwen2.5-0.5b-instruct
    """
    from model_foundry.chat_repl import ChatSession, ChatSettings
    from model_foundry.registry.resolve import model_folder

    settings = ChatSettings(max_new_tokens, temperature, top_k, top_p, seed, system, not no_verify)
    ChatSession(model_folder(model), settings).run()


def register(app: typer.Typer) -> None:
    app.command("chat")(chat)
