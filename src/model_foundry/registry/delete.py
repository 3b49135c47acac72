"""Deleting a model as a plan, then its execution (`foundry delete-model NAME`).

`plan_delete` reads what deleting `models/<name>` would remove (its folder, its `models/<name>.dvc` file,
their bytes) and carries what the caller's registry scan knows: which models name it as their parent, and
whether a pipeline stage outputs it. `format_plan` shows that to a person; `execute_delete` does it,
refusing a parent of other models unless forced. The DVC cache is not touched here: its objects are freed by
`model_foundry.registry.gc` (`--gc`) once nothing references them any more.
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from model_foundry.errors import FoundryError
from model_foundry.io import atomic_write_text
from model_foundry.leftovers import temp_prefix
from model_foundry.naming import name_problem
from model_foundry.resources import fmt_bytes

MODELS = "models"


@dataclass(frozen=True)
class DeletePlan:
    """What deleting model `name` removes and what stands in its way.

    folders / dvc_files: the paths to remove (absolute when `root` was); bytes: their total size; sizes: each
    path's size in bytes; dependants: models that name this one as their parent (sorted); pipeline_stage: the
    dvc.lock stage that outputs models/<name>, or None; hint_pipeline: how to take it out of the pipeline.
    """

    name: str
    folders: list[Path]
    dvc_files: list[Path]
    bytes: int
    dependants: list[str]
    pipeline_stage: str | None
    hint_pipeline: str | None
    sizes: dict[Path, int] = field(default_factory=dict)


def _size(path: Path) -> int:
    """Bytes of a file, or of every file below a folder (symlinks not followed: a DVC symlink counts as
    itself; its target is a cache object that only `--gc` frees)."""
    if not path.is_dir() or path.is_symlink():
        return path.lstat().st_size
    total = 0
    for folder, _dirs, files in os.walk(path):
        total += sum((Path(folder) / f).lstat().st_size for f in files)
    return total


def pipeline_hint(name: str, stage: str) -> str:
    """What deleting models/<name>, an output of `stage`, does, and how to drop it from the pipeline."""
    entry = name.removesuffix("-trained") if stage == "train" else name
    return (
        f"{MODELS}/{name} is an output of stage `{stage}` in dvc.lock: `dvc checkout` restores it from the "
        f"DVC cache and the next `dvc repro` recreates it, and `--gc` keeps its cache objects while dvc.lock "
        f"names it. To drop it from the pipeline, point `model_name` in params.yaml at another catalog entry "
        f"(`dvc exp run -S model_name=<other>`) and remove the `{entry}` entry from `models:` in params.yaml."
    )


def plan_delete(root: Path, name: str, dependants: list[str], pipeline_stage: str | None) -> DeletePlan:
    """The plan for deleting models/<name> of the project at `root`; reads sizes, changes nothing.

    `dependants`: the models whose parent is `name` (from the registry scan); `pipeline_stage`: the dvc.lock
    stage whose outs include models/<name>, or None. Raises FoundryError for a name that breaks the naming
    rule (it must be one folder under models/) and when there is neither a folder nor a .dvc file to delete.
    """
    if problem := name_problem(name):
        raise FoundryError(f"{name!r} is not a model name: {problem}.", "Pick a name from `foundry models`.")
    models = Path(root) / MODELS
    folder, dvc_file = models / name, models / f"{name}.dvc"
    folders = [folder] if folder.is_dir() else []
    dvc_files = [dvc_file] if dvc_file.is_file() else []
    if not folders and not dvc_files:
        raise FoundryError(
            f"There is no {MODELS}/{name} folder or {MODELS}/{name}.dvc file in the workspace.",
            "A model only recorded by a commit or an experiment is not deleted from the workspace: remove "
            "the experiment (`dvc exp remove <exp>`), then `foundry models gc` frees its data.",
        )
    sizes = {path: _size(path) for path in [*folders, *dvc_files]}
    return DeletePlan(
        name=name,
        folders=folders,
        dvc_files=dvc_files,
        bytes=sum(sizes.values()),
        dependants=sorted(dependants),
        pipeline_stage=pipeline_stage,
        hint_pipeline=pipeline_hint(name, pipeline_stage) if pipeline_stage else None,
        sizes=sizes,
    )


def _shown(path: Path) -> str:
    try:
        return path.relative_to(Path.cwd()).as_posix()
    except ValueError:
        return str(path)


def format_plan(plan: DeletePlan) -> str:
    """The plan as lines for a person: each path with its size, the total, dependants, the pipeline note."""
    lines = [f"Deleting model {plan.name} removes:"]
    for path in [*plan.folders, *plan.dvc_files]:
        suffix = "/" if path in plan.folders else ""
        size = plan.sizes.get(path)
        lines.append(f"  {_shown(path)}{suffix}  {fmt_bytes(size)}")
    lines.append(f"Total: {fmt_bytes(plan.bytes)} ({plan.bytes:,} bytes)")
    if plan.dependants:
        lines.append(
            f"Models fine-tuned from {plan.name}: {', '.join(plan.dependants)} (refused without --force: "
            f"their parent record would name a model that no longer exists)"
        )
    else:
        lines.append(f"No model names {plan.name} as its parent.")
    if plan.hint_pipeline:
        lines.append(plan.hint_pipeline)
    return "\n".join(lines)


def _remove_gitignore_line(models: Path, name: str) -> None:
    """Drop the `/<name>` line that `dvc add` wrote to models/.gitignore (the file goes when it empties)."""
    path = models / ".gitignore"
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return
    kept = [line for line in lines if line.strip() != f"/{name}"]
    if kept == lines:
        return
    if any(line.strip() for line in kept):
        atomic_write_text(path, "\n".join(kept) + "\n")
    else:
        path.unlink()


def execute_delete(plan: DeletePlan, force: bool) -> None:
    """Delete what `plan` lists: each folder (renamed to a temp name beside it first, then removed, so nothing
    half-deleted is left under the model's name), each .dvc file, and, for a model that is no pipeline output,
    its `/<name>` line in models/.gitignore (so git shows a clean state).

    Raises FoundryError when other models name it as their parent and `force` is false (nothing is deleted
    then), and when a folder cannot be renamed or removed (naming what is left).
    """
    if plan.dependants and not force:
        raise FoundryError(
            f"{plan.name} is the parent of {', '.join(plan.dependants)}: they were fine-tuned from it.",
            f"Delete {'those' if len(plan.dependants) > 1 else 'it'} first, or pass --force to delete "
            f"{plan.name} anyway (their weights stay usable; their parent record then names a deleted "
            "model).",
        )
    doomed = []
    for folder in plan.folders:
        temp = folder.with_name(temp_prefix(folder.name) + secrets.token_hex(4))
        try:
            folder.rename(temp)  # one step: the model's name is either whole or gone
        except OSError as e:
            raise FoundryError(
                f"Could not move {folder} out of the way: {e}.", "Check its permissions."
            ) from e
        doomed.append(temp)
    for dvc_file in plan.dvc_files:
        dvc_file.unlink(missing_ok=True)
    if plan.pipeline_stage is None:  # a stage output keeps its line: dvc.yaml still names the path
        for path in [*plan.folders, *plan.dvc_files]:
            _remove_gitignore_line(path.parent, plan.name)
            break
    for temp in doomed:
        try:
            shutil.rmtree(temp)
        except OSError as e:
            raise FoundryError(
                f"{plan.name} is deleted, but removing its files failed: {e}.",
                f"Remove {temp} by hand (git and DVC ignore it; the next write into models/ retries once "
                "this process has exited).",
            ) from e
