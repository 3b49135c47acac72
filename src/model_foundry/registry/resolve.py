"""MODEL → a model folder or a registry name: the one rule every command that names a model follows.

A MODEL argument is a model's name in this project (its folder `models/<name>`) or a model folder's path.
`model_folder` gives the folder (generate, info, chat, serve, merge-lora); `model_name` gives the registry
name (model-info, lineage, validate-model, get, delete-model, compare). Torch-free, and the registry (DVC)
is read only to explain a model that is not in the workspace: `how_to_get_back` names the command that
brings it back (`dvc checkout` / `dvc pull` for the workspace's own outputs, else `foundry get NAME`, which
leaves the workspace as it is, or `dvc exp apply <exp>`, which switches it to the experiment).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    from model_foundry.registry.records import ModelRecord

MODELS_DIR = "models"
MODEL_HELP = "A model: its name in this project (models/<name>) or the path of a model folder."


def _looks_like_path(arg: str) -> bool:
    return os.sep in arg or "/" in arg or arg.startswith(".")


def _name_in_project(path: Path, root: Path) -> str | None:
    """`<name>` when `path` (existing or not) is `<root>/models/<name>`, else None."""
    resolved = path.resolve() if path.is_absolute() else (Path.cwd() / path).resolve()
    return resolved.name if resolved.parent == (root / MODELS_DIR).resolve() and resolved.name else None


def _not_here(name: str, root: Path) -> FoundryError:
    """The error for a model name whose folder is not in the workspace: where the registry has it and how to
    bring it back, or (FoundryError from `Registry.get`) the closest names when the registry has no such
    model."""
    from model_foundry.registry.records import scan

    record = scan(root).get(name)  # raises, naming the closest names, when there is no such model
    return FoundryError(
        f"{MODELS_DIR}/{name} is not checked out here ({record.location}).", how_to_get_back(root, record)
    )


def model_folder(arg: str, root: Path | None = None) -> Path:
    """The model folder MODEL `arg` names: an existing folder as it is, else `<project root>/models/<arg>`.

    Raises FoundryError for a file; for a model of this project that is not in the workspace (a name, or a
    path `models/<name>`, the registry records elsewhere: saying where and `foundry get NAME`); for a name
    the registry does not know (naming the closest ones); for a path that does not exist and names no model
    the registry knows.
    """
    from model_foundry.project import project_root

    path = Path(arg)
    if path.is_dir():
        return path
    if path.exists():
        raise FoundryError(f"{arg} is a file, not a model folder.", "Give a models/<name> folder or a name.")
    root = root or project_root()
    folder = root / MODELS_DIR / arg
    if folder.is_dir():
        return folder
    missing = FoundryError(
        f"{arg} does not exist.", "Give a model folder, or a name from `foundry list-models`."
    )
    if not _looks_like_path(arg):
        raise _not_here(arg, root)
    name = _name_in_project(path, root)
    try:
        error = _not_here(name, root) if name is not None else missing
    except FoundryError:  # a path to a model the registry does not know either
        raise missing from None
    raise error


def model_name(arg: str, root: Path) -> str:
    """The registry name MODEL `arg` means: a name as it is, a path `<root>/models/<name>` (existing or not)
    as `<name>`. Raises FoundryError for a path outside the project's models/ folder."""
    if not _looks_like_path(arg) and not Path(arg).is_dir():
        return arg
    name = _name_in_project(Path(arg), root)
    if name is None:
        raise FoundryError(
            f"{arg} is not a folder of this project's {MODELS_DIR}/ ({root / MODELS_DIR}): the registry "
            f"knows the models under {MODELS_DIR}/.",
            "Give a model name or a models/<name> path; `foundry info PATH` reads any model folder.",
        )
    return name


# --- how to get a missing model folder back ----------------------------------------------------------------
def how_to_get_back(root: Path, model: ModelRecord) -> str:
    """The command(s) that bring the registry's `model` of the project at `root` back into `models/<name>`,
    as one hint sentence:

    - recorded by the workspace (its dvc.lock or `models/<name>.dvc`): `dvc checkout models/<name>`, or
      `dvc pull models/<name>` when only the DVC remote holds the bytes;
    - recorded only by an experiment or a commit (`dvc exp run` replaced the workspace's outputs):
      `foundry get NAME [--exp E]`, which leaves the workspace as it is, and `dvc exp apply E` (or, for
      HEAD's version, `git checkout params.yaml dvc.lock metrics.json plots && dvc checkout`), which
      switches all of it;
    - bytes neither in the DVC cache nor on a remote: configure the remote, or re-create the model.
    """
    name, path = model.name, model.path
    shown = next((v for v in model.versions if v.checksum == model.checksum), None)
    if shown is None:
        return f"Nothing records {path}: re-create it (`dvc repro`, `foundry import-model`)."
    if model.location == "missing":
        return (
            f"DVC recorded {path} ({shown.where}, {shown.checksum[:8]}) but neither the DVC cache nor a "
            "DVC remote holds its bytes: configure the remote that does (`dvc remote add -d …`), or "
            "re-create the model (`dvc repro`, `dvc exp run -S model_name=…`)."
        )
    if shown.kind == "workspace":
        fetch = "dvc pull" if model.location == "remote only" else "dvc checkout"
        return f"The workspace's {shown.recorded_by} records it: `{fetch} {path}` brings it back."
    exp = shown.where.removeprefix("experiment ") if shown.kind == "experiment" else None
    exp = exp or model.experiment
    get = f"foundry get {name}" + (f" --exp {exp}" if exp and len(model.experiments) > 1 else "")
    hint = f"`{get}` brings back {shown.where}'s version without switching the workspace"
    if exp:
        hint += f"; `dvc exp apply {exp}` switches the whole workspace to that experiment"
    elif shown.rev is not None and (_head(root)).strip() == shown.rev:
        hint += (
            "; `git checkout params.yaml dvc.lock metrics.json plots && dvc checkout` returns the whole "
            "workspace to HEAD"
        )
    return hint + "."


def _head(root: Path) -> str:
    proc = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=False)
    return proc.stdout if proc.returncode == 0 else ""
