"""BERT: a saved folder is a Hugging Face BertForMaskedLM checkpoint with the same logits; config rules."""

from __future__ import annotations

import pytest
import torch
import transformers

from model_foundry.adapters.bert import SPEC as BERT_SPEC
from model_foundry.adapters.bert import BertConfig
from model_foundry.adapters.bert.model import BertAdapter
from model_foundry.config import parse_params
from model_foundry.data.tokenizer_training import train_tokenizer
from model_foundry.errors import FoundryError

TEXTS = ["The quick brown fox jumps over the lazy dog. " * 3, "Pack my box with five dozen liquor jugs!"] * 20


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("wordpiece", TEXTS, 200, "masked_lm")


def _saved_bert(tmp_path, tokenizer, token_types: int) -> tuple[BertAdapter, str]:
    config = BertConfig(**{**BertConfig.TINY, "token_types": token_types, "vocab_size": len(tokenizer)})
    torch.manual_seed(0)
    adapter = BertAdapter.build(config, BERT_SPEC)
    adapter.tokenizer = tokenizer
    with torch.no_grad():  # off the init: non-trivial LayerNorm gains and biases
        for p in adapter.model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    adapter.model.eval()
    folder = tmp_path / f"bert-{token_types}"
    adapter.save_checkpoint(folder, {"model_name": folder.name})
    return adapter, str(folder)


@pytest.mark.parametrize("token_types", [0, 2])
def test_hf_bert_for_masked_lm_gives_our_logits(tmp_path, tokenizer, token_types):
    ours, folder = _saved_bert(tmp_path, tokenizer, token_types)
    hf, info = transformers.BertForMaskedLM.from_pretrained(folder, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"] and not info["mismatched_keys"]
    hf.eval()
    x = torch.randint(
        len(tokenizer), (3, BertConfig.TINY["block_size"]), generator=torch.Generator().manual_seed(1)
    )
    with torch.no_grad():
        torch.testing.assert_close(ours.logits(x), hf(input_ids=x).logits)
    assert hf.config.type_vocab_size == max(1, token_types)
    assert hf.config.pad_token_id == tokenizer.pad_token_id


def test_auto_classes_load_model_and_tokenizer(tmp_path, tokenizer):
    _, folder = _saved_bert(tmp_path, tokenizer, 0)
    model = transformers.AutoModelForMaskedLM.from_pretrained(folder)
    assert type(model).__name__ == "BertForMaskedLM"
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    assert tok.mask_token == "[MASK]" and tok.mask_token_id == tokenizer.mask_token_id


def test_attention_is_bidirectional():
    torch.manual_seed(0)
    adapter = BertAdapter.build(BertConfig(**{**BertConfig.TINY, "vocab_size": 50}), BERT_SPEC)
    adapter.model.eval()
    x = torch.randint(50, (1, 10))
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % 50  # change only the last token
    with torch.no_grad():
        assert not torch.allclose(
            adapter.logits(x)[0, 0], adapter.logits(y)[0, 0]
        )  # the first position sees it


def _entry(**settings) -> dict:
    return {
        "model_name": "b",
        "models": {"b": {"architecture": "bert", **settings}},
        "train": {"objective": "masked_lm", "block_size": 16},
    }


@pytest.mark.parametrize(
    ("settings", "words"),
    [
        ({"n_embd": 30, "n_head": 4}, ["n_embd = 30", "n_head = 4"]),
        ({"dropout": -0.1}, ["models.b.dropout", "-0.1", ">= 0.0"]),
        ({"token_types": -1}, ["models.b.token_types", "-1", ">= 0"]),
        ({"n_layer": 0}, ["models.b.n_layer", ">= 1"]),
        ({"type_vocab_size": 2}, ["unknown setting", "type_vocab_size", "token_types"]),
    ],
)
def test_bad_settings_name_field_value_and_rule(settings, words):
    with pytest.raises(FoundryError) as err:
        parse_params(_entry(**settings))
    assert all(w in str(err.value) for w in words), str(err.value)


def test_bert_is_masked_lm_only():
    raw = _entry()
    raw["train"]["objective"] = "causal_lm"
    with pytest.raises(FoundryError, match="supports only masked_lm"):
        parse_params(raw)


def test_block_size_longer_than_positions_is_rejected():
    raw = _entry(block_size=8)
    with pytest.raises(FoundryError, match="longer than models.b.block_size = 8"):
        parse_params(raw)
