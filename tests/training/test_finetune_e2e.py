"""Fine-tuning end to end through `dvc exp run`: a model of the repo as the parent, full then LoRA.

Chain: scratch gpt → trained (full) → LoRA fine-tune of it (`source: model:gpt-tiny-trained`). (The imported
tiny Qwen2 chain, LoRA on chat data with a kill and resume, is in tests/hub/test_hub_pipeline.py.) Checks: the
outputs' lineage in
metadata.json and MLflow, the adapter loads with plain peft onto the parent and equals the merged model
(logits within 1e-5, the same 32 greedy tokens), tied embeddings survive the merge, `foundry info` shows the
chain, and two LoRA runs under different PYTHONHASHSEED give the same dvc.lock hash; switching
`model_name` with `-S` lists both experiments in `dvc exp show` and MLflow.
"""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest

from conftest import make_repo_copy, run_cmd, tiny_params
from finetune_checks import _check_adapter_equals_merged, _env, _lock_md5, _meta, _mlflow_lineage

pytestmark = pytest.mark.slow


def test_scratch_gpt_trained_then_lora_fine_tuned_through_exp_run(tmp_path: Path) -> None:
    params = tiny_params()
    params["models"]["gpt-tiny-lora"] = {
        "architecture": "gpt",
        "source": "model:gpt-tiny-trained",
        "train": {"method": "lora", "lr": 0.01, "lora": {"r": 4, "alpha": 8}},
    }
    repo = make_repo_copy(tmp_path / "repo", params)
    run_cmd(["dvc", "exp", "run", "--name", "base"], repo, **_env(repo))
    parent_md5 = _lock_md5(repo, "models/gpt-tiny-trained")
    run_cmd(["dvc", "exp", "run", "--name", "lora", "-S", "model_name=gpt-tiny-lora"], repo,
            **_env(repo, PYTHONHASHSEED="1"))  # fmt: skip

    # switching model_name with -S: both experiments are listed, by name, in DVC and in MLflow
    rows = json.loads(run_cmd(["dvc", "exp", "show", "--json"], repo).stdout)
    names = {e["name"] for row in rows for e in (row.get("experiments") or [])}
    assert {"base", "lora"} <= names
    table = run_cmd(["dvc", "exp", "show", "--csv"], repo).stdout
    assert "perplexity" in table and "gpt-tiny-lora" in table
    with sqlite3.connect(repo / "mlflow.db") as db:
        exp_tags = {v for (v,) in db.execute("select value from tags where key = 'dvc_exp_name'")}
    assert {"base", "lora"} <= exp_tags

    copy = _meta(repo, "gpt-tiny-lora")
    assert copy["source"] == "model:gpt-tiny-trained"
    assert copy["parent"] == {"name": "gpt-tiny-trained", "sha256": parent_md5}
    trained = _meta(repo, "gpt-tiny-lora-trained")
    assert trained["fine_tuned_from"] == "gpt-tiny-lora"
    assert trained["parent"]["name"] == "gpt-tiny-lora"
    assert trained["parent"]["sha256"] == _lock_md5(repo, "models/gpt-tiny-lora")
    assert trained["training"]["method"] == "lora"
    assert trained["training"]["lora"]["r"] == 4
    assert trained["training"]["lora"]["target_modules"] == ["c_attn", "c_fc", "c_proj"]
    assert trained["training"]["dataset_md5"] == _lock_md5(repo, "data/tokenized")
    adapter_config = json.loads(
        (repo / "models/gpt-tiny-lora-trained/adapter/adapter_config.json").read_text()
    )
    assert adapter_config["base_model_name_or_path"] == "gpt-tiny-lora" and adapter_config["fan_in_fan_out"]

    from transformers import GPT2LMHeadModel

    _check_adapter_equals_merged(repo, "gpt-tiny-lora", "gpt-tiny-lora-trained", GPT2LMHeadModel)

    tags = _mlflow_lineage(repo, "gpt-tiny-lora-trained")
    assert tags["foundry.parent"] == "gpt-tiny-lora"
    assert tags["foundry.parent_checksum"] == trained["parent"]["sha256"]
    assert tags["foundry.method"] == "lora"
    assert tags["foundry.params_digest"] == trained["training"]["params_digest"]

    info = run_cmd(["foundry", "info", "models/gpt-tiny-lora-trained", "--json"], repo)
    chain = "gpt-tiny-lora-trained (lora r=4) ← gpt-tiny-lora (copy) ← gpt-tiny-trained (full) ← gpt-tiny"
    assert chain in info.stderr
    # The registry: the scratch-trained parent (made by the first experiment) and the LoRA run, with lineage.
    listed = json.loads(run_cmd(["foundry", "list-models", "--json"], repo, **_env(repo)).stdout)
    models = {m["name"]: m for m in listed["models"]}
    assert models["gpt-tiny-trained"]["method"] == "full" and models["gpt-tiny"]["method"] == "scratch"
    assert models["gpt-tiny-lora-trained"]["fine_tuned_from"] == "gpt-tiny-lora"
    assert models["gpt-tiny-lora-trained"]["checksum"] == _lock_md5(repo, "models/gpt-tiny-lora-trained")
    tree = run_cmd(["foundry", "lineage", "gpt-tiny-lora-trained"], repo, **_env(repo)).stdout
    assert tree.splitlines()[0].startswith("gpt-tiny (scratch")
    assert "* gpt-tiny-lora-trained (lora r=4" in tree

    # The same LoRA run again, under another hash seed: the same bytes (canonical adapter_config.json).
    first = _lock_md5(repo, "models/gpt-tiny-lora-trained")
    run_cmd(["dvc", "repro", "-f", "-s", "train"], repo, **_env(repo, PYTHONHASHSEED="2"))
    assert _lock_md5(repo, "models/gpt-tiny-lora-trained") == first
