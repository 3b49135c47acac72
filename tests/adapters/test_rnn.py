"""Recurrent models: one module, three registered cells; direction matches the objective."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from model_foundry.adapters import ARCHITECTURES
from model_foundry.config import parse_params
from model_foundry.errors import FoundryError
from model_foundry.generation import GREEDY, generate
from model_foundry.model_folder import load_adapter
from model_foundry.schema import build

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}
V = 40


def _adapter(cell: str, **settings):
    spec = ARCHITECTURES[cell]
    config = build(spec.config_cls, {**spec.config_cls.TINY, "vocab_size": V, **settings}, cell)
    torch.manual_seed(0)
    adapter = spec.adapter_cls().build(config, spec)
    adapter.model.eval()
    return adapter


def _params(arch: str, objective: str, **settings) -> dict:
    return {
        "model_name": "r",
        "models": {"r": {"architecture": arch, **settings}},
        "train": {"objective": objective, "block_size": 4096},  # no max context: any length is fine
    }


@pytest.mark.parametrize("cell", list(CELLS))
def test_bidirectional_causal_lm_is_rejected_clearly(cell):
    with pytest.raises(FoundryError) as err:
        parse_params(_params(cell, "causal_lm", bidirectional=True))
    msg = str(err.value)
    assert "models.r" in msg and "bidirectional" in msg and "causal_lm" in msg and "masked_lm" in msg


@pytest.mark.parametrize("cell", list(CELLS))
@pytest.mark.parametrize(
    ("objective", "bidirectional"), [("causal_lm", False), ("masked_lm", True), ("masked_lm", False)]
)
def test_valid_direction_objective_pairs(cell, objective, bidirectional):
    p = parse_params(_params(cell, objective, bidirectional=bidirectional))
    assert p.model.arch.cell == cell and p.model.arch.bidirectional is bidirectional


@pytest.mark.parametrize("cell", list(CELLS))
def test_cell_comes_from_the_registry_entry_and_survives_save_load(cell, tmp_path):
    adapter = _adapter(cell)
    assert type(adapter.model.rnn) is CELLS[cell]
    assert adapter.max_context is None
    adapter.save_checkpoint(tmp_path / cell, {})
    assert json.loads((tmp_path / cell / "config.json").read_text())["architecture"] == cell
    loaded = load_adapter(tmp_path / cell)
    assert type(loaded.model.rnn) is CELLS[cell] and loaded.spec.name == cell


def test_cell_is_not_a_setting():
    with pytest.raises(FoundryError, match="unknown setting.*'cell'"):
        parse_params(_params("lstm", "causal_lm", cell="gru"))


@pytest.mark.parametrize("cell", list(CELLS))
def test_unidirectional_never_sees_the_future_bidirectional_does(cell):
    x = torch.randint(V, (1, 12), generator=torch.Generator().manual_seed(0))
    y = x.clone()
    y[0, 8:] = (x[0, 8:] + 1) % V  # change tokens 8..11
    with torch.no_grad():
        uni = _adapter(cell)
        torch.testing.assert_close(uni.logits(x)[:, :8], uni.logits(y)[:, :8], rtol=0, atol=0)
        bi = _adapter(cell, bidirectional=True)
        assert not torch.allclose(bi.logits(x)[:, :8], bi.logits(y)[:, :8])


@pytest.mark.parametrize(
    ("settings", "proj", "tied"),
    [
        ({}, False, True),  # embedding_size == hidden_size: tied directly
        ({"bidirectional": True}, True, True),  # 2 × hidden → projected back to the embedding size
        ({"embedding_size": 16}, True, True),
        ({"tie_embeddings": False, "bidirectional": True}, False, False),
    ],
)
def test_tied_embeddings_and_projection(settings, proj, tied, tmp_path):
    adapter = _adapter("lstm", **settings)
    m = adapter.model
    assert (m.proj is not None) is proj
    assert (m.head.weight is m.embedding.weight) is tied
    x = torch.randint(V, (2, 7))
    assert adapter.logits(x).shape == (2, 7, V)
    adapter.save_checkpoint(tmp_path / "m", {})
    loaded = load_adapter(tmp_path / "m")
    assert (loaded.model.head.weight is loaded.model.embedding.weight) is tied
    torch.testing.assert_close(loaded.logits(x), adapter.logits(x), rtol=0, atol=0)


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"dropout": -0.5}, ["models.r.dropout", "-0.5", ">= 0.0"]),
        ({"dropout": 1.0}, ["models.r.dropout", "< 1.0"]),
        ({"hidden_size": 0}, ["models.r.hidden_size", ">= 1"]),
        ({"bidirectional": "yes"}, ["models.r.bidirectional", "true or false"]),
    ],
)
def test_bad_settings_name_field_value_and_rule(settings, words):
    with pytest.raises(FoundryError) as err:
        parse_params(_params("gru", "causal_lm", **settings))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_dropout_between_layers_only_with_several_layers():
    assert _adapter("gru", n_layer=1, dropout=0.2).model.rnn.dropout == 0.0
    assert _adapter("gru", n_layer=2, dropout=0.2).model.rnn.dropout == 0.2


def test_generation_runs_without_a_context_limit():
    adapter = _adapter("gru")
    out = generate(adapter, torch.zeros(1, 3, dtype=torch.long), 5, GREEDY)
    assert len(out.tokens[0]) == 5
