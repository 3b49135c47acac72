"""The foundry CLI: no heavy imports for config work, user errors without tracebacks. (Help, version,
completion and MODEL arguments: test_cli_conventions.py.)"""

from __future__ import annotations

import subprocess
import sys

import yaml

from conftest import REPO, VENV_BIN, run_cmd

FOUNDRY = str(VENV_BIN / "foundry")
HEAVY = ("torch", "transformers", "mlflow", "huggingface_hub")


def _modules_after(code: str) -> set[str]:
    probe = f"import sys\n{code}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=False)
    return set(out.stdout.split())


def test_help_and_validate_import_nothing_heavy():
    loaded = _modules_after(
        "from model_foundry.cli import app\n"
        "try:\n    app(['validate', '--params', 'params.yaml'])\nexcept SystemExit:\n    pass"
    )
    assert "model_foundry.config" in loaded
    assert not [m for m in HEAVY if m in loaded]


def _bad_params(tmp_path, mutate) -> str:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    mutate(raw)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def test_bad_params_exit_2_with_message_and_no_traceback(tmp_path):
    path = _bad_params(tmp_path, lambda raw: raw.update(model_name="missing-model"))
    proc = run_cmd([FOUNDRY, "validate", "--params", path], tmp_path, check=False)
    assert proc.returncode == 2
    assert "error: model_name = 'missing-model' is not in the `models:` catalog." in proc.stderr
    assert "hint: Use one of:" in proc.stderr and "gpt-tiny" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout


def test_unknown_architecture_exit_2(tmp_path):
    path = _bad_params(tmp_path, lambda raw: raw["models"]["gpt-tiny"].update(architecture="mamba"))
    proc = run_cmd(
        [FOUNDRY, "import", "--params", path, "--corpus-out", "c", "--source-out", "s"], tmp_path, check=False
    )
    assert proc.returncode == 2 and "'mamba' is not a known architecture" in proc.stderr
    assert not (tmp_path / "c").exists()


def test_missing_data_file_exit_2_and_nothing_written(tmp_path):
    path = _bad_params(tmp_path, lambda raw: raw["data"].update(source="corpus/missing.txt"))
    proc = run_cmd(
        [FOUNDRY, "import", "--params", path, "--corpus-out", "data/corpus", "--source-out", "s"],
        tmp_path,
        check=False,
    )
    assert proc.returncode == 2 and "corpus/missing.txt" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "data").exists()


def test_missing_model_folder_exit_2(tmp_path):
    proc = run_cmd([FOUNDRY, "generate", "--model", str(tmp_path / "nope")], tmp_path, check=False)
    assert proc.returncode == 2 and "is not a model folder" in proc.stderr and "Traceback" not in proc.stderr


def test_validate_ok_from_repo():
    proc = run_cmd([FOUNDRY, "validate"], REPO)
    assert "ok" in proc.stdout and "gpt-tiny" in proc.stdout
