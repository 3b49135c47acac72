"""LoRA through peft (adapters/lora.py), on a tiny imported Qwen2 with tied embeddings and a tiny scratch gpt:
only the adapters train; merged == unmerged (logits and greedy tokens); tied embeddings survive merge and
save; the exported adapter loads with plain peft onto the base folder; tied, unknown and RNN targets are
refused; the adapter files are the same bytes whatever PYTHONHASHSEED."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from model_foundry.adapters import ARCHITECTURES
from model_foundry.adapters.base import BaseAdapter
from model_foundry.adapters.lora import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    apply_lora,
    default_targets,
    lora_info,
    merge,
    save_lora_adapter,
    tied_modules,
)
from model_foundry.adapters.lora_targets import LoRASettings
from model_foundry.config import TrainConfig
from model_foundry.data.collators import CausalCollator
from model_foundry.errors import FoundryError
from model_foundry.generation import GREEDY, generate
from model_foundry.model_folder import load_adapter
from model_foundry.schema import build
from model_foundry.training.device import Runtime
from model_foundry.training.loop import train
from model_foundry.training.state import TrainState

RUNTIME = Runtime.create("cpu", "fp32")
GPT_VOCAB = 64
PROMPTS = ([5, 9, 17], [30, 31], [12, 40, 41, 7, 8])


def train_cfg(**changes: Any) -> TrainConfig:
    base = dict(
        steps=4, batch_size=4, block_size=16, lr=5e-2, warmup_steps=0, grad_clip=1.0, eval_interval=4,
        eval_batches=1, log_interval=2, seed=3, device="cpu", precision="fp32",
    )  # fmt: skip
    return TrainConfig(**{**base, **changes})


def tiny_gpt(seed: int = 0) -> BaseAdapter:
    spec = ARCHITECTURES["gpt"]
    config = build(spec.config_cls, {**spec.config_cls.TINY, "vocab_size": GPT_VOCAB}, "gpt")
    torch.manual_seed(seed)
    return spec.adapter_cls().build(config, spec)


@pytest.fixture(scope="module")
def qwen_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny Qwen2 fixture repo (tied embeddings) built locally and imported with the real importer."""
    from localhub.repos import FAMILY_FIXTURES, SPECS, build_repo
    from model_foundry.hub import QuietReporter, import_model

    src = tmp_path_factory.mktemp("qwen2-src") / "tiny-qwen2"
    build_repo(SPECS[FAMILY_FIXTURES["hf-qwen2"]], src)
    models = tmp_path_factory.mktemp("lora-models")
    result = import_model(
        str(src), models, name="qwen2-fixture", accept_license=True, reporter=QuietReporter()
    )
    return Path(result.path)


@pytest.fixture(params=["gpt", "hf-qwen2"])
def model(request: pytest.FixtureRequest) -> Callable[[], BaseAdapter]:
    """A fresh base model (same weights at every call): the scratch gpt or the imported Qwen2."""
    if request.param == "gpt":
        return tiny_gpt
    folder = request.getfixturevalue("qwen_folder")
    return lambda: load_adapter(folder)


def vocab(adapter: BaseAdapter) -> int:
    return int(adapter.config.vocab_size)


def lora_trained(adapter: BaseAdapter, settings: LoRASettings | None = None, steps: int = 4) -> BaseAdapter:
    """apply_lora, then `steps` optimizer steps of the project's loop on random tokens (ids ≥ 5)."""
    apply_lora(adapter, settings or LoRASettings(r=4, alpha=8))
    tokens = np.random.default_rng(0).integers(5, vocab(adapter), 3000).astype(np.uint16)
    cfg = train_cfg(steps=steps)
    state = TrainState.create(adapter, cfg, RUNTIME)
    train(state, tokens[:2500], tokens[2500:], cfg, CausalCollator(), RUNTIME)
    adapter.model.eval()
    return adapter


def ids(adapter: BaseAdapter) -> torch.Tensor:
    return torch.randint(5, vocab(adapter), (2, 12), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def logits(adapter: BaseAdapter, x: torch.Tensor) -> torch.Tensor:
    adapter.model.eval()
    return adapter.logits(x)


def greedy(adapter: BaseAdapter) -> list[list[int]]:
    return [generate(adapter, torch.tensor([p]), 32, GREEDY).tokens[0] for p in PROMPTS]


# --------------------------------------------------------------------------------------------- defaults


def test_default_targets() -> None:
    assert default_targets(ARCHITECTURES["hf-qwen2"]) == (
        ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"],
        False,
    )
    assert default_targets(ARCHITECTURES["hf-gpt2"]) == (["c_attn", "c_fc", "c_proj"], True)
    assert default_targets(ARCHITECTURES["gpt"]) == (["c_attn", "c_fc", "c_proj"], True)
    assert default_targets(ARCHITECTURES["bert"]) == (["query", "value"], False)
    for name in ("lstm", "gru", "rnn"):
        with pytest.raises(FoundryError, match="cannot wrap"):
            default_targets(ARCHITECTURES[name])


def test_rnn_refused() -> None:
    spec = ARCHITECTURES["lstm"]
    config = build(spec.config_cls, {**spec.config_cls.TINY, "vocab_size": 32}, "lstm")
    adapter = spec.adapter_cls().build(config, spec)
    with pytest.raises(FoundryError, match="LSTM/GRU/RNN") as e:
        apply_lora(adapter, LoRASettings(target_modules=["head"]))
    assert "train.method: full" in (e.value.hint or "")
    assert lora_info(adapter) is None


# --------------------------------------------------------------------------------------------- training


def test_only_adapter_weights_train(model: Callable[[], BaseAdapter]) -> None:
    adapter = model()
    before = {k: v.clone() for k, v in adapter.model.state_dict().items()}
    lora_trained(adapter)
    info = lora_info(adapter)
    assert info is not None and 0 < info.trainable < info.total / 2
    assert info.trainable == sum(p.numel() for p in adapter.model.parameters() if p.requires_grad)
    after = adapter.model.state_dict()
    changed_lora = 0
    for key, value in after.items():
        if "lora_" in key:
            changed_lora += "lora_B" in key and bool(value.abs().sum() > 0)  # B starts at zero
            continue
        base_key = key.replace(".base_layer.", ".")
        assert torch.equal(value, before[base_key]), f"base weight {key} changed"
    assert changed_lora == sum("lora_B" in k for k in after), "every lora_B matrix trained"
    assert "trainable of" in info.describe()


def test_merged_equals_unmerged(model: Callable[[], BaseAdapter], tmp_path: Path) -> None:
    adapter = lora_trained(model())
    x = ids(adapter)
    unmerged_logits = logits(adapter, x)
    unmerged_tokens = greedy(adapter)
    assert not torch.allclose(unmerged_logits, logits(model(), x), atol=1e-3), "LoRA changed nothing"
    merge(adapter)
    assert lora_info(adapter) is None
    assert not any("lora_" in k for k in adapter.model.state_dict())
    assert (logits(adapter, x) - unmerged_logits).abs().max().item() <= 1e-5
    assert greedy(adapter) == unmerged_tokens
    # tied embeddings intact after merge ...
    assert len(tied_modules(adapter.model)) == 1
    # ... and after save: transformers reloads the folder with the head still tied
    from transformers import AutoModelForCausalLM

    adapter.save_checkpoint(tmp_path / "merged", {"model_name": "merged"})
    config = json.loads((tmp_path / "merged" / "config.json").read_text())
    assert config["tie_word_embeddings"] is True
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
    assert reloaded.config.tie_word_embeddings is True
    assert reloaded.get_output_embeddings().weight is reloaded.get_input_embeddings().weight
    with torch.no_grad():
        hf_logits = reloaded(input_ids=x).logits
    assert (hf_logits - unmerged_logits).abs().max().item() <= 1e-5
    assert load_adapter(tmp_path / "merged").num_parameters() == model().num_parameters()


def test_exported_adapter_loads_with_plain_peft(model: Callable[[], BaseAdapter], tmp_path: Path) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    base = model()
    base_folder = tmp_path / "base"
    base.save_checkpoint(base_folder, {"model_name": "base"})  # the gpt: GPT-2 (Conv1D) layout on disk
    adapter = lora_trained(base)
    out = save_lora_adapter(adapter, tmp_path / "adapter", "base")
    assert sorted(p.name for p in out.iterdir()) == [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME]
    config = json.loads((out / ADAPTER_CONFIG_NAME).read_text())
    assert config["base_model_name_or_path"] == "base"
    assert config["target_modules"] == sorted(config["target_modules"])
    assert config["fan_in_fan_out"] is (adapter.spec.name == "gpt")  # GPT-2's Conv1D layout on disk

    hf_base = AutoModelForCausalLM.from_pretrained(str(base_folder))
    peft_model = PeftModel.from_pretrained(hf_base, str(out)).eval()
    x = ids(adapter)
    with torch.no_grad():
        theirs = peft_model(input_ids=x).logits
    assert (theirs - logits(adapter, x)).abs().max().item() <= 1e-5


# --------------------------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("name", "settings"),
    [
        ("gpt", LoRASettings(target_modules=["c_attn", "lm_head"])),
        ("gpt", LoRASettings(target_modules=["wte"])),
        ("gpt", LoRASettings(modules_to_save=["lm_head"])),
        ("hf-qwen2", LoRASettings(target_modules=["q_proj", "lm_head"])),
        ("hf-qwen2", LoRASettings(target_modules=["embed_tokens"])),
        ("hf-qwen2", LoRASettings(modules_to_save=["lm_head"])),
    ],
)
def test_tied_targets_refused(name: str, settings: LoRASettings, request: pytest.FixtureRequest) -> None:
    adapter = tiny_gpt() if name == "gpt" else load_adapter(request.getfixturevalue("qwen_folder"))
    with pytest.raises(FoundryError, match="ties its input embeddings and output head") as e:
        apply_lora(adapter, settings)
    assert "train.method: full" in (e.value.hint or "")
    assert "proj" in (e.value.hint or "") or "c_attn" in (e.value.hint or "")
    assert lora_info(adapter) is None
    assert all(p.requires_grad for p in adapter.model.parameters())


def test_unknown_target_lists_the_linear_names(model: Callable[[], BaseAdapter]) -> None:
    adapter = model()
    with pytest.raises(FoundryError, match="'qkv' does not exist") as e:
        apply_lora(adapter, LoRASettings(target_modules=["qkv"]))
    hint = e.value.hint or ""
    expected = (  # both models tie lm_head to the embedding: it is refused as a target, so not offered
        ["c_attn", "c_fc", "c_proj"]
        if adapter.spec.name == "gpt"
        else ["down_proj", "gate_proj", "k_proj", "o_proj", "q_proj", "up_proj", "v_proj"]
    )
    assert hint == f"Its Linear/Conv1D modules are: {', '.join(expected)}."
    with pytest.raises(FoundryError, match="not a Linear"):
        apply_lora(adapter, LoRASettings(target_modules=["ln_f" if adapter.spec.name == "gpt" else "norm"]))


# ------------------------------------------------------------------------------------------ canonical files

SAVE_SCRIPT = textwrap.dedent(
    """
    import sys, torch
    from model_foundry.adapters import ARCHITECTURES
    from model_foundry.schema import build
    from model_foundry.adapters.lora import apply_lora, save_lora_adapter
    from model_foundry.adapters.lora_targets import LoRASettings

    spec = ARCHITECTURES["gpt"]
    config = build(spec.config_cls, {**spec.config_cls.TINY, "vocab_size": 64}, "gpt")
    torch.manual_seed(0)
    adapter = spec.adapter_cls().build(config, spec)
    targets = ["c_proj", "c_fc", "c_attn"]
    apply_lora(adapter, LoRASettings(r=2, target_modules=targets, modules_to_save=["ln_f"]))
    with torch.no_grad():
        for name, p in adapter.model.named_parameters():
            if p.requires_grad:
                p.add_(torch.randn_like(p))
    save_lora_adapter(adapter, sys.argv[1], "gpt-tiny")
    """
)


def test_adapter_files_identical_across_hash_seeds(tmp_path: Path) -> None:
    outs = []
    for seed in ("1", "2"):
        out = tmp_path / f"seed-{seed}"
        env = {**os.environ, "PYTHONHASHSEED": seed}
        subprocess.run([sys.executable, "-c", SAVE_SCRIPT, str(out)], check=True, env=env, timeout=300)
        outs.append(out)
    first = {p.name: p.read_bytes() for p in outs[0].iterdir()}
    assert sorted(first) == [ADAPTER_CONFIG_NAME, ADAPTER_WEIGHTS_NAME]  # no README
    for out in outs[1:]:
        assert {p.name: p.read_bytes() for p in out.iterdir()} == first
    config = json.loads(first[ADAPTER_CONFIG_NAME])
    assert config["target_modules"] == ["c_attn", "c_fc", "c_proj"]
    assert config["modules_to_save"] == ["ln_f"]
    assert config["base_model_name_or_path"] == "gpt-tiny"


def test_base_name_must_not_be_a_path(tmp_path: Path) -> None:
    adapter = tiny_gpt()
    apply_lora(adapter, LoRASettings())
    with pytest.raises(FoundryError, match="not '/"):
        save_lora_adapter(adapter, tmp_path / "a", str(tmp_path))


def test_resume_of_a_lora_state_is_exact() -> None:
    """A LoRA TrainState (dropout in the adapters) saved after 2 steps and loaded into a fresh model wrapped
    the same way trains on to the same losses and weights as 4 uninterrupted steps: resume is trainable."""
    import io

    settings = LoRASettings(r=4, alpha=8, dropout=0.2)
    tokens = np.random.default_rng(0).integers(5, GPT_VOCAB, 3000).astype(np.uint16)
    cfg = train_cfg(steps=4, log_interval=1)

    def fresh() -> TrainState:
        adapter = tiny_gpt()
        apply_lora(adapter, settings)
        torch.manual_seed(11)
        return TrainState.create(adapter, cfg, RUNTIME)

    def run(state: TrainState, until: int) -> None:
        train(state, tokens[:2500], tokens[2500:], cfg, CausalCollator(), RUNTIME, until=until)

    whole = fresh()
    run(whole, 4)
    first = fresh()
    run(first, 2)
    buf = io.BytesIO()
    torch.save(first.state_dict(), buf)
    buf.seek(0)
    resumed = fresh()
    resumed.load_state_dict(torch.load(buf, weights_only=True))
    run(resumed, 4)
    assert [loss.hex() for _, loss in resumed.train_history] == [
        loss.hex() for _, loss in whole.train_history
    ]
    theirs = resumed.adapter.model.state_dict()
    assert any("lora_" in k for k in theirs)
    for key, value in whole.adapter.model.state_dict().items():
        assert torch.equal(value, theirs[key]), key
