"""The six stage commands dvc.yaml runs, plus `validate`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from model_foundry.cli.options import (
    CorpusOpt,
    CorpusOutOpt,
    DataDirOpt,
    MetricsOpt,
    ModelDirOpt,
    NoVerifyOpt,
    OutOpt,
    ParamsOpt,
    PlotsOpt,
    QuietOpt,
    SourceOpt,
    SourceOutOpt,
)
from model_foundry.config import load_params


def validate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Check params.yaml: every section as written, every catalog entry's effective config, names, and
    conflicts with the repository (e.g. outputs overlapping `.dvc`-tracked folders). Lists every problem."""
    import sys

    from model_foundry.config import check_params, parse_params, read_params
    from model_foundry.pipeline_checks import output_conflicts

    raw = read_params(params)
    problems = check_params(raw)
    if isinstance(raw, dict) and isinstance(raw.get("models"), dict):
        problems += output_conflicts(Path(params).parent, raw["models"])
    for problem in problems:
        print(f"error: {problem.message}", file=sys.stderr)
        if problem.hint:
            print(f"  hint: {problem.hint}", file=sys.stderr)
    if problems:
        print(f"{params}: {len(problems)} problem(s).", file=sys.stderr)
        raise typer.Exit(2)
    p = parse_params(raw)
    for shadow in p.shadowed:
        print(f"note: {shadow}", file=sys.stderr)
    print(
        f"{params}: ok. model_name={p.model_name} ({p.model.architecture}, source={p.model.source}); "
        f"catalog: {', '.join(p.catalog)}"
    )


def inputs(
    data_out: Annotated[Path, typer.Option("--data-out", help="JSON fingerprint of data.source.")],
    model_out: Annotated[Path, typer.Option("--model-out", help="JSON fingerprint of the model source.")],
    tokenizer_out: Annotated[
        Path, typer.Option("--tokenizer-out", help="JSON fingerprint of the tokenizer_override.")
    ],
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """inputs stage: validate params; fingerprint every input the stages read (local folders, data files)."""
    from model_foundry.stages import inputs as stage

    result = stage.run(load_params(params), data_out, model_out, tokenizer_out)
    data = ", ".join(f"{d['source']} ({d['sha256'][:12]})" for d in result["data"]["data.source"])
    model = result["model"]
    print(f"data: {data}")
    print(f"model source: {model['source']} ({model.get('sha256', model['kind'])[:12]})")
    if result["tokenizer"]["tokenizer_override"]:
        print(f"tokenizer_override: {result['tokenizer']['tokenizer_override']}")


def import_(
    corpus_out: CorpusOutOpt,
    source_out: SourceOutOpt,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """import stage: bring the corpus (split into train/val) and the model source into the repo."""
    from model_foundry.stages import ingest

    result = ingest.run(load_params(params), corpus_out, source_out)
    c = result["corpus"]
    print(
        f"corpus: {c['train']['documents']} train / {c['val']['documents']} val documents "
        f"({c['train']['characters'] + c['val']['characters']:,} characters) → {corpus_out}"
    )
    print(f"model source: {result['source']['source']} ({result['source']['architecture']}) → {source_out}")


def convert(
    source: SourceOpt,
    out: OutOpt,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """convert stage: write the model in the canonical layout models/<name>/."""
    from model_foundry.stages import convert as stage

    meta = stage.run(load_params(params), source, out)
    print(f"model {meta['model_name']} ({meta['architecture']}) → {out}")


def tokenize(
    corpus: CorpusOpt,
    model: ModelDirOpt,
    out: OutOpt,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """tokenize stage: train (or reuse) a tokenizer and write token ids as memmap arrays."""
    from model_foundry.stages import tokenize as stage

    meta = stage.run(load_params(params), corpus, model, out)
    print(
        f"tokenizer {meta['tokenizer']} (vocab {meta['vocab_size']}): "
        f"{meta['tokens']['train']:,} train / {meta['tokens']['val']:,} val tokens → {out}"
    )


def train(
    model: ModelDirOpt,
    data: DataDirOpt,
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write the trained model (replaced atomically). Default: models/<parent>-<method> "
            "(or models/<train.output_name>), which must not exist yet.",
        ),
    ] = None,
    plots: PlotsOpt = Path("plots"),
    params: ParamsOpt = Path("params.yaml"),
    resume: Annotated[
        Path | None,
        typer.Option(
            "--resume",
            help="Continue from this checkpoint (a checkpoints/<model>/step-NNNNNN folder, or the folder of "
            "them: its newest); it must match the params, data and parent.",
        ),
    ] = None,
    quiet: QuietOpt = False,
    no_verify: NoVerifyOpt = False,
) -> None:
    """train stage: train the model and save it (safetensors + config + tokenizer + metadata)."""
    from model_foundry.stages import train as stage

    p = load_params(params)
    out = out if out is not None else stage.default_output(p, model)
    s = stage.run(p, model, data, out, plots, progress=not quiet, verify=not no_verify, resume_from=resume)
    print(
        f"trained → {out}: train loss {s['final_train_loss']:.4f}, val loss {s['final_val_loss']:.4f}, "
        f"{s['train_tokens_per_s']:,.0f} tokens/s, MLflow run {s['run_id']}"
    )


def evaluate(
    model: ModelDirOpt,
    data: DataDirOpt,
    metrics: MetricsOpt,
    params: ParamsOpt = Path("params.yaml"),
    no_verify: NoVerifyOpt = False,
) -> None:
    """evaluate stage: validation metrics (and a unigram baseline) into metrics.json and MLflow."""
    from model_foundry.stages import evaluate as stage

    result = stage.run(load_params(params), model, data, metrics, verify=not no_verify)
    print(json.dumps(result, indent=2))


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("inputs")(inputs)
    app.command("import")(import_)
    app.command("convert")(convert)
    app.command("tokenize")(tokenize)
    app.command("train")(train)
    app.command("evaluate")(evaluate)
