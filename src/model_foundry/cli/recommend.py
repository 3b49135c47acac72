"""The `foundry recommend` command: which Qwen2.5 size fits this machine (model_foundry.recommend)."""

from __future__ import annotations

import json
from enum import Enum
from typing import Annotated

import typer


class For(str, Enum):
    inference = "inference"
    lora = "lora"
    full = "full"


class Dtype(str, Enum):
    bf16 = "bf16"
    fp16 = "fp16"
    fp32 = "fp32"


def recommend(
    ram: Annotated[
        float | None,
        typer.Option(
            "--ram",
            help="Memory to plan for, in GiB (default: this machine's GPU free memory, else MemAvailable).",
        ),
    ] = None,
    purpose: Annotated[For, typer.Option("--for", help="What the model is for.")] = For.inference,
    dtype: Annotated[Dtype, typer.Option(help="Inference weights and KV cache dtype.")] = Dtype.bf16,
    context: Annotated[
        int,
        typer.Option(
            help="Tokens of context (KV cache; training sequence length), at most 32768 (Qwen2.5).", min=1
        ),
    ] = 4096,
    as_json: Annotated[bool, typer.Option("--json", help="Print the answer as JSON.")] = False,
) -> None:
    """The largest Qwen2.5 (0.5B-14B) that fits this machine.

    Shows the arithmetic, the import command and a catalog entry. Exits 0 with a "Nothing fits" answer
    when even 0.5B is too big, saying what would make it fit: a shorter --context when only the KV cache or
    activations overflow, another --for, else the memory it needs.
    Exits 2 (error + hint) for a --context longer than Qwen2.5 reads (32,768 tokens).

    \b
    Examples:
      foundry recommend
      foundry recommend --for lora --ram 24 --context 2048
      foundry recommend --json
    """
    from model_foundry import recommend as rec

    memory = rec.parse_ram(ram) if ram is not None else rec.available_memory()
    answer = rec.recommend(memory, purpose.value, dtype.value, context)
    if as_json:
        print(json.dumps(answer.to_json(), indent=2))
    else:
        print(rec.format_report(answer))


def register(app: typer.Typer) -> None:
    app.command("recommend")(recommend)
