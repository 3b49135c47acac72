"""A diverged or damaged model is refused: evaluate and generate give an `error:` naming the model folder
(NaN weights, or finite weights whose logits overflow), and nothing is written."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from conftest import VENV_BIN, run_cmd, tiny_params
from model_foundry.adapters.gpt import SPEC as GPT_SPEC
from model_foundry.config import parse_params
from model_foundry.errors import FoundryError
from model_foundry.evaluation.finite import nonfinite_values, safe_exp


@pytest.fixture(scope="module")
def damaged(tmp_path_factory) -> tuple[object, Path]:
    """Tokenized tiny data, and three gpt folders saved with it: healthy, NaN weights, overflowing logits."""
    from model_foundry.adapters.gpt import GPTConfig
    from model_foundry.adapters.gpt.model import GPTAdapter
    from model_foundry.model_folder import load_tokenizer
    from model_foundry.stages import convert, ingest, tokenize

    root = tmp_path_factory.mktemp("damaged")
    params = parse_params(tiny_params())
    ingest.run(params, root / "data/corpus", root / "data/source")
    convert.run(params, root / "data/source", root / "models/gpt-tiny")
    tokenize.run(params, root / "data/corpus", root / "models/gpt-tiny", root / "data/tokenized")
    for name, damage in (("healthy", None), ("nan", math.nan), ("overflow", 3e38)):
        torch.manual_seed(0)
        config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=32)
        config.vocab_size = 320
        adapter = GPTAdapter.build(config, GPT_SPEC)
        adapter.tokenizer = load_tokenizer(root / "data/tokenized/tokenizer")
        if damage is not None:  # what a diverged run used to save; 3e38 is finite, its products are not
            with torch.no_grad():
                adapter.model.transformer.ln_f.weight.fill_(damage)
        meta = {"model_name": name, "architecture": "gpt", "training": {"objective": "causal_lm"}}
        adapter.save_checkpoint(root / "models" / name, meta)
    return params, root


def test_healthy_model_evaluates(damaged) -> None:
    from model_foundry.stages import evaluate

    params, root = damaged
    metrics = evaluate.run(params, root / "models/healthy", root / "data/tokenized", root / "ok.json")
    assert nonfinite_values(metrics) == [] and (root / "ok.json").is_file()


def test_evaluate_refuses_nan_weights(damaged) -> None:
    from model_foundry.stages import evaluate

    params, root = damaged
    with pytest.raises(FoundryError) as caught:
        evaluate.run(params, root / "models/nan", root / "data/tokenized", root / "nan.json")
    assert f"{root / 'models/nan'} has non-finite weights" in caught.value.message
    assert "transformer.ln_f.weight" in caught.value.message
    assert "dvc checkout" in (caught.value.hint or "") and "retrain" in (caught.value.hint or "")
    assert not (root / "nan.json").exists()


def test_evaluate_refuses_non_finite_logits(damaged) -> None:
    from model_foundry.stages import evaluate

    params, root = damaged
    with pytest.raises(FoundryError, match="gave non-finite metrics: val_loss = nan") as caught:
        evaluate.run(params, root / "models/overflow", root / "data/tokenized", root / "overflow.json")
    assert str(root / "models/overflow") in caught.value.message
    assert not (root / "overflow.json").exists()


def test_foundry_generate_refuses_nan_weights(damaged) -> None:
    _, root = damaged
    proc = run_cmd(
        [str(VENV_BIN / "foundry"), "generate", "--model", "models/nan", "--prompt", "The",
         "--max-new-tokens", "3"],
        root, check=False,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "error: models/nan has non-finite weights" in proc.stderr and "hint:" in proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr and proc.stdout == ""


@pytest.mark.parametrize("temperature", [0.0, 0.8])
def test_generate_refuses_non_finite_logits(damaged, temperature: float) -> None:
    from model_foundry.cli.models import generate

    _, root = damaged
    with pytest.raises(FoundryError, match="non-finite logits"):
        generate(model=root / "models/overflow", prompt="The", max_new_tokens=3, temperature=temperature)
    generate(model=root / "models/healthy", prompt="The", max_new_tokens=3, temperature=temperature)


def test_nonfinite_values_names_nested_keys() -> None:
    metrics = {"val_loss": 1.0, "perplexity": math.inf, "unigram": {"val_loss": math.nan, "n": 3}, "l": [1.0]}
    assert nonfinite_values(metrics) == ["perplexity", "unigram.val_loss"]
    assert safe_exp(800.0) == math.inf and safe_exp(1.0) == pytest.approx(math.e)
