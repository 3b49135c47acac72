"""Masked-LM evaluation: metric ranges, determinism, pseudo-perplexity's exact value for a uniform model."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model_foundry.adapters import ARCHITECTURES
from model_foundry.data.tokenizer_training import train_tokenizer
from model_foundry.evaluation.masked import masked_metrics, pseudo_perplexity
from model_foundry.schema import build
from model_foundry.stages.evaluate import EVALUATORS
from model_foundry.training.device import Runtime

CPU = Runtime(torch.device("cpu"), torch.float32)
TEXT = "A masked language model predicts the hidden words of a sentence from the words around them. " * 8


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("wordpiece", [TEXT] * 20, 150, "masked_lm")


@pytest.fixture(scope="module")
def val_tokens(tokenizer) -> np.ndarray:
    ids = tokenizer.backend_tokenizer.encode(TEXT * 3, add_special_tokens=False).ids
    stream = np.asarray(ids, dtype=np.uint16)
    stream[::37] = tokenizer.sep_token_id  # document separators, as in the packed stream
    return stream


def _model(arch: str, tokenizer, **settings):
    spec = ARCHITECTURES[arch]
    cfg = build(spec.config_cls, {**spec.config_cls.TINY, "vocab_size": len(tokenizer), **settings}, arch)
    torch.manual_seed(0)
    return spec.adapter_cls().build(cfg, spec)


def _metrics(adapter, tokenizer, tokens, **kw):
    args = {
        "block_size": 16,
        "batch_size": 4,
        "max_batches": 3,
        "mlm_probability": 0.15,
        "pseudo_ppl_sequences": 3,
    }
    return masked_metrics(adapter, tokens, tokenizer, runtime=CPU, **{**args, **kw})


@pytest.mark.parametrize(("arch", "settings"), [("bert", {}), ("lstm", {"bidirectional": True})])
def test_metrics_are_in_range_and_deterministic(tokenizer, val_tokens, arch, settings):
    adapter = _model(arch, tokenizer, **settings)
    adapter.model.train()
    first = _metrics(adapter, tokenizer, val_tokens)
    assert adapter.model.training  # restored after evaluation
    keys = {"mlm_loss", "mlm_accuracy", "masked_tokens", "pseudo_perplexity", "pseudo_ppl_tokens"}
    assert set(first) == keys | {"pseudo_ppl_sequences"}
    assert 0.0 <= first["mlm_accuracy"] <= 1.0 and first["masked_tokens"] > 0
    assert math.isfinite(first["mlm_loss"]) and first["mlm_loss"] > 0
    assert math.isfinite(first["pseudo_perplexity"]) and first["pseudo_perplexity"] > 1
    assert first["pseudo_ppl_sequences"] == 3
    assert first == _metrics(adapter, tokenizer, val_tokens)
    assert (
        _metrics(adapter, tokenizer, val_tokens, seed=1)["mlm_loss"] != first["mlm_loss"]
    )  # the seed is used


def test_pseudo_perplexity_of_a_uniform_model_is_the_vocab_size(tokenizer, val_tokens):
    adapter = _model("bert", tokenizer)
    with torch.no_grad():  # zero weights → zero logits → uniform predictions
        for p in adapter.model.parameters():
            p.zero_()
    adapter.model.eval()
    seqs = torch.from_numpy(val_tokens[:40].astype(np.int64)).view(2, 20)
    specials = (
        tokenizer.sep_token_id,
        tokenizer.pad_token_id,
        tokenizer.cls_token_id,
        tokenizer.mask_token_id,
    )
    out = pseudo_perplexity(adapter, seqs, tokenizer.mask_token_id, specials, batch_size=7, runtime=CPU)
    assert out["pseudo_perplexity"] == pytest.approx(len(tokenizer))
    assert out["pseudo_ppl_tokens"] == int(
        (~torch.isin(seqs, torch.tensor(specials))).sum()
    )  # separators skipped


def test_pseudo_perplexity_masks_only_the_scored_position(tokenizer, val_tokens):
    """Batching the masked copies must equal scoring each copy alone."""
    adapter = _model("bert", tokenizer)
    adapter.model.eval()
    seqs = torch.from_numpy(val_tokens[:16].astype(np.int64)).view(1, 16)
    specials = (tokenizer.sep_token_id,)
    batched = pseudo_perplexity(adapter, seqs, tokenizer.mask_token_id, specials, batch_size=16, runtime=CPU)
    single = pseudo_perplexity(adapter, seqs, tokenizer.mask_token_id, specials, batch_size=1, runtime=CPU)
    assert batched["pseudo_perplexity"] == pytest.approx(single["pseudo_perplexity"], rel=1e-5)


def test_evaluate_stage_registers_both_objectives():
    assert set(EVALUATORS) == {"causal_lm", "masked_lm"}


@pytest.mark.parametrize(("arch", "settings"), [("bert", {}), ("lstm", {"bidirectional": True})])
def test_generate_refuses_masked_models(tokenizer, tmp_path, arch, settings):
    from model_foundry.cli.models import generate
    from model_foundry.errors import FoundryError

    adapter = _model(arch, tokenizer, **settings)
    adapter.tokenizer = tokenizer
    adapter.save_checkpoint(tmp_path / arch, {"architecture": arch, "training": {"objective": "masked_lm"}})
    with pytest.raises(FoundryError, match="masked language model"):
        generate(model=tmp_path / arch, prompt="the", max_new_tokens=2)
