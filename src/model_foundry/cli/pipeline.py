"""The six stage commands dvc.yaml runs (their own section of `foundry --help`), plus `validate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from model_foundry.cli.options import (
    STAGES_PANEL,
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
    """Check params.yaml and list every problem.

    Checks every section as written, every catalog entry's effective config, names, and conflicts with the
    repository (e.g. outputs overlapping `.dvc`-tracked folders). Exit 2 when there is a problem. Imports
    no torch: it answers at once.

    \b
    Examples:
      foundry validate
      foundry validate --params experiments/params.yaml
    """
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
    """inputs stage: fingerprint every input of the pipeline.

    Validates params, then writes the sha256 of every input the stages read (local folders, data files), so
    DVC reruns a stage when one changes.

    \b
    Example (dvc.yaml runs it):
      foundry inputs --params params.yaml --data-out data/inputs/data.json \\
        --model-out data/inputs/model.json --tokenizer-out data/inputs/tokenizer.json
    """
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
    """import stage: the corpus (train/val) and model source.

    \b
    Example (dvc.yaml runs it):
      foundry import --params params.yaml --corpus-out data/corpus --source-out data/source
    """
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
    """convert stage: write the canonical model folder.

    The model of params.yaml in the canonical layout, models/<name>/.

    \b
    Example (dvc.yaml runs it):
      foundry convert --params params.yaml --source data/source --out models/gpt-tiny
    """
    from model_foundry.stages import convert as stage

    meta = stage.run(load_params(params), source, out)
    print(f"model {meta['model_name']} ({meta['architecture']}) → {out}")


def tokenize(
    corpus: CorpusOpt,
    model: ModelDirOpt,
    out: OutOpt,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """tokenize stage: a tokenizer and the token ids (memmaps).

    Trains (or reuses) a tokenizer and writes the corpus as token-id arrays.

    \b
    Example (dvc.yaml runs it):
      foundry tokenize --params params.yaml --corpus data/corpus --model models/gpt-tiny --out data/tokens
    """
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
    """train stage: train a model and save its folder.

    Full or LoRA training per `train.method`; saves safetensors, config, tokenizer and metadata.json, and
    logs the run to MLflow. Ctrl-C or a crash: run it again with --resume to continue from a checkpoint.

    \b
    Example (dvc.yaml runs it):
      foundry train --params params.yaml --model models/gpt-tiny --data data/tokens \\
        --out models/gpt-tiny-trained --plots plots
    """
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
    """evaluate stage: validation metrics into metrics.json.

    Writes the metrics (and a unigram baseline) to metrics.json and MLflow.

    \b
    Example (dvc.yaml runs it):
      foundry evaluate --params params.yaml --model models/gpt-tiny-trained --data data/tokens \\
        --metrics metrics.json
    """
    from model_foundry.stages import evaluate as stage

    result = stage.run(load_params(params), model, data, metrics, verify=not no_verify)
    from model_foundry.evaluation.table import metrics_table

    print(metrics_table(result))


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)  # a person types it: among the commands, not the stages
    for name, command in (("inputs", inputs), ("import", import_), ("convert", convert),
                          ("tokenize", tokenize), ("train", train), ("evaluate", evaluate)):  # fmt: skip
        app.command(name, rich_help_panel=STAGES_PANEL)(command)
