"""LoRA adapters: `merge-lora` folds an adapter into its base model as a plain canonical folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from model_foundry.registry.resolve import MODEL_HELP


def merge_lora(
    adapter: Annotated[
        str,
        typer.Argument(
            metavar="MODEL",
            help=f"{MODEL_HELP} A LoRA run's model (its adapter/ is used), or a LoRA adapter folder "
            "(adapter_config.json + adapter_model.safetensors, ours or peft's).",
            show_default=False,
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The merged model folder to write (atomically).")],
    base: Annotated[
        str | None,
        typer.Option(
            "--base",
            metavar="MODEL",
            help="The model the adapter was trained on (a name or a folder). Default: "
            "models/<base_model_name_or_path> of adapter_config.json.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Merge a LoRA adapter into its base model.

    The result is a full, plain canonical folder that transformers loads without peft.

    \b
    Examples:
      foundry merge-lora gpt-tiny-lora-trained --out models/gpt-tiny-merged
      foundry merge-lora ./peft-adapter --base qwen2.5-0.5b-instruct --out models/qwen-merged --force
    """
    from model_foundry.registry.resolve import model_folder
    from model_foundry.training.merge_lora import merge_lora_folder

    adapter_dir = model_folder(adapter)
    meta = merge_lora_folder(adapter_dir, out, base=model_folder(base) if base else None, force=force)
    print(
        f"merged {adapter_dir} into {meta['fine_tuned_from']}: {meta['parameters']:,} parameters "
        f"({meta['dtype']}) → {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("merge-lora")(merge_lora)
