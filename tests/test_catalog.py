"""The catalog in params.yaml: every scratch architecture, objective and tokenizer has an entry; all parse."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from model_foundry.adapters import ARCHITECTURES
from model_foundry.config import parse_params

REPO = Path(__file__).resolve().parents[1]
PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


def test_default_model_is_unchanged():
    assert PARAMS["model_name"] == "gpt-tiny"


def test_every_scratch_architecture_has_a_catalog_entry():
    used = {entry["architecture"] for entry in PARAMS["models"].values()}
    assert {name for name, spec in ARCHITECTURES.items() if not spec.pretrained} <= used


def test_examples_cover_every_objective_and_tokenizer():
    parsed = [parse_params({**PARAMS, "model_name": name}) for name in PARAMS["models"]]
    assert {(p.model.architecture, p.train.objective) for p in parsed} >= {
        ("gpt", "causal_lm"), ("bert", "masked_lm"), ("lstm", "causal_lm"), ("lstm", "masked_lm"),
        ("gru", "causal_lm"), ("rnn", "causal_lm"),
    }  # fmt: skip
    assert {p.tokenizer.type for p in parsed} == {"bpe", "wordpiece", "unigram", "char"}


@pytest.mark.parametrize("name", list(PARAMS["models"]))
def test_every_entry_parses_as_the_selected_model(name):
    p = parse_params({**PARAMS, "model_name": name})
    assert p.model.name == name
    assert p.train.steps <= 600
