"""The five stage commands dvc.yaml runs, plus `validate`."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from model_foundry.cli.options import (
    CorpusOpt,
    CorpusOutOpt,
    DataDirOpt,
    MetricsOpt,
    ModelDirOpt,
    OutOpt,
    ParamsOpt,
    PlotsOpt,
    QuietOpt,
    SourceOpt,
    SourceOutOpt,
)
from model_foundry.config import load_params


def validate(params: ParamsOpt = Path("params.yaml")) -> None:
    """Check params.yaml (every catalog entry) without touching a model."""
    from model_foundry.config import parse_entry

    p = load_params(params)
    for name, raw in p.catalog.items():
        parse_entry(name, raw)
    print(
        f"{params}: ok. model_name={p.model_name} ({p.model.architecture}, source={p.model.source}); "
        f"catalog: {', '.join(p.catalog)}"
    )


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
    out: OutOpt,
    plots: PlotsOpt,
    params: ParamsOpt = Path("params.yaml"),
    quiet: QuietOpt = False,
) -> None:
    """train stage: train the model and save it (safetensors + config + tokenizer + metadata)."""
    from model_foundry.stages import train as stage

    s = stage.run(load_params(params), model, data, out, plots, progress=not quiet)
    print(
        f"trained → {out}: train loss {s['final_train_loss']:.4f}, val loss {s['final_val_loss']:.4f}, "
        f"{s['train_tokens_per_s']:,.0f} tokens/s, MLflow run {s['run_id']}"
    )


def evaluate(
    model: ModelDirOpt,
    data: DataDirOpt,
    metrics: MetricsOpt,
    params: ParamsOpt = Path("params.yaml"),
) -> None:
    """evaluate stage: validation metrics (and a unigram baseline) into metrics.json and MLflow."""
    from model_foundry.stages import evaluate as stage

    result = stage.run(load_params(params), model, data, metrics)
    print(json.dumps(result, indent=2))


def register(app: typer.Typer) -> None:
    app.command("validate")(validate)
    app.command("import")(import_)
    app.command("convert")(convert)
    app.command("tokenize")(tokenize)
    app.command("train")(train)
    app.command("evaluate")(evaluate)
