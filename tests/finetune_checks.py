"""Checks shared by the fine-tuning end-to-end tests (tests/training/test_finetune_e2e.py, tests/hub/)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import yaml


def _env(repo: Path, **extra: str) -> dict[str, Any]:
    return {"env": {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}", **extra}}


def _lock_md5(repo: Path, path: str) -> str:
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    for stage in lock["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == path:
                return str(out["md5"])
    raise AssertionError(f"{path} not in dvc.lock")


def _meta(repo: Path, name: str) -> dict[str, Any]:
    return json.loads((repo / "models" / name / "metadata.json").read_text())


def _greedy(model: Any, ids: torch.Tensor, n: int = 32) -> list[int]:
    """n greedy tokens (fewer when the model's context, 32 for the tiny gpt, ends first)."""
    context = getattr(model.config, "n_positions", None) or model.config.max_position_embeddings
    n = min(n, context - ids.shape[1])
    out = model.generate(ids, max_new_tokens=n, do_sample=False, pad_token_id=0)
    return out[0, ids.shape[1] :].tolist()


def _check_adapter_equals_merged(repo: Path, parent: str, trained: str, auto_cls: Any) -> None:
    """Plain peft on the parent folder + the adapter == plain transformers on the merged folder."""
    from peft import PeftModel

    base = auto_cls.from_pretrained(repo / "models" / parent)
    unmerged = PeftModel.from_pretrained(base, str(repo / "models" / trained / "adapter")).eval()
    merged = auto_cls.from_pretrained(repo / "models" / trained).eval()
    for prompt in ([1, 2, 3], [5, 9, 17, 33, 2], [7]):
        ids = torch.tensor([prompt])
        with torch.no_grad():
            delta = (unmerged(ids).logits - merged(ids).logits).abs().max().item()
        assert delta <= 1e-5, delta
        assert _greedy(unmerged, ids) == _greedy(merged, ids)


def _mlflow_lineage(repo: Path, model_name: str) -> dict[str, str]:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs(
        [client.get_experiment_by_name("model-foundry").experiment_id],
        filter_string=f"tags.model_name = '{model_name}' and tags.stage = 'train'",
    )
    assert len(runs) >= 1
    return {k: v for k, v in runs[0].data.tags.items() if k.startswith("foundry.")}
