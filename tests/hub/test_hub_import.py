"""Importing through the local Hub and from folders: the canonical folder, cache reuse, resume, offline."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from localhub.repos import BERT, GPT2, GPT2_BIN, LLAMA, LLAMA_BIG, LLAMA_GATED, LLAMA_SHARDED, QWEN2, QWEN3
from localhub.server import GATED_TOKEN, no_client_backoff
from model_foundry.errors import FoundryError
from model_foundry.hub import QuietReporter, import_model
from model_foundry.io import sha256_file
from model_foundry.model_folder import read_model_info

FAMILIES = {QWEN2: "hf-qwen2", QWEN3: "hf-qwen3", LLAMA: "hf-llama", GPT2: "hf-gpt2", BERT: "hf-bert"}


def quiet_import(source: str, models: Path, **kwargs):
    kwargs.setdefault("accept_license", True)
    return import_model(source, models, reporter=QuietReporter(), **kwargs)


@pytest.mark.parametrize("repo", list(FAMILIES))
def test_each_family_lands_in_the_canonical_layout(repo, local_hub, hub_repos, tmp_path):
    result = quiet_import(repo, tmp_path / "models")
    folder = tmp_path / "models" / repo.split("/")[1]
    assert result.path == folder and result.architecture == FAMILIES[repo]
    _, meta = read_model_info(folder)
    commit = local_hub.commit_sha(repo)
    assert meta["model_name"] == folder.name and meta["model_id"] == repo and meta["source"] == repo
    assert meta["revision"] == commit and meta["architecture"] == FAMILIES[repo]
    assert meta["fine_tuned_from"] is None and meta["dtype"] == "float32" and meta["parameters"] > 10_000
    assert meta["license"] == ("mit" if repo == GPT2 else "apache-2.0") and meta["license_file"] == "LICENSE"
    assert meta["license_acknowledgment"]["via"] == "--accept-license" and meta["created_at"]
    # every weight file: the Hub's sha256, checked and recorded
    assert meta["sha256"] == {"model.safetensors": local_hub.file(repo, "model.safetensors").sha256}
    assert sha256_file(folder / "model.safetensors") == meta["sha256"]["model.safetensors"]
    names = {p.name for p in folder.iterdir()}
    assert {
        "config.json",
        "tokenizer.json",
        "tokenizer_config.json",
        "LICENSE",
        "README.md",
        "metadata.json",
    } <= names
    assert ("generation_config.json" in names) == (repo != BERT)
    assert (folder / "config.json").read_bytes() == (hub_repos[repo] / "config.json").read_bytes()
    assert ".gitattributes" not in names  # only what is needed is fetched
    if repo in (QWEN2, QWEN3):
        assert "chat_template.jinja" in names


def test_weights_are_hard_linked_from_the_hub_cache(local_hub, hub_repos, tmp_path):
    cache = tmp_path / "cache"
    result = quiet_import(LLAMA, tmp_path / "models", cache_dir=cache)
    weights = result.path / "model.safetensors"
    blob = (
        cache / "models--localhub--tiny-llama" / "blobs" / local_hub.file(LLAMA, "model.safetensors").sha256
    )
    assert os.stat(weights).st_ino == os.stat(blob).st_ino and result.linked_files == 1


def test_sharded_checkpoint_keeps_shards_and_index(local_hub, tmp_path):
    result = quiet_import(LLAMA_SHARDED, tmp_path / "models")
    shards = sorted(p.name for p in result.path.glob("model-*.safetensors"))
    assert shards == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert (result.path / "model.safetensors.index.json").read_bytes() == local_hub.file(
        LLAMA_SHARDED, "model.safetensors.index.json"
    ).data
    assert result.sha256 == {s: local_hub.file(LLAMA_SHARDED, s).sha256 for s in shards}


def test_second_import_of_the_same_revision_downloads_nothing(local_hub, hub_repos, tmp_path):
    cache = tmp_path / "cache"
    quiet_import(LLAMA_SHARDED, tmp_path / "models", cache_dir=cache)
    assert local_hub.bytes_served(repo_id=LLAMA_SHARDED) > 0
    local_hub.clear_requests()
    again = quiet_import(LLAMA_SHARDED, tmp_path / "models", name="again", cache_dir=cache)
    assert local_hub.bytes_served(repo_id=LLAMA_SHARDED) == 0
    assert not [r for r in local_hub.find_requests(repo_id=LLAMA_SHARDED) if "/resolve/" in r.path]
    assert again.revision == local_hub.commit_sha(LLAMA_SHARDED)


def test_dropped_connection_resumes_and_the_sha256_verifies(local_hub, hub_repos, tmp_path):
    local_hub.clear_requests()
    local_hub.drop_after_bytes(
        "model.safetensors", 11 << 20, repo_id=LLAMA_BIG
    )  # after the first 10 MiB chunk
    try:
        with no_client_backoff():
            result = quiet_import(LLAMA_BIG, tmp_path / "models", cache_dir=tmp_path / "cache")
    finally:
        local_hub.clear_faults()
    gets = local_hub.find_requests(listener="cdn", method="GET", repo_id=LLAMA_BIG)
    assert len(gets) == 2 and gets[1].range == f"bytes={10 << 20}-"
    assert result.sha256["model.safetensors"] == local_hub.file(LLAMA_BIG, "model.safetensors").sha256


def test_import_from_a_folder_and_from_a_hub_cache_snapshot(local_hub, hub_repos, tmp_path):
    folder = quiet_import(str(hub_repos[LLAMA_SHARDED]), tmp_path / "models", name="from-folder")
    _, meta = read_model_info(folder.path)
    assert meta["model_id"] is None and meta["source"] == str(hub_repos[LLAMA_SHARDED])
    assert meta["import"]["kind"] == "folder" and folder.linked_files == 0  # a user's folder is copied
    assert folder.sha256 == {s: local_hub.file(LLAMA_SHARDED, s).sha256 for s in folder.sha256}

    cache = tmp_path / "cache"
    quiet_import(QWEN2, tmp_path / "models", cache_dir=cache)
    snapshot = next((cache / "models--localhub--tiny-qwen2" / "snapshots").iterdir())
    snap = quiet_import(str(snapshot), tmp_path / "other")
    assert snap.name == "tiny-qwen2"  # named after the repo, not the commit sha
    _, meta = read_model_info(snap.path)
    assert meta["model_id"] == QWEN2 and meta["revision"] == snapshot.name


def test_url_with_revision_tag_and_commit(local_hub, hub_repos, tmp_path):
    commit = local_hub.commit_sha(GPT2)
    local_hub.add_tag(GPT2, "v1.0")
    models = tmp_path / "models"
    by_url = quiet_import(f"{local_hub.url}/{GPT2}/tree/v1.0", models)
    by_sha = quiet_import(GPT2, models, name="pinned", revision=commit)
    assert by_url.name == "tiny-gpt2" and by_url.revision == commit == by_sha.revision
    _, meta = read_model_info(by_url.path)
    assert meta["import"]["revision_requested"] == "v1.0"


def test_version_suffix(local_hub, hub_repos, tmp_path):
    names = [quiet_import(GPT2, tmp_path / "models", version_suffix=True).name for _ in range(3)]
    assert names == ["tiny-gpt2", "tiny-gpt2-v2", "tiny-gpt2-v3"]


def test_licence_prompt(local_hub, hub_repos, tmp_path):
    asked: list[str] = []
    shown: list[str] = []

    def confirm(question: str) -> bool:
        asked.append(question)
        shown.extend(reporter.messages)  # what was shown before the question
        return True

    reporter = QuietReporter(ask=confirm)
    result = import_model(GPT2, tmp_path / "models", reporter=reporter)
    assert asked and "mit" in asked[0]
    assert any("MIT License" in s for s in shown)  # the text is shown before the question
    _, meta = read_model_info(result.path)
    assert meta["license_acknowledgment"]["via"] == "interactive prompt"
    with pytest.raises(FoundryError, match="not accepted"):
        import_model(GPT2, tmp_path / "models", name="refused", reporter=QuietReporter(ask=lambda q: False))
    assert not (tmp_path / "models" / "refused").exists()


def test_gated_repo_with_a_token(local_hub, hub_repos, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", GATED_TOKEN)
    # a private cache: a gated repo in the session cache would let later token-less tests read it
    result = quiet_import(LLAMA_GATED, tmp_path / "models", cache_dir=tmp_path / "cache")
    _, meta = read_model_info(result.path)
    assert meta["license"] == "other" and meta["license_name"] == "localhub-tiny-community"
    assert meta["license_link"] == "LICENSE" and (result.path / "LICENSE").read_text().startswith(
        "LOCALHUB TINY"
    )


def test_pickle_checkpoint_is_converted_with_allow_pickle(local_hub, hub_repos, tmp_path):
    result = quiet_import(GPT2_BIN, tmp_path / "models", allow_pickle=True)
    names = {p.name for p in result.path.iterdir()}
    assert "model.safetensors" in names and "pytorch_model.bin" not in names
    _, meta = read_model_info(result.path)
    assert meta["import"]["pickle_converted"] is True
    assert meta["sha256"]["model.safetensors"] == sha256_file(result.path / "model.safetensors")
    from safetensors import safe_open

    with safe_open(str(result.path / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "transformer.wte.weight" in keys and "lm_head.weight" not in keys  # tied copy dropped


def test_offline_mode_imports_from_the_cache(local_hub, hub_repos, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "cache"
    online = quiet_import(QWEN3, tmp_path / "models", cache_dir=cache)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    local_hub.clear_requests()
    offline = quiet_import(QWEN3, tmp_path / "models", name="offline", cache_dir=cache)
    assert (
        local_hub.requests == [] and offline.revision == online.revision and offline.sha256 == online.sha256
    )
    with pytest.raises(FoundryError, match="HF_HUB_OFFLINE") as e:
        quiet_import(QWEN2, tmp_path / "models", name="not-cached", cache_dir=cache)
    assert "local folder" in str(e.value.hint)


def test_unreachable_hub_falls_back_to_the_cache(local_hub, hub_repos, tmp_path):
    cache = tmp_path / "cache"
    quiet_import(GPT2, tmp_path / "models", cache_dir=cache)
    local_hub.stop()
    try:
        reporter = QuietReporter()
        again = import_model(GPT2, tmp_path / "models", name="cached", accept_license=True, reporter=reporter,
                             cache_dir=cache)  # fmt: skip
        shown = reporter.messages
        assert any("unreachable" in s for s in shown) and again.revision == local_hub.commit_sha(GPT2)
    finally:
        local_hub.start()


def test_a_folder_with_only_slow_tokenizer_files_gets_a_tokenizer_json(hub_repos, tmp_path):
    from transformers import AutoTokenizer

    source = tmp_path / "slow-bert"
    source.mkdir()
    for p in hub_repos[BERT].iterdir():
        if p.name not in ("tokenizer.json", "tokenizer_config.json"):
            (source / p.name).write_bytes(p.read_bytes())
    fast = AutoTokenizer.from_pretrained(str(hub_repos[BERT]))
    vocab = fast.get_vocab()
    (source / "vocab.txt").write_text("\n".join(sorted(vocab, key=vocab.get)) + "\n")
    (source / "tokenizer_config.json").write_text(
        '{"tokenizer_class": "BertTokenizer", "do_lower_case": true}'
    )
    result = quiet_import(str(source), tmp_path / "models")
    assert (result.path / "tokenizer.json").is_file()
    rebuilt = AutoTokenizer.from_pretrained(str(result.path))
    assert rebuilt("def f(): return 1")["input_ids"] == fast("def f(): return 1")["input_ids"]
