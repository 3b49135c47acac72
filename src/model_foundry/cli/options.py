"""Options shared by several commands, declared once."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

ParamsOpt = Annotated[Path, typer.Option("--params", "-p", help="The params file to read.")]
ModelDirOpt = Annotated[Path, typer.Option("--model", help="A canonical model folder (models/<name>).")]
DataDirOpt = Annotated[
    Path, typer.Option("--data", help="The tokenize stage's folder (token ids + tokenizer).")
]
OutOpt = Annotated[Path, typer.Option("--out", help="Where to write (replaced atomically).")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
