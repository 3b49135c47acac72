"""The memory estimate that refuses configs too big for the machine (model_foundry.resources)."""

from __future__ import annotations

import pytest

from model_foundry.adapters import get_spec
from model_foundry.config import EvaluateConfig, TrainConfig
from model_foundry.errors import FoundryError
from model_foundry.resources import check_fits, estimate, fmt_bytes, fmt_count, parse_bytes
from model_foundry.schema import build

CONFIGS = [
    ("gpt", {"n_layer": 3, "n_head": 4, "n_embd": 64, "block_size": 64}),
    ("bert", {"n_layer": 2, "n_head": 2, "n_embd": 32, "intermediate_size": 64, "block_size": 32}),
    ("bert", {"n_layer": 1, "n_head": 2, "n_embd": 32, "intermediate_size": 48, "block_size": 16,
              "token_types": 0}),
    ("lstm", {"n_layer": 3, "hidden_size": 48, "embedding_size": 32}),
    ("lstm", {"n_layer": 1, "hidden_size": 32, "embedding_size": 32}),
    ("gru", {"n_layer": 2, "hidden_size": 32, "embedding_size": 32, "bidirectional": True}),
    ("rnn", {"n_layer": 2, "hidden_size": 40, "embedding_size": 32, "tie_embeddings": False}),
]  # fmt: skip


@pytest.mark.parametrize(("name", "raw"), CONFIGS)
def test_parameter_count_matches_the_built_model(name: str, raw: dict) -> None:
    """The estimate counts exactly the parameters the real adapter builds, for every scratch architecture."""
    spec = get_spec(name)
    config = build(spec.config_cls, {**raw, "vocab_size": 300}, "m")
    built = spec.adapter_cls().build(config, spec).num_parameters()
    assert estimate(config, 300, TrainConfig(), EvaluateConfig()).parameters == built


def test_estimate_grows_with_batch_and_block() -> None:
    config = build(
        get_spec("gpt").config_cls, {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64}, "m"
    )
    small = estimate(config, 500, TrainConfig(batch_size=4, block_size=32), EvaluateConfig())
    big = estimate(config, 500, TrainConfig(batch_size=64, block_size=64), EvaluateConfig())
    assert big.train_bytes > small.train_bytes and big.parameters == small.parameters


def test_imported_families_are_left_to_the_import() -> None:
    assert (
        estimate(build(get_spec("hf-gpt2").config_cls, {}, "m"), 0, TrainConfig(), EvaluateConfig()) is None
    )


def test_absurd_sizes_refused_without_overflow(monkeypatch: pytest.MonkeyPatch) -> None:
    """Integers beyond float range (n_layer 10**400) are estimated and formatted, then refused."""
    monkeypatch.delenv("FOUNDRY_MAX_RAM", raising=False)
    config = build(get_spec("gpt").config_cls, {"n_layer": 10**400}, "m")
    with pytest.raises(FoundryError, match=r"needs ≈ ~10\^\d+ B of memory to train"):
        check_fits("models.x", config, 4096, TrainConfig(threads=1), EvaluateConfig())


def test_formatting() -> None:
    assert fmt_bytes(1536) == "1.5 KiB" and fmt_bytes(10**400).startswith("~10^400")
    assert fmt_count(124_000_000) == "124.0M" and fmt_count(10**30) == "~10^30"
    assert parse_bytes("64GiB") == 64 << 30 and parse_bytes("1GB") == 10**9 and parse_bytes("2048") == 2048
    with pytest.raises(FoundryError, match="FOUNDRY_MAX_RAM"):
        parse_bytes("lots")
