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


def flatten(data: dict[str, Any], prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """Nested dicts as joined keys: {"a": {"b": 1}} → {"a.b": 1} (`sep` "_" gives MLflow's metric names)."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}{sep}", sep))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def model_metrics(model: ModelRecord) -> dict[str, float]:
    """The model's numeric metrics, named as MLflow names them (`unigram_perplexity`): dvc.lock's metrics
    file, else its newest MLflow evaluation (`eval_*` without the prefix)."""
    if model.metrics:
        source = flatten(model.metrics, sep="_")
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


SECTIONS = ("data", "tokenizer", "train", "evaluate")  # params.yaml sections a catalog entry can override


def model_params(model: ModelRecord) -> dict[str, Any] | None:
    """The effective params of the stage that made the model's shown version, from dvc.lock (dotted keys),
    or None when no stage recorded any (an import tracked by a .dvc file).

    A catalog entry's own `train:`/`tokenizer:`/... keys win over the global sections, key by key (as the
    stages apply them); its architecture keys are `model.<key>`.
    """
    version = next((v for v in model.versions if v.checksum == model.checksum), None)
    recorded = version.params if version else {}
    if not recorded:
        return None
    entry: dict[str, Any] = {}
    sections: dict[str, dict[str, Any]] = {}
    params: dict[str, Any] = {}
    for key, value in recorded.items():
        if key.startswith("models.") and isinstance(value, dict):
            entry = value
        elif key in SECTIONS and isinstance(value, dict):
            sections[key] = dict(value)
        elif isinstance(value, dict):
            params.update(flatten(value, f"{key}."))
        else:
            params[key] = value
    for key, value in entry.items():
        if key in SECTIONS and isinstance(value, dict) and key in sections:
            sections[key].update(value)
        elif isinstance(value, dict):
            params.update(flatten(value, f"model.{key}."))
        else:
            params[f"model.{key}"] = value
    for name, values in sections.items():
        params.update(flatten(values, f"{name}."))
    return params


def compare_models(registry: Registry, names: list[str]) -> dict[str, Any]:
    """{"models": names, "metrics": {key: [value per model]}, "params": {key: [value per model]},
    "params_unknown": [names without recorded params]}: the params shown are those every model with recorded
    params has and whose values differ. Raises FoundryError for fewer than two names or an unknown one."""
    if len(names) < 2:
        raise FoundryError(
            "compare needs two or more model names.",
            "e.g. `foundry compare gpt-tiny-trained gpt-bpe-trained`.",
        )
    models = [registry.get(name) for name in names]
    metrics = [model_metrics(m) for m in models]
    params = [model_params(m) for m in models]
    known = [p for p in params if p is not None]
    shared = set.intersection(*(set(p) for p in known)) if known else set()
    differing = {
        key: [None if p is None else p.get(key) for p in params]
        for key in sorted(shared)
        if len({repr(p[key]) for p in known}) > 1
    }
    return {
        "models": names,
        "metrics": {key: [m.get(key) for m in metrics] for key in sorted({k for m in metrics for k in m})},
        "params": differing,
        "params_unknown": [n for n, p in zip(names, params, strict=True) if p is None],
    }
