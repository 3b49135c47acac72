"""evaluate stage: metrics.json (DVC) and the same numbers on the model's MLflow training runs.

Non-finite weights or metrics (a diverged or damaged model) raise FoundryError: nothing is written.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from model_foundry import tracking
from model_foundry.config import Params
from model_foundry.io import read_json, write_json


def _causal(params: Params, adapter: Any, data: Any, runtime: Any) -> dict[str, Any]:
    from model_foundry.evaluation.metrics import causal_metrics, unigram_baseline

    bpt = data.meta["bytes"]["val"] / data.meta["tokens"]["val"]
    ev = params.evaluate
    metrics = causal_metrics(
        adapter, data.tokens("val"), params.train.block_size, ev.batch_size, ev.max_batches, runtime, bpt
    )
    metrics["unigram"] = unigram_baseline(data.tokens("train"), data.tokens("val"), data.vocab_size, bpt)
    return metrics


def _masked(params: Params, adapter: Any, data: Any, runtime: Any) -> dict[str, Any]:
    from model_foundry.adapters.base import load_tokenizer
    from model_foundry.evaluation.masked import masked_metrics
    from model_foundry.evaluation.metrics import unigram_baseline

    ev = params.evaluate
    metrics = masked_metrics(
        adapter,
        data.tokens("val"),
        load_tokenizer(data.tokenizer_dir),
        params.train.block_size,
        ev.batch_size,
        ev.max_batches,
        params.train.mlm_probability,
        ev.pseudo_ppl_sequences,
        runtime,
    )
    bpt = data.meta["bytes"]["val"] / data.meta["tokens"]["val"]
    metrics["unigram"] = unigram_baseline(data.tokens("train"), data.tokens("val"), data.vocab_size, bpt)
    return metrics


# objective → metric function
EVALUATORS: dict[str, Callable[[Params, Any, Any, Any], dict[str, Any]]] = {
    "causal_lm": _causal,
    "masked_lm": _masked,
}


def run(
    params: Params, model_dir: Path, data_dir: Path, metrics_out: Path, verify: bool = True
) -> dict[str, Any]:
    """Evaluate the model folder on the validation split; write `metrics_out` and log to MLflow.

    The metrics go to every MLflow training run that produced these exact weights (found by their sha256),
    or to a new run when none did. Raises FoundryError when the weights or a metric are NaN/Infinity.
    """
    from model_foundry.adapters.base import METADATA_NAME, load_adapter
    from model_foundry.data.tokens import TokenizedData
    from model_foundry.evaluation.finite import require_finite_metrics, require_finite_weights
    from model_foundry.training.device import Runtime

    cfg = params.train
    runtime = Runtime.create(cfg.device, cfg.precision, cfg.threads)
    adapter = load_adapter(model_dir, device=runtime.device, verify=verify)  # damaged files: FoundryError
    require_finite_weights(adapter.model, model_dir)
    data = TokenizedData.open(data_dir)
    metrics = EVALUATORS[cfg.objective](params, adapter, data, runtime)
    require_finite_metrics(metrics, model_dir)
    write_json(metrics_out, metrics)

    meta = read_json(Path(model_dir) / METADATA_NAME)
    flat = tracking.evaluation_metrics(metrics)
    weights_sha = tracking.weights_tag(meta)
    run_ids = tracking.find_runs_by_weights(weights_sha) if weights_sha else []
    if run_ids:
        tracking.log_evaluation(run_ids, flat)
        return metrics
    tags = tracking.standard_tags(
        meta.get("model_name", Path(model_dir).name),
        meta["architecture"],
        meta.get("fine_tuned_from"),
        "evaluate",
    )
    with tracking.start_run(f"{Path(model_dir).name}-eval", tags) as tracker:
        tracker.log(flat)
    return metrics
