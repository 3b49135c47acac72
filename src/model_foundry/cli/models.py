"""Commands that use a model folder: `generate`, `info`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from model_foundry.cli.options import ModelArg, NoVerifyOpt
from model_foundry.errors import FoundryError
from model_foundry.registry.resolve import MODEL_HELP


def generate(
    name: Annotated[
        str | None, typer.Argument(metavar="[MODEL]", help=MODEL_HELP, show_default=False)
    ] = None,
    model: Annotated[
        Path | None, typer.Option("--model", help="The same as MODEL (the older spelling).")
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
    """Continue prompts with a model, or fill masks.

    A masked LM fills in its mask tokens instead of continuing the text.

    Sampling settings left out are the model's own (generation_config.json; greedy when it says
    do_sample: false). An error if the model's weights or logits are NaN/Infinity, or if an option given
    does not apply to the model (--top to a causal LM; sampling, --stop or --stream to a masked LM).

    \b
    Examples:
      foundry generate gpt-tiny-trained --prompt "Once upon a time" --max-new-tokens 50
      foundry generate models/gpt-tiny-trained --prompts-file prompts.txt --json --temperature 0
      foundry generate bert-tiny-trained --prompt "the [MASK] sat on the mat" --top 3
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


def info(
    model: ModelArg,
    as_json: Annotated[
        bool,
        typer.Option(
            "--json", help="Print metadata.json unchanged (for scripts); the lineage goes to stderr."
        ),
    ] = False,
) -> None:
    """Show what a model is: a summary of its folder and lineage.

    Name, architecture, parameters, dtype, objective, source, licence, lineage, created_at, weight files and
    the MLflow run that trained it. Reads config.json, metadata.json and the weight files' headers (an error
    naming the file when one is damaged; the weights' sha256 is checked by the commands that load them).
    Imports no torch, transformers or mlflow: it answers at once.

    \b
    Examples:
      foundry info gpt-tiny-trained
      foundry info models/qwen2.5-0.5b-instruct
      foundry info gpt-tiny-trained --json | jq .parameters
    """
    import json
    import sys

    from model_foundry.model_folder.checks import check_model_folder
    from model_foundry.project import dvc_root
    from model_foundry.registry.lineage import format_chain, format_checksums, lineage_chain
    from model_foundry.registry.resolve import model_folder

    folder = model_folder(model)
    config, meta = check_model_folder(folder, verify=False)
    root = dvc_root(folder)  # ancestors live in the project's models/, else beside the folder
    links = lineage_chain(folder, root / "models" if root else folder.resolve().parent)
    if as_json:  # stdout: metadata.json as it is; the chain on stderr
        print(json.dumps(meta, indent=2))
        print(f"lineage: {format_chain(links)}", file=sys.stderr)
        checksums = format_checksums(links)
        if checksums:
            print("recorded checksums:", *checksums, sep="\n", file=sys.stderr)
        return
    print("\n".join(_summary(folder, config, meta, format_chain(links), format_checksums(links), root)))


def _human_count(n: Any) -> str:
    """A parameter count for people: 1.07 M (1,071,872)."""
    if not isinstance(n, int) or isinstance(n, bool):
        return "-"
    for size, unit in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if n >= size:
            return f"{n / size:.3g} {unit} ({n:,})"
    return f"{n:,}"


def _source(meta: dict[str, Any]) -> str:
    """Where the model came from, in words: scratch, a Hub id @ revision, a folder, a model of the project."""
    from model_foundry.config import repo_model_name

    source, revision = meta.get("source"), meta.get("revision")
    model_id = meta.get("model_id")
    if not isinstance(source, str) or source == "scratch":
        return "scratch (initialised from the catalog entry in params.yaml)"
    if (parent := repo_model_name(source)) is not None:
        return f"{parent}, a model of this project ({source})"
    at = f" @ {revision}" if isinstance(revision, str) and revision else ""
    if isinstance(model_id, str) and model_id:
        return f"Hugging Face Hub {model_id}{at}"
    return f"{source}{at}"


def _objective(config: dict[str, Any], meta: dict[str, Any], architecture: str | None) -> str:
    training = meta.get("training")
    recorded = training.get("objective") if isinstance(training, dict) else None
    for objective in (recorded, config.get("objective")):
        if isinstance(objective, str):
            return objective
    from model_foundry.adapters import ARCHITECTURES

    spec = ARCHITECTURES.get(architecture or "")
    return spec.objectives[0] if spec is not None and len(spec.objectives) == 1 else "-"


def _summary(
    folder: Path,
    config: dict[str, Any],
    meta: dict[str, Any],
    chain: str,
    checksums: list[str],
    root: Path | None,
) -> list[str]:
    """`foundry info`'s lines: what the model is, where it came from, its files and its MLflow run."""
    from model_foundry.adapters import ARCHITECTURES
    from model_foundry.resources import fmt_bytes

    name = meta.get("model_name") if isinstance(meta.get("model_name"), str) else folder.resolve().name
    architecture = meta.get("architecture") or config.get("architecture")
    spec = ARCHITECTURES.get(str(architecture))
    family = f" — {spec.description.split(';')[0]}" if spec is not None else ""
    licence = meta.get("license")
    acknowledged = meta.get("license_acknowledgment") or meta.get("acknowledgment")
    out = [
        f"{name}  ({_display(folder)})",
        f"  architecture: {architecture or '-'}{family}",
        f"  objective:    {_objective(config, meta, architecture)}",
        f"  parameters:   {_human_count(meta.get('parameters'))}",
        f"  dtype:        {meta.get('dtype') or '-'}",
        f"  source:       {_source(meta)}",
        f"  licence:      {licence if licence else 'none recorded'}"
        + (f" (acknowledged: {acknowledged})" if acknowledged else ""),
        f"  lineage:      {chain}",
    ]
    training = meta.get("training")
    if isinstance(training, dict):
        from model_foundry.registry.lineage import link_method

        steps = training.get("steps")
        done = f", {steps:,} steps" if isinstance(steps, int) else ""
        losses = [f"{k.removeprefix('final_').replace('_', ' ')} {v:.4f}" for k, v in training.items()
                  if k in ("final_train_loss", "final_val_loss") and isinstance(v, (int, float))]  # fmt: skip
        loss_text = f"; {', '.join(losses)}" if losses else ""
        out.append(f"  training:     {link_method(meta)}{done}{loss_text}")
    if checksums:
        out.append("  recorded parent checksums:")
        out += [f"  {line}" for line in checksums]
    created = meta.get("created_at")
    if isinstance(created, str) and created:
        indent = " " * 16
        out += [
            f"  created_at:   {created}  (the pipeline's reproducible time, not when the folder was written:",
            f"{indent}the last git commit that changed params.yaml, dvc.yaml or src/, or SOURCE_DATE_EPOCH;",
            f"{indent}every run of one commit writes the same date, so the same bytes)",
        ]
    out.append("  weight files:")
    sha256 = meta.get("sha256")
    recorded = [str(name) for name in sha256] if isinstance(sha256, dict) else []
    names = sorted({*recorded, *(p.relative_to(folder).as_posix() for p in folder.rglob("*.safetensors"))})
    for file in names:
        path = folder / file
        out.append(f"    {file:<40} {fmt_bytes(path.stat().st_size) if path.is_file() else '(missing)':>10}")
    if not names:
        out.append("    none (a config-only folder: the train stage initialises the weights)")
    out += _mlflow_run(root, str(name))
    return out


def _mlflow_run(root: Path | None, name: str) -> list[str]:
    """The newest MLflow run that trained `name` (else its newest run of any stage), read from the
    project's sqlite store with the stdlib; no lines outside a project, without runs, or for another store
    (reading a server would import mlflow: `foundry model-info` does)."""
    if root is None:
        return []
    from model_foundry.registry.mlflow_runs import read_runs, sqlite_path, tracking_uri_for

    uri = tracking_uri_for(root)
    if sqlite_path(uri) is None:
        return []
    runs = read_runs(uri)[0].get(name, [])
    run = next((r for r in runs if r.stage == "train"), runs[0] if runs else None)
    if run is None:
        return []
    return [
        f"  MLflow run:   {run.run_id}  (the newest {run.stage or 'tagged'} run of {name}, {run.status}, "
        f"{run.start_time})",
        f"                {run.url}  (with `mlflow ui` running)",
    ]


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
