"""Output people read while things run: third-party noise hidden unless -v, progress lines in logs, and the
evaluate stage's warning for a model worse than the unigram baseline."""

from __future__ import annotations

import io
import json
import os
from types import SimpleNamespace

import pytest

from conftest import run_cmd
from model_foundry.training.hooks import ProgressBar, duration, si_number


@pytest.fixture(scope="module")
def barely_trained(tmp_path_factory):
    """A tiny project folder: gpt-tiny trained for one step (worse than the unigram baseline), its data."""
    from conftest import tiny_params
    from model_foundry.config import parse_params
    from model_foundry.stages import convert, ingest, tokenize, train

    root = tmp_path_factory.mktemp("quiet")
    raw = tiny_params(train={"steps": 1, "warmup_steps": 0, "eval_interval": 1, "log_interval": 1})
    (root / "params.yaml").write_text(json.dumps(raw))  # JSON is YAML
    params = parse_params(raw)
    ingest.run(params, root / "data/corpus", root / "data/source")
    convert.run(params, root / "data/source", root / "models/gpt-tiny")
    tokenize.run(params, root / "data/corpus", root / "models/gpt-tiny", root / "data/tokenized")
    out = root / "models/gpt-tiny-trained"
    summary = train.run(
        params,
        root / "models/gpt-tiny",
        root / "data/tokenized",
        out,
        root / "plots",
        root / "logs",
        progress=False,
    )
    return params, root, summary["run_id"]


def test_evaluate_warns_and_tags_when_the_model_is_worse_than_the_unigram_baseline(barely_trained, capsys):
    import mlflow

    from model_foundry import tracking
    from model_foundry.stages import evaluate

    params, root, run_id = barely_trained
    metrics = evaluate.run(params, root / "models/gpt-tiny-trained", root / "data/tokenized", root / "m.json")
    assert json.loads((root / "m.json").read_text()) == metrics  # metrics.json: the same JSON as before
    assert set(metrics) == {"val_loss", "perplexity", "bits_per_byte", "tokens_scored", "unigram"}
    err = capsys.readouterr().err
    line = next(x for x in err.splitlines() if x.startswith("warning: "))
    model, base = metrics["perplexity"], metrics["unigram"]["perplexity"]
    assert (
        f"gpt-tiny-trained scores worse than the unigram baseline (perplexity {model:,.2f} "
        f"against {base:,.2f})" in line
    )
    assert "Try more train.steps" in line
    run = mlflow.MlflowClient(tracking.tracking_uri()).get_run(run_id)  # the training run gets the tag
    assert run.data.tags[evaluate.WORSE_THAN_BASELINE_TAG] == "true"
    assert run.data.metrics["eval_perplexity"] == pytest.approx(model)
    # An evaluation that is not worse removes the tag (tracking.log_evaluation: a None tag value).
    tracking.log_evaluation([run_id], {"perplexity": 1.0}, tags={evaluate.WORSE_THAN_BASELINE_TAG: None})
    run = mlflow.MlflowClient(tracking.tracking_uri()).get_run(run_id)
    assert evaluate.WORSE_THAN_BASELINE_TAG not in run.data.tags


def test_third_party_log_lines_are_hidden_unless_verbose(barely_trained, tmp_path):
    """MLflow's "Creating initial MLflow database tables" INFO lines (a fresh store) only with -v.

    Two `foundry evaluate` processes: ~20 s of CPU (torch + mlflow imports, a fresh store each)."""
    _, root, _ = barely_trained
    args = [
        "evaluate",
        "--model",
        "models/gpt-tiny-trained",
        "--data",
        "data/tokenized",
        "--metrics",
        "q.json",
    ]
    quiet = run_cmd(["foundry", *args], root, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/a.db"})
    verbose = run_cmd(
        ["foundry", "-v", *args], root, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/b.db"}
    )
    assert "INFO mlflow.store.db.utils: Creating initial MLflow database tables" in verbose.stderr
    assert "mlflow" not in quiet.stderr and "INFO" not in quiet.stderr
    for proc in (quiet, verbose):  # our own warning stays
        assert "warning: gpt-tiny-trained scores worse than the unigram baseline" in proc.stderr


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _drive(
    bar: ProgressBar, clock: FakeClock, total: int, start: int = 0, seconds_per_step: float = 1.0
) -> None:
    """Run the hooks of `total - start` training steps, logging every 10 steps."""
    bar.on_train_start(SimpleNamespace(step=start), SimpleNamespace(steps=total))  # type: ignore[arg-type]
    for step in range(start + 1, total + 1):
        clock.now += seconds_per_step
        if step % 10 == 0:
            bar.on_log(step, {"train_loss": 3.21449, "tokens_per_s": 5234.0, "lr": 1e-3})
        bar.on_step_end(step, None)  # type: ignore[arg-type]
    bar.on_train_end(None)  # type: ignore[arg-type]


def test_progress_in_a_log_is_a_plain_line_every_interval_and_a_last_one(capsys):
    out, clock = io.StringIO(), FakeClock()
    _drive(ProgressBar(stream=out, interval=15.0, clock=clock), clock, total=50)
    lines = out.getvalue().split("\n")
    assert "\r" not in out.getvalue() and lines[-1] == ""
    assert lines[:-1] == [
        "step 15/50 (30%) · loss 3.214 · 5.2k tok/s · lr 1.0e-03 · ETA 35s",
        "step 30/50 (60%) · loss 3.214 · 5.2k tok/s · lr 1.0e-03 · ETA 20s",
        "step 45/50 (90%) · loss 3.214 · 5.2k tok/s · lr 1.0e-03 · ETA 5s",
        "step 50/50 (100%) · loss 3.214 · 5.2k tok/s · lr 1.0e-03 · 50s elapsed",
    ]
    # resumed at step 490 of 500: the ETA counts this call's speed only; before the first log, no metrics
    out, clock = io.StringIO(), FakeClock()
    _drive(
        ProgressBar(stream=out, interval=15.0, clock=clock), clock, total=600, start=490, seconds_per_step=8
    )
    assert out.getvalue().split("\n")[0] == "step 492/600 (82%) · ETA 14m24s"
    assert capsys.readouterr().out == ""  # no validation loss: nothing on stdout
    assert (si_number(950), si_number(12_345), si_number(3.4e6), duration(3725)) == (
        "950",
        "12k",
        "3.4M",
        "1h02m",
    )


def test_progress_on_a_terminal_is_tqdms_bar():
    import fcntl
    import struct
    import termios

    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # a new pty has 0 columns
    with os.fdopen(slave, "w") as tty:
        bar, clock = ProgressBar(stream=tty), FakeClock()
        _drive(bar, clock, total=20)
        assert bar.lines is None and bar.bar is not None
    chunks = []
    while True:  # the pty hands data over asynchronously: read until EIO (the slave side is closed)
        try:
            chunk = os.read(master, 65536)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(master)
    drawn = b"".join(chunks).decode()
    assert "\r" in drawn and "20/20" in drawn and "loss=3.214" in drawn


def test_a_hidden_bar_still_prints_validation_losses(capsys):
    out, clock = io.StringIO(), FakeClock()
    bar = ProgressBar(enabled=False, stream=out, clock=clock)
    bar.on_train_start(SimpleNamespace(step=0), SimpleNamespace(steps=4))  # type: ignore[arg-type]
    bar.on_eval(2, 3.14159)
    bar.on_step_end(2, None)  # type: ignore[arg-type]
    bar.on_train_end(None)  # type: ignore[arg-type]
    assert capsys.readouterr().out == "step 2: val_loss 3.1416\n" and out.getvalue() == ""


def test_configure_quiet_keeps_our_messages_and_third_party_errors(monkeypatch):
    import logging
    import warnings

    from model_foundry.logs import QUIET_ENV, QUIET_LOGGERS, configure

    for name in (*QUIET_ENV, "FOUNDRY_QUIET_ENV"):  # restored after the test, as are the logger levels
        monkeypatch.delenv(name, raising=False)  # and warning filters
    monkeypatch.setenv("TRANSFORMERS_VERBOSITY", "info")  # a user's own setting wins
    levels = {name: logging.getLogger(name).level for name in QUIET_LOGGERS}
    try:
        with warnings.catch_warnings(record=True) as seen:
            configure(verbose=False)
            warnings.warn_explicit("third party", UserWarning, "x.py", 1, module="torch.nn")
            warnings.warn_explicit("ours", UserWarning, "y.py", 1, module="model_foundry.stages")
        assert [str(w.message) for w in seen] == ["ours"]
        alembic = logging.getLogger("alembic.runtime.migration")
        assert alembic.isEnabledFor(logging.ERROR) and not alembic.isEnabledFor(logging.WARNING)
        assert (
            os.environ["MLFLOW_LOGGING_LEVEL"] == "ERROR" and os.environ["TRANSFORMERS_VERBOSITY"] == "info"
        )
        # A `foundry -v` started from a quiet foundry inherits these: it drops what the parent set, not the
        # user's own setting.
        configure(verbose=True)
        assert "MLFLOW_LOGGING_LEVEL" not in os.environ and os.environ["TRANSFORMERS_VERBOSITY"] == "info"
        assert "FOUNDRY_QUIET_ENV" not in os.environ
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)
