"""Commands that use a trained model: `generate`, `info`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from model_foundry.cli.options import NoVerifyOpt
from model_foundry.errors import FoundryError


def generate(
    name: Annotated[
        str | None,
        typer.Argument(
            metavar="[NAME|PATH]", help="A model folder, or a model name of this project (models/<name>)."
        ),
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="A canonical model folder (the same as PATH).")
    ] = None,
    prompt: Annotated[str, typer.Option("--prompt", help="Text to continue (or to fill, with masks).")] = "",
    prompts_file: Annotated[
        Path | None, typer.Option("--prompts-file", help="A UTF-8 file of prompts, one per line.")
    ] = None,
    max_new_tokens: Annotated[int, typer.Option(help="Tokens to generate at most.", min=1)] = 100,
    temperature: Annotated[
        float | None, typer.Option(help="0 = greedy; default: the model's generation_config.json.")
    ] = None,
    top_k: Annotated[
        int | None, typer.Option(help="Sample among the k likeliest tokens; 0 = all.", min=0)
    ] = None,
    top_p: Annotated[float | None, typer.Option(help="Nucleus sampling, in (0, 1]; 1 = all.")] = None,
    min_p: Annotated[
        float | None, typer.Option(help="Drop tokens below min_p × the top one, in [0, 1].")
    ] = None,
    repetition_penalty: Annotated[
        float | None, typer.Option(help="> 0; 1 = none; above 1 discourages repeats.")
    ] = None,
    stop: Annotated[
        list[str] | None, typer.Option("--stop", help="A string that ends the text (repeatable).")
    ] = None,
    seed: Annotated[int, typer.Option(help="Sampling seed.")] = 0,
    stream: Annotated[bool, typer.Option("--stream", help="Print the text as it is generated.")] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON object per prompt (text, finish_reason, usage).")
    ] = False,
    top: Annotated[
        int | None, typer.Option("--top", help="Masked LMs: predictions shown per mask (default 5).", min=1)
    ] = None,
    no_verify: NoVerifyOpt = False,
) -> None:
    """Continue prompts with a model (a masked LM fills in its mask tokens instead).

    Sampling settings left out are the model's own (generation_config.json; greedy when it says
    do_sample: false). An error if the model's weights or logits are NaN/Infinity, or if an option given
    does not apply to the model (--top to a causal LM; sampling, --stop or --stream to a masked LM).
    """
    import json

    from model_foundry.generation.cli_support import (
        fill_mask_lines,
        read_prompts,
        resolve_model,
        sampling_overrides,
    )
    from model_foundry.generation.defaults import resolve
    from model_foundry.generation.sampling import SamplingParams

    if stream and as_json:
        raise FoundryError(
            "--stream and --json do not go together: --json prints one whole record per prompt.",
            "Drop one of them.",
        )
    if stop and any(not s for s in stop):
        raise FoundryError("--stop '' is an empty string: it would end every answer at once.", "Drop it.")
    overrides = sampling_overrides(temperature, top_k, top_p, min_p, repetition_penalty)
    resolve(SamplingParams(), overrides)  # bad settings fail before loading
    path = resolve_model(name, model)
    prompts = read_prompts(prompt, prompts_file)

    from model_foundry.generation import Engine, Request, fill_mask, is_masked_model, load_model_for_use

    label = _display(path)
    if is_masked_model(path):
        options = {"--temperature": temperature, "--top-k": top_k, "--top-p": top_p, "--min-p": min_p,
                   "--repetition-penalty": repetition_penalty, "--stop": stop or None,
                   "--stream": stream or None}  # fmt: skip
        if given := [name for name, value in options.items() if value is not None]:
            listed = ", ".join(given[:-1]) + " and " + given[-1] if len(given) > 1 else given[0]
            raise FoundryError(
                f"{listed} {'do' if len(given) > 1 else 'does'} not apply to a masked language model: "
                f"{label} fills in its mask tokens, it does not generate text.",
                f"Drop {listed}; --top sets how many predictions are shown per mask.",
            )
        adapter = load_model_for_use(path, verify=not no_verify)
        for text in prompts:
            predictions = fill_mask(adapter, text, 5 if top is None else top)
            if as_json:
                print(json.dumps({"prompt": text, "masks": fill_mask_lines(predictions, as_json=True)}))
            else:
                print("\n".join(fill_mask_lines(predictions)))
        return
    if top is not None:
        raise FoundryError(
            f"--top is a masked-LM option (the predictions shown per mask): {label} is a causal language "
            "model, it continues the prompt.",
            "Drop --top; --max-new-tokens and the sampling options (--temperature, --top-k, --top-p) "
            "shape a causal LM's text.",
        )
    engine = Engine.from_folder(path, verify=not no_verify)
    params = engine.resolve(overrides)
    for number, text in enumerate(prompts, 1):
        if len(prompts) > 1 and not as_json:  # several answers in plain text: say where each begins
            print(f"{'' if number == 1 else chr(10)}=== prompt {number}/{len(prompts)} ===")
        ids = engine.encode_prompt(text)
        _note_context(engine.max_context, len(ids), max_new_tokens, number if len(prompts) > 1 else None)
        request = Request(ids, max_new_tokens, params, tuple(stop or ()), seed)
        if stream and not as_json:
            print(text, end="", flush=True)
            for delta in engine.stream(request):
                print(delta.text, end="", flush=True)
            print()
            continue
        done = engine.complete(request)
        if as_json:
            usage = {
                "prompt_tokens": done.prompt_tokens,
                "completion_tokens": done.completion_tokens,
                "total_tokens": done.prompt_tokens + done.completion_tokens,
            }
            record = {"prompt": text, "text": done.text, "finish_reason": done.finish_reason, "usage": usage}
            print(json.dumps(record, ensure_ascii=False))
        else:
            print(text + done.text)


def _display(path: Path) -> str:
    """`path` relative to the working directory when it is below it (models/x), else as given."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


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


def _note_context(context: int | None, prompt_tokens: int, max_new_tokens: int, number: int | None) -> None:
    """Say on stderr when a prompt and its new tokens pass the model's context: the model then reads only the
    last `context` tokens (a sliding window, `BaseAdapter.prefill`/`decode`), so nothing is dropped unsaid."""
    if context is None or prompt_tokens + max_new_tokens <= context:
        return
    which = f"prompt {number}" if number is not None else "the prompt"
    if prompt_tokens > context:
        what = f"{which} is {prompt_tokens} tokens: the model reads only its last {context}"
    else:
        what = (
            f"{which} ({prompt_tokens} token{'s' if prompt_tokens != 1 else ''}) + up to {max_new_tokens} "
            f"new tokens pass the model's context "
            f"of {context}: past it, the model reads only the last {context} tokens"
        )
    typer.echo(f"note: {what} (a sliding window; --max-new-tokens sets the length).", err=True)
