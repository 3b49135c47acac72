"""A catalog entry that starts from another model of the repo (`source: model:<name>`): the inputs, import and
convert stages on a temp project holding a scratch GPT (config only), the same GPT trained (weights +
tokenizer), and an imported tiny Qwen2 (local Hub)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from model_foundry.config import Params, parse_params
from model_foundry.errors import FoundryError
from model_foundry.hashcache import HashCache
from model_foundry.io import read_json, write_json
from model_foundry.registry.dvc import dvc_md5
from model_foundry.stages import convert, ingest, inputs

QWEN2 = "localhub/tiny-qwen2"


def params_for(name: str, entry: dict[str, Any]) -> Params:
    """The tiny params with `entry` added to the catalog under `name` and selected."""
    from conftest import tiny_params

    return parse_params(tiny_params(model_name=name, models={name: entry}))


def folder_bytes(folder: Path) -> dict[str, bytes]:
    return {
        p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()
    }


def stage_copy(params: Params, root: Path, out: str) -> dict[str, Any]:
    """import (model source only) then convert, as the pipeline runs them; returns the metadata written."""
    ingest.import_model_source(params.model, root / "data/source", catalog=params.catalog)
    return convert.run(params, root / "data/source", root / "models" / out)


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """models/gpt-tiny (the scratch convert output) and models/gpt-tiny-trained (the same GPT with weights
    and a tokenizer, as the train stage saves it), plus clutter a copy must leave behind."""
    from conftest import tiny_params
    from model_foundry.adapters import get_spec
    from model_foundry.adapters.scratch import ScratchAdapter
    from model_foundry.data.tokenizer_training import train_tokenizer
    from model_foundry.model_folder import model_metadata, parent_record

    root = tmp_path_factory.mktemp("repo-parent")
    (root / ".dvc").mkdir()  # the project root (project_root() finds it from the working directory)
    scratch = parse_params(tiny_params())
    ingest.import_model_source(scratch.model, root / "data/source")
    convert.run(scratch, root / "data/source", root / "models/gpt-tiny")

    texts = [f"the quick brown fox {i} jumps over the lazy dog {i * 7}" for i in range(200)]
    tok = train_tokenizer("bpe", texts, 300, "causal_lm")
    spec = get_spec("gpt")
    adapter_cls = spec.adapter_cls()
    assert issubclass(adapter_cls, ScratchAdapter)
    arch = dataclasses.replace(
        adapter_cls.config_from_folder(root / "models/gpt-tiny", spec), vocab_size=len(tok)
    )
    torch.manual_seed(0)
    adapter = adapter_cls.build(arch, spec)
    adapter.tokenizer = tok
    meta = model_metadata(
        "gpt-tiny-trained",
        "gpt",
        "scratch",
        base_model="gpt-tiny",
        parent=parent_record(root / "models/gpt-tiny"),
        training={"objective": "causal_lm", "steps": 6},
    )
    trained = root / "models/gpt-tiny-trained"
    adapter.save_checkpoint(trained, meta)
    (trained / "LICENSE").write_text("the parent's licence\n")
    (trained / "adapter").mkdir()  # a LoRA run's adapter, and leftovers: none of them is copied
    (trained / "adapter/adapter_config.json").write_text("{}")
    (trained / "optimizer.pt").write_bytes(b"not copied")
    (trained / ".DS_Store").write_bytes(b"not copied")
    return root


@pytest.fixture
def in_project(project: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The working directory is the project (as under `dvc repro`), with a fixed reproducible time."""
    monkeypatch.chdir(project)
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1767225600")
    return project


def test_parent_fingerprint_follows_its_bytes(in_project: Path, tmp_path: Path) -> None:
    params = params_for("gpt-tiny-ft", {"architecture": "gpt", "source": "model:gpt-tiny-trained"})
    parent = in_project / "models/gpt-tiny-trained"
    first = inputs.model_inputs(params, HashCache(None))
    assert first["folder"] == "models/gpt-tiny-trained" and first["kind"] == "folder"
    assert str(in_project) not in json.dumps(first)  # paths as written: two clones fingerprint alike
    assert inputs.model_inputs(params, HashCache(None)) == first

    tokenizer = parent / "tokenizer.json"
    saved = tokenizer.read_bytes()
    try:
        tokenizer.write_bytes(saved.replace(b'"model"', b'"model" ', 1))
        changed = inputs.model_inputs(params, HashCache(None))
    finally:
        tokenizer.write_bytes(saved)
    assert changed["sha256"] != first["sha256"]
    assert inputs.model_inputs(params, HashCache(None))["sha256"] == first["sha256"]

    written = inputs.run(params, tmp_path / "d.json", tmp_path / "m.json", tmp_path / "t.json", None)
    assert read_json(tmp_path / "m.json") == written["model"] == first


def test_both_spellings_name_the_same_parent(in_project: Path) -> None:
    a = params_for("gpt-tiny-ft", {"architecture": "gpt", "source": "model:gpt-tiny-trained"})
    b = params_for("gpt-tiny-ft", {"architecture": "gpt", "source": "models/gpt-tiny-trained"})
    fa, fb = (inputs.model_inputs(p, HashCache(None)) for p in (a, b))
    assert fa["sha256"] == fb["sha256"] and fa["folder"] == fb["folder"]
    assert (
        ingest.import_model_source(b.model, in_project / "data/source-b")["source"]
        == "model:gpt-tiny-trained"
    )


def test_missing_parent_is_refused_with_the_hint(in_project: Path) -> None:
    params = params_for("gpt-small-ft", {"architecture": "gpt", "source": "model:gpt-small-trained"})
    for stage in (
        lambda: inputs.model_inputs(params, HashCache(None)),
        lambda: ingest.import_model_source(params.model, in_project / "data/nope", catalog=params.catalog),
    ):
        with pytest.raises(FoundryError) as e:
            stage()
        assert "models/gpt-small-trained" in e.value.message and "not in the workspace" in e.value.message
        assert "`dvc exp run -S model_name=gpt-small`" in e.value.hint  # gpt-small is in the catalog
        assert "dvc exp apply" in e.value.hint and "dvc checkout models/gpt-small-trained" in e.value.hint
    assert not (in_project / "data/nope").exists()


def test_parent_of_another_architecture_is_refused(in_project: Path) -> None:
    params = params_for("llama-ft", {"architecture": "hf-llama", "source": "model:gpt-tiny-trained"})
    with pytest.raises(FoundryError) as e:
        ingest.import_model_source(params.model, in_project / "data/wrong")
    assert "gpt" in e.value.message and "architecture: hf-llama" in e.value.message
    assert "`architecture: gpt`" in e.value.hint
    assert not (in_project / "data/wrong").exists()


def test_damaged_or_adapter_only_parent_is_refused(in_project: Path) -> None:
    damaged = in_project / "models/gpt-damaged"
    shutil.copytree(in_project / "models/gpt-tiny-trained", damaged)
    weights = damaged / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # a flipped byte in the tensor data: only the sha256 check sees it
    weights.write_bytes(bytes(data))
    params = params_for("gpt-x", {"architecture": "gpt", "source": "model:gpt-damaged"})
    with pytest.raises(FoundryError, match="damaged"):
        ingest.import_model_source(params.model, in_project / "data/damaged")

    lora_only = in_project / "models/gpt-lora"
    (lora_only / "adapter").mkdir(parents=True)
    write_json(lora_only / "metadata.json", {"format": 1, "model_name": "gpt-lora"})
    params = params_for("gpt-y", {"architecture": "gpt", "source": "model:gpt-lora"})
    with pytest.raises(FoundryError) as e:
        inputs.model_inputs(params, HashCache(None))
    assert "LoRA adapter" in e.value.message and "foundry merge-lora models/gpt-lora/adapter" in e.value.hint


def test_copy_of_a_trained_parent(in_project: Path) -> None:
    """Same files and weights (the adapter/ folder and leftovers stay behind), same logits, new metadata."""
    from model_foundry.model_folder import load_adapter, parent_record
    from model_foundry.registry.lineage import format_chain, lineage_chain

    parent = in_project / "models/gpt-tiny-trained"
    params = params_for(
        "gpt-tiny-ft", {"architecture": "gpt", "source": "model:gpt-tiny-trained", "description": "ft"}
    )
    meta = stage_copy(params, in_project, "gpt-tiny-ft")
    copy = in_project / "models/gpt-tiny-ft"
    parent_meta = read_json(parent / "metadata.json")

    names = {p.name for p in copy.iterdir()}
    assert names == {p.name for p in parent.iterdir()} - {"adapter", "optimizer.pt", ".DS_Store"}
    for name in names - {"metadata.json"}:
        assert (copy / name).read_bytes() == (parent / name).read_bytes(), name
    assert read_json(copy / "metadata.json") == meta
    assert meta["model_name"] == "gpt-tiny-ft" and meta["source"] == "model:gpt-tiny-trained"
    assert meta["parent"] == parent_record(parent, "gpt-tiny-trained")
    assert meta["parent"]["sha256"] == dvc_md5(parent)  # DVC's folder hash, tracked or not
    assert meta["architecture"] == "gpt" and meta["description"] == "ft" and meta["format"] == 1
    assert meta["fine_tuned_from"] is None and "training" not in meta
    assert meta["sha256"] == parent_meta["sha256"] and meta["parameters"] == parent_meta["parameters"]
    assert meta["created_at"] == "2026-01-01T00:00:00+00:00"

    a, b = load_adapter(parent), load_adapter(copy)
    a.model.eval(), b.model.eval()
    x = torch.randint(0, 300, (2, 16), generator=torch.Generator().manual_seed(0))
    assert torch.equal(a.logits(x), b.logits(x))

    links = lineage_chain(copy, in_project / "models")
    assert format_chain(links) == "gpt-tiny-ft (copy) ← gpt-tiny-trained (full) ← gpt-tiny (scratch)"
    assert links[1].checksum == meta["parent"]["sha256"]


def test_two_converts_are_byte_identical(in_project: Path) -> None:
    params = params_for("gpt-tiny-ft", {"architecture": "gpt", "source": "model:gpt-tiny-trained"})
    stage_copy(params, in_project, "twice-a")
    convert.run(params, in_project / "data/source", in_project / "models/twice-b")
    a, b = in_project / "models/twice-a", in_project / "models/twice-b"
    assert folder_bytes(a) == folder_bytes(b) and dvc_md5(a) == dvc_md5(b)


def test_parent_record_is_the_dvc_checksum_when_dvc_tracks_it(in_project: Path, tmp_path: Path) -> None:
    parent = in_project / "models/gpt-tiny-trained"
    marker = parent.with_name(parent.name + ".dvc")
    marker.write_text("outs:\n- path: gpt-tiny-trained\n")
    try:
        params = params_for("gpt-tiny-ft", {"architecture": "gpt", "source": "model:gpt-tiny-trained"})
        record = ingest.import_model_source(params.model, tmp_path / "source")
        meta = convert.run(params, tmp_path / "source", tmp_path / "gpt-tiny-ft")
    finally:
        marker.unlink()
    assert record["parent"]["sha256"] == dvc_md5(parent) == meta["parent"]["sha256"]
    assert meta["parent"]["sha256"].endswith(".dir")


def test_convert_refuses_a_parent_changed_since_the_import(in_project: Path) -> None:
    """The parent's weights were replaced after the import stage ran: convert stops, nothing is written."""
    changed = in_project / "models/gpt-changing"
    shutil.copytree(in_project / "models/gpt-tiny-trained", changed)
    params = params_for("gpt-z", {"architecture": "gpt", "source": "model:gpt-changing"})
    ingest.import_model_source(params.model, in_project / "data/source-z")

    meta = read_json(changed / "metadata.json")
    meta["sha256"]["model.safetensors"] = "0" * 64
    write_json(changed / "metadata.json", meta)
    with pytest.raises(FoundryError, match="changed since the import stage"):
        convert.run(params, in_project / "data/source-z", in_project / "models/gpt-z")

    shutil.copy(in_project / "models/gpt-tiny-trained/metadata.json", changed / "metadata.json")
    data = bytearray((changed / "model.safetensors").read_bytes())
    data[-1] ^= 0xFF  # same metadata, other bytes: the copy's hash check sees it
    (changed / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(FoundryError, match="sha256 mismatch"):
        convert.run(params, in_project / "data/source-z", in_project / "models/gpt-z")
    assert not (in_project / "models/gpt-z").exists()


def test_copy_of_a_scratch_parent_is_config_only(in_project: Path) -> None:
    """A scratch parent without weights: its config.json copied, no weights; train builds a fresh model."""
    from model_foundry.stages.train import build_adapter

    params = params_for("gpt-again", {"architecture": "gpt", "source": "model:gpt-tiny"})
    meta = stage_copy(params, in_project, "gpt-again")
    copy = in_project / "models/gpt-again"
    assert {p.name for p in copy.iterdir()} == {"config.json", "metadata.json"}
    assert (copy / "config.json").read_bytes() == (in_project / "models/gpt-tiny/config.json").read_bytes()
    assert meta["parent"]["name"] == "gpt-tiny" and meta["parent"]["sha256"].endswith(".dir")
    assert "sha256" not in meta
    adapter, loaded = build_adapter(copy, tokenizer_size=300, seed=0)
    assert loaded is False and adapter.num_parameters() > 0


def test_copy_of_an_imported_parent(in_project: Path, hub_repos: dict[str, Path]) -> None:
    """A tiny Qwen2 (tied embeddings) imported from the local Hub: licence and origin travel with the copy,
    plain transformers loads it, and its logits equal the parent's."""
    from transformers import AutoModelForCausalLM

    from model_foundry.hub import QuietReporter, import_model
    from model_foundry.model_folder import load_adapter

    parent = in_project / "models/qwen-base"
    if not parent.is_dir():
        import_model(
            str(hub_repos[QWEN2]), in_project / "models", name="qwen-base", accept_license=True,
            reporter=QuietReporter(),
        )  # fmt: skip
    params = params_for("qwen-ft", {"architecture": "hf-qwen2", "source": "model:qwen-base"})
    meta = stage_copy(params, in_project, "qwen-ft")
    copy = in_project / "models/qwen-ft"
    parent_meta = read_json(parent / "metadata.json")
    assert {p.name for p in copy.iterdir()} == {p.name for p in parent.iterdir()}
    assert (copy / "LICENSE").read_bytes() == (parent / "LICENSE").read_bytes()
    for key in ("license", "license_acknowledgment", "model_id", "revision", "load"):
        assert meta.get(key) == parent_meta.get(key), key
    assert meta["architecture"] == "hf-qwen2" and meta["source"] == "model:qwen-base"
    assert meta["sha256"] == parent_meta["sha256"] and meta["dtype"] == parent_meta["dtype"]

    a, b = load_adapter(parent), load_adapter(copy)
    x = torch.randint(0, 200, (2, 12), generator=torch.Generator().manual_seed(1))
    a.model.eval(), b.model.eval()
    assert torch.equal(a.logits(x), b.logits(x))
    hf = AutoModelForCausalLM.from_pretrained(copy).eval()
    assert hf.config.tie_word_embeddings
    assert hf.lm_head.weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()
    torch.testing.assert_close(hf(x).logits, a.logits(x), rtol=1e-5, atol=1e-5)


def test_a_copied_parent_fine_tunes_and_shows_its_lineage(in_project: Path) -> None:
    """tokenize and train run on the copy as on any model folder: the parent's tokenizer is used, its weights
    are the starting point, and the trained model's lineage reaches the scratch config."""
    from model_foundry.registry.lineage import format_chain, lineage_chain
    from model_foundry.stages import tokenize, train

    params = params_for("gpt-tiny-ft", {"architecture": "gpt", "source": "model:gpt-tiny-trained"})
    root = in_project
    ingest.run(params, root / "data/corpus", root / "data/source")
    convert.run(params, root / "data/source", root / "models/gpt-tiny-ft")
    tokenize.run(params, root / "data/corpus", root / "models/gpt-tiny-ft", root / "data/tokenized")
    assert read_json(root / "data/tokenized/meta.json")["tokenizer"] == "native"
    out = root / "models/gpt-tiny-ft-trained"
    data = root / "data/tokenized"
    train.run(params, root / "models/gpt-tiny-ft", data, out, root / "plots", root / "logs", progress=False)
    meta = read_json(out / "metadata.json")
    assert meta["fine_tuned_from"] == "gpt-tiny-ft" and meta["parent"]["name"] == "gpt-tiny-ft"
    assert format_chain(lineage_chain(out, root / "models")) == (
        "gpt-tiny-ft-trained (full) ← gpt-tiny-ft (copy) ← gpt-tiny-trained (full) ← gpt-tiny (scratch)"
    )
