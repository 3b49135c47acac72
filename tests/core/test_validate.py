"""`foundry validate` refuses what DVC or a stage would refuse later, and lists every problem at once.

Each case is a repro from issue 7: validate said ok, then `dvc repro` or a stage failed (or, worse, ran).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import VENV_BIN, run_cmd, tiny_params
from model_foundry.config import check_params, parse_params
from model_foundry.errors import FoundryError
from model_foundry.pipeline_checks import output_conflicts

FOUNDRY = str(VENV_BIN / "foundry")


def _validate(tmp_path: Path, raw: dict[str, Any]):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = run_cmd([FOUNDRY, "validate"], tmp_path, check=False)
    assert "Traceback" not in proc.stderr + proc.stdout
    return proc


def test_dotted_catalog_key_exit_2(tmp_path):
    raw = tiny_params()
    raw["models"]["gpt.v2"] = raw["models"]["gpt-tiny"]
    proc = _validate(tmp_path, raw)
    assert proc.returncode == 2
    assert "error: Catalog key 'gpt.v2' is not allowed: it contains '.'" in proc.stderr
    assert "hint: Use e.g. 'gpt-v2'" in proc.stderr


def test_bad_global_value_shadowed_by_the_selected_entry_exit_2(tmp_path):
    raw = tiny_params()
    raw["train"]["lr"] = -1
    raw["models"]["gpt-tiny"]["train"] = {"lr": 0.001}  # the selected entry would train fine
    with pytest.raises(FoundryError, match=r"train.lr = -1.0 must be > 0.0"):
        parse_params(raw)  # the stages refuse it too, whichever entry is selected
    proc = _validate(tmp_path, raw)
    assert proc.returncode == 2
    assert proc.stderr.count("error: train.lr = -1.0 must be > 0.0") == 1  # once, not once per entry


def test_every_entry_effective_config_is_checked_not_only_the_selected(tmp_path):
    raw = tiny_params()
    raw["models"]["gpt-bpe"]["train"]["block_size"] = 4096  # longer than gpt-bpe's context of 128
    raw["models"]["rnn"]["train"]["objective"] = "seq2seq"  # a bad value in an entry's own section
    proc = _validate(tmp_path, raw)
    assert proc.returncode == 2
    assert "train.block_size = 4096 is longer than models.gpt-bpe.block_size" in proc.stderr
    assert "models.rnn.train.objective = 'seq2seq' is not allowed" in proc.stderr


def test_entry_overlapping_a_dvc_tracked_import_exit_2(tmp_path):
    """`foundry import-model` made models/qwen2-5-0-5b + .dvc; an entry of the same name overlaps it."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "qwen2-5-0-5b.dvc").write_text(
        yaml.safe_dump({"outs": [{"md5": "0" * 32 + ".dir", "path": "qwen2-5-0-5b"}]})
    )
    raw = tiny_params()
    raw["models"]["qwen2-5-0-5b"] = {"architecture": "hf-qwen2", "source": "models/qwen2-5-0-5b"}
    proc = _validate(tmp_path, raw)
    assert proc.returncode == 2
    assert (
        "error: models.qwen2-5-0-5b: the convert stage would write models/qwen2-5-0-5b, which overlaps "
        "models/qwen2-5-0-5b tracked by models/qwen2-5-0-5b.dvc" in proc.stderr
    )
    assert "qwen2-5-0-5b-ft" in proc.stderr


def test_overlaps_read_the_real_dvc_yaml_outputs(tmp_path):
    """With the project's dvc.yaml: a tracked models/<x>-trained or data/tokenized also overlaps."""
    (tmp_path / "dvc.yaml").write_text((Path(__file__).resolve().parents[2] / "dvc.yaml").read_text())
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "old.dvc").write_text(yaml.safe_dump({"outs": [{"path": "gpt-tiny-trained"}]}))
    (tmp_path / "tokens.dvc").write_text(yaml.safe_dump({"outs": [{"path": "data/tokenized/train.bin"}]}))
    problems = [e.message for e in output_conflicts(tmp_path, {"gpt-tiny": {}})]
    assert any("train stage would write models/gpt-tiny-trained" in m for m in problems)
    assert any("tokenize stage would write data/tokenized" in m for m in problems)
    other = [e.message for e in output_conflicts(tmp_path, {"gpt-small": {}})]
    assert other and all("data/tokenized" in m for m in other)  # shared by every entry


def test_entry_named_like_another_entrys_trained_folder_exit_2(tmp_path):
    raw = tiny_params()
    raw["models"]["gpt-tiny-trained"] = raw["models"]["gpt-small"]
    proc = _validate(tmp_path, raw)
    assert proc.returncode == 2
    assert "would both write models/gpt-tiny-trained" in proc.stderr
    assert "hint: Rename models.gpt-tiny-trained" in proc.stderr


def test_all_problems_are_listed_at_once(tmp_path):
    raw = tiny_params()
    raw["models"]["gpt.v2"] = raw["models"]["gpt-tiny"]
    raw["models"]["UPPER"] = raw["models"]["gpt-tiny"]
    raw["train"]["lr"] = -1
    raw["data"]["val_fraction"] = 2
    raw["model_name"] = "missing"
    proc = _validate(tmp_path, raw)
    assert proc.returncode == 2
    assert proc.stderr.count("error: ") == 5 and "5 problem(s)" in proc.stderr
    for text in ("'missing'", "'gpt.v2'", "'UPPER'", "train.lr = -1.0", "data.val_fraction = 2.0"):
        assert text in proc.stderr


def test_repo_params_have_no_problems():
    raw = yaml.safe_load((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    assert check_params(raw) == []
