"""`foundry import-model` as a user runs it: a subprocess with HF_ENDPOINT/HF_HOME, exit 2 on bad input."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
from hub_helpers import assert_empty

from conftest import VENV_BIN, run_cmd
from localhub.repos import GPT2, QWEN2, QWEN_V1_REMOTE

FOUNDRY = str(VENV_BIN / "foundry")


def foundry(args: list[str], cwd: Path, **env: str):
    return run_cmd([FOUNDRY, "import-model", *args], cwd, check=False, env=env, stdin=open(os.devnull))


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_import_then_dvc_add(local_hub, hub_repos, tmp_path):
    run_cmd(["dvc", "init", "--no-scm", "-q"], tmp_path)
    proc = foundry([f"{local_hub.url}/{QWEN2}", "--accept-license", "--name", "qwen", "-q"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert (
        "imported localhub/tiny-qwen2 @" in proc.stdout and "tracked by DVC: models/qwen.dvc" in proc.stdout
    )
    assert "Licence of localhub/tiny-qwen2: apache-2.0" in proc.stderr  # shown even when accepted by flag
    assert (tmp_path / "models" / "qwen" / "model.safetensors").is_file()
    dvc_file = (tmp_path / "models" / "qwen.dvc").read_text()
    assert "md5:" in dvc_file and "path: qwen" in dvc_file
    status = run_cmd(["dvc", "status", "models/qwen.dvc"], tmp_path).stdout
    assert "up to date" in status or status.strip() == ""


def test_no_dvc_and_no_dvc_repo(local_hub, hub_repos, tmp_path):
    proc = foundry([GPT2, "--accept-license", "-q"], tmp_path)  # not inside a DVC repo: nothing to add
    assert proc.returncode == 0, proc.stderr
    assert not list((tmp_path / "models").glob("*.dvc")) and "tracked by DVC" not in proc.stdout
    run_cmd(["dvc", "init", "--no-scm", "-q"], tmp_path)
    proc = foundry([GPT2, "--accept-license", "-q", "--no-dvc", "--version-suffix"], tmp_path)
    assert proc.returncode == 0 and (tmp_path / "models" / "tiny-gpt2-v2").is_dir()
    assert not (tmp_path / "models" / "tiny-gpt2-v2.dvc").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["localhub/missing-repo", "--accept-license"], "was not found"),
        ([QWEN_V1_REMOTE, "--accept-license"], "trust_remote_code"),
        ([GPT2], "has not been accepted"),
        ([GPT2, "--accept-license", "--name", "../x"], "not allowed"),
        (["./does-not-exist", "--accept-license"], "does not exist"),
    ],
    ids=["unknown-repo", "qwen-v1", "licence", "bad-name", "missing-folder"],
)
def test_bad_input_exits_2_without_traceback(args, message, local_hub, hub_repos, tmp_path):
    proc = foundry(args, tmp_path)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: " in proc.stderr and message in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert_empty(tmp_path / "models")


def test_network_unreachable_exits_2_with_offline_hint(tmp_path):
    proc = foundry(
        ["org/model", "--accept-license"], tmp_path, HF_ENDPOINT=f"http://127.0.0.1:{closed_port()}"
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "Cannot reach the Hub" in proc.stderr and "HF_HUB_OFFLINE" in proc.stderr
    assert_empty(tmp_path / "models")


def test_import_model_help_is_fast_and_imports_nothing_heavy(tmp_path):
    import subprocess
    import sys

    probe = (
        "import sys\nfrom model_foundry.cli import app\n"
        "try:\n    app(['import-model', '--help'])\nexcept SystemExit:\n    pass\n"
        "from model_foundry.hub.sources import parse_source\nparse_source('Qwen/Qwen2.5-0.5B')\n"
        "print(' '.join(sorted(sys.modules)))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    loaded = set(out.split())
    assert not {"torch", "transformers", "huggingface_hub", "mlflow"} & loaded
