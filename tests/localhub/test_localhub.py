"""The installed huggingface_hub / transformers talk to the LocalHub exactly as to the real Hub (no mocks)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from huggingface_hub import HfApi, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

from .repos import BERT, GPT2_BIN, LLAMA, LLAMA_BIG, LLAMA_GATED, LLAMA_SHARDED, QWEN2, QWEN_V1_REMOTE
from .server import GATED_TOKEN, LocalHub, git_blob_sha1, no_client_backoff


def sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@pytest.fixture
def cache(tmp_path: Path) -> str:
    """A fresh cache dir, so that request counts do not depend on other tests."""
    return str(tmp_path / "cache")


def test_environment_points_at_local_hub(local_hub: LocalHub) -> None:
    from huggingface_hub import constants

    assert local_hub.url == constants.ENDPOINT
    assert constants.HF_HUB_DISABLE_XET
    assert constants.HF_HUB_CACHE.startswith(os.environ["HF_HOME"])


def test_model_info(local_hub: LocalHub, hub_repos: dict[str, Path]) -> None:
    api = HfApi()
    info = api.model_info(QWEN2)
    assert info.id == QWEN2
    assert info.sha == local_hub.commit_sha(QWEN2)
    names = {s.rfilename for s in info.siblings}
    assert {
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "README.md",
        "LICENSE",
        ".gitattributes",
    } <= names
    assert info.gated is False and info.private is False
    assert info.card_data.license == "apache-2.0"
    assert "license:apache-2.0" in info.tags and info.pipeline_tag == "text-generation"
    assert info.config["model_type"] == "qwen2"
    assert info.safetensors.total > 0

    detailed = api.model_info(QWEN2, files_metadata=True)
    weights = next(s for s in detailed.siblings if s.rfilename == "model.safetensors")
    assert weights.lfs.sha256 == local_hub.file(QWEN2, "model.safetensors").sha256
    config = next(s for s in detailed.siblings if s.rfilename == "config.json")
    assert config.lfs is None and config.blob_id == git_blob_sha1(
        (hub_repos[QWEN2] / "config.json").read_bytes()
    )

    gated = api.model_info(LLAMA_GATED)  # metadata of gated repos is public, like on the Hub
    assert gated.gated == "manual"
    assert gated.card_data.license == "other" and gated.card_data.license_name == "localhub-tiny-community"

    remote = api.model_info(QWEN_V1_REMOTE)
    assert remote.config["model_type"] == "qwen" and "custom_code" in remote.tags


def test_tree_paths_info_refs_commits(local_hub: LocalHub, hub_repos: dict[str, Path]) -> None:
    api = HfApi()
    tree = {e.path: e for e in api.list_repo_tree(LLAMA_SHARDED, recursive=True)}
    shards = sorted(p for p in tree if p.startswith("model-") and p.endswith(".safetensors"))
    assert len(shards) >= 2 and "model.safetensors.index.json" in tree
    for shard in shards:
        assert tree[shard].lfs.sha256 == sha256(hub_repos[LLAMA_SHARDED] / shard)
        assert tree[shard].size == (hub_repos[LLAMA_SHARDED] / shard).stat().st_size
    assert tree["config.json"].lfs is None

    infos = api.get_paths_info(LLAMA_SHARDED, ["config.json", shards[0], "missing.txt"])
    assert sorted(i.path for i in infos) == sorted(["config.json", shards[0]])

    refs = api.list_repo_refs(LLAMA_SHARDED)
    assert [(b.name, b.target_commit) for b in refs.branches] == [
        ("main", local_hub.commit_sha(LLAMA_SHARDED))
    ]
    commits = api.list_repo_commits(LLAMA_SHARDED)
    assert commits[0].commit_id == local_hub.commit_sha(LLAMA_SHARDED)

    local_hub.page_size = 3  # Link-header pagination, as the Hub pages big trees
    try:
        paged = [e.path for e in api.list_repo_tree(LLAMA_SHARDED, recursive=True)]
    finally:
        local_hub.page_size = 1000
    assert sorted(paged) == sorted(tree)
    assert local_hub.find_requests(path_contains="/tree/")[-1].query.find("cursor=") >= 0


def test_download_small_and_lfs_files(local_hub: LocalHub, hub_repos: dict[str, Path], cache: str) -> None:
    local_hub.clear_requests()
    config = hf_hub_download(LLAMA, "config.json", cache_dir=cache)
    assert Path(config).read_bytes() == (hub_repos[LLAMA] / "config.json").read_bytes()
    assert f"snapshots/{local_hub.commit_sha(LLAMA)}/config.json" in config

    weights = hf_hub_download(LLAMA, "model.safetensors", cache_dir=cache, token="hf_some_user_token")
    assert sha256(weights) == local_hub.file(LLAMA, "model.safetensors").sha256
    # blob stored under its sha256 (X-Linked-Etag), the HEAD stopped at the 302 and the CDN got no token
    assert Path(weights).resolve().name == local_hub.file(LLAMA, "model.safetensors").sha256
    head = local_hub.find_requests(method="HEAD", filename="model.safetensors")
    assert [r.status for r in head] == [302] and head[0].authorized
    cdn = local_hub.find_requests(listener="cdn", method="GET")
    assert len(cdn) == 1 and cdn[0].status == 200 and not cdn[0].authorized


def test_snapshot_allow_patterns_and_cache_hit(
    local_hub: LocalHub, hub_repos: dict[str, Path], cache: str
) -> None:
    local_hub.clear_requests()
    folder = Path(snapshot_download(QWEN2, allow_patterns=["*.json", "*.jinja"], cache_dir=cache))
    assert {p.name for p in folder.iterdir()} == {
        "config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
        "chat_template.jinja",
    }  # fmt: skip
    assert local_hub.bytes_served(filename="model.safetensors") == 0

    full = Path(snapshot_download(QWEN2, cache_dir=cache))
    assert sha256(full / "model.safetensors") == local_hub.file(QWEN2, "model.safetensors").sha256
    assert (
        local_hub.bytes_served(filename="model.safetensors")
        == local_hub.file(QWEN2, "model.safetensors").size
    )

    local_hub.clear_requests()
    again = Path(snapshot_download(QWEN2, cache_dir=cache))
    assert again == full
    assert local_hub.bytes_served() == 0
    assert local_hub.find_requests(listener="cdn") == []


def test_interrupted_download_resumes_with_range(
    local_hub: LocalHub, hub_repos: dict[str, Path], cache: str
) -> None:
    target = local_hub.file(LLAMA_BIG, "model.safetensors")
    assert target.size > 10 * 1024 * 1024  # the client flushes to disk per 10 MiB chunk
    local_hub.clear_requests()
    local_hub.drop_after_bytes("model.safetensors", 11 * 1024 * 1024, repo_id=LLAMA_BIG)
    with no_client_backoff() as slept:
        path = hf_hub_download(LLAMA_BIG, "model.safetensors", cache_dir=cache)
    assert slept  # http_get waits 1 s before it resumes
    assert sha256(path) == target.sha256
    gets = local_hub.find_requests(listener="cdn", method="GET")
    assert [r.range for r in gets] == [None, f"bytes={10 * 1024 * 1024}-"]
    assert [r.status for r in gets] == [200, 206]


def test_corrupted_file_is_detected(local_hub: LocalHub, hub_repos: dict[str, Path], cache: str) -> None:
    local_hub.corrupt("model.safetensors", repo_id=LLAMA)
    try:
        path = hf_hub_download(LLAMA, "model.safetensors", cache_dir=cache)
    finally:
        local_hub.clear_faults()
    # huggingface_hub does not verify checksums of plain-HTTP downloads: the caller has to.
    assert sha256(path) != local_hub.file(LLAMA, "model.safetensors").sha256
    report = HfApi().verify_repo_checksums(LLAMA, cache_dir=cache)
    assert [m["path"] for m in report.mismatches] == ["model.safetensors"]


def test_transient_5xx_on_head_is_retried(
    local_hub: LocalHub, hub_repos: dict[str, Path], cache: str
) -> None:
    local_hub.fail_requests("generation_config.json", 503, repo_id=LLAMA)
    path = hf_hub_download(LLAMA, "generation_config.json", cache_dir=cache)
    assert Path(path).read_bytes() == (hub_repos[LLAMA] / "generation_config.json").read_bytes()


def test_errors_map_to_client_exceptions(local_hub: LocalHub, hub_repos: dict[str, Path], cache: str) -> None:
    api = HfApi()
    with pytest.raises(RepositoryNotFoundError):
        api.model_info("localhub/does-not-exist")
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("localhub/does-not-exist", "config.json", cache_dir=cache)
    with pytest.raises(RevisionNotFoundError):
        api.model_info(LLAMA, revision="no-such-branch")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(LLAMA, "config.json", revision="no-such-branch", cache_dir=cache)
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(LLAMA, "no-such-file.txt", cache_dir=cache)
    assert not api.file_exists(LLAMA, "no-such-file.txt") and api.file_exists(LLAMA, "config.json")


def test_gated_repo(local_hub: LocalHub, hub_repos: dict[str, Path], cache: str) -> None:
    with pytest.raises(GatedRepoError) as excinfo:
        hf_hub_download(LLAMA_GATED, "config.json", cache_dir=cache)
    assert excinfo.value.response.status_code == 401
    path = hf_hub_download(LLAMA_GATED, "model.safetensors", cache_dir=cache, token=GATED_TOKEN)
    assert sha256(path) == local_hub.file(LLAMA_GATED, "model.safetensors").sha256

    local_hub.access_tokens = {GATED_TOKEN}
    try:
        with pytest.raises(GatedRepoError) as excinfo:
            hf_hub_download(LLAMA_GATED, "config.json", cache_dir=cache, token="hf_not_approved")
    finally:
        local_hub.access_tokens = None
    assert excinfo.value.response.status_code == 403


def test_revisions_branches_and_shas(local_hub: LocalHub, cache: str) -> None:
    repo = "localhub/revisions"
    first = local_hub.add_repo(repo, {"notes.txt": b"v1\n"})
    second = local_hub.add_repo(repo, {"notes.txt": b"v2\n"})  # main moves on
    other = local_hub.add_repo(repo, {"notes.txt": b"dev\n", "extra.bin": os.urandom(100)}, revision="dev")
    assert len({first, second, other}) == 3 and local_hub.commit_sha(repo) == second

    def read(revision: str) -> bytes:
        return Path(hf_hub_download(repo, "notes.txt", revision=revision, cache_dir=cache)).read_bytes()

    assert (read("main"), read(first), read(second), read("dev")) == (b"v2\n", b"v1\n", b"v2\n", b"dev\n")
    api = HfApi()
    assert api.model_info(repo, revision=first).sha == first
    assert [c.commit_id for c in api.list_repo_commits(repo)] == [second, first]
    assert {b.name for b in api.list_repo_refs(repo).branches} == {"main", "dev"}
    assert api.model_info(repo, revision="dev", files_metadata=True).siblings[1].lfs is not None


def test_hub_down_falls_back_to_cache(local_hub: LocalHub, hub_repos: dict[str, Path], cache: str) -> None:
    cached = hf_hub_download(GPT2_BIN, "config.json", cache_dir=cache)
    url = local_hub.url
    local_hub.stop()
    try:
        assert hf_hub_download(GPT2_BIN, "config.json", cache_dir=cache) == cached
        with no_client_backoff() as slept, pytest.raises(LocalEntryNotFoundError):
            hf_hub_download(GPT2_BIN, "pytorch_model.bin", cache_dir=cache)
        assert slept  # ~23 s of backoff without the patch
    finally:
        assert local_hub.start() == url  # same ports: HF_ENDPOINT stays valid
    assert Path(hf_hub_download(GPT2_BIN, "pytorch_model.bin", cache_dir=cache)).stat().st_size > 0


def test_transformers_loads_through_the_hub(local_hub: LocalHub, hub_repos: dict[str, Path]) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoModelForMaskedLM, AutoTokenizer

    local_hub.clear_requests()
    model = AutoModelForCausalLM.from_pretrained(QWEN2)
    tokenizer = AutoTokenizer.from_pretrained(QWEN2)
    assert type(model).__name__ == "Qwen2ForCausalLM"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert prompt.startswith("<|im_start|>user")
    with torch.no_grad():
        logits = model(**tokenizer("def f(): return 1", return_tensors="pt")).logits
    assert logits.shape[-1] == model.config.vocab_size

    local_hub.clear_requests()  # second load: served from the cache, metadata calls only
    AutoModelForCausalLM.from_pretrained(QWEN2)
    assert local_hub.bytes_served(filename="model.safetensors") == 0
    assert local_hub.find_requests(listener="cdn") == []

    sharded = AutoModelForCausalLM.from_pretrained(LLAMA_SHARDED)
    reference = AutoModelForCausalLM.from_pretrained(hub_repos[LLAMA_SHARDED])
    assert torch.equal(sharded.lm_head.weight, reference.lm_head.weight)
    assert type(AutoModelForCausalLM.from_pretrained(GPT2_BIN)).__name__ == "GPT2LMHeadModel"
    assert type(AutoModelForMaskedLM.from_pretrained(BERT)).__name__ == "BertForMaskedLM"
    with pytest.raises(OSError, match="gated"):
        AutoModelForCausalLM.from_pretrained(LLAMA_GATED)
