"""MLflow bookkeeping on a real sqlite store: every training run carries the evaluation of its weights (also
when DVC skips evaluate after byte-identical retraining), runs are named after the model and record their
dataset, each model is one external LoggedModel per (name, bytes) linked to its runs and evaluation, long
params are cut visibly, NaN is never logged."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from conftest import tiny_params
from model_foundry import tracking
from model_foundry.config import parse_params
from model_foundry.errors import FoundryError
from model_foundry.io import read_json
from model_foundry.registry.dvc import dvc_md5


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


def test_retrained_identical_weights_carry_the_evaluation(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The issue's fresh-clone repro: retraining gives the same weights, DVC skips evaluate, and the new
    training run must still hold the perplexity of those weights."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")  # no git here: identical folders need a fixed time
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
    plots = {p.name: p.read_bytes() for p in (root / "plots").iterdir()}
    second, again = train_once()  # not evaluated in between: nothing to copy yet
    assert again == weights
    # the train stage's DVC outputs besides the model are the same bytes too: `dvc repro` stays fresh
    assert plots == {p.name: p.read_bytes() for p in (root / "plots").iterdir()}
    assert set(plots) == {"train_loss.csv", "val_loss.csv", "effective_params.json"}
    used = read_json(root / "plots/effective_params.json")  # what `dvc exp show` displays
    assert used["steps"] == params.train.steps and used["architecture"] == "gpt"
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

    # four trainings to identical bytes: one LoggedModel, every run linked to it
    (model,) = _logged_models(client, "gpt-tiny-trained")
    assert model.source_run_id == first
    for run_id in (first, second, third, fourth):
        run = client.get_run(run_id)
        assert run.data.tags[tracking.MODEL_ID_TAG] == model.model_id
        assert [o.model_id for o in run.outputs.model_outputs] == [model.model_id]
    assert model.metrics and {m.model_id for m in model.metrics} == {model.model_id}


def _logged_models(client, name: str) -> list:
    import mlflow

    experiment = client.get_experiment_by_name(tracking.EXPERIMENT)
    return mlflow.search_logged_models(
        experiment_ids=[experiment.experiment_id], filter_string=f"name = '{name}'", output_format="list"
    )


def _weight_files(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if p.suffix in {".safetensors", ".bin", ".pt"}]


def test_runs_datasets_and_the_logged_model(
    store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 11: the training run is named after the model (also under `dvc exp run`), logs its dataset, and
    the model is an external LoggedModel (no weights copied) linked to the training run and the evaluation."""
    from model_foundry.stages import convert, evaluate, ingest, tokenize, train

    params = parse_params(tiny_params())
    root = tmp_path
    ingest.run(params, root / "data/corpus", root / "data/source")
    convert.run(params, root / "data/source", root / "models/gpt-tiny")
    tokenize.run(params, root / "data/corpus", root / "models/gpt-tiny", root / "data/tokenized")
    trained = root / "models/gpt-tiny-trained"
    monkeypatch.setenv("DVC_EXP_NAME", "bold-mole")  # what `dvc exp run` sets
    summary = train.run(
        params, root / "models/gpt-tiny", root / "data/tokenized", trained, root / "plots", root / "logs",
        progress=False,
    )  # fmt: skip
    client = _client(store)
    run = client.get_run(summary["run_id"])
    assert run.info.run_name == "gpt-tiny-trained@bold-mole"  # the model, and the DVC experiment
    assert run.data.tags["dvc_exp_name"] == "bold-mole" and run.data.tags["stage"] == "train"
    experiment = client.get_experiment(run.info.experiment_id)  # the UI opens it on the runs, not traces
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"

    (given,) = run.inputs.dataset_inputs
    assert given.dataset.name == params.data.source == "builtin:pydoc_topics"
    assert given.dataset.digest == dvc_md5(root / "data/tokenized") == run.data.tags["foundry.dataset_md5"]
    assert str((root / "data/tokenized").resolve()) in given.dataset.source
    assert {t.key: t.value for t in given.tags}["mlflow.data.context"] == "training"

    (model,) = _logged_models(client, "gpt-tiny-trained")
    meta = read_json(trained / "metadata.json")
    assert model.source_run_id == run.info.run_id
    assert model.tags[tracking.CHECKSUM_TAG] == dvc_md5(trained)
    assert model.tags[tracking.PATH_TAG] == "models/gpt-tiny-trained"
    assert model.tags["foundry.parent"] == "gpt-tiny"
    assert (
        model.tags["foundry.parent_checksum"] == meta["parent"]["sha256"] == dvc_md5(root / "models/gpt-tiny")
    )
    assert model.tags["architecture"] == "gpt" and model.tags["method"] == "full"
    assert [a.path for a in client.list_logged_model_artifacts(model.model_id)] == ["MLmodel"]  # a stub only
    artifacts = Path(model.artifact_location.removeprefix("file://"))
    assert artifacts.is_dir() and not _weight_files(artifacts) and _weight_files(trained)

    metrics = evaluate.run(params, trained, root / "data/tokenized", root / "metrics.json")
    linked = {m.key: m.value for m in client.get_logged_model(model.model_id).metrics}
    assert linked["eval_perplexity"] == pytest.approx(metrics["perplexity"])
    assert client.get_run(run.info.run_id).data.metrics["eval_perplexity"] == pytest.approx(
        metrics["perplexity"]
    )

    # A store without the training run: evaluate makes `<model>-eval`, and a LoggedModel with it as source.
    other = f"sqlite:///{tmp_path / 'other.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", other)
    evaluate.run(params, trained, root / "data/tokenized", root / "metrics.json")
    client = _client(other)
    (model,) = _logged_models(client, "gpt-tiny-trained")
    run = client.get_run(model.source_run_id)
    assert run.info.run_name == "gpt-tiny-trained-eval@bold-mole" and run.data.tags["stage"] == "evaluate"
    assert run.data.tags["model_name"] == "gpt-tiny-trained"
    (given,) = run.inputs.dataset_inputs
    assert {t.key: t.value for t in given.tags}["mlflow.data.context"] == "evaluation"
    linked = {m.key: m.value for m in model.metrics}
    assert linked["eval_perplexity"] == pytest.approx(metrics["perplexity"])


@pytest.mark.parametrize("name", ["gpt.v2", "a/b", "x:y", "50%", "it's", 'say"', ""])
def test_model_names_mlflow_forbids_are_refused(name: str) -> None:
    with pytest.raises(FoundryError, match="MLflow model names forbid|is empty"):
        tracking.check_model_name(name)
    assert tracking.check_model_name("gpt-tiny-trained") == "gpt-tiny-trained"


def test_dataset_names() -> None:
    assert tracking.dataset_name("builtin:pydoc_topics") == "builtin:pydoc_topics"
    assert tracking.dataset_name(["a.txt", "b/"]) == "a.txt, b/"
    long = tracking.dataset_name(["x" * 400, "y" * 400])
    assert len(long) == tracking.DATASET_NAME_LIMIT and long.endswith("…")


def test_no_earlier_evaluation_attaches_nothing(store: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Also: a store made before the experiment kind was set (MLflow 3's UI would open it on "Traces") gets
    it at the next run, and a run outside `dvc exp run` is named after the model alone."""
    import mlflow

    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    client = _client(store)
    experiment_id = client.create_experiment(tracking.EXPERIMENT)
    assert "mlflow.experimentKind" not in client.get_experiment(experiment_id).tags
    with tracking.start_run("gpt-tiny-trained", {"stage": "train"}) as tracker:
        tracker.set_tags({tracking.WEIGHTS_TAG: "abc"})
        assert tracker.attach_earlier_evaluation("abc") is None
    assert tracking.earlier_evaluation("abc") is None
    assert client.get_experiment(experiment_id).tags["mlflow.experimentKind"] == "custom_model_development"
    assert mlflow.get_run(tracker.run_id).info.run_name == "gpt-tiny-trained"


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
