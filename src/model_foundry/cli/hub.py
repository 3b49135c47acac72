"""`foundry import-model`: a model from the Hugging Face Hub, a Hub URL or a local folder → models/<name>/."""

from __future__ import annotations

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
    """Import a model in the canonical layout (its --help text, with the family list, is `import_help()`)."""
    from model_foundry.hub import Reporter
    from model_foundry.hub import import_model as run

    def ask(question: str) -> bool:
        return typer.confirm(question, default=False, err=True)

    reporter = Reporter(progress=not quiet, ask=ask if sys.stdin.isatty() else None)
    result = run(
        source, models_dir, name=name, revision=revision, accept_license=accept_license, force=force,
        allow_pickle=allow_pickle, version_suffix=version_suffix, link=link, init_missing=init_missing,
        reporter=reporter,
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
        report_dvc_add(result.path)


def report_dvc_add(path: Path) -> None:
    """`dvc add` the imported folder (inside a DVC repo) and say what happened; a failure is a warning."""
    from model_foundry.project import dvc_add

    added = dvc_add(path)
    if added is None:
        return
    if added.error is not None:
        print(
            f"warning: `dvc add {added.rel}` failed: {added.error}. The model is imported; "
            f"track it yourself with `dvc add {added.rel}`.",
            file=sys.stderr,
        )
        return
    print(
        f"tracked by DVC: {added.dvc_file} "
        f"(commit it with git: `git add {added.dvc_file} {added.rel.parent}/.gitignore`)"
    )


def import_help() -> str:
    """`foundry import-model --help`: what it does, and the supported families (adapters/hf/families.py)."""
    from model_foundry.adapters.hf.families import supported_families

    return (
        "Import a model from the Hugging Face Hub, a Hub URL or a local folder into models/<name>/ "
        f"(the canonical layout). Supported families (config.json model_type): {supported_families()}."
    )


def register(app: typer.Typer) -> None:
    app.command("import-model", help=import_help())(import_model)
