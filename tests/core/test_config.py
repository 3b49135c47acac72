"""params.yaml validation: every error names the field, the bad value and what is allowed."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from model_foundry.adapters import ARCHITECTURES, get_spec
from model_foundry.config import load_params, parse_params
from model_foundry.errors import FoundryError


def test_repo_params_are_valid():
    p = load_params("params.yaml")
    assert p.model_name in p.catalog
    assert p.model.architecture in ARCHITECTURES
    assert len([e for e in p.catalog.values() if e.get("source", "scratch") == "scratch"]) >= 2


def test_flat_params_for_mlflow(params_dict):
    flat = parse_params(params_dict).flat()
    assert flat["train.steps"] == 6
    assert flat["model.n_layer"] == 1
    assert flat["architecture"] == "gpt"


def _error(raw) -> FoundryError:
    with pytest.raises(FoundryError) as info:
        parse_params(raw)
    return info.value


def test_unknown_model_name_lists_catalog(params_dict):
    params_dict["model_name"] = "nope"
    err = _error(params_dict)
    assert "'nope'" in err.message and "gpt-tiny" in err.hint


def test_missing_architecture_lists_valid_ones(params_dict):
    del params_dict["models"]["gpt-tiny"]["architecture"]
    err = _error(params_dict)
    assert "models.gpt-tiny" in err.message and "missing" in err.message
    assert all(name in err.hint for name in ARCHITECTURES)


def test_unknown_architecture(params_dict):
    params_dict["models"]["gpt-tiny"]["architecture"] = "transformer-xl"
    err = _error(params_dict)
    assert "'transformer-xl'" in err.message and "gpt" in err.hint


@pytest.mark.parametrize(
    ("section", "key", "value", "expected"),
    [
        ("train", "lr", -1.0, "train.lr = -1.0 must be > 0.0"),
        ("train", "steps", "many", "train.steps = 'many' must be an integer"),
        ("train", "steps", True, "must be an integer"),
        ("train", "objective", "seq2seq", "train.objective = 'seq2seq' is not allowed"),
        ("train", "device", "tpu", "is not allowed"),
        ("train", "nproc", 0, "train.nproc = 0 must be >= 1"),
        ("train", "nproc", "all", "train.nproc = 'all' must be int or 'auto'"),
        ("train", "strategy", "zero3", "train.strategy = 'zero3' is not allowed"),
        ("data", "val_fraction", 1.5, "data.val_fraction = 1.5 must be < 1.0"),
        ("tokenizer", "type", "sentencepiece", "tokenizer.type = 'sentencepiece'"),
        ("tokenizer", "vocab_size", 0, "tokenizer.vocab_size = 0 must be >= 1"),
    ],
)
def test_bad_values_name_field_value_and_rule(params_dict, section, key, value, expected):
    params_dict[section][key] = value
    assert expected in str(_error(params_dict))


@pytest.mark.parametrize(
    ("changes", "expected", "hint"),
    [
        ({"nproc": 3, "batch_size": 16}, "does not divide among train.nproc = 3", "15, 18"),
        ({"nproc": 2, "device": "mps"}, "torch.distributed has no MPS backend", "train.device: cpu"),
    ],
)
def test_nproc_fits_the_batch_and_the_device(params_dict, changes, expected, hint):
    params_dict["train"].update(changes)
    error = _error(params_dict)
    assert expected in error.message and hint in error.hint
    params_dict["train"].update({"nproc": "auto", "batch_size": 16, "device": "cpu", "strategy": "fsdp"})
    train = parse_params(params_dict).train
    assert (train.nproc, train.strategy) == ("auto", "fsdp")


def test_unknown_setting_lists_valid_ones(params_dict):
    params_dict["train"]["learning_rate"] = 0.1
    err = _error(params_dict)
    assert "'learning_rate'" in err.message and "lr" in err.hint


def test_unknown_section(params_dict):
    params_dict["trian"] = {}
    assert "'trian'" in _error(params_dict).message


def test_yaml_scientific_notation_is_a_number(params_dict):
    params_dict["train"]["lr"] = "3e-4"  # YAML 1.1 reads 3e-4 as a string
    assert parse_params(params_dict).train.lr == pytest.approx(3e-4)


def test_architecture_rule_n_embd_divides_by_n_head(params_dict):
    params_dict["models"]["gpt-tiny"].update(n_embd=30, n_head=4)
    err = _error(params_dict)
    assert "models.gpt-tiny" in err.message and "n_embd = 30" in err.message and "n_head = 4" in err.message


def test_architecture_negative_dropout(params_dict):
    params_dict["models"]["gpt-tiny"]["dropout"] = -0.1
    assert "models.gpt-tiny.dropout = -0.1 must be >= 0.0" in str(_error(params_dict))


def test_unknown_architecture_setting(params_dict):
    params_dict["models"]["gpt-tiny"]["n_layers"] = 3
    err = _error(params_dict)
    assert "'n_layers'" in err.message and "n_layer" in err.hint


def test_training_block_longer_than_model_context(params_dict):
    params_dict["train"]["block_size"] = 64  # tiny GPT has block_size 32
    err = _error(params_dict)
    assert "train.block_size = 64" in err.message and "32" in err.hint


def test_objective_the_architecture_cannot_train(params_dict):
    params_dict["train"]["objective"] = "masked_lm"
    assert "supports only causal_lm" in _error(params_dict).message


def test_scratch_architecture_with_hub_source(params_dict):
    params_dict["models"]["gpt-tiny"]["source"] = "Qwen/Qwen2.5-0.5B"
    assert "built from scratch" in _error(params_dict).message


def test_entry_overrides_sections(params_dict):
    params_dict["models"]["gpt-tiny"]["train"] = {"steps": 99}
    params_dict["models"]["gpt-tiny"]["tokenizer"] = {"type": "char"}
    p = parse_params(params_dict)
    assert p.train.steps == 99 and p.train.batch_size == 4  # merged over the top-level section
    assert p.tokenizer.type == "char"


def test_entry_override_is_validated(params_dict):
    params_dict["models"]["gpt-tiny"]["train"] = {"steps": 0}
    assert "train.steps = 0 must be >= 1" in str(_error(params_dict))


def test_load_params_missing_file(tmp_path):
    with pytest.raises(FoundryError, match="does not exist"):
        load_params(tmp_path / "params.yaml")


def test_load_params_bad_yaml(tmp_path):
    (tmp_path / "params.yaml").write_text("model_name: [unclosed\n")
    with pytest.raises(FoundryError, match="not valid YAML"):
        load_params(tmp_path / "params.yaml")


def test_params_not_a_mapping():
    assert "mapping" in _error(["a"]).message


def test_no_catalog(params_dict):
    raw = copy.deepcopy(params_dict)
    raw["models"] = {}
    assert "no `models:` catalog" in _error(raw).message


def test_get_spec_unknown():
    with pytest.raises(FoundryError) as info:
        get_spec("nope")
    assert "gpt" in info.value.hint


def test_every_catalog_entry_in_repo_params_parses():
    from model_foundry.config import parse_entry

    raw = yaml.safe_load(Path("params.yaml").read_text())
    for name, entry in raw["models"].items():
        assert parse_entry(name, entry).name == name
