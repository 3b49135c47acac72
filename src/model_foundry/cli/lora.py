"""LoRA adapters: `merge-lora` folds an adapter into its base model as a plain canonical folder."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def merge_lora(
    adapter_dir: Annotated[
        Path,
        typer.Argument(
            help="A LoRA adapter folder (adapter_config.json + adapter_model.safetensors, ours or peft's), "
            "or a LoRA run's folder models/<name> (its adapter/ is used)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="The merged model folder to write (atomically).")],
    base: Annotated[
        Path | None,
        typer.Option(
            "--base",
            help="The model folder the adapter was trained on. Default: models/<base_model_name_or_path> "
            "of adapter_config.json.",
        ),
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Replace --out if it exists.")] = False,
) -> None:
    """Merge a LoRA adapter into its base model: a full model folder that plain transformers loads."""
    from model_foundry.training.merge_lora import merge_lora_folder

    meta = merge_lora_folder(adapter_dir, out, base=base, force=force)
    print(
        f"merged {adapter_dir} into {meta['fine_tuned_from']}: {meta['parameters']:,} parameters "
        f"({meta['dtype']}) → {out}"
    )


def register(app: typer.Typer) -> None:
    app.command("merge-lora")(merge_lora)
