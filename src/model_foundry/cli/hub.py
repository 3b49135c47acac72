"""`foundry import-model`: a model from the Hugging Face Hub, a Hub URL or a local folder → models/<name>/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Annotated

import typer

from model_foundry.cli.options import QuietOpt


def import_model(
    source: Annotated[
        str, typer.Argument(help="Hub id (Qwen/Qwen2.5-0.5B), Hub URL (…/tree/<rev>), or a local folder.")
    ],
    name: Annotated[
        str | None, typer.Option("--name", help="Folder name under models/ (default: from the repo id).")
    ] = None,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Branch, tag or commit sha (default: main).")
    ] = None,
    accept_license: Annotated[
        bool, typer.Option("--accept-license", help="Accept the model's licence (needed without a terminal).")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="Import even above the memory hard limit.")] = False,
    allow_pickle: Annotated[
        bool, typer.Option("--allow-pickle", help="Convert pickle-only (.bin) checkpoints to safetensors.")
    ] = False,
    version_suffix: Annotated[
        bool, typer.Option("--version-suffix", help="If the name exists, import as <name>-v2, -v3, ...")
    ] = False,
    init_missing: Annotated[
        bool,
        typer.Option(
            "--init-missing",
            help="If the checkpoint lacks tensors the model needs (e.g. an encoder without its MLM head), "
            "initialise them once, seeded, and save them into the folder (default: refuse the import).",
        ),
    ] = False,
    link: Annotated[
        bool, typer.Option("--link", help="Hard-link a local folder's weights instead of copying them.")
    ] = False,
    models_dir: Annotated[Path, typer.Option("--models-dir", help="Where model folders live.")] = Path(
        "models"
    ),
    no_dvc: Annotated[bool, typer.Option("--no-dvc", help="Do not `dvc add` the imported folder.")] = False,
    quiet: QuietOpt = False,
) -> None:
    """Import a model (Qwen2/3, Llama, Mistral, GPT-2, BERT, RoBERTa) in the canonical layout."""
    from model_foundry.hub import import_model as run

    def confirm(question: str) -> bool:
        return typer.confirm(question, default=False, err=True)

    result = run(
        source, models_dir, name=name, revision=revision, accept_license=accept_license, force=force,
        allow_pickle=allow_pickle, version_suffix=version_suffix, interactive=sys.stdin.isatty(), link=link,
        init_missing=init_missing,
        confirm=confirm, progress=not quiet,
    )  # fmt: skip
    revision_text = f" @ {result.revision[:12]}" if result.revision else ""
    print(
        f"imported {result.model_id or result.source}{revision_text} → {result.path} "
        f"({result.architecture}, {result.parameters:,} parameters, {result.dtype}, "
        f"licence {result.license}; "
        f"{result.linked_files}/{len(result.sha256)} weight files hard-linked, "
        f"{result.seconds:.1f} s)"
    )
    if not no_dvc:
        dvc_add(result.path)


def dvc_root(path: Path) -> Path | None:
    for parent in [path.resolve(), *path.resolve().parents]:
        if (parent / ".dvc").is_dir():
            return parent
    return None


def dvc_add(path: Path) -> bool:
    """Track the folder with DVC (its content hash becomes the model's checksum) when inside a DVC repo."""
    root = dvc_root(path.parent)
    if root is None:
        return False
    rel = path.resolve().relative_to(root)
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "add", "--quiet", str(rel)], cwd=root, capture_output=True, text=True
    )
    if proc.returncode != 0:
        detail = (proc.stderr or proc.stdout).strip().splitlines()
        print(
            f"warning: `dvc add {rel}` failed: {detail[-1] if detail else proc.returncode}. "
            "The model is imported; "
            f"track it yourself with `dvc add {rel}`.",
            file=sys.stderr,
        )
        return False
    print(f"tracked by DVC: {rel}.dvc (commit it with git: `git add {rel}.dvc {rel.parent}/.gitignore`)")
    return True


def register(app: typer.Typer) -> None:
    app.command("import-model")(import_model)
