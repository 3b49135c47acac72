"""LoRA adapters in and out of model folders (adapters/lora.load_lora_adapter, training/merge_lora.py,
`foundry merge-lora`, model_folder.load_adapter of an adapter-only folder), on a tiny imported Qwen2 with tied
embeddings and the tiny scratch gpt, each LoRA-trained a few steps:

- the merged folder equals the unmerged model (logits within 1e-5, 32 greedy tokens on 3 prompts), loads with
  plain transformers (Qwen2) with the head still tied to the embeddings and one copy of it in the file;
- a loaded adapter trains only its LoRA matrices (trainable=True) or nothing (False);
- an adapter-only run folder (train.merge: false) loads through its parent;
- an adapter written by plain peft loads and merges;
- bad inputs are one FoundryError (exit 2 with error/hint lines from the CLI), leaving the model untouched.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from tests.training.test_lora import greedy, ids, logits, lora_trained, qwen_folder, tiny_gpt
from typer.testing import CliRunner

from model_foundry.adapters.base import BaseAdapter
from model_foundry.adapters.lora import (
    ADAPTER_CONFIG_NAME,
    ADAPTER_WEIGHTS_NAME,
    load_lora_adapter,
    lora_info,
    write_lora_files,
)
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir, sha256_file, write_json
from model_foundry.model_folder import load_adapter
from model_foundry.registry.dvc import dvc_md5
from model_foundry.training.merge_lora import merge_lora_folder

__all__ = ["qwen_folder"]  # the fixture, imported for this module

KINDS = ["gpt", "hf-qwen2"]
WEIGHTS = f"adapter/{ADAPTER_WEIGHTS_NAME}"


@dataclass
class Run:
    """A LoRA run's adapter-only output folder models/<name>/ and what the unmerged model computed."""

    kind: str
    base: str  # the base model's name: models/<base>
    folder: Path  # models/<kind>-lora: metadata.json, tokenizer, adapter/
    x: torch.Tensor  # (2, 12) token ids
    logits: torch.Tensor  # (2, 12, V) of the unmerged LoRA model
    tokens: list[list[int]]  # greedy continuations of PROMPTS (32 tokens each)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, qwen_folder: Path) -> Path:
    """A project folder whose models/ holds the two base models: gpt-base (scratch) and qwen-base."""
    root = tmp_path_factory.mktemp("project")
    shutil.copytree(qwen_folder, root / "models" / "qwen-base")
    tiny_gpt().save_checkpoint(root / "models" / "gpt-base", {"model_name": "gpt-base"})
    return root


@pytest.fixture(autouse=True)
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(project)  # project_root() is the working directory outside a DVC repo
    return project


def base_name(kind: str) -> str:
    return "gpt-base" if kind == "gpt" else "qwen-base"


def write_run(adapter: BaseAdapter, folder: Path, base: str) -> Path:
    """The train stage's output with train.merge: false: metadata.json (parent), tokenizer, adapter/."""
    with atomic_dir(folder) as tmp:
        (tmp / "adapter").mkdir()
        write_lora_files(adapter, tmp / "adapter", base)
        if adapter.tokenizer is not None:
            adapter.tokenizer.save_pretrained(str(tmp))
        meta = {"format": 1, "model_name": folder.name, "architecture": adapter.spec.name,
                "parent": {"name": base, "sha256": dvc_md5(folder.parent / base)},
                "training": {"method": "lora", "adapter_sha256": sha256_file(tmp / WEIGHTS)}}  # fmt: skip
        write_json(tmp / "metadata.json", meta, atomic=False)
    return folder


@pytest.fixture(scope="module")
def runs(project: Path) -> dict[str, Run]:
    """Each base LoRA-trained 4 steps (r 4, alpha 8), written as an adapter-only run folder."""
    out = {}
    for kind in KINDS:
        adapter = load_adapter(project / "models" / base_name(kind))
        lora_trained(adapter)
        x = ids(adapter)
        folder = write_run(adapter, project / "models" / f"{kind}-lora", base_name(kind))
        out[kind] = Run(kind, base_name(kind), folder, x, logits(adapter, x), greedy(adapter))
    return out


@pytest.fixture(params=KINDS)
def run(request: pytest.FixtureRequest, runs: dict[str, Run]) -> Run:
    return runs[request.param]


def safetensors_keys(path: Path) -> list[str]:
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return sorted(f.keys())


# --------------------------------------------------------------------------------------------- merge


def test_merged_folder_equals_unmerged(run: Run, project: Path) -> None:
    out = project / "models" / f"{run.kind}-merged"
    meta = merge_lora_folder(run.folder, out)  # the base found by name: models/<base_model_name_or_path>
    merged = load_adapter(out)
    assert lora_info(merged) is None and not any("lora_" in k for k in merged.model.state_dict())
    assert (logits(merged, run.x) - run.logits).abs().max().item() <= 1e-5
    assert greedy(merged) == run.tokens
    # the saved file holds what the base's held (one copy of tied weights), no adapter tensors
    base_dir = project / "models" / run.base
    assert safetensors_keys(out / "model.safetensors") == safetensors_keys(base_dir / "model.safetensors")
    # provenance
    assert meta["model_name"] == out.name and meta["fine_tuned_from"] == run.base
    assert meta["parent"]["name"] == run.base
    assert meta["parameters"] == load_adapter(base_dir).num_parameters()
    training = meta["training"]
    assert training["method"] == "lora" and training["merged_by"] == "foundry merge-lora"
    assert training["lora"]["r"] == 4 and training["lora"]["alpha"] == 8
    assert training["lora"]["target_modules"] == sorted(training["lora"]["target_modules"])
    assert json.loads((out / "metadata.json").read_text()) == meta


def test_merged_qwen_loads_with_plain_transformers(runs: dict[str, Run], project: Path) -> None:
    from transformers import AutoModelForCausalLM

    run = runs["hf-qwen2"]
    out = project / "models" / "qwen-merged-hf"
    merge_lora_folder(run.folder / "adapter", out, base=project / "models" / "qwen-base")
    assert not (out / ADAPTER_CONFIG_NAME).exists()  # else from_pretrained would look for the base by name
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is True
    model = AutoModelForCausalLM.from_pretrained(str(out)).eval()
    assert model.config.tie_word_embeddings is True
    head, embedding = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    assert head.data_ptr() == embedding.data_ptr()
    with torch.no_grad():
        theirs = model(input_ids=run.x).logits
    assert (theirs - run.logits).abs().max().item() <= 1e-5
    # the licence and origin of the imported base travel with the merged model
    base_meta = json.loads((project / "models" / "qwen-base" / "metadata.json").read_text())
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["license"] == base_meta["license"] and meta["model_id"] == base_meta["model_id"]


# --------------------------------------------------------------------------------------------- loading


def test_load_trainable_trains_only_lora(run: Run, project: Path) -> None:
    adapter = load_adapter(project / "models" / run.base)
    info = load_lora_adapter(adapter, run.folder / "adapter", trainable=True)
    trainable = {n for n, p in adapter.model.named_parameters() if p.requires_grad}
    lora = {n for n, _ in adapter.model.named_parameters() if ".lora_A." in n or ".lora_B." in n}
    assert trainable == lora and len(lora) == 2 * len(info.modules) > 0
    assert info.trainable == sum(p.numel() for n, p in adapter.model.named_parameters() if n in lora)
    # the adapter is the trained one, and it trains on
    assert (logits(adapter, run.x) - run.logits).abs().max().item() <= 1e-5
    before = {n: p.detach().clone() for n, p in adapter.model.named_parameters()}
    adapter.model.train()
    optimizer = torch.optim.SGD([p for p in adapter.model.parameters() if p.requires_grad], lr=0.5)
    loss = adapter.forward(run.x, labels=run.x).loss
    assert loss is not None
    loss.backward()
    optimizer.step()
    changed = {n for n, p in adapter.model.named_parameters() if not torch.equal(p, before[n])}
    assert changed and changed <= lora


def test_load_frozen_trains_nothing(run: Run, project: Path) -> None:
    adapter = load_adapter(project / "models" / run.base)
    info = load_lora_adapter(adapter, run.folder / "adapter")
    assert info.trainable == 0
    assert not any(p.requires_grad for p in adapter.model.parameters())
    assert (logits(adapter, run.x) - run.logits).abs().max().item() <= 1e-5


def test_adapter_only_folder_loads_through_its_parent(run: Run, project: Path) -> None:
    adapter = load_adapter(run.folder)
    assert lora_info(adapter) is not None
    assert not any(p.requires_grad for p in adapter.model.parameters())
    assert (logits(adapter, run.x) - run.logits).abs().max().item() <= 1e-5
    merged = project / "models" / f"{run.kind}-merged-for-compare"
    merge_lora_folder(run.folder, merged)
    assert (logits(adapter, run.x) - logits(load_adapter(merged), run.x)).abs().max().item() <= 1e-5
    assert (adapter.tokenizer is None) == (run.kind == "gpt")  # the folder's tokenizer (the gpt has none)


def test_adapter_only_folder_without_its_parent(runs: dict[str, Run], project: Path) -> None:
    orphan = project / "models" / "orphan-lora"
    shutil.copytree(runs["gpt"].folder, orphan)
    meta = json.loads((orphan / "metadata.json").read_text())
    write_json(orphan / "metadata.json", {**meta, "parent": {"name": "deleted-base", "sha256": None}})
    with pytest.raises(FoundryError, match="base model deleted-base is missing") as e:
        load_adapter(orphan)
    assert "train.merge: true" in (e.value.hint or "") and "dvc checkout" in (e.value.hint or "")


def test_a_different_parent_is_refused(runs: dict[str, Run], project: Path, tmp_path: Path) -> None:
    """The parent folder replaced by another model of the same shape: loading and merging refuse it (the
    recorded parent checksum differs), instead of giving a model nobody trained."""
    run = runs["gpt"]
    lookalike = project / "models" / "lookalike-base"
    shutil.copytree(project / "models" / run.base, lookalike)
    meta = json.loads((lookalike / "metadata.json").read_text())
    write_json(lookalike / "metadata.json", {**meta, "model_name": "lookalike-base"})  # other bytes
    swapped = project / "models" / "swapped-lora"
    shutil.copytree(run.folder, swapped)
    meta = json.loads((swapped / "metadata.json").read_text())
    write_json(swapped / "metadata.json", {**meta, "parent": {**meta["parent"], "name": "lookalike-base"}})
    with pytest.raises(FoundryError, match="is not the model .* was trained from: its checksum is"):
        load_adapter(swapped)
    with pytest.raises(FoundryError, match="is not the model .* was trained from"):
        merge_lora_folder(run.folder, tmp_path / "merged", base=lookalike)
    assert lora_info(load_adapter(swapped, verify=False)) is not None  # --no-verify skips the check


def test_adapter_only_folder_damaged_adapter(runs: dict[str, Run], project: Path) -> None:
    damaged = project / "models" / "damaged-lora"
    shutil.copytree(runs["gpt"].folder, damaged)
    data = bytearray((damaged / WEIGHTS).read_bytes())
    data[-1] ^= 0xFF  # a flipped bit in the last tensor's data: the header still parses
    (damaged / WEIGHTS).write_bytes(bytes(data))
    with pytest.raises(FoundryError, match="is damaged: its sha256"):
        load_adapter(damaged)
    assert lora_info(load_adapter(damaged, verify=False)) is not None


def test_plain_peft_adapter_loads_and_merges(runs: dict[str, Run], project: Path, tmp_path: Path) -> None:
    """An adapter saved by peft itself (task_type CAUSAL_LM, base named by path) onto the HF model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    base_dir = project / "models" / "qwen-base"
    hf = AutoModelForCausalLM.from_pretrained(str(base_dir))
    config = LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    peft_model = get_peft_model(hf, config)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.5)
    peft_model.save_pretrained(str(tmp_path / "peft"))
    x = runs["hf-qwen2"].x
    with torch.no_grad():
        expected = peft_model.eval()(input_ids=x).logits

    ours = load_adapter(base_dir)
    info = load_lora_adapter(ours, tmp_path / "peft")
    assert info.targets == ["q_proj", "v_proj"]
    assert (logits(ours, x) - expected).abs().max().item() <= 1e-5

    with pytest.raises(FoundryError, match="cannot be resolved offline") as e:
        merge_lora_folder(tmp_path / "peft", tmp_path / "merged")  # base_model_name_or_path is a path
    assert "--base" in (e.value.hint or "")
    merge_lora_folder(tmp_path / "peft", tmp_path / "merged", base=base_dir)
    assert (logits(load_adapter(tmp_path / "merged"), x) - expected).abs().max().item() <= 1e-5


# --------------------------------------------------------------------------------------------- refusals


def adapter_copy(run: Run, dest: Path, **config_changes: object) -> Path:
    """A copy of the run's adapter folder with adapter_config.json keys changed."""
    shutil.copytree(run.folder / "adapter", dest)
    config = json.loads((dest / ADAPTER_CONFIG_NAME).read_text())
    write_json(dest / ADAPTER_CONFIG_NAME, {**config, **config_changes})
    return dest


def test_missing_adapter_config(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(FoundryError, match="holds no LoRA adapter") as e:
        merge_lora_folder(tmp_path / "empty", tmp_path / "out")
    assert "peft's save_pretrained" in (e.value.hint or "")
    adapter = tiny_gpt()
    with pytest.raises(FoundryError, match="not a LoRA adapter folder"):
        load_lora_adapter(adapter, tmp_path / "empty")


@pytest.mark.parametrize(
    ("base", "message"),
    [("no-such-model", "'no-such-model' is not in this project"),
     ("Qwen/Qwen2.5-0.5B", "a Hub id or a path")],
)  # fmt: skip
def test_unknown_base_name(runs: dict[str, Run], tmp_path: Path, base: str, message: str) -> None:
    folder = adapter_copy(runs["gpt"], tmp_path / "adapter", base_model_name_or_path=base)
    with pytest.raises(FoundryError, match=message) as e:
        merge_lora_folder(folder, tmp_path / "out")
    assert "--base models/<name>" in (e.value.hint or "")
    assert not (tmp_path / "out").exists()


def test_out_exists_needs_force(runs: dict[str, Run], tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FoundryError, match="already exists") as e:
        merge_lora_folder(runs["gpt"].folder, out)
    assert "--force" in (e.value.hint or "")
    assert (out / "keep.txt").read_text() == "mine"
    merge_lora_folder(runs["gpt"].folder, out, force=True)
    assert not (out / "keep.txt").exists() and (out / "model.safetensors").is_file()
    with pytest.raises(FoundryError, match="which the merge reads"):  # never over an input, even forced
        merge_lora_folder(runs["gpt"].folder, runs["gpt"].folder, force=True)


def assert_untouched(adapter: BaseAdapter) -> None:
    assert lora_info(adapter) is None
    assert not any("lora_" in k for k in adapter.model.state_dict())


def test_adapter_for_other_modules(runs: dict[str, Run], project: Path, tmp_path: Path) -> None:
    """The gpt's adapter (c_attn, c_proj, c_fc) on the Qwen2 base: refused, naming the Qwen2's modules."""
    qwen = load_adapter(project / "models" / "qwen-base")
    with pytest.raises(FoundryError, match="which do not exist in hf-qwen2") as e:
        load_lora_adapter(qwen, runs["gpt"].folder / "adapter")
    assert "q_proj" in (e.value.hint or "") and "--base" in (e.value.hint or "")
    assert_untouched(qwen)
    with pytest.raises(FoundryError, match="do not exist"):
        merge_lora_folder(
            runs["gpt"].folder / "adapter", tmp_path / "out", base=project / "models" / "qwen-base"
        )
    assert not (tmp_path / "out").exists()


def test_adapter_of_other_shapes(runs: dict[str, Run], project: Path, tmp_path: Path) -> None:
    """A config that says r 8 over tensors of rank 4: refused before any weight is copied."""
    folder = adapter_copy(runs["gpt"], tmp_path / "adapter", r=8)
    gpt = load_adapter(project / "models" / "gpt-base")
    with pytest.raises(FoundryError, match="tensors have other shapes") as e:
        load_lora_adapter(gpt, folder)
    assert "(4, " in e.value.message and "(8, " in e.value.message
    assert_untouched(gpt)
    assert all(p.requires_grad for p in gpt.model.parameters())


def test_not_lora_and_tied_targets(runs: dict[str, Run], project: Path, tmp_path: Path) -> None:
    gpt = load_adapter(project / "models" / "gpt-base")
    with pytest.raises(FoundryError, match="IA3 adapter, not LoRA"):
        load_lora_adapter(gpt, adapter_copy(runs["gpt"], tmp_path / "ia3", peft_type="IA3"))
    tied = adapter_copy(runs["gpt"], tmp_path / "tied", target_modules=["c_attn", "lm_head"])
    with pytest.raises(FoundryError, match="ties its input embeddings and output head"):
        load_lora_adapter(gpt, tied)
    assert_untouched(gpt)
    (tmp_path / "no-weights").mkdir()
    shutil.copy(tmp_path / "tied" / ADAPTER_CONFIG_NAME, tmp_path / "no-weights")
    with pytest.raises(FoundryError, match=f"no {ADAPTER_WEIGHTS_NAME}"):
        load_lora_adapter(gpt, tmp_path / "no-weights")


# --------------------------------------------------------------------------------------------- CLI


def test_cli_merge_lora(runs: dict[str, Run], project: Path) -> None:
    from model_foundry.cli import app

    out = project / "models" / "cli-merged"
    result = CliRunner().invoke(app, ["merge-lora", str(runs["gpt"].folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"merged {runs['gpt'].folder} into gpt-base: ")
    assert f"parameters (float32) → {out}" in result.output
    assert (out / "model.safetensors").is_file()


def test_cli_bad_input_exits_2(
    runs: dict[str, Run], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from model_foundry.cli import main

    out = tmp_path / "taken"
    out.mkdir()
    monkeypatch.setattr(sys, "stderr", sys.stderr)  # main() wraps it (redaction): restored after the test
    monkeypatch.setattr(sys, "argv", ["foundry", "merge-lora", str(runs["gpt"].folder), "--out", str(out)])
    with pytest.raises(SystemExit) as e:
        main()
    assert e.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"error: {out} already exists."
    assert err[1] == "  hint: Pass --force to replace it, or choose another --out folder."
