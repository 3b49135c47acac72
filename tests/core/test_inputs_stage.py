"""The inputs stage in-process: every input params name is fingerprinted by content, cheaply and path-free.

The DVC side (which stages re-run when an input changes) is in tests/core/test_pipeline_inputs.py.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from conftest import tiny_params
from model_foundry.config import parse_params
from model_foundry.errors import FoundryError
from model_foundry.stages import inputs


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def _run(params: dict, root: Path, cache: Path | None = None) -> dict[str, bytes]:
    """The three files the stage writes, as bytes (what DVC hashes)."""
    out = root / "out"
    inputs.run(parse_params(params), out / "data.json", out / "model.json", out / "tokenizer.json", cache)
    return {name: (out / f"{name}.json").read_bytes() for name in ("data", "model", "tokenizer")}


@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "src"
    _write(root / "a.txt", "first document\n")
    _write(root / "sub/b.jsonl", '{"text": "second"}\n')
    return root


def test_one_byte_rename_add_or_remove_changes_a_folder_hash(folder, tmp_path):
    cache = inputs.HashCache(None)
    before = inputs.folder_fingerprint(folder, cache)["sha256"]
    seen = {before}
    _write(folder / "a.txt", "first documenT\n")  # one byte, same size
    seen.add(inputs.folder_fingerprint(folder, cache)["sha256"])
    (folder / "a.txt").rename(folder / "c.txt")
    seen.add(inputs.folder_fingerprint(folder, cache)["sha256"])
    _write(folder / "d.txt", "")
    seen.add(inputs.folder_fingerprint(folder, cache)["sha256"])
    (folder / "sub/b.jsonl").unlink()
    seen.add(inputs.folder_fingerprint(folder, cache)["sha256"])
    assert len(seen) == 5


def test_same_content_elsewhere_gives_the_same_bytes(folder, tmp_path):
    """Two clones fingerprint alike: nothing absolute (paths, mtimes) goes into the files."""
    copy = tmp_path / "elsewhere" / "src"
    shutil.copytree(folder, copy)
    os.utime(copy / "a.txt", ns=(1, 1))
    a = inputs.folder_fingerprint(folder, inputs.HashCache(None))
    b = inputs.folder_fingerprint(copy, inputs.HashCache(None))
    assert a == b and a["files"] == 2 and a["bytes"] == len("first document\n") + len('{"text": "second"}\n')


def test_hash_cache_skips_unchanged_files_and_notices_edits(folder, tmp_path):
    cache_file = tmp_path / "cache.json"
    cache = inputs.HashCache(cache_file)
    first = inputs.folder_fingerprint(folder, cache)
    cache.save()
    entries = json.loads(cache_file.read_text())
    assert len(entries) == 2 and all(str(folder.resolve()) in key for key in entries)

    # A cached digest is trusted while path, size, mtime and inode match: poison one to prove it is used.
    key = next(k for k in entries if "a.txt" in k)
    cache_file.write_text(json.dumps({**entries, key: "0" * 64}))
    poisoned = inputs.folder_fingerprint(folder, inputs.HashCache(cache_file))
    assert poisoned["sha256"] != first["sha256"]

    # An edit (new size and mtime) makes a new key, so the file is hashed again.
    _write(folder / "a.txt", "first document, edited\n")
    fresh = inputs.folder_fingerprint(folder, inputs.HashCache(None))
    assert inputs.folder_fingerprint(folder, inputs.HashCache(cache_file)) == fresh


def test_stage_files_follow_data_model_and_tokenizer_inputs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    corpus = _write(tmp_path / "corpus/train.txt", "some text\n")
    tok = _write(tmp_path / "tok/tokenizer.json", "{}\n").parent
    params = tiny_params(data={"source": ["corpus/train.txt", "builtin:pydoc_topics"]})
    params["models"]["gpt-tiny"]["tokenizer_override"] = "tok"
    first = _run(params, tmp_path)
    assert _run(params, tmp_path) == first  # same inputs, same bytes: DVC re-runs nothing

    data = json.loads(first["data"])["data.source"]
    assert [d["source"] for d in data] == ["corpus/train.txt", "builtin:pydoc_topics"]
    assert data[0]["kind"] == "file" and data[1]["kind"] == "builtin" and len(data[1]["sha256"]) == 64
    assert json.loads(first["model"]) == {"kind": "scratch", "model_name": "gpt-tiny", "source": "scratch"}
    assert json.loads(first["tokenizer"])["tokenizer_override"] == "tok"

    corpus.write_text("some texT\n")
    second = _run(params, tmp_path)
    assert second["data"] != first["data"] and second["model"] == first["model"]
    assert second["tokenizer"] == first["tokenizer"]
    _write(tok / "tokenizer.json", "{} \n")
    third = _run(params, tmp_path)
    assert third["tokenizer"] != second["tokenizer"] and third["data"] == second["data"]


def test_local_model_folder_is_hashed_and_a_hub_id_recorded_without_network(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    weights = _write(tmp_path / "my-model/config.json", '{"model_type": "qwen2"}\n').parent
    params = tiny_params(model_name="local")
    params["models"]["local"] = {"architecture": "hf-qwen2", "source": "./my-model", "license_accepted": True}
    record = json.loads(_run(params, tmp_path)["model"])
    assert record["kind"] == "folder" and record["source"] == "./my-model" and record["files"] == 1
    _write(weights / "model.safetensors", "x")
    assert json.loads(_run(params, tmp_path)["model"])["sha256"] != record["sha256"]

    params["models"]["local"]["source"] = "someorg/some-model"
    params["models"]["local"]["revision"] = "v1"
    hub = json.loads(_run(params, tmp_path)["model"])
    assert hub == {
        "kind": "hub",
        "model_name": "local",
        "repo_id": "someorg/some-model",
        "revision": "v1",
        "source": "someorg/some-model",
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"data": {"source": "missing.txt"}}, "data.source 'missing.txt' does not exist"),
        ({"tokenizer_override": "no-such-folder"}, "tokenizer_override 'no-such-folder' is not a folder"),
        ({"source": "./no-such-model"}, "does not exist"),
    ],
    ids=["data-source", "tokenizer-override", "model-folder"],
)
def test_a_missing_input_fails_before_anything_is_written(change, message, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    params = tiny_params(**{k: v for k, v in change.items() if k == "data"})
    if "tokenizer_override" in change:
        params["models"]["gpt-tiny"]["tokenizer_override"] = change["tokenizer_override"]
    if "source" in change:
        params["model_name"] = "local"
        params["models"]["local"] = {"architecture": "hf-qwen2", "source": change["source"]}
    with pytest.raises(FoundryError, match=message):
        _run(params, tmp_path)
    assert not (tmp_path / "out").exists()
