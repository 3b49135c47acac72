"""The contract of every user error, checked after a real `foundry` subprocess call.

exit code 2, exactly one `error:` line that names the problem, a `hint:`, no Python traceback, and nothing new
under the project's `models/` or `data/` (a refused input leaves no half-written output behind).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FOUNDRY = [sys.executable, "-m", "model_foundry.cli"]


def foundry(args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: float = 120):
    """Run `foundry ARGS` in `cwd` (no stdin, a bounded time) and return the CompletedProcess."""
    full_env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}", **(env or {})}
    return subprocess.run(
        [*FOUNDRY, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def snapshot(project: Path) -> set[str]:
    """Every path under the project's models/ and data/ (to compare before and after a refused call)."""
    return {
        p.relative_to(project).as_posix()
        for top in ("models", "data")
        if (project / top).exists()
        for p in (project / top).rglob("*")
    }


def assert_clean_error(
    proc: subprocess.CompletedProcess,
    project: Path | None = None,
    before: set[str] | None = None,
    must_mention: str | list[str] | None = None,
) -> str:
    """Assert the user-error contract on a finished `foundry` call; returns the `error:` line."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, f"exit {proc.returncode}, expected 2:\n{out}"
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, f"expected one error: line:\n{out}"
    assert any(line.strip().startswith("hint:") for line in out.splitlines()), f"no hint:\n{out}"
    for word in [must_mention] if isinstance(must_mention, str) else must_mention or []:
        assert word.lower() in out.lower(), f"{word!r} not mentioned:\n{out}"
    if project is not None:
        after = snapshot(project)
        assert after <= (before or set()), f"new files left behind: {sorted(after - (before or set()))}"
    return errors[0]
