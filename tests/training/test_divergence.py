"""Divergent training is an error, never a saved model: NaN/Infinity stops the run, names the step, saves
nothing, ends the MLflow run FAILED, and no file of ours ever holds NaN or Infinity."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml

from conftest import VENV_BIN, run_cmd, tiny_params
from model_foundry.adapters.gpt import SPEC as GPT_SPEC
from model_foundry.adapters.gpt import GPTConfig
from model_foundry.adapters.gpt.model import GPTAdapter
from model_foundry.config import TrainConfig, parse_params
from model_foundry.data.collators import CausalCollator
from model_foundry.errors import FoundryError
from model_foundry.training.device import Runtime
from model_foundry.training.loop import check_finite, train
from model_foundry.training.state import TrainState

TOKENS = np.random.default_rng(0).integers(0, 8, 3000).astype(np.uint16)
DIVERGENT = {"lr": 1e6, "grad_clip": 0}  # the repro


def tiny_gpt() -> GPTAdapter:
    torch.manual_seed(0)
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, dropout=0.0)
    config.vocab_size = 8
    return GPTAdapter.build(config, GPT_SPEC)


def train_cfg(**changes: Any) -> TrainConfig:
    base = dict(
        steps=40, batch_size=8, block_size=16, lr=1e-2, warmup_steps=0, eval_interval=40, eval_batches=1,
        log_interval=1, seed=3, device="cpu", precision="fp32",
    )  # fmt: skip
    return TrainConfig(**{**base, **changes})


def run_loop(cfg: TrainConfig) -> Any:
    runtime = Runtime.create("cpu", cfg.precision)
    state = TrainState.create(tiny_gpt(), cfg, runtime)
    return train(state, TOKENS[:2700], TOKENS[2700:], cfg, CausalCollator(), runtime)


@pytest.mark.parametrize("grad_clip", [0.0, 1.0])
def test_divergent_run_stops_with_the_step_and_a_hint(grad_clip: float) -> None:
    with pytest.raises(FoundryError) as caught:
        run_loop(train_cfg(lr=1e6, grad_clip=grad_clip, log_interval=5))
    err = caught.value
    assert err.message.startswith("Training diverged at step ") and "of 40" in err.message
    assert re.search(r"\(lr [0-9.]+e\+0[56]\)", err.message) and "No model was saved" in err.message
    assert (
        err.hint
        and "train.lr (now 1e+06)" in err.hint
        and "train.grad_clip" in err.hint
        and "fp32" in err.hint
    )


def test_the_error_names_the_first_bad_step_inside_a_log_interval() -> None:
    """Losses and norms are buffered per step; the check reports the exact step, not the log step."""
    cfg = train_cfg(grad_clip=1.0)
    with pytest.raises(FoundryError, match=r"at step 12 of 40: the gradient norm is inf \(lr 0\.00842\)"):
        check_finite([2.0, 1.9, 1.8], [0.5, math.inf, math.nan], first_step=11, cfg=cfg)
    with pytest.raises(FoundryError, match=r"at step 11 of 40: the loss is nan"):
        check_finite([math.nan, 1.9], [math.nan, 0.4], first_step=11, cfg=cfg)
    check_finite([2.0, 1.9], None, first_step=1, cfg=cfg)  # clipping off: losses only, all finite


def test_a_healthy_run_is_not_stopped() -> None:
    result = run_loop(train_cfg(steps=10, eval_interval=10, log_interval=3))
    assert all(math.isfinite(v) for _, v in result.train_history + result.val_history)


def _prepare(root: Path, train: dict[str, Any]) -> Path:
    """import → convert → tokenize for tiny params in `root`; returns the params.yaml written there."""
    from model_foundry.stages import convert, ingest, tokenize

    raw = tiny_params(train=train)
    params = parse_params(raw)
    ingest.run(params, root / "data/corpus", root / "data/source")
    convert.run(params, root / "data/source", root / "models/gpt-tiny")
    tokenize.run(params, root / "data/corpus", root / "models/gpt-tiny", root / "data/tokenized")
    (root / "params.yaml").write_text(yaml.safe_dump(raw))
    return root / "params.yaml"


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_foundry_train_divergence_exits_2_and_keeps_the_previous_outputs(tmp_path: Path) -> None:
    """The issue's repro through the CLI: `lr: 1e6, grad_clip: 0` exited 0 and saved NaN everywhere."""
    import mlflow

    _prepare(tmp_path, DIVERGENT)
    previous = tmp_path / "models/gpt-tiny-trained"  # an earlier good run's outputs must survive
    previous.mkdir(parents=True)
    (previous / "metadata.json").write_text('{"model_name": "gpt-tiny-trained"}\n')
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots/train_loss.csv").write_text("step,train_loss\n2,5.000000\n")
    before = _snapshot(tmp_path / "models") | _snapshot(tmp_path / "plots")
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"

    proc = run_cmd(
        [str(VENV_BIN / "foundry"), "train", "--params", "params.yaml", "--model", "models/gpt-tiny",
         "--data", "data/tokenized", "--out", "models/gpt-tiny-trained", "--plots", "plots", "--quiet"],
        tmp_path, check=False, env={"MLFLOW_TRACKING_URI": store},
    )  # fmt: skip
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert "error: Training diverged at step " in proc.stderr and "hint: Lower train.lr" in proc.stderr
    assert "Traceback" not in out
    assert _snapshot(tmp_path / "models") | _snapshot(tmp_path / "plots") == before
    assert not (tmp_path / "logs/train_timing.json").exists()
    assert not list(tmp_path.rglob(".foundry-tmp-*"))
    for path in tmp_path.rglob("*"):
        if path.suffix in (".json", ".csv") and path.is_file():
            text = path.read_text(encoding="utf-8")
            assert "NaN" not in text and "Infinity" not in text and "nan" not in text, path

    client = mlflow.MlflowClient(store)
    (run,) = client.search_runs([client.get_experiment_by_name("model-foundry").experiment_id])
    assert run.info.status == "FAILED"
    assert all(math.isfinite(v) for v in run.data.metrics.values())
    assert "foundry.weights_sha256" not in run.data.tags


def test_plot_csv_refuses_non_finite_values(tmp_path: Path) -> None:
    from model_foundry.training.report import loss_csv, write_loss_csvs

    assert loss_csv([(1, 2.5)], "train_loss") == "step,train_loss\n1,2.500000\n"
    with pytest.raises(ValueError, match="non-finite train_loss at steps \\[2\\]"):
        loss_csv([(1, 2.5), (2, math.nan)], "train_loss")
    with pytest.raises(ValueError, match="non-finite val_loss"):  # checked before either file is written
        write_loss_csvs(tmp_path, [(1, 2.5)], [(1, math.inf)])
    assert not list(tmp_path.iterdir())
