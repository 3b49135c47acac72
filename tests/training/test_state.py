"""TrainState: resuming is exact (k steps, save, fresh state, load, N-k steps == N steps in one go), the state
is tensors and plain values only (torch.load weights_only), and hooks see every log, evaluation and step."""

from __future__ import annotations

import io
import json
from typing import Any

import numpy as np
import pytest
import torch

from model_foundry.adapters.base import BaseAdapter
from model_foundry.adapters.bert import SPEC as BERT_SPEC
from model_foundry.adapters.bert import BertConfig
from model_foundry.adapters.gpt import SPEC as GPT_SPEC
from model_foundry.adapters.gpt import GPTConfig
from model_foundry.config import TrainConfig
from model_foundry.data.collators import CausalCollator, MaskedCollator
from model_foundry.errors import FoundryError
from model_foundry.training.device import Runtime
from model_foundry.training.hooks import MetricsLog, TrainHook
from model_foundry.training.loop import train
from model_foundry.training.state import TrainState

VOCAB = 16
SPECIAL = (0, 1, 2, 3)  # [PAD] [UNK] [SEP] [MASK]: never masked
TOKENS = np.random.default_rng(0).integers(len(SPECIAL), VOCAB, 4000).astype(np.uint16)
RUNTIME = Runtime.create("cpu", "fp32")


def gpt() -> BaseAdapter:
    from model_foundry.adapters.gpt.model import GPTAdapter

    torch.manual_seed(0)
    config = GPTConfig(n_layer=1, n_head=2, n_embd=32, block_size=16, dropout=0.1, vocab_size=VOCAB)
    return GPTAdapter.build(config, GPT_SPEC)


def bert() -> BaseAdapter:
    from model_foundry.adapters.bert.model import BertAdapter

    torch.manual_seed(0)
    config = BertConfig(**BertConfig.TINY, dropout=0.1, vocab_size=VOCAB)
    return BertAdapter.build(config, BERT_SPEC)


CASES = {
    "causal gpt": (gpt, CausalCollator()),
    "masked bert": (bert, MaskedCollator(3, VOCAB, SPECIAL, 0.3)),
}


def cfg(**changes: Any) -> TrainConfig:
    base = dict(
        steps=11, batch_size=4, block_size=16, lr=3e-3, warmup_steps=3, grad_clip=1.0, eval_interval=4,
        eval_batches=2, log_interval=3, seed=7, device="cpu", precision="fp32",
    )  # fmt: skip
    return TrainConfig(**{**base, **changes})


def fresh(case: str, config: TrainConfig) -> TrainState:
    build, _ = CASES[case]
    return TrainState.create(build(), config, RUNTIME)


def run(state: TrainState, case: str, config: TrainConfig, until: int | None = None, hooks=()) -> None:
    train(state, TOKENS[:3500], TOKENS[3500:], config, CASES[case][1], RUNTIME, hooks, until)


def saved_and_loaded(state: TrainState) -> dict[str, Any]:
    """state_dict → torch.save → torch.load(weights_only=True): what a checkpoint on disk gives back."""
    buf = io.BytesIO()
    torch.save(state.state_dict(), buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("k", [5, 8])  # 5: inside a log window (3 | 6) and between evaluations; 8: at an eval
def test_resume_is_exact(case: str, k: int) -> None:
    config = cfg()
    whole = fresh(case, config)
    run(whole, case, config)

    first = fresh(case, config)
    run(first, case, config, until=k)
    assert first.step == k and first.tokens == k * 4 * 16
    saved = saved_and_loaded(first)
    del first
    torch.manual_seed(12345)  # whatever happened to torch's generator in between does not matter
    resumed = fresh(case, config)  # a fresh model and optimizer, then the saved state
    resumed.load_state_dict(saved)
    assert resumed.step == k
    run(resumed, case, config)

    assert resumed.train_history == whole.train_history  # the same floats, not just close
    assert resumed.val_history == whole.val_history
    assert resumed.step == whole.step == 11 and resumed.tokens == whole.tokens
    a, b = whole.adapter.model.state_dict(), resumed.adapter.model.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[key], b[key]) for key in a)


def test_the_state_is_tensors_and_plain_values() -> None:
    state = fresh("masked bert", cfg())
    run(state, "masked bert", cfg(), until=4)
    saved = state.state_dict()

    def plain(value: Any) -> bool:
        if isinstance(value, dict):
            return all(isinstance(k, (str, int)) and plain(v) for k, v in value.items())
        if isinstance(value, (list, tuple)):
            return all(plain(v) for v in value)
        return value is None or isinstance(value, (torch.Tensor, str, int, float, bool))

    assert plain(saved)
    tensors_out = {k: v for k, v in saved.items() if k not in ("model", "optimizer", "rng", "torch_rng")}
    json.dumps({k: v for k, v in tensors_out.items() if k != "pending"})  # the plain part is JSON
    assert saved["step"] == 4 and len(saved["pending"]["losses"]) == 1  # step 4: one after the log at 3


def test_a_state_of_another_model_or_log_window_is_refused() -> None:
    config = cfg()
    gpt_state = fresh("causal gpt", config)
    run(gpt_state, "causal gpt", config, until=2)
    saved = gpt_state.state_dict()
    with pytest.raises(FoundryError, match="does not fit this model"):
        fresh("masked bert", config).load_state_dict(saved)
    with pytest.raises(FoundryError, match="un-logged step"):
        fresh("causal gpt", cfg(log_interval=2)).load_state_dict(saved)
    with pytest.raises(FoundryError, match="format"):
        fresh("causal gpt", config).load_state_dict({**saved, "format": 99})


class Recorder(TrainHook):
    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_train_start(self, state: TrainState, cfg: TrainConfig) -> None:
        self.events.append(("start", state.step))

    def on_log(self, step: int, metrics: dict[str, float]) -> None:
        self.events.append(("log", step, sorted(metrics)))

    def on_eval(self, step: int, val_loss: float) -> None:
        self.events.append(("eval", step))

    def on_step_end(self, step: int, state: TrainState) -> None:
        assert state.step == step
        self.events.append(("step", step))

    def on_train_end(self, state: TrainState) -> None:
        self.events.append(("end", state.step))


def test_hooks_see_logs_evaluations_and_every_step() -> None:
    config = cfg(steps=5, log_interval=2, eval_interval=3)
    recorder, logged = Recorder(), []
    state = fresh("causal gpt", config)
    metrics = MetricsLog(lambda m, s: logged.append((s, m)))
    run(state, "causal gpt", config, until=4, hooks=[recorder, metrics])
    keys = ["lr", "tokens_per_s", "train_loss"]
    assert recorder.events == [
        ("start", 0), ("step", 1), ("log", 2, keys), ("step", 2), ("eval", 3), ("step", 3),
        ("log", 4, keys), ("step", 4), ("end", 4),
    ]  # fmt: skip
    assert [s for s, _ in logged] == [2, 3, 4] and set(logged[1][1]) == {"val_loss"}
    recorder.events.clear()
    run(state, "causal gpt", config, hooks=[recorder])  # the last step logs and evaluates
    assert recorder.events == [("start", 4), ("log", 5, keys), ("eval", 5), ("step", 5), ("end", 5)]
    assert [s for s, _ in state.train_history] == [2, 4, 5] and [s for s, _ in state.val_history] == [3, 5]
