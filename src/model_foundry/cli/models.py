"""Commands that use a trained model: `generate`, `info`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from model_foundry.cli.options import ModelDirOpt, NoVerifyOpt


def generate(
    model: ModelDirOpt,
    prompt: Annotated[str, typer.Option("--prompt", help="Text to continue.")] = "",
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate.", min=1)] = 100,
    temperature: Annotated[float, typer.Option(help="0 = greedy.", min=0.0)] = 0.8,
    top_k: Annotated[int, typer.Option(help="Sample among the k likeliest tokens; 0 = all.", min=0)] = 50,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    no_verify: NoVerifyOpt = False,
) -> None:
    """Continue a prompt with a trained model (an error if its weights or logits are NaN/Infinity)."""
    import torch

    from model_foundry.adapters import get_spec
    from model_foundry.adapters.base import load_adapter, read_model_info
    from model_foundry.errors import FoundryError
    from model_foundry.evaluation.finite import require_finite_weights

    config, meta = read_model_info(model)
    objective = (meta.get("training") or {}).get("objective")
    arch = get_spec(meta.get("architecture") or config.get("architecture"))
    if objective == "masked_lm" or "causal_lm" not in arch.objectives:
        raise FoundryError(
            f"{model} is a masked language model: it fills in masked tokens and cannot continue a prompt.",
            "Generate with a model trained with train.objective: causal_lm (e.g. models/gpt-tiny-trained).",
        )
    adapter = load_adapter(model, verify=not no_verify)
    require_finite_weights(adapter.model, model)
    tok = adapter.tokenizer
    if tok is None:
        raise FoundryError(
            f"{model} has no tokenizer.", "Use a trained model folder (models/<name>-trained)."
        )
    from model_foundry.data.encoding import encode_text

    ids = encode_text(tok, prompt) if prompt else []  # the prompt is data: `</s>` in it is text
    start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
    ids = ids or [start]
    out = adapter.generate(
        torch.tensor([ids]),
        max_new_tokens,
        temperature,
        top_k or None,
        tok.eos_token_id,
        generator=torch.Generator().manual_seed(seed),
    )
    print(tok.decode(out[0].tolist(), skip_special_tokens=True))


def info(model: Annotated[Path, typer.Argument(help="A canonical model folder.")]) -> None:
    """Show a model folder's metadata (an error naming the file when config.json, metadata.json or a
    weight file's header is damaged; the weights' sha256 is checked by the commands that load them)."""
    import json

    from model_foundry.model_check import check_model_folder

    _, meta = check_model_folder(model, verify=False)
    print(json.dumps(meta, indent=2))


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("info")(info)
