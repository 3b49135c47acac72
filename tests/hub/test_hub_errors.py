"""Every bad input: a clear FoundryError (message + hint), and nothing left under models/."""

from __future__ import annotations

from pathlib import Path

import pytest
from hub_helpers import assert_empty, config_with, publish_variant

from localhub.repos import GPT2, GPT2_BIN, LLAMA, LLAMA_GATED, LLAMA_SHARDED, QWEN2, QWEN_V1_REMOTE
from localhub.server import no_client_backoff
from model_foundry.errors import FoundryError
from model_foundry.hub import QuietReporter, import_model


def attempt(source: str, models: Path, **kwargs) -> FoundryError:
    kwargs.setdefault("accept_license", True)
    with pytest.raises(FoundryError) as e:
        import_model(source, models, reporter=QuietReporter(), **kwargs)
    assert_empty(models)
    return e.value


@pytest.fixture(scope="module")
def broken(local_hub, hub_repos) -> dict[str, str]:
    """Broken variants of the fixture repos, published once: name → repo id."""
    llama, sharded = hub_repos[LLAMA], hub_repos[LLAMA_SHARDED]
    shard2 = (sharded / "model-00002-of-00003.safetensors").read_bytes()
    header = (20).to_bytes(8, "little") + b"{this is not json!!}" + b"\0" * 64
    variants = {
        "unsupported": (
            llama,
            {"config.json": config_with(llama, model_type="t5", architectures=["T5Model"])},
        ),
        "remote-code": (
            llama,
            {"config.json": config_with(llama, model_type="fancy", auto_map={"x": "y.Z"})},
        ),
        "no-config": (llama, {"config.json": None}),
        "no-model-type": (llama, {"config.json": config_with(llama, model_type=None)}),
        "bad-header": (llama, {"model.safetensors": header}),
        "truncated-shard": (sharded, {"model-00002-of-00003.safetensors": shard2[:-1000]}),
        "no-weights": (llama, {"model.safetensors": None, "model.onnx": b"onnx"}),
    }
    out = {}
    for name, (src, changes) in variants.items():
        out[name] = f"broken/{name}"
        publish_variant(local_hub, src, out[name], changes)
    return out


def test_unknown_repo(local_hub, hub_repos, tmp_path):
    e = attempt("localhub/no-such-model", tmp_path / "models")
    assert "was not found" in e.message and "HF_TOKEN" in e.hint


def test_unknown_revision(local_hub, hub_repos, tmp_path):
    e = attempt(GPT2, tmp_path / "models", revision="no-such-branch")
    assert "'no-such-branch' does not exist" in e.message


def test_unsupported_architecture_lists_the_supported_families(broken, tmp_path):
    e = attempt(broken["unsupported"], tmp_path / "models")
    assert "'t5' is not a supported family" in e.message
    for family in ("qwen2", "qwen3", "llama", "mistral", "gpt2", "bert", "roberta"):
        assert family in e.hint


def test_unknown_family_with_remote_code(broken, tmp_path):
    e = attempt(broken["remote-code"], tmp_path / "models")
    assert "auto_map" in e.message and "never run" in e.message


def test_qwen_v1_remote_code_is_refused(local_hub, hub_repos, tmp_path):
    local_hub.clear_requests()
    e = attempt(QWEN_V1_REMOTE, tmp_path / "models")
    assert "trust_remote_code" in e.message and "Qwen2" in e.hint
    assert local_hub.bytes_served(repo_id=QWEN_V1_REMOTE) == 0  # refused from the API metadata alone


def test_gated_repo_without_token(local_hub, hub_repos, tmp_path):
    e = attempt(LLAMA_GATED, tmp_path / "models")
    assert "gated" in e.message and "HF_TOKEN" in e.hint


def test_gated_repo_with_a_token_without_access(local_hub, hub_repos, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_wrong")
    local_hub.access_tokens = {"hf_right"}
    try:
        e = attempt(LLAMA_GATED, tmp_path / "models", cache_dir=tmp_path / "cache")
    finally:
        local_hub.access_tokens = None
    assert "gated" in e.message and "HF_TOKEN" in e.hint


def test_network_unreachable(local_hub, hub_repos, tmp_path):
    local_hub.stop()
    try:
        with no_client_backoff():
            e = attempt(QWEN2, tmp_path / "models", cache_dir=tmp_path / "empty-cache")
    finally:
        local_hub.start()
    assert "Cannot reach the Hub" in e.message
    assert "HF_HUB_OFFLINE" in e.hint and "local folder" in e.hint


def test_licence_not_accepted_without_a_terminal(local_hub, hub_repos, tmp_path):
    e = attempt(GPT2, tmp_path / "models", accept_license=False)  # QuietReporter(): nobody to ask
    assert "licence" in e.message and "mit" in e.message and "--accept-license" in e.hint


def test_corrupt_safetensors_header(broken, tmp_path):
    e = attempt(broken["bad-header"], tmp_path / "models")
    assert "not a valid safetensors file" in e.message and "header" in e.message


def test_truncated_shard(broken, tmp_path):
    e = attempt(broken["truncated-shard"], tmp_path / "models")
    assert "model-00002-of-00003.safetensors" in e.message and "truncated" in e.message


def test_truncated_or_corrupt_files_in_a_folder(hub_repos, tmp_path):
    folder = tmp_path / "src"
    folder.mkdir()
    for p in hub_repos[LLAMA_SHARDED].iterdir():
        (folder / p.name).write_bytes(p.read_bytes())
    shard = folder / "model-00003-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes()[:-10])
    assert "truncated" in attempt(str(folder), tmp_path / "models").message
    shard.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00garbage!")
    assert "header is not JSON" in attempt(str(folder), tmp_path / "models").message


def test_sha256_mismatch_is_detected_and_evicted_from_the_cache(local_hub, hub_repos, tmp_path):
    cache = tmp_path / "cache"
    local_hub.corrupt("model.safetensors", repo_id=LLAMA)  # same size, last byte flipped, same advertised sha
    try:
        e = attempt(LLAMA, tmp_path / "models", cache_dir=cache)
    finally:
        local_hub.clear_faults()
    assert "sha256 mismatch for model.safetensors" in e.message and "run the import again" in e.hint
    assert not list(
        (cache / "models--localhub--tiny-llama" / "blobs").glob(
            local_hub.file(LLAMA, "model.safetensors").sha256
        )
    )
    # the next import downloads it again and succeeds
    result = import_model(
        LLAMA, tmp_path / "models", accept_license=True, reporter=QuietReporter(), cache_dir=cache
    )
    assert result.sha256["model.safetensors"] == local_hub.file(LLAMA, "model.safetensors").sha256


def test_missing_config(broken, hub_repos, tmp_path):
    assert "has no config.json" in attempt(broken["no-config"], tmp_path / "models").message
    folder = tmp_path / "src"
    folder.mkdir()
    (folder / "model.safetensors").write_bytes((hub_repos[LLAMA] / "model.safetensors").read_bytes())
    assert "has no config.json" in attempt(str(folder), tmp_path / "models").message


def test_missing_model_type(broken, tmp_path):
    e = attempt(broken["no-model-type"], tmp_path / "models")
    assert "has no model_type" in e.message and "qwen2" in e.hint


def test_no_usable_weights(broken, tmp_path):
    e = attempt(broken["no-weights"], tmp_path / "models")
    assert "no Transformers weights" in e.message and "model.onnx" in e.message


def test_pickle_only_without_allow_pickle(local_hub, hub_repos, tmp_path):
    e = attempt(GPT2_BIN, tmp_path / "models")
    assert "pickle" in e.message and "--allow-pickle" in e.hint


@pytest.mark.parametrize("name", ["../x", "a/b", "", "UPPER", ".hidden", "-dash"])
def test_bad_names(name, local_hub, tmp_path):
    local_hub.clear_requests()
    e = attempt(GPT2, tmp_path / "models", name=name)
    assert "empty" in e.message if name == "" else "not allowed" in e.message
    assert local_hub.requests == []  # rejected before any network call


def test_existing_name(local_hub, hub_repos, tmp_path):
    models = tmp_path / "models"
    (models / "tiny-gpt2").mkdir(parents=True)
    with pytest.raises(FoundryError, match="already exists") as e:
        import_model(GPT2, models, accept_license=True, reporter=QuietReporter())
    assert "--version-suffix" in e.value.hint
    assert sorted(p.name for p in models.iterdir()) == ["tiny-gpt2"] and not any(
        (models / "tiny-gpt2").iterdir()
    )
    (models / "dvc-only.dvc").write_text("outs: []\n")  # tracked by DVC but not checked out
    with pytest.raises(FoundryError, match="already exists"):
        import_model(GPT2, models, name="dvc-only", accept_license=True, reporter=QuietReporter())


def test_missing_local_folder(tmp_path):
    e = attempt(str(tmp_path / "nope"), tmp_path / "models")
    assert "does not exist" in e.message
    assert "does not exist" in attempt("./no-such-folder", tmp_path / "models").message


def test_memory_hard_limit_and_force(local_hub, hub_repos, tmp_path, monkeypatch):
    monkeypatch.setenv("FOUNDRY_IMPORT_MAX_RAM", "100MB")
    e = attempt(GPT2, tmp_path / "models")
    assert "RAM" in e.message and "--force" in e.hint
    reporter = QuietReporter()
    result = import_model(GPT2, tmp_path / "models", accept_license=True, force=True, reporter=reporter)
    shown = reporter.messages
    assert result.path.is_dir() and any("--force" in s for s in shown)


def test_interrupted_import_leaves_nothing(local_hub, hub_repos, tmp_path, monkeypatch):
    from model_foundry.hub import convert

    def boom(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(convert, "_ensure_fast_tokenizer", boom)
    with pytest.raises(KeyboardInterrupt):
        import_model(GPT2, tmp_path / "models", accept_license=True, reporter=QuietReporter())
    assert_empty(tmp_path / "models")


def test_source_parsing_errors(tmp_path):
    assert "empty" in attempt("", tmp_path / "models").message
    assert "not a Hugging Face Hub URL" in attempt("https://example.com/a/b", tmp_path / "models").message
    e = attempt("https://huggingface.co/a/b/tree/main", tmp_path / "models", revision="dev")
    assert "revision" in e.message
    assert "dataset" in attempt("https://huggingface.co/datasets/a/b", tmp_path / "models").message
    assert "neither" in attempt("not a repo id!", tmp_path / "models").message
