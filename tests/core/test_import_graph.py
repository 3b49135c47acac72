"""Nothing in `model_foundry` imports in a circle.

The graph counts every import of a `model_foundry` module, at module level and inside functions (a lazy import
is still a dependency), except those under `if TYPE_CHECKING:` (they never run). Importing a submodule runs
its parent packages' `__init__`, which is not an edge here: packages only re-export or document.
"""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "src"


def _module(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module(p): p for p in SRC.rglob("*.py")}


def _resolve(name: str) -> str | None:
    """The module `name` refers to (`pkg.mod.func` → `pkg.mod`), or None outside model_foundry."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def _edges(module: str) -> set[str]:
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue
            names: list[str] = []
            if isinstance(child, ast.ImportFrom) and (child.module or "").startswith("model_foundry"):
                names = [f"{child.module}.{a.name}" for a in child.names]
            elif isinstance(child, ast.Import):
                names = [a.name for a in child.names if a.name.startswith("model_foundry")]
            found.update(t for n in names if (t := _resolve(n)) and t != module)
            visit(child)

    visit(ast.parse(MODULES[module].read_text(encoding="utf-8")))
    return found


def find_cycle() -> list[str] | None:
    graph = {m: _edges(m) for m in MODULES}
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def dfs(m: str) -> list[str] | None:
        state[m] = 1
        path.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                return path[path.index(n) :] + [n]
            if n not in state and (cycle := dfs(n)):
                return cycle
        path.pop()
        state[m] = 2
        return None

    for m in sorted(graph):
        if m not in state and (cycle := dfs(m)):
            return cycle
    return None


def test_the_graph_is_read():
    edges = _edges("model_foundry.adapters.scratch")
    assert {"model_foundry.adapters.base", "model_foundry.model_folder"} <= edges


def test_no_module_imports_in_a_circle():
    cycle = find_cycle()
    assert cycle is None, "import cycle: " + " → ".join(cycle or [])
