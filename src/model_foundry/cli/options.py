"""Options shared by several commands, declared once.

Stage paths have no defaults on purpose: dvc.yaml is the one place they are written.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from model_foundry.registry.resolve import MODEL_HELP

STAGES_PANEL = "Pipeline stages (run by dvc.yaml)"  # their section of `foundry --help`, after the commands

# MODEL, the one way a command names a model (registry/resolve.py: a name of this project or a folder).
ModelArg = Annotated[str, typer.Argument(metavar="MODEL", help=MODEL_HELP, show_default=False)]
ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The params file to read.")]
ModelDirOpt = Annotated[Path, typer.Option("--model", help="A canonical model folder (models/<name>).")]
DataDirOpt = Annotated[
    Path, typer.Option("--data", help="The tokenize stage's folder (token ids + tokenizer).")
]
OutOpt = Annotated[Path, typer.Option("--out", help="Where to write (replaced atomically).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
CorpusOpt = Annotated[Path, typer.Option("--corpus", help="The import stage's corpus folder.")]
SourceOpt = Annotated[Path, typer.Option("--source", help="The import stage's model source folder.")]
CorpusOutOpt = Annotated[Path, typer.Option("--corpus-out", help="Folder for the train/val splits.")]
SourceOutOpt = Annotated[Path, typer.Option("--source-out", help="Folder for the model source.")]
PlotsOpt = Annotated[
    Path, typer.Option("--plots", help="Folder for the loss-by-step CSVs and effective_params.json.")
]
MetricsOpt = Annotated[Path, typer.Option("--metrics", help="The metrics file to write.")]
NoVerifyOpt = Annotated[
    bool,
    typer.Option(
        "--no-verify",
        help="Skip comparing the model's weights with the sha256 in its metadata.json (cached per file, so "
        "the check is one read of each changed file).",
    ),
]
