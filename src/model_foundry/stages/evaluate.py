"""evaluate stage: metrics.json (DVC) and the same numbers on the model's MLflow training runs and its
LoggedModel.

Non-finite weights or metrics (a diverged or damaged model) raise FoundryError: nothing is written.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_foundry import tracking
from model_foundry.config import Params
from model_foundry.errors import FoundryError
from model_foundry.io import write_json

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter
    from model_foundry.data.tokens import TokenizedData
    from model_foundry.training.device import Runtime


def _bytes_per_token(data: TokenizedData) -> float:
    """UTF-8 bytes of the validation documents per validation token (separators counted as tokens)."""
    return float(data.meta["bytes"]["val"] / data.meta["tokens"]["val"])


def _causal(params: Params, adapter: BaseAdapter, data: TokenizedData, runtime: Runtime) -> dict[str, Any]:
    """`evaluation.metrics.causal_metrics` on the validation split, plus the unigram baseline."""
    from model_foundry.evaluation.metrics import causal_metrics, unigram_baseline

    bpt = _bytes_per_token(data)
    ev = params.evaluate
    metrics: dict[str, Any] = causal_metrics(
        adapter, data.tokens("val"), params.train.block_size, ev.batch_size, ev.max_batches, runtime, bpt
    )
    metrics["unigram"] = unigram_baseline(data.tokens("train"), data.tokens("val"), data.vocab_size, bpt)
    return metrics


def _packed(params: Params, adapter: BaseAdapter, data: TokenizedData, runtime: Runtime) -> dict[str, Any]:
    """Chat/prompt-completion data: `evaluation.metrics.packed_causal_metrics` over the trained tokens of the
    validation windows, plus the unigram baseline over the same tokens (no bits per byte for either)."""
    from model_foundry.evaluation.metrics import masked_unigram_baseline, packed_causal_metrics

    ev = params.evaluate
    val = data.packed_windows("val")
    metrics: dict[str, Any] = packed_causal_metrics(adapter, val, ev.batch_size, ev.max_batches, runtime)
    metrics["data_format"] = data.meta.get("format", "chat")
    metrics["unigram"] = masked_unigram_baseline(data.packed_windows("train"), val, data.vocab_size)
    return metrics


def _masked(params: Params, adapter: BaseAdapter, data: TokenizedData, runtime: Runtime) -> dict[str, Any]:
    """`evaluation.masked.masked_metrics` on the validation split, plus the unigram baseline."""
    from model_foundry.evaluation.masked import masked_metrics
    from model_foundry.evaluation.metrics import unigram_baseline
    from model_foundry.model_folder import load_tokenizer

    ev = params.evaluate
    metrics: dict[str, Any] = masked_metrics(
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
    bpt = _bytes_per_token(data)
    metrics["unigram"] = unigram_baseline(data.tokens("train"), data.tokens("val"), data.vocab_size, bpt)
    return metrics


# objective → metric function
EVALUATORS: dict[str, Callable[[Params, BaseAdapter, TokenizedData, Runtime], dict[str, Any]]] = {
    "causal_lm": _causal,
    "masked_lm": _masked,
}


def run(
    params: Params, model_dir: Path, data_dir: Path, metrics_out: Path, verify: bool = True
) -> dict[str, Any]:
    """Evaluate the model folder `model_dir` on the validation split of `data_dir` (the tokenize stage's
    output); write `metrics_out` (JSON) and log the same numbers to MLflow. Returns the metrics.

    By `train.objective`:
      causal_lm: val_loss (mean nats per predicted token), perplexity (exp(val_loss)), bits_per_byte,
                 tokens_scored (`evaluation.metrics.causal_metrics`);
      masked_lm: mlm_loss (nats per masked token), mlm_accuracy, masked_tokens, pseudo_perplexity,
                 pseudo_ppl_tokens, pseudo_ppl_sequences (`evaluation.masked.masked_metrics`);
    both with "unigram": the same loss, perplexity and bits per byte of a context-free model
    (`evaluation.metrics.unigram_baseline`). At most evaluate.max_batches batches of evaluate.batch_size
    windows of train.block_size tokens are scored.
    Chat/prompt_completion data (packed windows with loss masks): val_loss, perplexity, tokens_scored,
    windows_scored over the assistant/completion tokens only, a `note` saying so, `data_format`, and the
    unigram baseline over the same tokens; no bits_per_byte (`evaluation.metrics.packed_causal_metrics`).

    The metrics go to every MLflow training run that produced these exact weights (found by their sha256,
    `model_folder.weights_tag`), or to a new run `<model>-eval` (tag stage=evaluate, with `data_dir` as its
    "evaluation" dataset) when none did; either way linked to the model's LoggedModel
    (`tracking.ensure_logged_model`, created if the store has none for these bytes). `verify` checks the
    weights against the sha256 in metadata.json first. Raises FoundryError for a damaged or weightless model
    folder (`model_folder.load_adapter`), a validation split too short for one window, or weights or a metric
    that are NaN/Infinity (nothing is written then).

    A model whose perplexity is above the unigram baseline's gets a `warning:` line on stderr saying what to
    try (`baseline_warning`) and the MLflow tag `WORSE_THAN_BASELINE_TAG` on its runs.
    """
    from model_foundry.data.tokens import TokenizedData
    from model_foundry.evaluation.finite import require_finite_metrics, require_finite_weights
    from model_foundry.model_folder import load_adapter, read_model_info, weights_tag
    from model_foundry.registry.dvc import dvc_md5
    from model_foundry.training.device import Runtime

    cfg = params.train
    runtime = Runtime.create(cfg.device, cfg.precision, cfg.threads)
    adapter = load_adapter(model_dir, device=runtime.device, verify=verify)  # damaged files: FoundryError
    require_finite_weights(adapter.model, model_dir)
    data = TokenizedData.open(data_dir)
    if data.packed:
        data.check_objective(cfg.objective)  # masked_lm on chat data: FoundryError with a hint
        metrics = _packed(params, adapter, data, runtime)
    else:
        metrics = EVALUATORS[cfg.objective](params, adapter, data, runtime)
    require_finite_metrics(metrics, model_dir)
    write_json(metrics_out, metrics)

    _, meta = read_model_info(model_dir)
    worse = baseline_warning(metrics, Path(model_dir).name, meta)
    if worse is not None:
        print(f"warning: {worse}", file=sys.stderr)
    flat = tracking.evaluation_metrics(metrics)
    weights_sha = weights_tag(meta)
    run_ids = tracking.find_runs_by_weights(weights_sha) if weights_sha else []
    if run_ids:  # linked to the model's LoggedModel (made by the newest of these runs, if not yet there)
        baseline_tag = {WORSE_THAN_BASELINE_TAG: "true" if worse is not None else None}
        tracking.log_evaluation(run_ids, flat, _logged_model(model_dir, meta, run_ids[0]), baseline_tag)
        return metrics
    name = meta.get("model_name", Path(model_dir).name)
    tags = tracking.standard_tags(name, meta["architecture"], meta.get("fine_tuned_from"), "evaluate")
    if worse is not None:
        tags[WORSE_THAN_BASELINE_TAG] = "true"
    with tracking.start_run(f"{Path(model_dir).name}-eval", tags) as tracker:
        digest = dvc_md5(data_dir)
        tracker.log_dataset(tracking.dataset_name(params.data.source), digest, data_dir, context="evaluation")
        tracker.log(flat, model_id=_logged_model(model_dir, meta, tracker.run_id))
    return metrics


# MLflow tag set to "true" on the runs of a model that scores worse than the unigram baseline (removed when
# a later evaluation of the same weights does not)
WORSE_THAN_BASELINE_TAG = "worse_than_unigram_baseline"


def baseline_warning(metrics: dict[str, Any], model: str, meta: dict[str, Any]) -> str | None:
    """The warning (without its "warning: " prefix) when the model's perplexity is above the unigram
    baseline's (`evaluation.table.worse_than_baseline`), saying what to try; None when it is not.
    `meta` (the folder's metadata.json) tells a fine-tune (`fine_tuned_from`) from a model trained from
    scratch."""
    from model_foundry.evaluation.table import worse_than_baseline

    verdict = worse_than_baseline(metrics)
    if verdict is None:
        return None
    measure, value, base = verdict
    what = measure.replace("_", "-")
    if meta.get("fine_tuned_from"):
        tips = (
            "a lower train.lr or fewer train.steps (the fine-tune may have overwritten what the parent "
            "knew), or check that the training data is like the validation text"
        )
    else:
        tips = (
            "more train.steps, a train.lr that suits the model size, or a bigger model; check the loss curve "
            "(plots/train_loss.csv) for a loss that stalls or rises"
        )
    return (
        f"{model} scores worse than the unigram baseline ({what} {value:,.2f} against {base:,.2f}): it "
        f"predicts the validation text worse than token frequencies alone. Try {tips}."
    )


def _logged_model(model_dir: Path, meta: dict[str, Any], source_run_id: str) -> str | None:
    """The id of the folder's LoggedModel (`tracking.ensure_logged_model`), or None with a note when the
    folder's name is no valid MLflow model name (`foundry evaluate --model some/gpt2.v1` still works)."""
    try:
        return tracking.ensure_logged_model(model_dir, meta, source_run_id)
    except FoundryError as e:
        print(f"note: {e.message} The metrics are logged without a LoggedModel.", file=sys.stderr)
        return None
