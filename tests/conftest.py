"""Shared fixtures: an isolated MLflow store, tiny params, a temp copy of the repo, the local Hub.

The local Hub starts at import time, before any test module imports huggingface_hub or transformers:
both read HF_ENDPOINT and HF_HOME when first imported.
"""

from __future__ import annotations

import atexit
import copy
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="foundry-tests-"))
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)

from localhub.server import start_session_hub  # noqa: E402  (stdlib only: no HF import yet)

_HUB = start_session_hub(_SESSION_TMP / "hub")
atexit.register(_HUB.stop)

os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{_SESSION_TMP / 'mlflow.db'}"
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import yaml  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent

# Small enough that a whole pipeline runs in seconds, big enough to exercise every stage.
TINY_OVERRIDES: dict[str, Any] = {
    "tokenizer": {"vocab_size": 320},
    "train": {
        "steps": 6,
        "batch_size": 4,
        "block_size": 32,
        "warmup_steps": 2,
        "eval_interval": 3,
        "eval_batches": 2,
        "log_interval": 2,
        "threads": 1,
    },
    "evaluate": {"batch_size": 4, "max_batches": 4},
}
TINY_GPT = {"n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32}


def tiny_params(**changes: Any) -> dict[str, Any]:
    """The repo's params.yaml with tiny sizes: every catalog entry shrunk, training a few steps."""
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    for section, values in TINY_OVERRIDES.items():
        raw[section] = {**raw.get(section, {}), **values}
    for entry in raw["models"].values():
        if entry.get("architecture") == "gpt":
            entry.update(TINY_GPT)
        for section, values in TINY_OVERRIDES.items():  # an entry's own overrides get the tiny sizes too
            if isinstance(entry.get(section), dict):
                entry[section].update(values)
    for key, value in changes.items():
        raw[key] = value if not isinstance(value, dict) else {**raw.get(key, {}), **value}
    return copy.deepcopy(raw)


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tiny test models gain nothing from threads, and OpenMP threads stall badly on a busy 2-core machine."""
    import torch

    torch.set_num_threads(1)


@pytest.fixture
def params_dict() -> dict[str, Any]:
    return tiny_params()


@pytest.fixture(scope="session")
def session_tmp() -> Path:
    return _SESSION_TMP


def run_cmd(args: list[str], cwd: Path, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess:
    """Run a command with the venv's tools first on PATH; output captured as text."""
    env = {**os.environ, "PATH": f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONUNBUFFERED": "1"}
    env.update(kwargs.pop("env", {}))
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, **kwargs)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


def _source_files() -> list[str]:
    """Files git tracks or would track (untracked, not ignored), minus pipeline outputs."""
    out = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split("\n")
    skip = ("data/", "models/", "plots/", "logs/", "mlartifacts/", ".dvc/tmp", ".dvc/cache")
    keep_exact = {"data/.gitignore", "models/.gitignore"}
    files = [f for f in out if f and (f in keep_exact or not f.startswith(skip))]
    return [f for f in files if f not in ("dvc.lock", "metrics.json") and (REPO / f).exists()]


def make_repo_copy(dest: Path, params: dict[str, Any] | None = None) -> Path:
    """A fresh git + DVC repo holding this project's sources (no outputs), committed once."""
    dest.mkdir(parents=True, exist_ok=True)
    for rel in _source_files():
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / rel, target)
    for ignore in ("data/.gitignore", "models/.gitignore"):
        (dest / ignore).unlink(missing_ok=True)
    if params is not None:
        (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    run_cmd(["git", "init", "-q"], dest)
    run_cmd(["git", "config", "user.email", "tests@example.com"], dest)
    run_cmd(["git", "config", "user.name", "tests"], dest)
    if not (dest / ".dvc").is_dir():
        run_cmd(["dvc", "init", "-q"], dest)
    run_cmd(["git", "add", "-A"], dest)
    run_cmd(["git", "commit", "-qm", "test copy"], dest, env={"GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"})
    return dest


@pytest.fixture
def repo_copy(tmp_path: Path, params_dict: dict[str, Any]) -> Path:
    """A temp git+DVC copy of the project with tiny params, its own MLflow store."""
    return make_repo_copy(tmp_path / "repo", params_dict)


@pytest.fixture(scope="session")
def local_hub():
    """The running local Hub that HF_ENDPOINT points to (see tests/localhub/README.md)."""
    return _HUB


@pytest.fixture(scope="session")
def hub_repos(local_hub, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Tiny Qwen2/Qwen3/Llama/GPT-2/BERT repos, built once per session and published: repo_id → build dir."""
    from localhub.repos import build_all, publish_all

    built = build_all(tmp_path_factory.mktemp("localhub-repos"))
    publish_all(local_hub, built)
    return built


@pytest.fixture(scope="module")
def imported_family(
    hub_repos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], Path]:
    """Registry name of a Hub family → its fixture repo imported (once per module) through the local Hub."""
    from localhub.repos import FAMILY_FIXTURES
    from model_foundry.hub import QuietReporter, import_model

    models = tmp_path_factory.mktemp("imported-models")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            result = import_model(
                FAMILY_FIXTURES[name], models, accept_license=True, reporter=QuietReporter()
            )
            done[name] = result.path
        return done[name]

    return get
