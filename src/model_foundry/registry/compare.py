"""`foundry compare A B …`: metrics side by side and the params that differ.

Metrics come from the metrics file that evaluated each model's bytes in the snapshot that recorded it
(dvc.lock + metrics.json of the workspace or its experiment), then from its newest MLflow run with
evaluation metrics (`eval_*`, logged by the evaluate stage) for models dvc.lock has none for. Params are
those dvc.lock recorded for the stage that produced each model (the model's own catalog entry included),
flattened to dotted keys; only keys whose values differ are shown.
"""

from __future__ import annotations

from typing import Any

from model_foundry.errors import FoundryError
from model_foundry.registry.records import ModelRecord, Registry


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Nested dicts as dotted keys: {"a": {"b": 1}} → {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def model_metrics(model: ModelRecord) -> dict[str, float]:
    """The model's numeric metrics (dotted keys): dvc.lock's metrics file, else its newest MLflow
    evaluation."""
    if model.metrics:
        source = flatten(model.metrics)
    else:
        source = next(
            (
                {k.removeprefix("eval_"): v for k, v in run.metrics.items() if k.startswith("eval_")}
                for run in model.runs
                if any(k.startswith("eval_") for k in run.metrics)
            ),
            {},
        )
    return {k: float(v) for k, v in source.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}


def model_params(model: ModelRecord) -> dict[str, Any]:
    """The params dvc.lock recorded for the stage that made the model's shown version (dotted keys).

    A model's own catalog entry (`models.<name>`) is renamed `model.…` so that two models' entries line up.
    """
    version = next((v for v in model.versions if v.checksum == model.checksum), None)
    params: dict[str, Any] = {}
    for key, value in (version.params if version else {}).items():
        if key.startswith("models.") and isinstance(value, dict):
            params.update(flatten(value, "model."))
        elif isinstance(value, dict):
            params.update(flatten(value, f"{key}."))
        else:
            params[key] = value
    return params


def compare_models(registry: Registry, names: list[str]) -> dict[str, Any]:
    """{"models": names, "metrics": {key: [value per model]}, "params": {key: [value per model]}} with only
    the params that differ. Raises FoundryError for fewer than two names or an unknown one."""
    if len(names) < 2:
        raise FoundryError(
            "compare needs two or more model names.",
            "e.g. `foundry compare gpt-tiny-trained gpt-bpe-trained`.",
        )
    models = [registry.get(name) for name in names]
    metrics = [model_metrics(m) for m in models]
    params = [model_params(m) for m in models]
    metric_keys = sorted({k for m in metrics for k in m})
    param_keys = sorted({k for p in params for k in p})
    differing = {
        key: [p.get(key) for p in params] for key in param_keys if len({repr(p.get(key)) for p in params}) > 1
    }
    return {
        "models": names,
        "metrics": {key: [m.get(key) for m in metrics] for key in metric_keys},
        "params": differing,
    }
