"""The five stage functions in-process on tiny params: outputs, determinism, MLflow, and atomic failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from model_foundry.config import parse_params
from model_foundry.errors import FoundryError
from model_foundry.io import read_json, sha256_file
from model_foundry.stages import convert, evaluate, ingest, tokenize, train


def _prepare(params, root: Path):
    ingest.run(params, root / "data/corpus", root / "data/source")
    convert.run(params, root / "data/source", root / "models/gpt-tiny")
    tokenize.run(params, root / "data/corpus", root / "models/gpt-tiny", root / "data/tokenized")


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    """import → convert → tokenize → train → evaluate once, for the assertions below."""
    from conftest import tiny_params

    root = tmp_path_factory.mktemp("pipeline")
    params = parse_params(tiny_params())
    _prepare(params, root)
    summary = train.run(
        params,
        root / "models/gpt-tiny",
        root / "data/tokenized",
        root / "models/gpt-tiny-trained",
        root / "plots",
        root / "logs",
        progress=False,
    )
    metrics = evaluate.run(
        params, root / "models/gpt-tiny-trained", root / "data/tokenized", root / "metrics.json"
    )
    return params, root, summary, metrics


def test_convert_writes_canonical_scratch_folder(pipeline):
    _, root, _, _ = pipeline
    config = read_json(root / "models/gpt-tiny/config.json")
    meta = read_json(root / "models/gpt-tiny/metadata.json")
    assert config["architecture"] == "gpt" and config["n_layer"] == 1
    assert meta["model_name"] == "gpt-tiny" and meta["source"] == "scratch"
    assert meta["fine_tuned_from"] is None and "created_at" in meta and "license" in meta


def test_tokenize_writes_compact_arrays(pipeline):
    _, root, _, _ = pipeline
    meta = read_json(root / "data/tokenized/meta.json")
    assert meta["dtype"] == "uint16" and meta["vocab_size"] == 320
    train_ids = np.memmap(root / "data/tokenized/train.bin", dtype=np.uint16, mode="r")
    assert len(train_ids) == meta["tokens"]["train"] and train_ids.max() < 320
    assert (root / "data/tokenized/tokenizer/tokenizer.json").is_file()
    from transformers import PreTrainedTokenizerFast

    tok = PreTrainedTokenizerFast.from_pretrained(root / "data/tokenized/tokenizer")
    assert tok.decode(tok.encode("The with statement", add_special_tokens=False)) == "The with statement"


def test_trained_model_folder_reloads_with_same_logits(pipeline):
    from model_foundry.model_folder import load_adapter, parent_record

    _, root, _, _ = pipeline
    folder = root / "models/gpt-tiny-trained"
    meta = read_json(folder / "metadata.json")
    assert meta["architecture"] == "gpt" and meta["base_model"] == "gpt-tiny"
    assert meta["fine_tuned_from"] is None and meta["format"] == 1
    assert meta["parent"] == parent_record(root / "models/gpt-tiny")  # not DVC-tracked here: no checksum
    assert meta["sha256"]["model.safetensors"] == sha256_file(folder / "model.safetensors")
    assert meta["parameters"] > 0 and meta["dtype"] == "float32"
    assert {"tokenizer.json", "tokenizer_config.json", "config.json"} <= {p.name for p in folder.iterdir()}
    a, b = load_adapter(folder), load_adapter(folder)
    x = torch.randint(0, 320, (2, 16))
    a.model.eval(), b.model.eval()
    torch.testing.assert_close(a.logits(x), b.logits(x))
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(folder).eval()
    torch.testing.assert_close(hf(x).logits, a.logits(x), rtol=1e-4, atol=1e-4)


def test_plots_and_timings_are_separate(pipeline):
    _, root, summary, _ = pipeline
    rows = (root / "plots/train_loss.csv").read_text().splitlines()
    assert rows[0] == "step,train_loss" and rows[-1].startswith("6,")
    assert (root / "plots/val_loss.csv").read_text().splitlines()[1].startswith("3,")
    timing = json.loads((root / "logs/train_timing.json").read_text())
    assert timing["train_tokens_per_s"] > 0 and timing["run_id"] == summary["run_id"]
    meta_text = (root / "models/gpt-tiny-trained/metadata.json").read_text()
    assert "tokens_per_s" not in meta_text and summary["run_id"] not in meta_text


def test_metrics_have_perplexity_and_baseline(pipeline):
    _, root, _, metrics = pipeline
    assert json.loads((root / "metrics.json").read_text()) == metrics
    assert metrics["perplexity"] == pytest.approx(np.exp(metrics["val_loss"]))
    assert metrics["unigram"]["perplexity"] > 1 and metrics["bits_per_byte"] > 0


def test_mlflow_run_has_params_metrics_tags_and_eval(pipeline):
    import mlflow

    from model_foundry import tracking

    _, root, summary, metrics = pipeline
    run = mlflow.MlflowClient(tracking.tracking_uri()).get_run(summary["run_id"])
    assert run.data.params["train.steps"] == "6" and run.data.params["model.n_layer"] == "1"
    assert run.data.tags["model_name"] == "gpt-tiny-trained" and run.data.tags["architecture"] == "gpt"
    assert run.data.tags["stage"] == "train" and run.data.tags["fine_tuned_from"] == ""
    assert {"train_loss", "val_loss", "lr", "tokens_per_s"} <= set(run.data.metrics)
    # evaluate logged into the same run (found by the weights' sha256)
    assert run.data.metrics["eval_perplexity"] == pytest.approx(metrics["perplexity"])
    artifacts = [
        a.path for a in mlflow.MlflowClient(tracking.tracking_uri()).list_artifacts(summary["run_id"])
    ]
    assert "loss_curve.png" in artifacts


def test_training_is_reproducible(pipeline, tmp_path):
    params, root, _, _ = pipeline
    again = tmp_path / "gpt-tiny-trained"  # same folder name: it is the model's name in metadata.json
    train.run(
        params,
        root / "models/gpt-tiny",
        root / "data/tokenized",
        again,
        tmp_path / "plots",
        tmp_path / "logs",
        progress=False,
    )
    for name in ("model.safetensors", "metadata.json", "config.json", "tokenizer.json"):
        assert sha256_file(again / name) == sha256_file(root / "models/gpt-tiny-trained" / name)
    assert (tmp_path / "plots/train_loss.csv").read_text() == (root / "plots/train_loss.csv").read_text()


def test_vocab_too_small_leaves_nothing(tmp_path, params_dict):
    params_dict["tokenizer"]["vocab_size"] = 100
    params = parse_params(params_dict)
    ingest.run(params, tmp_path / "corpus", tmp_path / "source")
    convert.run(params, tmp_path / "source", tmp_path / "model")
    with pytest.raises(FoundryError) as info:
        tokenize.run(params, tmp_path / "corpus", tmp_path / "model", tmp_path / "tokenized")
    assert "vocab_size = 100 is too small" in info.value.message
    assert not (tmp_path / "tokenized").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]


def test_stages_name_missing_inputs(tmp_path, params_dict):
    params = parse_params(params_dict)
    with pytest.raises(FoundryError, match="Run the import stage first"):
        convert.run(params, tmp_path / "nothing", tmp_path / "model")
    with pytest.raises(FoundryError, match="Run the import stage first"):
        tokenize.run(params, tmp_path / "nothing", tmp_path / "model", tmp_path / "tok")
    with pytest.raises(FoundryError, match="Run the tokenize stage first"):
        train.run(params, tmp_path / "model", tmp_path / "nothing", tmp_path / "out", tmp_path / "plots")
    with pytest.raises(FoundryError, match="not a model folder"):
        evaluate.run(params, tmp_path / "nothing", tmp_path / "tok", tmp_path / "m.json")
    assert not (tmp_path / "out").exists() and not (tmp_path / "m.json").exists()


def test_train_rejects_sequences_longer_than_the_model_context(pipeline):
    from model_foundry.stages.train import check_fits_model

    params, root, _, _ = pipeline
    from model_foundry.model_folder import load_adapter

    adapter = load_adapter(root / "models/gpt-tiny-trained")
    check_fits_model(adapter, "causal_lm", 32, 320)
    with pytest.raises(FoundryError, match="longer than the model's context"):
        check_fits_model(adapter, "causal_lm", 64, 320)
    with pytest.raises(FoundryError, match="embeds only 320"):
        check_fits_model(adapter, "causal_lm", 32, 400)
    with pytest.raises(FoundryError, match="supports only causal_lm"):
        check_fits_model(adapter, "masked_lm", 32, 320)
