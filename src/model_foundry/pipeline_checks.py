"""Repository-level conflicts that would stop `dvc repro` although params.yaml itself is valid.

DVC refuses a pipeline whose outputs overlap an output of another stage or a `.dvc` file ("overlapping
outputs"): a catalog entry named like an imported model (`foundry import-model` → `models/<name>/` +
`models/<name>.dvc`) makes the convert stage's `models/${model_name}` collide with it. Checked for every
catalog entry, since `-S model_name=<entry>` may pick any of them. Torch-free: reads YAML only.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from model_foundry.errors import FoundryError

# What dvc.yaml writes per model, for a params.yaml with no dvc.yaml beside it.
DEFAULT_MODEL_STAGES = {
    "convert": {"outs": ["models/${model_name}"]},
    "train": {"outs": ["models/${model_name}-trained"]},
}


def pipeline_outs(root: Path, model_name: str) -> list[tuple[str, str]]:
    """(stage, path) for each output dvc.yaml declares with `model_name` substituted; POSIX paths from root.

    Reads outs, metrics and plots of every stage; without a dvc.yaml, DEFAULT_MODEL_STAGES.
    Paths with other `${...}` variables are skipped (they cannot be resolved here).
    """
    import yaml

    dvc_yaml = root / "dvc.yaml"
    stages: dict[str, Any] = {}
    if dvc_yaml.is_file():
        stages = (yaml.safe_load(dvc_yaml.read_text(encoding="utf-8")) or {}).get("stages") or {}
    else:
        stages = DEFAULT_MODEL_STAGES
    found = []
    for stage, spec in stages.items():
        if not isinstance(spec, dict):
            continue
        for kind in ("outs", "metrics", "plots"):
            for item in spec.get(kind) or []:
                path = next(iter(item)) if isinstance(item, dict) else item
                if not isinstance(path, str):
                    continue
                path = path.replace("${model_name}", model_name)
                if "${" not in path:
                    found.append((stage, _normal(path)))
    return found


def tracked_outs(root: Path) -> list[tuple[str, str]]:
    """(.dvc file, path it tracks) for every `.dvc` file in root and models/ and data/; POSIX paths."""
    import yaml

    found = []
    files = [p for d in ("", "models", "data") for p in sorted((root / d).glob("*.dvc")) if p.is_file()]
    for dvc_file in files:
        try:
            outs = (yaml.safe_load(dvc_file.read_text(encoding="utf-8")) or {}).get("outs") or []
        except (yaml.YAMLError, AttributeError):
            continue  # not ours to judge: `dvc status` reports a broken .dvc file
        rel_dir = dvc_file.parent.relative_to(root).as_posix()
        for out in outs:
            if isinstance(out, dict) and isinstance(out.get("path"), str):
                found.append((dvc_file.relative_to(root).as_posix(), _normal(f"{rel_dir}/{out['path']}")))
    return found


def _normal(path: str) -> str:
    parts: list[str] = []
    for part in PurePosixPath(path).parts:
        if part == "..":
            if parts:
                parts.pop()
        elif part != ".":
            parts.append(part)
    return "/".join(parts)


def _overlap(a: str, b: str) -> bool:
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def output_conflicts(root: str | Path, catalog: dict[str, Any]) -> list[FoundryError]:
    """One error per catalog entry whose pipeline outputs overlap a `.dvc`-tracked path or another entry's.

    `root` is the folder with params.yaml (and dvc.yaml). Two entries conflict when one's outputs are the
    other's (an entry `foo-trained` next to an entry `foo`: models/foo-trained would be both the trained foo
    and the converted foo-trained). Returns an empty list when nothing overlaps.
    """
    root = Path(root)
    tracked = tracked_outs(root)
    problems = []
    owner: dict[str, str] = {}  # model folder → the entry whose pipeline writes it
    for name in (n for n in catalog if isinstance(n, str)):
        outs = pipeline_outs(root, name)
        for stage, path in outs:
            problems += [
                _tracked_overlap(name, stage, path, dvc_file, tracked_path)
                for dvc_file, tracked_path in tracked
                if _overlap(path, tracked_path)
            ]
        for path in (path for _, path in outs if path.startswith("models/")):
            other = owner.setdefault(path, name)
            if other != name:
                named_like = name if path == f"models/{name}" else other
                problems.append(
                    FoundryError(
                        f"models.{name} and models.{other} would both write {path}.",
                        f"Rename models.{named_like}: an entry may not be named like the folder another "
                        "entry's pipeline writes.",
                    )
                )
    return problems


def _tracked_overlap(name: str, stage: str, path: str, dvc_file: str, tracked_path: str) -> FoundryError:
    return FoundryError(
        f"models.{name}: the {stage} stage would write {path}, which overlaps {tracked_path} tracked by "
        f"{dvc_file}; `dvc repro` stops on overlapping outputs.",
        f"Rename the catalog entry (e.g. {name}-ft; keep `source: {tracked_path}` to start from the imported "
        f"model), or remove {dvc_file}.",
    )
