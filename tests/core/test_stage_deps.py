"""Every module a stage runs is a DVC dependency of that stage, so changing it re-runs the stage.

The modules are found statically: the transitive `model_foundry` imports (module level and inside functions)
of the stage's module, plus the packages they live in. A few modules only touch side channels (MLflow, error
messages, cleanup of our own temp folders) and are not outputs' inputs: they are listed in SIDE_CHANNELS.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
STAGE_MODULES = {  # dvc.yaml stage → the module its command runs (`inputs` runs every time: always_changed)
    "import": "model_foundry.stages.ingest",
    "convert": "model_foundry.stages.convert",
    "tokenize": "model_foundry.stages.tokenize",
    "train": "model_foundry.stages.train",
    "evaluate": "model_foundry.stages.evaluate",
}
SIDE_CHANNELS = {
    "src/model_foundry/__init__.py",  # the package docstring
    "src/model_foundry/stages/__init__.py",  # the package docstring
    "src/model_foundry/tracking.py",  # MLflow runs, not DVC outputs
    "src/model_foundry/registry/__init__.py",  # the package docstring
    "src/model_foundry/registry/dvc.py",  # reads dvc.lock to attach metrics to an MLflow run
    "src/model_foundry/envfaults.py",  # wording of disk/permission errors
    "src/model_foundry/leftovers.py",  # removes stale temp folders of killed runs
}


def _path(module: str) -> Path | None:
    for p in (SRC / (module.replace(".", "/") + ".py"), SRC / module.replace(".", "/") / "__init__.py"):
        if p.is_file():
            return p
    return None


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("model_foundry")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("model_foundry"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}
    return {m for m in found if _path(m)}


def stage_sources(module: str) -> set[str]:
    """Repo-relative paths of every module `module` may run (itself included)."""
    seen: set[str] = set()
    todo = [module]
    while todo:
        m = todo.pop()
        if m in seen:
            continue
        seen.add(m)
        parts = m.split(".")
        todo += [".".join(parts[:i]) for i in range(1, len(parts))]  # parent packages run their __init__
        todo += _imports(_path(m))
    return {_path(m).relative_to(REPO).as_posix() for m in seen}


@pytest.mark.parametrize("stage", list(STAGE_MODULES))
def test_every_module_a_stage_runs_is_a_dependency(stage):
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage].get("deps", [])
    covered = lambda f: any(f == d or f.startswith(d.rstrip("/") + "/") for d in deps)  # noqa: E731
    missing = sorted(f for f in stage_sources(STAGE_MODULES[stage]) - SIDE_CHANNELS if not covered(f))
    assert not missing, f"dvc.yaml stage {stage!r} runs these modules without depending on them: {missing}"


@pytest.mark.parametrize("stage", list(STAGE_MODULES))
def test_every_dependency_exists(stage):
    """A dependency that was moved or deleted makes `dvc repro` fail: regenerate them (see `main`)."""
    deps = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage].get("deps", [])
    src = [d for d in deps if d.startswith("src/")]  # data/models paths are other stages' outputs
    assert not [d for d in src if not (REPO / d).exists()], "run `python tests/core/test_stage_deps.py`"


# Packages a stage depends on as a whole (a folder dependency) when it runs any of their modules.
FOLDER_DEPS = ("adapters", "hub", "training", "evaluation", "model_folder", "generation")


def expected_deps(stage: str) -> list[str]:
    """The `src/` dependencies `dvc.yaml` should list for `stage`: its modules, whole packages as folders."""
    found = set()
    for f in stage_sources(STAGE_MODULES[stage]) - SIDE_CHANNELS:
        parts = f.split("/")  # src/model_foundry/<package>/...
        folder = len(parts) > 3 and parts[2] in FOLDER_DEPS
        found.add("/".join(parts[:3]) if folder else f)
    return sorted(found)


def main() -> None:
    """Rewrite the `src/` lines of every stage's `deps:` in dvc.yaml (a text edit: comments are kept)."""
    out: list[str] = []
    stage, in_deps = None, False
    for line in (REPO / "dvc.yaml").read_text().splitlines(keepends=True):
        if line.startswith("  ") and not line.startswith("   ") and line.rstrip().endswith(":"):
            stage = line.strip().rstrip(":")
        if in_deps and not line.startswith("      - "):  # the end of the deps list: add the src/ lines
            out += [f"      - {d}\n" for d in expected_deps(stage)]
            in_deps = False
        if in_deps and line.startswith("      - src/"):
            continue
        out.append(line)
        in_deps = in_deps or (stage in STAGE_MODULES and line.strip() == "deps:")
    (REPO / "dvc.yaml").write_text("".join(out))


if __name__ == "__main__":
    main()
