"""The train stage's one route into training: the model comes from the --model folder (scratch config.json or
weights), vocab_size is honoured (0 = the tokenizer's, more = padded rows, fewer = exit 2), and metadata.json
records the parent folder (its DVC hash when DVC tracks it)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from conftest import VENV_BIN, run_cmd, tiny_params
from model_foundry.adapters import get_spec
from model_foundry.config import parse_params
from model_foundry.errors import FoundryError
from model_foundry.io import read_json, write_json
from model_foundry.model_folder import model_metadata, parent_record
from model_foundry.registry.dvc import dvc_md5, is_dvc_tracked
from model_foundry.stages.train import build_adapter, resolve_vocab_size

TOKENIZER_SIZE = 320  # tiny_params' tokenizer.vocab_size, reached on the builtin corpus


def test_vocab_size_zero_is_the_tokenizer_more_pads_fewer_is_refused() -> None:
    assert resolve_vocab_size(0, 320, "vocab_size") == 320
    assert resolve_vocab_size(320, 320, "vocab_size") == 320
    assert resolve_vocab_size(384, 320, "vocab_size") == 384
    with pytest.raises(FoundryError) as caught:
        resolve_vocab_size(100, 320, "models.x.vocab_size")
    assert "models.x.vocab_size = 100 is smaller than the tokenizer's 320 tokens" in caught.value.message
    assert caught.value.hint and "0 (the tokenizer's size, 320) or to at least 320," in caught.value.hint
    with pytest.raises(FoundryError, match="smaller than the tokenizer's 50 tokens") as caught:
        resolve_vocab_size(49, 50, "vocab_size")
    assert caught.value.hint and "at least 50 (e.g. 64, a multiple of 64)" in caught.value.hint


def scratch_folder(folder: Path, architecture: str, **changes: Any) -> Path:
    """A scratch model's folder as the convert stage writes it: config.json + metadata.json, no weights."""
    spec = get_spec(architecture)
    config = spec.config_cls(**{**spec.config_cls.TINY, **changes})
    folder.mkdir(parents=True)
    write_json(folder / "config.json", {"architecture": architecture, **dataclasses.asdict(config)})
    write_json(folder / "metadata.json", model_metadata(folder.name, architecture, "scratch"))
    return folder


@pytest.mark.parametrize("architecture", ["gpt", "bert", "lstm"])
def test_padded_vocabulary_adds_rows_that_train(tmp_path: Path, architecture: str) -> None:
    folder = scratch_folder(tmp_path / "m", architecture, vocab_size=64)
    adapter, loaded = build_adapter(folder, tokenizer_size=50, seed=0)
    assert not loaded and adapter.config.vocab_size == 64
    embeddings = [m for m in adapter.model.modules() if isinstance(m, torch.nn.Embedding)]
    assert any(m.num_embeddings == 64 for m in embeddings)
    x = torch.randint(0, 50, (2, 8))  # token ids of the 50-token tokenizer
    out = adapter(x, x)
    assert out.logits.shape == (2, 8, 64) and torch.isfinite(out.loss)
    out.loss.backward()  # the padding rows are ordinary parameters

    unpadded, _ = build_adapter(scratch_folder(tmp_path / "z", architecture), tokenizer_size=50, seed=0)
    assert unpadded.config.vocab_size == 50
    with pytest.raises(
        FoundryError, match=r"s\.vocab_size \(.*config\.json\) = 40 is smaller than the tokenizer's 50"
    ):
        build_adapter(scratch_folder(tmp_path / "s", architecture, vocab_size=40), tokenizer_size=50, seed=0)


def _prepare(root: Path, raw: dict[str, Any]) -> None:
    """import → convert → tokenize in `root` for the params `raw` (also written as root/params.yaml)."""
    from model_foundry.stages import convert, ingest, tokenize

    params = parse_params(raw)
    ingest.run(params, root / "data/corpus", root / "data/source")
    convert.run(params, root / "data/source", root / "models/gpt-tiny")
    tokenize.run(params, root / "data/corpus", root / "models/gpt-tiny", root / "data/tokenized")
    (root / "params.yaml").write_text(yaml.safe_dump(raw))


def test_a_padded_gpt_trains_saves_loads_and_evaluates(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    from model_foundry.model_folder import load_adapter
    from model_foundry.stages import evaluate, train

    raw = tiny_params()
    raw["models"]["gpt-tiny"]["vocab_size"] = 384
    _prepare(tmp_path, raw)
    params = parse_params(tiny_params())  # vocab_size 0: the model comes from the folder's config.json
    out = tmp_path / "models/gpt-tiny-trained"
    train.run(params, tmp_path / "models/gpt-tiny", tmp_path / "data/tokenized", out, tmp_path / "plots",
              tmp_path / "logs", progress=False)  # fmt: skip
    assert read_json(tmp_path / "data/tokenized/meta.json")["vocab_size"] == TOKENIZER_SIZE
    adapter = load_adapter(out)
    assert adapter.config.vocab_size == 384 and adapter.model.lm_head.weight.shape[0] == 384
    hf = AutoModelForCausalLM.from_pretrained(out)
    assert hf.config.vocab_size == 384
    x = torch.randint(0, TOKENIZER_SIZE, (1, 16))
    torch.testing.assert_close(hf.eval()(x).logits, adapter.model.eval()(x), rtol=1e-4, atol=1e-4)
    metrics = evaluate.run(params, out, tmp_path / "data/tokenized", tmp_path / "metrics.json")
    assert metrics["perplexity"] > 1

    meta = read_json(out / "metadata.json")
    assert meta["parent"] == parent_record(tmp_path / "models/gpt-tiny")
    assert meta["parent"]["name"] == "gpt-tiny" and meta["fine_tuned_from"] is None
    assert meta["base_model"] == "gpt-tiny" and meta["source"] == "scratch"


def test_a_too_small_vocab_size_is_refused_when_params_load(tmp_path: Path) -> None:
    raw = tiny_params()
    raw["models"]["gpt-tiny"]["vocab_size"] = 100
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = run_cmd([str(VENV_BIN / "foundry"), "validate", "--params", "params.yaml"], tmp_path, check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "models.gpt-tiny.vocab_size = 100 is smaller than tokenizer.vocab_size = 320" in proc.stderr
    assert "hint: Set vocab_size to 0" in proc.stderr


def test_a_too_small_vocab_size_exits_2_naming_both_numbers(tmp_path: Path) -> None:
    """A config.json whose vocab_size is below the trained tokenizer's size (edited, or a char tokenizer whose
    size is only known after training) is refused by the train stage."""
    _prepare(tmp_path, tiny_params())
    config = tmp_path / "models/gpt-tiny/config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "vocab_size": 100}))
    proc = run_cmd(
        [str(VENV_BIN / "foundry"), "train", "--params", "params.yaml", "--model", "models/gpt-tiny",
         "--data", "data/tokenized", "--out", "models/gpt-tiny-trained", "--plots", "plots", "--quiet"],
        tmp_path, check=False, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )  # fmt: skip
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert (
        "models.gpt-tiny.vocab_size (models/gpt-tiny/config.json) = 100 is smaller than the tokenizer's 320"
        in (proc.stderr)
    )
    assert "hint: Set it to 0" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "models/gpt-tiny-trained").exists()


def test_dvc_tracked_folders_are_outs_of_the_lock_or_have_a_dvc_file(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    models = tmp_path / "models"
    for name in ("locked", "added", "loose"):
        scratch_folder(models / name, "gpt")
    (models / "added.dvc").write_text("outs:\n- path: added\n")
    lock = {
        "schema": "2.0",
        "stages": {"convert": {"cmd": "x", "outs": [{"path": "models/locked", "md5": "0"}]}},
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert is_dvc_tracked(models / "locked") and is_dvc_tracked(models / "added")
    assert not is_dvc_tracked(models / "loose") and not is_dvc_tracked(models / "locked" / "config.json")
    assert not is_dvc_tracked(tmp_path / "elsewhere")
    # a model derived from a folder records the folder's DVC hash, whether DVC tracks it yet or not
    locked, loose = parent_record(models / "locked"), parent_record(models / "loose")
    assert locked == {"name": "locked", "sha256": dvc_md5(models / "locked")}
    assert loose == {"name": "loose", "sha256": dvc_md5(models / "loose")}
    assert json.loads((models / "locked" / "metadata.json").read_text())["model_name"] == "locked"


def test_an_imported_model_takes_the_same_route(local_hub, hub_repos, tmp_path: Path) -> None:
    """An imported folder (weights) is loaded and fine-tuned; it is the parent (by its weights tag: not
    DVC-tracked here) and the trained copy inherits its licence."""
    from localhub.repos import QWEN2
    from model_foundry.model_folder import weights_tag
    from model_foundry.stages import convert, ingest, tokenize, train

    raw = tiny_params()
    raw["models"]["tiny-qwen2"] = {"architecture": "hf-qwen2", "source": QWEN2, "license_accepted": True}
    raw["model_name"] = "tiny-qwen2"
    params = parse_params(raw)
    base, out = tmp_path / "models/tiny-qwen2", tmp_path / "models/tiny-qwen2-trained"
    ingest.run(params, tmp_path / "data/corpus", tmp_path / "data/source")
    convert.run(params, tmp_path / "data/source", base)
    tokenize.run(params, tmp_path / "data/corpus", base, tmp_path / "data/tokenized")
    train.run(params, base, tmp_path / "data/tokenized", out, tmp_path / "plots", tmp_path / "logs", False)
    meta, base_meta = read_json(out / "metadata.json"), read_json(base / "metadata.json")
    assert meta["architecture"] == "hf-qwen2"
    assert meta["fine_tuned_from"] == meta["base_model"] == "tiny-qwen2"
    assert meta["parent"] == parent_record(base) == {"name": base_meta["model_name"], "sha256": dvc_md5(base)}
    assert meta["license"] == base_meta["license"] and (out / "LICENSE").is_file()
    assert meta["source"] == base_meta["source"] and weights_tag(meta) != weights_tag(base_meta)
