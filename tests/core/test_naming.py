"""One naming rule for catalog keys, model folders, import names and registry ids (model_foundry.naming).

The rule is checked against the real tools it stands for: DVC's params lookup, GTO's artifact-name rule and
MLflow's logged-model-name check.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from conftest import REPO, VENV_BIN, run_cmd
from model_foundry.errors import FoundryError
from model_foundry.hub.naming import choose_name, default_name
from model_foundry.hub.sources import FolderSource, HubSource
from model_foundry.naming import MAX_LENGTH, check_name, name_problem, suggest_name

FOUNDRY = str(VENV_BIN / "foundry")

BAD_NAMES = {
    "gpt.v2": "DVC reads '.' in params paths as nesting",
    "qwen-0.5b-base": "models.qwen-0.5b-base is read as models → qwen-0 → 5b-base",
    "a/b": "path separator",
    "a\\b": "path separator",
    "x:y": "MLflow model names forbid",
    '"q"': "MLflow model names forbid",
    "it's": "MLflow model names forbid",
    "50%": "MLflow model names forbid",
    "abc\n": "control character or whitespace",
    "a b": "control character or whitespace",
    "tab\there": "control character or whitespace",
    "..": "contains '.'",
    ".hidden": "contains '.'",
    "-x": "start and end with a letter or digit",
    "x-": "start and end with a letter or digit",
    "UPPER": "lower-case only",
    "Gpt-Tiny": "lower-case only",
    "my_model": "only a-z, 0-9 and '-'",
    "modèle": "only a-z, 0-9 and '-'",
    "a" * 300: f"300 characters long (at most {MAX_LENGTH})",
    "": "empty",
}
REPO_ENTRIES = list(yaml.safe_load((REPO / "params.yaml").read_text())["models"])
GOOD_NAMES = ["a", "7", "gpt-tiny", "qwen2-5-0-5b", "x--y", "a" * MAX_LENGTH, *REPO_ENTRIES]
HUB_IDS = {
    "Qwen/Qwen2.5-0.5B": "qwen2-5-0-5b",
    "meta-llama/Llama-3.2-1B": "llama-3-2-1b",
    "openai-community/gpt2": "gpt2",
    "google-bert/bert-base-uncased": "bert-base-uncased",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2-135m-instruct",
    "gpt2": "gpt2",
}


@pytest.mark.parametrize(("name", "rule"), BAD_NAMES.items(), ids=lambda v: repr(v)[:20])
def test_bad_name_is_refused_naming_the_rule_with_a_valid_suggestion(name, rule):
    with pytest.raises(FoundryError) as info:
        check_name(name)
    assert rule in info.value.message and repr(name) in info.value.message
    assert "lower-case letters, digits and '-'" in info.value.hint
    suggested = info.value.hint.split("'")[1] if info.value.hint.startswith("Use e.g.") else None
    assert suggested is None or name_problem(suggested) is None


@pytest.mark.parametrize("name", GOOD_NAMES, ids=lambda v: v[:20])
def test_good_names_and_every_repo_entry_pass(name):
    assert check_name(name) == name


def test_non_string_key_is_refused():
    with pytest.raises(FoundryError, match="not a string"):
        check_name(2.5)  # YAML reads `2.5:` as a float key


@pytest.mark.parametrize(("repo_id", "expected"), HUB_IDS.items())
def test_default_import_name_for_real_hub_ids_satisfies_the_rule(repo_id, expected):
    name = default_name(HubSource(repo_id, None, repo_id))
    assert name == expected and name_problem(name) is None


def test_default_name_of_a_folder_and_of_text_with_nothing_usable(tmp_path):
    folder = tmp_path / "My Model_v1.5"
    assert default_name(FolderSource(folder, str(folder))) == "my-model-v1-5"
    assert suggest_name("../..") == "model" and suggest_name("€€€") == "model"


@pytest.mark.parametrize(
    "text", ["A" * 200, "-" * 10 + "x", "x" + "." * 70 + "y", "Ünïcödé Ñame", "a\x00b\x7fc", "q" * 63 + "-z"]
)
def test_suggested_names_always_satisfy_the_rule(text):
    assert name_problem(suggest_name(text)) is None


def test_version_suffix_keeps_long_names_valid(tmp_path):
    models = tmp_path / "models"
    long = "m" * MAX_LENGTH
    (models / long).mkdir(parents=True)
    chosen = choose_name(models, long, version_suffix=True)
    assert chosen.endswith("-v2") and name_problem(chosen) is None


def test_rule_agrees_with_gto_and_mlflow_validators():
    from gto.constants import assert_name_is_valid
    from mlflow.exceptions import MlflowException
    from mlflow.utils.validation import _validate_logged_model_name

    for name in GOOD_NAMES + [suggest_name(n) for n in BAD_NAMES]:
        assert_name_is_valid(name)  # GTO / DVC artifact names
        _validate_logged_model_name(name)  # MLflow logged models
    for name in ("gpt.v2", "x:y", '"q"', "a/b"):
        with pytest.raises(MlflowException):
            _validate_logged_model_name(name)


def _dvc_repo(tmp_path: Path, name: str) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "params.yaml").write_text(yaml.safe_dump({"model_name": name, "models": {name: {"n_layer": 1}}}))
    stage = {"cmd": "echo ok > out.txt", "params": ["models.${model_name}"], "outs": ["out.txt"]}
    (repo / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"s": stage}}))
    run_cmd(["git", "init", "-q"], repo)
    run_cmd(["dvc", "init", "-q"], repo)
    return repo


@pytest.mark.parametrize("name", ["qwen-0.5b-base", "qwen-0-5b-base"])
def test_dvc_accepts_exactly_the_names_the_rule_accepts(tmp_path, name):
    """The repro: a dotted catalog key fails `dvc repro` ("Parameters ... are missing")."""
    proc = run_cmd(["dvc", "repro"], _dvc_repo(tmp_path, name), check=False, env={"DVC_NO_ANALYTICS": "1"})
    assert (proc.returncode == 0) == (name_problem(name) is None), proc.stderr
    if proc.returncode:
        assert f"Parameters 'models.{name}' are missing" in proc.stderr + proc.stdout


@pytest.mark.parametrize("name", ["gpt.v2", "Qwen2.5", "../escape"])
def test_import_model_refuses_a_bad_name_before_any_download(tmp_path, name):
    proc = run_cmd(
        [FOUNDRY, "import-model", "Qwen/Qwen2.5-0.5B", "--name", name, "--models-dir", "models", "--no-dvc"],
        tmp_path,
        check=False,
        env={"HF_HUB_OFFLINE": "1"},
    )
    assert proc.returncode == 2, proc.stderr
    assert f"error: Model name {name!r} is not allowed" in proc.stderr and "hint: Use e.g." in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "models").exists()
