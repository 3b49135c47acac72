"""`foundry import-model`: a model from the Hugging Face Hub, a Hub URL or a local folder → models/<name>/."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from model_foundry.cli.options import QuietOpt

if TYPE_CHECKING:
    from model_foundry.hub.importer import ImportResult


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
    from model_foundry.hub.report import import_summary

    print(import_summary(result, link))
    if not no_dvc:
        report_dvc_add(result.path, result)


def report_dvc_add(path: Path, result: ImportResult | None = None) -> None:
    """`dvc add` the imported folder (inside a DVC repo) and say what happened; a failure is a warning.

    Runs inside the project lock (another import's rename or `dvc add` waits) and waits for DVC's own lock
    (a running `dvc repro`), with a note on stderr when it waits. Raises FoundryError when a lock stays held
    longer than `project.lock_timeout()`: the model is imported then, and the hint says how to track it.
    """
    from model_foundry.errors import FoundryError
    from model_foundry.locking import project_lock
    from model_foundry.project import dvc_add, dvc_root

    if dvc_root(path.parent) is None:  # not in a DVC repo: nothing to track, no lock to take
        return
    try:
        with project_lock(path.parent, f"import-model: dvc add {path}"):
            added = dvc_add(path)
            if added is not None and added.error is None and result is not None:
                declare_import(added.root, added.rel.as_posix(), result)
    except FoundryError as e:
        raise FoundryError(
            f"{e.message} {path} is imported but not tracked by DVC.",
            f"{e.hint or ''} Then track it: `dvc add {path}`.".lstrip(),
        ) from None
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


def declare_import(root: Path, rel: str, result: ImportResult) -> None:
    """Declare the imported folder as a model artifact in dvc.yaml (registry/artifacts.py); a dvc.yaml that
    cannot be read or written is a warning (the import and its .dvc file stand)."""
    from ruamel.yaml.error import YAMLError

    from model_foundry.registry.artifacts import declare_artifact

    origin = result.model_id or result.source
    meta = {"imported": True, "source": origin, **({"revision": result.revision} if result.revision else {})}
    try:
        changed = declare_artifact(
            root,
            result.name,
            rel,
            f"{origin} imported by foundry import-model",
            [result.architecture, "import"],
            meta,
        )
    except (OSError, YAMLError) as e:
        print(f"warning: could not declare {rel} in dvc.yaml's artifacts: {e}", file=sys.stderr)
        return
    if changed:
        print(f"declared in dvc.yaml's artifacts as {result.name} (commit dvc.yaml with it)")


def import_help() -> str:
    """`foundry import-model --help`: what it does, and the supported families (adapters/hf/families.py)."""
    from model_foundry.adapters.hf.families import supported_families

    return (
        "Import a Hub model or a local folder into models/.\n\n"
        "SOURCE is a Hugging Face Hub id, a Hub URL or a local folder in Hugging Face format; the model is "
        "written in the canonical layout and `dvc add`-ed. Supported families (config.json model_type): "
        f"{supported_families()}.\n\n"
        "\b\nExamples:\n"
        "  foundry import-model Qwen/Qwen2.5-0.5B-Instruct --accept-license\n"
        "  foundry import-model https://huggingface.co/Qwen/Qwen2.5-0.5B/tree/main --name qwen-base\n"
        "  foundry import-model ./my-hf-folder --name my-model --link"
    )


def register(app: typer.Typer) -> None:
    app.command("import-model", help=import_help())(import_model)
