"""The adapter contract, checked for EVERY registry entry: the scratch architectures and the Hub families.

Data-driven, so a new registry entry is tested without new test code:
- a scratch entry is built at the tiny size of its config class (`TINY`);
- a Hub family is its fixture repo (`localhub.repos.FAMILY_FIXTURES`), imported through the local Hub with the
  real importer once per module, then loaded with `model_folder.load_adapter` for each test;
- the objective is the spec's (`spec.objectives[0]`), the masking the collator the train stage builds.

Random token ids start at 5: the scratch tokenizers and every fixture tokenizer number their special tokens
(pad, unk, cls, sep, mask, <s>, </s>, ...) below that, so no window holds a special token by accident.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model_foundry.adapters import ARCHITECTURES
from model_foundry.adapters.base import BaseAdapter
from model_foundry.adapters.spec import ArchitectureSpec
from model_foundry.config import TrainConfig
from model_foundry.data.collators import CausalCollator, MaskedCollator, make_collator
from model_foundry.io import sha256_file
from model_foundry.model_folder import load_adapter
from model_foundry.model_folder.checks import check_safetensors
from model_foundry.schema import build
from model_foundry.training.device import Runtime
from model_foundry.training.loop import train
from model_foundry.training.state import TrainState

VOCAB = 64  # scratch models
SPECIAL = (0, 1, 2, 3, 4)  # pad, unk, cls, sep, mask: as the masked_lm tokenizers number them
MASK_ID = 4
FIRST_ID = len(SPECIAL)  # random windows draw ids from [FIRST_ID, vocab)
SCRATCH = sorted(name for name, spec in ARCHITECTURES.items() if not spec.pretrained)
HUB = sorted(name for name, spec in ARCHITECTURES.items() if spec.pretrained)


@dataclasses.dataclass
class Case:
    """One registry entry under test: how to get a fresh adapter, its vocabulary and collator."""

    spec: ArchitectureSpec
    fresh: Callable[[int], BaseAdapter]  # seed → a new adapter; the same seed, the same weights and dropout
    collator: Any
    # Adam lr that memorises one batch in 40 steps: the Hub families (post-LN BERT/RoBERTa among them)
    # settle on the batch's unigram distribution at the scratch models' 2e-2 instead.
    overfit_lr: float = 2e-2

    @property
    def objective(self) -> str:
        return self.spec.objectives[0]


def tiny_adapter(spec: ArchitectureSpec, seed: int = 0) -> BaseAdapter:
    config = build(spec.config_cls, {**getattr(spec.config_cls, "TINY", {}), "vocab_size": VOCAB}, spec.name)
    torch.manual_seed(seed)
    return spec.adapter_cls().build(config, spec)


def scratch_collator(objective: str) -> Any:
    if objective == "causal_lm":
        return CausalCollator()
    return MaskedCollator(MASK_ID, VOCAB, SPECIAL, probability=0.3)


@pytest.fixture(params=sorted(ARCHITECTURES))
def case(request: pytest.FixtureRequest) -> Case:
    spec = ARCHITECTURES[request.param]
    if not spec.pretrained:
        return Case(spec, lambda seed: tiny_adapter(spec, seed), scratch_collator(spec.objectives[0]))
    path = request.getfixturevalue("imported_family")(spec.name)

    def fresh(seed: int) -> BaseAdapter:
        adapter = load_adapter(path)
        torch.manual_seed(seed)  # dropout draws from the global generator, as in the train stage
        return adapter

    collator = make_collator(spec.objectives[0], load_adapter(path).tokenizer, mlm_probability=0.3)
    return Case(spec, fresh, collator, overfit_lr=5e-3)


def vocab_size(adapter: BaseAdapter) -> int:
    return adapter.config.vocab_size


def seq_len(adapter: BaseAdapter) -> int:
    return min(16, adapter.max_context or 16)


def batch(adapter: BaseAdapter, case: Case, batch_size: int = 4, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    shape = (batch_size, seq_len(adapter) + case.collator.extra_tokens)
    return case.collator(torch.randint(FIRST_ID, vocab_size(adapter), shape, generator=gen), gen)


def test_registry_has_the_issue_architectures() -> None:
    assert {"gpt", "bert", "lstm", "gru", "rnn"} <= set(SCRATCH)
    assert {"hf-qwen2", "hf-qwen3", "hf-llama", "hf-mistral", "hf-gpt2", "hf-bert", "hf-roberta"} <= set(HUB)


def test_forward_shapes(case: Case) -> None:
    adapter = case.fresh(0)
    x, y = batch(adapter, case, batch_size=3)
    out = adapter(x, y)
    assert out.logits.shape == (3, seq_len(adapter), vocab_size(adapter))  # (B, T, V)
    assert out.loss is not None and out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert adapter(x).loss is None
    assert adapter.num_parameters() > 0
    assert adapter.spec is case.spec


def test_overfits_one_batch(case: Case) -> None:
    adapter = case.fresh(0)
    x, y = batch(adapter, case)
    opt = torch.optim.Adam(adapter.model.parameters(), lr=case.overfit_lr)
    losses = []
    for _ in range(40):
        loss = adapter(x, y).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0], f"{case.spec.name}: {losses[0]:.3f} → {losses[-1]:.3f}"


def test_save_load_gives_identical_logits(case: Case, tmp_path: Path) -> None:
    adapter = case.fresh(0)
    with torch.no_grad():  # move every weight off its init so that nothing matches by accident
        for p in adapter.model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    adapter.model.eval()
    adapter.save_checkpoint(tmp_path / "m", {"model_name": "m"})
    loaded = load_adapter(tmp_path / "m")
    loaded.model.eval()
    assert type(loaded) is type(adapter) and loaded.spec is case.spec
    assert loaded.get_config() == adapter.get_config()
    x, _ = batch(adapter, case)
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(x), adapter.logits(x), rtol=0, atol=0)


def train_steps(adapter: BaseAdapter, case: Case, steps: int = 5) -> list[tuple[int, float]]:
    """`steps` steps of the real training loop on random tokens; the train and val loss history."""
    T = seq_len(adapter)
    cfg = TrainConfig(
        objective=case.objective, steps=steps, batch_size=4, block_size=T, lr=1e-2, warmup_steps=1,
        eval_interval=steps, eval_batches=1, log_interval=1, seed=3, device="cpu", precision="fp32",
    )  # fmt: skip
    tokens = np.random.default_rng(0).integers(FIRST_ID, vocab_size(adapter), 2000).astype(np.uint16)
    runtime = Runtime.create("cpu", "fp32")
    state = TrainState.create(adapter, cfg, runtime)
    result = train(state, tokens[:1500], tokens[1500:], cfg, case.collator, runtime)
    assert [s for s, _ in result.train_history] == list(range(1, steps + 1))
    assert all(np.isfinite(loss) for _, loss in result.train_history + result.val_history)
    return result.train_history + result.val_history


def test_seeded_training_is_reproducible(case: Case) -> None:
    assert train_steps(case.fresh(7), case) == train_steps(case.fresh(7), case)


def test_trained_model_saves_and_reloads(case: Case, tmp_path: Path) -> None:
    """Load, train with the real loop, save_checkpoint, reload: same logits; metadata.json describes the
    files it was written with."""
    adapter = case.fresh(7)
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    train_steps(adapter, case)
    changed = [k for k, v in adapter.model.state_dict().items() if not torch.equal(before[k], v)]
    assert changed, "training changed no weight"
    folder = tmp_path / "trained"
    written = adapter.save_checkpoint(folder, {"model_name": "trained"})

    meta = json.loads((folder / "metadata.json").read_text())
    assert meta == written
    assert meta["format"] == 1 and meta["model_name"] == "trained" and meta["architecture"] == case.spec.name
    weights = sorted(folder.glob("*.safetensors"))
    assert meta["sha256"] == {w.name: sha256_file(w) for w in weights}
    headers = [check_safetensors(w, str(w))[0] for w in weights]
    stored = [t for header in headers for t in header.values()]
    assert meta["parameters"] == adapter.num_parameters() == sum(int(np.prod(t["shape"])) for t in stored)
    assert meta["dtype"] == "float32" and {t["dtype"] for t in stored} == {"F32"}

    adapter.model.eval()
    loaded = load_adapter(folder)  # verify=True: the files match the sha256 metadata.json records
    loaded.model.eval()
    assert type(loaded) is type(adapter) and loaded.spec is case.spec
    x, _ = batch(adapter, case)
    with torch.no_grad():
        torch.testing.assert_close(loaded.logits(x), adapter.logits(x), rtol=0, atol=0)
