"""An imported model through the whole pipeline: `dvc exp run -S model_name=<entry>` against the local Hub.

import (resolve, validate, download into the Hub cache, record commit + hashes) → convert (models/<name>/ from
the cache) → tokenize (native tokenizer) → train (plain fine-tune) → evaluate (perplexity).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time

import pytest
import yaml

from conftest import VENV_BIN, make_repo_copy, run_cmd, tiny_params
from finetune_checks import _check_adapter_equals_merged, _lock_md5, _meta
from localhub.repos import BERT, QWEN2
from model_foundry.registry.dvc import dvc_md5

pytestmark = pytest.mark.slow


def test_exp_run_imports_fine_tunes_and_evaluates_a_hub_model(local_hub, hub_repos, tmp_path):
    params = tiny_params()
    params["models"]["tiny-qwen2"] = {"architecture": "hf-qwen2", "source": QWEN2, "license_accepted": True,
                                      "train": {"lr": 1e-3}}  # fmt: skip
    lora = {"method": "lora", "lr": 1e-2, "steps": 12, "checkpoint_interval": 4, "log_interval": 1}
    params["models"]["tiny-qwen2-chat"] = {
        "architecture": "hf-qwen2", "source": "model:tiny-qwen2-trained", "train": lora
    }  # fmt: skip
    repo = make_repo_copy(tmp_path / "repo", params)
    env = {"env": {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}}
    local_hub.clear_requests()
    run_cmd(["dvc", "exp", "run", "--name", "qwen", "-S", "model_name=tiny-qwen2"], repo, **env)

    commit = local_hub.commit_sha(QWEN2)
    source = json.loads((repo / "data/source/source.json").read_text())
    assert source["commit"] == commit and source["architecture"] == "hf-qwen2"
    assert source["files"]["model.safetensors"]["sha256"] == local_hub.file(QWEN2, "model.safetensors").sha256
    assert not (repo / "data/source/model.safetensors").exists()  # weights stay in the Hub cache
    meta = json.loads((repo / "models/tiny-qwen2/metadata.json").read_text())
    assert meta["revision"] == commit and meta["license_acknowledgment"]["via"].startswith("params.yaml")
    tokenized = json.loads((repo / "data/tokenized/meta.json").read_text())
    assert tokenized["tokenizer"] == "native" and tokenized["vocab_size"] == 512
    trained = json.loads((repo / "models/tiny-qwen2-trained/metadata.json").read_text())
    assert trained["architecture"] == "hf-qwen2" and trained["fine_tuned_from"] == "tiny-qwen2"
    assert trained["license"] == "apache-2.0" and (repo / "models/tiny-qwen2-trained/LICENSE").is_file()
    metrics = json.loads((repo / "metrics.json").read_text())
    assert 1 < metrics["perplexity"] < 512
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert any(o["path"] == "models/tiny-qwen2" for o in lock["stages"]["convert"]["outs"])

    # The convert stage again, offline: models/<name>/ is rebuilt from the Hub cache without one request.
    (repo / "offline.yaml").write_text(yaml.safe_dump({**params, "model_name": "tiny-qwen2"}))
    local_hub.clear_requests()
    cmd = [
        "foundry",
        "convert",
        "--params",
        "offline.yaml",
        "--source",
        "data/source",
        "--out",
        "models/offline",
    ]
    run_cmd(cmd, repo, env={"HF_HUB_OFFLINE": "1"})
    assert local_hub.requests == []
    assert json.loads((repo / "models/offline/metadata.json").read_text())["sha256"] == meta["sha256"]

    # LoRA on chat data, starting from the model trained above (`source: model:tiny-qwen2-trained`).
    chat = [
        {"messages": [{"role": "user", "content": f"What is {i} plus {i}?"},
                      {"role": "assistant", "content": f"{i} plus {i} is {2 * i}."}]}
        for i in range(40)
    ]  # fmt: skip
    (repo / "chat.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chat))
    lora_run = [
        "dvc",
        "exp",
        "run",
        "--name",
        "chat",
        "-S",
        "model_name=tiny-qwen2-chat",
        "-S",
        "data.source=chat.jsonl",
    ]
    run_cmd(lora_run, repo, **env)
    tokenized = json.loads((repo / "data/tokenized/meta.json").read_text())
    assert tokenized["layout"] == "windows" and tokenized["chat"]["train"]["usable"] > 0
    trained = _meta(repo, "tiny-qwen2-chat-trained")
    assert trained["training"]["method"] == "lora" and trained["fine_tuned_from"] == "tiny-qwen2-chat"
    assert trained["parent"] == {
        "name": "tiny-qwen2-chat",
        "sha256": _lock_md5(repo, "models/tiny-qwen2-chat"),
    }
    assert trained["license"] == "apache-2.0"
    config = json.loads((repo / "models/tiny-qwen2-chat-trained/config.json").read_text())
    assert config["tie_word_embeddings"] is True

    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(repo / "models/tiny-qwen2-chat-trained")
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()  # still tied
    _check_adapter_equals_merged(repo, "tiny-qwen2-chat", "tiny-qwen2-chat-trained", AutoModelForCausalLM)
    metrics = json.loads((repo / "metrics.json").read_text())
    assert 1 < metrics["perplexity"] < 512 and "bits_per_byte" not in metrics

    # Kill the train stage (the whole process group, as a terminal's Ctrl-\ would) after its first checkpoint;
    # the next run picks the checkpoint up and gives the bytes of the uninterrupted run.
    whole = _lock_md5(repo, "models/tiny-qwen2-chat-trained")
    path = f"{VENV_BIN}{os.pathsep}{os.environ['PATH']}"
    proc = subprocess.Popen(["dvc", "repro", "-f", "-s", "train"], cwd=repo, start_new_session=True,
                            env={**os.environ, "PATH": path, **env["env"]},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    checkpoint = repo / "checkpoints/tiny-qwen2-chat-trained/step-000004/checkpoint.json"
    deadline = time.monotonic() + 180
    while not checkpoint.is_file():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.005)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = run_cmd(["dvc", "repro", "-f", "-s", "train"], repo, **env)
    assert (
        "resuming from" in resumed.stdout and "/checkpoints/tiny-qwen2-chat-trained/step-" in resumed.stdout
    )
    assert _lock_md5(repo, "models/tiny-qwen2-chat-trained") == whole
    assert not (repo / "checkpoints/tiny-qwen2-chat-trained").exists()

    # The registry, derived from dvc.lock, the experiments and MLflow: every model the two runs made, the
    # chain chat-trained ← chat ← trained ← import, and the imported model (replaced in the workspace by the
    # second experiment) brought back byte-identical.
    listed = json.loads(run_cmd(["foundry", "list-models", "--json", "--metrics"], repo, **env).stdout)
    models = {m["name"]: m for m in listed["models"]}
    assert {"tiny-qwen2", "tiny-qwen2-trained", "tiny-qwen2-chat", "tiny-qwen2-chat-trained"} <= set(models)
    assert models["tiny-qwen2"]["source_kind"] == "hub" and models["tiny-qwen2"]["method"] == "import"
    assert models["tiny-qwen2-chat-trained"]["method"].startswith("lora")
    assert models["tiny-qwen2-chat-trained"]["checksum"] == _lock_md5(repo, "models/tiny-qwen2-chat-trained")
    info = json.loads(
        run_cmd(["foundry", "model-info", "tiny-qwen2-chat-trained", "--json"], repo, **env).stdout
    )
    assert [link["name"] for link in info["lineage"]] == [
        "tiny-qwen2-chat-trained", "tiny-qwen2-chat", "tiny-qwen2-trained", "tiny-qwen2",
    ]  # fmt: skip
    assert all(link["checksum"] for link in info["lineage"])
    assert any(run["name"] == "tiny-qwen2-chat-trained" and run["stage"] == "train" for run in info["runs"])
    imported = models["tiny-qwen2"]
    if imported["in_workspace"]:
        shutil.rmtree(repo / "models/tiny-qwen2")
    got = run_cmd(["foundry", "get", "tiny-qwen2", "--exp", "qwen"], repo, **env)
    assert "experiment qwen" in got.stdout
    assert dvc_md5(repo / "models/tiny-qwen2") == imported["checksum"]
    assert run_cmd(["foundry", "validate-model", "tiny-qwen2"], repo, **env).returncode == 0


def test_repro_a_masked_lm_from_the_hub(local_hub, hub_repos, tmp_path):
    params = tiny_params(model_name="tiny-bert")
    params["models"]["tiny-bert"] = {"architecture": "hf-bert", "source": BERT, "license_accepted": True,
                                     "train": {"objective": "masked_lm", "lr": 1e-3},
                                     "evaluate": {"pseudo_ppl_sequences": 2}}  # fmt: skip
    repo = make_repo_copy(tmp_path / "repo", params)
    run_cmd(["dvc", "repro"], repo, env={"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"})
    metrics = json.loads((repo / "metrics.json").read_text())
    assert metrics and (repo / "models/tiny-bert-trained/model.safetensors").is_file()
    assert (
        json.loads((repo / "models/tiny-bert-trained/metadata.json").read_text())["architecture"] == "hf-bert"
    )
