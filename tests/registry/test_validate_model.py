"""`validate_model_folder`: every kind of damage is a Problem naming the file, on real tiny model folders.

A scratch GPT saved the way `foundry train` saves it, and tiny Qwen2 / sharded Llama folders imported with
`foundry import-model`'s importer from the local Hub fixtures' builds; each test damages a copy as a bad disk,
an interrupted copy or a hand edit would.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from localhub.repos import LLAMA_SHARDED, QWEN2, SPECS, build_repo
from model_foundry.model_folder import is_adapter_only
from model_foundry.registry.checks import Problem, read_dir_listing, validate_model_folder
from model_foundry.registry.dvc import dvc_md5

W = "model.safetensors"


def _project(root: Path) -> Path:
    """A folder the hash cache and the importer treat as a project (git repo with params.yaml)."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    (root / "params.yaml").write_text("models: {}\n")
    (root / "models").mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"gpt": a saved scratch GPT with its tokenizer, "qwen2": an imported tiny Qwen2 (tied embeddings),
    "sharded": an imported tiny Llama in several shards with an index}."""
    import torch

    from model_foundry.adapters import get_spec
    from model_foundry.data.tokenizer_training import train_tokenizer
    from model_foundry.hub import QuietReporter, import_model

    root = _project(tmp_path_factory.mktemp("good"))
    texts = [f"the quick brown fox {i} jumps over the lazy dog {i * 7}" for i in range(200)]
    tok = train_tokenizer("bpe", texts, 300, "causal_lm")
    spec = get_spec("gpt")
    config = spec.config_cls(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=32, block_size=32)
    torch.manual_seed(0)
    adapter = spec.adapter_cls().build(config, spec)
    adapter.tokenizer = tok
    adapter.save_checkpoint(
        root / "models" / "gpt", {"model_name": "gpt", "training": {"objective": "causal_lm"}}
    )
    out = {"gpt": root / "models" / "gpt"}
    builds = tmp_path_factory.mktemp("builds")
    for key, repo in (("qwen2", QWEN2), ("sharded", LLAMA_SHARDED)):
        build_repo(SPECS[repo], builds / key)
        result = import_model(
            str(builds / key), root / "models", name=key, accept_license=True, reporter=QuietReporter()
        )
        out[key] = result.path
    lora_runs(root, out)
    return out


def lora_runs(root: Path, out: dict[str, Path]) -> None:
    """Add "lora" (a LoRA run's adapter-only folder, train.merge: false) and "lora-merged" (merged weights
    and adapter/ beside them), saved by the train stage's writer from the gpt."""
    from model_foundry.adapters.lora import apply_lora
    from model_foundry.adapters.lora_targets import LoRASettings
    from model_foundry.model_folder import load_adapter
    from model_foundry.stages.train import save_lora_output

    for name, merge in (("lora", False), ("lora-merged", True)):
        adapter = load_adapter(out["gpt"])
        apply_lora(adapter, LoRASettings(r=2))
        meta = {"model_name": name, "architecture": "gpt", "training": {"method": "lora"}}
        save_lora_output(adapter, root / "models" / name, meta, "gpt", merge, out["gpt"])
        out[name] = root / "models" / name


@pytest.fixture
def copy(good: dict[str, Path], tmp_path: Path):
    """copy(kind) → a fresh copy of a good folder, inside a project, to damage."""
    project = _project(tmp_path / "project")

    def make(kind: str) -> Path:
        dest = project / "models" / kind
        n = 1
        while dest.exists():
            n += 1
            dest = project / "models" / f"{kind}-{n}"
        shutil.copytree(good[kind], dest)
        return dest

    return make


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _edit_json(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def files(problems: list[Problem]) -> set[str]:
    return {p.file for p in problems}


@pytest.mark.parametrize("kind", ["gpt", "qwen2", "sharded", "lora", "lora-merged"])
def test_an_intact_folder_has_no_problems(copy, kind: str) -> None:
    folder = copy(kind)
    before = dvc_md5(folder)
    assert validate_model_folder(folder, None) == []
    assert validate_model_folder(folder, before, "models/x.dvc") == []
    assert dvc_md5(folder) == before  # validating writes nothing into the folder


@pytest.mark.parametrize("kind", ["gpt", "qwen2"])
def test_one_flipped_byte_in_the_weights_is_caught_with_and_without_a_record(copy, kind: str) -> None:
    folder = copy(kind)
    recorded = dvc_md5(folder)
    _flip(folder / W, (folder / W).stat().st_size - 3)  # deep in the tensor data: headers still parse

    without = validate_model_folder(folder, None)
    assert without == [Problem(W, without[0].message)]
    assert "metadata.json records (sha256)" in without[0].message

    with_record = validate_model_folder(folder, recorded, "dvc.lock stage train")
    assert with_record[0] == Problem(
        ".", f"folder hash {dvc_md5(folder)} differs from {recorded} recorded in dvc.lock stage train"
    )
    assert with_record[1:] == without


def test_a_flipped_header_byte_names_the_file(copy) -> None:
    folder = copy("gpt")
    _flip(folder / W, 9)  # inside the JSON header
    problems = validate_model_folder(folder, None)
    assert files(problems) == {W}
    assert any("not a valid safetensors file" in p.message for p in problems)
    assert any("sha256" in p.message for p in problems)


def test_a_truncated_shard_is_caught(copy) -> None:
    folder = copy("sharded")
    shard = sorted(folder.glob("model-*.safetensors"))[-1]
    with open(shard, "r+b") as f:
        f.truncate(shard.stat().st_size - 100)
    problems = validate_model_folder(folder, None)
    assert files(problems) == {shard.name}
    assert any("truncated" in p.message for p in problems)  # the header check
    assert any("sha256" in p.message for p in problems)  # the recorded digest


def test_a_missing_shard_and_an_index_naming_the_wrong_shard(copy) -> None:
    folder = copy("sharded")
    shards = sorted(folder.glob("model-*.safetensors"))
    shards[0].unlink()
    problems = validate_model_folder(folder, None)
    assert Problem(shards[0].name, "missing (metadata.json records its sha256)") in problems
    assert Problem(shards[0].name, "missing: model.safetensors.index.json lists it") in problems

    folder = copy("sharded")
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    tensor = sorted(index["weight_map"])[0]
    other = next(s.name for s in shards if s.name != index["weight_map"][tensor])
    index["weight_map"][tensor] = other
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    assert validate_model_folder(folder, None) == [
        Problem("model.safetensors.index.json", f"maps tensor {tensor} to {other}, which does not hold it")
    ]


@pytest.mark.parametrize("kind", ["lora", "lora-merged"])
def test_a_damaged_lora_adapter_is_named(copy, kind: str) -> None:
    folder = copy(kind)
    weights = folder / "adapter" / "adapter_model.safetensors"
    assert is_adapter_only(folder) == (kind == "lora")  # no base weights to check against config.json
    _flip(weights, weights.stat().st_size - 1)
    problems = validate_model_folder(folder, None)
    assert files(problems) == {"adapter/adapter_model.safetensors"}
    assert "metadata.json records (training.adapter_sha256)" in problems[0].message

    with open(weights, "r+b") as f:
        f.truncate(weights.stat().st_size - 8)
    problems = validate_model_folder(folder, None)
    assert files(problems) == {"adapter/adapter_model.safetensors"}
    assert any("truncated" in p.message for p in problems)

    (folder / "adapter" / "adapter_config.json").write_text("[]")
    assert Problem("adapter/adapter_config.json", "is damaged: it holds a JSON list, not an object.") in (
        validate_model_folder(folder, None)
    )


def test_a_wrong_dimension_in_config_names_the_tensors(copy) -> None:
    folder = copy("gpt")
    _edit_json(folder / "config.json", n_embd=64, n_head=2)
    problems = validate_model_folder(folder, None)
    shapes = [p for p in problems if "has shape" in p.message]
    assert shapes and all(p.file == W for p in shapes)
    assert any("tensor transformer.wte.weight has shape" in p.message for p in shapes)


def test_a_wrong_dimension_in_a_hub_config_names_the_tensors(copy) -> None:
    folder = copy("qwen2")
    _edit_json(folder / "config.json", intermediate_size=96)
    problems = validate_model_folder(folder, None)
    assert problems and all(p.file == W for p in problems)
    assert any("mlp.up_proj.weight has shape [128, 64]" in p.message for p in problems)


def test_a_tensor_missing_or_added_is_named(copy) -> None:
    from safetensors.torch import load_file, save_file

    folder = copy("gpt")
    tensors = load_file(folder / W)
    name = sorted(tensors)[0]
    extra = tensors.pop(name)
    tensors["stray.weight"] = extra
    save_file(tensors, folder / W, metadata={"format": "pt"})
    problems = validate_model_folder(folder, None)
    assert Problem(W, f"lacks tensor {name}, which config.json needs") in problems
    assert Problem(W, "holds tensor stray.weight, which config.json has no use for") in problems


def test_gpt2_saved_causal_masks_are_no_unexpected_tensors(copy) -> None:
    """The gpt's loader drops GPT-2's `.attn.bias` masks, so a folder holding them loads: it is intact."""
    import torch
    from safetensors.torch import load_file, save_file

    from model_foundry.io import sha256_file

    folder = copy("gpt")
    tensors = load_file(folder / W)
    tensors["transformer.h.0.attn.bias"] = torch.ones(1, 1, 32, 32)
    save_file(tensors, folder / W, metadata={"format": "pt"})
    meta = json.loads((folder / "metadata.json").read_text())
    _edit_json(folder / "metadata.json", sha256={**meta["sha256"], W: sha256_file(folder / W)})
    assert validate_model_folder(folder, None) == []


def test_a_model_before_training_needs_no_weights_or_tokenizer(tmp_path: Path) -> None:
    from model_foundry.model_folder import write_config_folder

    folder = tmp_path / "models" / "untrained"
    config = {"architecture": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32}
    write_config_folder(folder, config, {"model_name": "untrained", "architecture": "gpt"})
    assert validate_model_folder(folder, dvc_md5(folder), "dvc.lock stage convert") == []


def test_a_config_that_no_longer_parses(copy) -> None:
    folder = copy("qwen2")
    (folder / "config.json").write_text('{"model_type": "qwen2", ')
    problems = validate_model_folder(folder, None)
    assert files(problems) == {"config.json"}
    assert "not valid JSON" in problems[0].message


@pytest.mark.parametrize(
    ("kind", "change", "words"),
    [
        ("gpt", {"n_head": 3}, "does not divide by n_head = 3"),
        ("gpt", {"n_layer": "two"}, "n_layer = 'two' must be an integer"),
        ("qwen2", {"hidden_size": "abc"}, "does not describe a Qwen2ForCausalLM that can be built"),
        ("qwen2", {"model_type": "llama"}, "model_type 'llama' is not handled by hf-qwen2"),
    ],
)
def test_a_config_the_model_cannot_be_built_from(copy, kind: str, change: dict, words: str) -> None:
    folder = copy(kind)
    _edit_json(folder / "config.json", **change)
    problems = validate_model_folder(folder, None)
    assert len(problems) == 1 and problems[0].file == "config.json"  # the tokenizer is not blamed for it
    assert words in problems[0].message


def test_missing_or_damaged_tokenizer(copy) -> None:
    folder = copy("gpt")
    (folder / "tokenizer.json").unlink()
    assert validate_model_folder(folder, None) == [
        Problem("tokenizer.json", "missing: the folder has no tokenizer")
    ]

    folder = copy("qwen2")
    (folder / "tokenizer.json").write_text('{"model": ')
    problems = validate_model_folder(folder, None)
    assert files(problems) == {"tokenizer.json"}


def test_metadata_that_no_longer_parses(copy) -> None:
    folder = copy("gpt")
    (folder / "metadata.json").write_text("{")
    assert files(validate_model_folder(folder, None)) == {"metadata.json"}
    (folder / "metadata.json").unlink()
    assert validate_model_folder(folder, None) == [Problem("metadata.json", "missing")]


def test_a_missing_folder(tmp_path: Path) -> None:
    assert validate_model_folder(tmp_path / "nope", "0" * 32 + ".dir") == [
        Problem(".", "the folder does not exist")
    ]


# --- against what DVC records ------------------------------------------------------------------------------
def _dvc(args: list[str], cwd: Path) -> None:
    subprocess.run([sys.executable, "-m", "dvc", *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def dvc_added(copy) -> tuple[Path, str, Path]:
    """(a gpt folder `dvc add`ed in a DVC repo, the md5 its .dvc file records, the cache's files/md5)."""
    folder = copy("gpt")
    project = folder.parents[1]
    _dvc(["init", "--no-scm", "-q"], project)
    _dvc(["add", "-q", "models/gpt"], project)
    md5 = yaml.safe_load((project / "models" / "gpt.dvc").read_text())["outs"][0]["md5"]
    return folder, md5, project / ".dvc" / "cache" / "files" / "md5"


def test_with_dvc_cache_each_added_removed_or_changed_file_is_named(dvc_added) -> None:
    folder, md5, cache = dvc_added
    assert read_dir_listing(cache, md5) is not None  # dvc add wrote the .dir listing where we look
    assert validate_model_folder(folder, md5, "models/gpt.dvc", cache) == []

    (folder / "notes.txt").write_text("added by hand\n")
    (folder / "tokenizer_config.json").unlink()  # may go: the tokenizer still builds from tokenizer.json
    _flip(folder / W, (folder / W).stat().st_size - 3)
    problems = validate_model_folder(folder, md5, "models/gpt.dvc", cache)
    assert problems[0] == Problem(W, problems[0].message) and problems[0].message.startswith("changed: md5")
    assert Problem("notes.txt", "added since models/gpt.dvc was recorded") in problems
    assert Problem("tokenizer_config.json", "missing: models/gpt.dvc records it") in problems
    assert Problem(W, problems[-1].message) in problems  # step 2 names it again (sha256)


def test_an_added_file_without_the_cache_changes_the_folder_hash(dvc_added) -> None:
    folder, md5, _ = dvc_added
    (folder / "notes.txt").write_text("added by hand\n")
    assert validate_model_folder(folder, md5, "models/gpt.dvc") == [
        Problem(".", f"folder hash {dvc_md5(folder)} differs from {md5} recorded in models/gpt.dvc")
    ]
