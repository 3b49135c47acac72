"""Evaluation metrics against values computable by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model_foundry.adapters.gpt import SPEC as GPT_SPEC
from model_foundry.adapters.gpt import GPTConfig
from model_foundry.adapters.gpt.model import GPTAdapter
from model_foundry.data.tokens import sequential_windows
from model_foundry.evaluation.metrics import causal_metrics, unigram_baseline
from model_foundry.training.device import Runtime


def test_uniform_model_has_perplexity_equal_to_vocab():
    adapter = GPTAdapter.build(
        GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=8, vocab_size=50), GPT_SPEC
    )
    with torch.no_grad():
        adapter.model.lm_head.weight.zero_()  # tied: logits are all zero → uniform distribution
    tokens = np.arange(200, dtype=np.uint16) % 50
    m = causal_metrics(adapter, tokens, 8, 4, 100, Runtime.create("cpu", "fp32"), bytes_per_token=2.0)
    assert m["perplexity"] == pytest.approx(50.0, rel=1e-5)
    assert m["bits_per_byte"] == pytest.approx(math.log2(50) / 2.0, rel=1e-5)
    assert m["tokens_scored"] == (200 - 1) // 8 * 8  # every target once, windows overlapping by one token


def test_unigram_baseline_matches_hand_computation():
    train = np.array([0, 0, 0, 1], dtype=np.uint16)
    val = np.array([0, 1], dtype=np.uint16)
    m = unigram_baseline(train, val, vocab_size=3, bytes_per_token=1.0)
    p0, p1 = 4 / 7, 2 / 7  # add-one smoothing over 3 tokens
    assert m["val_loss"] == pytest.approx(-(math.log(p0) + math.log(p1)) / 2)


def test_sequential_windows_cover_the_split_once():
    tokens = np.arange(25, dtype=np.uint16)
    windows = list(sequential_windows(tokens, batch_size=2, length=5, max_batches=10))
    flat = torch.cat(windows)
    assert flat.shape == (6, 5)
    targets = flat[:, 1:].flatten().tolist()
    assert targets == list(range(1, 25)) and len(set(targets)) == len(targets)
