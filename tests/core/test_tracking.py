"""MLflow bookkeeping on a real sqlite store: every training run carries the evaluation of its weights (also
when DVC skips evaluate after byte-identical retraining), long params are cut visibly, NaN is never logged."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conftest import tiny_params
from model_foundry import tracking
from model_foundry.config import parse_params
from model_foundry.io import read_json


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A private MLflow store (and artifact folder) for one test."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # the project root: mlartifacts/ goes here
    return uri


def _client(uri: str):
    import mlflow

    return mlflow.MlflowClient(uri)


def test_retrained_identical_weights_carry_the_evaluation(store: str, tmp_path: Path) -> None:
    """The issue's fresh-clone repro: retraining gives the same weights, DVC skips evaluate, and the new
    training run must still hold the perplexity of those weights."""
    from model_foundry.stages import convert, evaluate, ingest, tokenize, train

    params = parse_params(tiny_params())
    root = tmp_path
    ingest.run(params, root / "data/corpus", root / "data/source")
    convert.run(params, root / "data/source", root / "models/gpt-tiny")
    tokenize.run(params, root / "data/corpus", root / "models/gpt-tiny", root / "data/tokenized")
    trained = root / "models/gpt-tiny-trained"

    def train_once() -> tuple[str, str]:
        summary = train.run(
            params, root / "models/gpt-tiny", root / "data/tokenized", trained, root / "plots", root / "logs",
            progress=False,
        )  # fmt: skip
        return summary["run_id"], read_json(trained / "metadata.json")["sha256"]["model.safetensors"]

    first, weights = train_once()
    second, again = train_once()  # not evaluated in between: nothing to copy yet
    assert again == weights
    client = _client(store)
    assert not [k for k in client.get_run(second).data.metrics if k.startswith("eval_")]

    metrics = evaluate.run(params, trained, root / "data/tokenized", root / "metrics.json")
    for run_id in (first, second):  # evaluate logs into every run that produced these weights
        run = client.get_run(run_id)
        assert run.data.metrics["eval_perplexity"] == pytest.approx(metrics["perplexity"])
        assert run.data.metrics["eval_unigram_perplexity"] == pytest.approx(metrics["unigram"]["perplexity"])

    third, again = train_once()  # DVC would skip evaluate now: the train stage attaches the evaluation
    assert again == weights
    run = client.get_run(third)
    assert run.data.metrics["eval_perplexity"] == pytest.approx(metrics["perplexity"])
    assert run.data.metrics["eval_bits_per_byte"] == pytest.approx(metrics["bits_per_byte"])
    assert run.data.tags[tracking.EVAL_COPIED_TAG] == second  # the newest evaluated run
    assert run.info.status == "FINISHED"

    fourth, _ = train_once()  # a copy of a copy names where the evaluation was logged
    assert client.get_run(fourth).data.tags[tracking.EVAL_COPIED_TAG] == second

    evaluate.run(params, trained, root / "data/tokenized", root / "metrics.json")
    assert tracking.EVAL_COPIED_TAG not in client.get_run(fourth).data.tags  # now evaluated itself


def test_no_earlier_evaluation_attaches_nothing(store: str) -> None:
    with tracking.start_run("t", {"stage": "train"}) as tracker:
        tracker.set_tags({tracking.WEIGHTS_TAG: "abc"})
        assert tracker.attach_earlier_evaluation("abc") is None
    assert tracking.earlier_evaluation("abc") is None


def test_long_params_are_cut_with_a_marker_and_logged_in_full(store: str) -> None:
    from mlflow.utils.validation import MAX_PARAM_VAL_LENGTH

    assert tracking.PARAM_LIMIT == MAX_PARAM_VAL_LENGTH
    long = "".join(f"{i:05d}," for i in range(2000))  # 12000 chars
    with tracking.start_run("params", {"stage": "train"}) as tracker:
        tracker.log_params({"data.files": long, "train.lr": 0.002, "model.id": None})
    client = _client(store)
    run = client.get_run(tracker.run_id)
    logged = run.data.params["data.files"]
    marker = "…[truncated, 12000 chars; full value in artifact params/data.files.txt]"
    assert len(logged) == MAX_PARAM_VAL_LENGTH and logged.endswith(marker)
    assert long.startswith(logged.removesuffix(marker))
    assert run.data.params["train.lr"] == "0.002" and run.data.params["model.id"] == ""
    full = Path(client.download_artifacts(tracker.run_id, "params/data.files.txt")).read_text()
    assert full == long
    assert [a.path for a in client.list_artifacts(tracker.run_id, "params")] == ["params/data.files.txt"]


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_metrics_are_never_logged(store: str, bad: float) -> None:
    with tracking.start_run("nan", {"stage": "train"}) as tracker:
        with pytest.raises(ValueError, match="non-finite metrics \\['val_loss'\\]"):
            tracker.log({"train_loss": 1.0, "val_loss": bad}, step=1)
        with pytest.raises(ValueError, match="non-finite"):
            tracking.log_evaluation([tracker.run_id], {"eval_perplexity": bad})
    assert _client(store).get_run(tracker.run_id).data.metrics == {}
