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
    temperature: Annotated[float, typer.Option(help="0 = greedy; a finite number ≥ 0.")] = 0.8,
    top_k: Annotated[int, typer.Option(help="Sample among the k likeliest tokens; 0 = all.", min=0)] = 50,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    no_verify: NoVerifyOpt = False,
) -> None:
    """Continue a prompt with a trained model (an error if its weights or logits are NaN/Infinity)."""
    from model_foundry.generation import SamplingParams, continue_text, load_causal_model

    params = SamplingParams(temperature=temperature, top_k=top_k or None)  # bad settings fail before loading
    adapter = load_causal_model(model, verify=not no_verify)
    print(continue_text(adapter, prompt, max_new_tokens, params, seed))


def info(model: Annotated[Path, typer.Argument(help="A canonical model folder.")]) -> None:
    """Show a model folder's metadata (an error naming the file when config.json, metadata.json or a
    weight file's header is damaged; the weights' sha256 is checked by the commands that load them), and
    the chain of models it was derived from (on stderr: stdout stays the metadata's JSON)."""
    import json
    import sys

    from model_foundry.model_folder.checks import check_model_folder
    from model_foundry.project import dvc_root
    from model_foundry.registry.lineage import format_chain, format_checksums, lineage_chain

    _, meta = check_model_folder(model, verify=False)
    print(json.dumps(meta, indent=2))
    root = dvc_root(model)  # ancestors live in the project's models/, else beside the folder
    links = lineage_chain(model, root / "models" if root else model.resolve().parent)
    print(f"lineage: {format_chain(links)}", file=sys.stderr)
    checksums = format_checksums(links)
    if checksums:
        print("recorded checksums:", *checksums, sep="\n", file=sys.stderr)


def register(app: typer.Typer) -> None:
    app.command("generate")(generate)
    app.command("info")(info)
