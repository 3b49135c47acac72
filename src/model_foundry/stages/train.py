"""train stage: train the model of `--model` on the tokenized data and save it in the canonical layout.

One route for every model: the folder the convert stage wrote (`models/<name>/`) says what to train. A folder
with weights (an imported model, or a trained one trained further) is loaded; a scratch model's folder holds
only config.json, and a fresh, seeded model is built from it (its `vocab_size`: 0 = the tokenizer's size, more
= padded rows, fewer = an error). The loop is `training.loop`; plots and the timing log are
`training.report`'s; the folder is written by the adapter's `save_checkpoint` (metadata by `model_folder`).

Hashed outputs (the model folder, the loss plots) are deterministic for a fixed seed and thread count;
timings go to MLflow and `logs/`, which DVC does not track. A diverged run (NaN/Infinity losses or weights)
raises FoundryError before anything is written: the output folder and plots keep their previous content,
and the MLflow run ends FAILED.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

from model_foundry import tracking
from model_foundry.config import Params
from model_foundry.errors import FoundryError


def resolve_vocab_size(configured: int, tokenizer_size: int, where: str) -> int:
    """The embedding rows of a scratch model: `configured`, or the tokenizer's size when it is 0.

    A value above the tokenizer's size pads the embedding and output layers with rows no token id uses
    (nanoGPT pads GPT-2's 50257 to 50304, a multiple of 64, for faster matrix products). Raises FoundryError
    naming both numbers when `configured` is smaller than the tokenizer (`where`: the setting's name).
    """
    if configured == 0:
        return tokenizer_size
    if configured < tokenizer_size:
        padded = -(-tokenizer_size // 64) * 64
        example = f" (e.g. {padded}, a multiple of 64)" if padded != tokenizer_size else ""
        raise FoundryError(
            f"{where} = {configured} is smaller than the tokenizer's {tokenizer_size} tokens: "
            "token ids would fall outside the embedding.",
            f"Set it to 0 (the tokenizer's size, {tokenizer_size}) or to at least {tokenizer_size}{example}, "
            "then re-run the pipeline (`dvc repro`).",
        )
    return configured


def build_adapter(model_dir: Path, tokenizer_size: int, seed: int, verify: bool = True) -> tuple[Any, bool]:
    """(the model to train, whether its weights were loaded) from the model folder `model_dir`.

    A folder with weights, or of an imported architecture, is loaded (`model_folder.load_adapter`: damaged
    files are a FoundryError); a scratch folder without weights gets a fresh model built from its config.json,
    seeded with `seed`, its vocab_size resolved against the tokenizer (`resolve_vocab_size`).
    """
    import torch

    from model_foundry.adapters import get_spec
    from model_foundry.adapters.scratch import ScratchAdapter
    from model_foundry.model_folder import CONFIG_NAME, load_adapter, read_model_info

    model_dir = Path(model_dir)
    config, meta = read_model_info(model_dir)  # not a model folder: FoundryError
    spec = get_spec(meta.get("architecture") or config.get("architecture"))
    torch.manual_seed(seed)
    if spec.pretrained or any(model_dir.glob("*.safetensors")):
        return load_adapter(model_dir, verify=verify), True
    adapter_cls = spec.adapter_cls()
    if not issubclass(adapter_cls, ScratchAdapter):
        raise FoundryError(f"{model_dir} has no weights, and {spec.name} models are not built here.")
    arch = adapter_cls.config_from_folder(model_dir, spec)
    name = meta.get("model_name") or model_dir.name
    where = f"models.{name}.vocab_size ({model_dir / CONFIG_NAME})"
    vocab_size = resolve_vocab_size(arch.vocab_size, tokenizer_size, where)
    return adapter_cls.build(dataclasses.replace(arch, vocab_size=vocab_size), spec), False


def check_fits_model(adapter: Any, objective: str, block_size: int, vocab_size: int) -> None:
    """The model trains with `objective`, its context holds `block_size` tokens, its embedding every token id
    of a `vocab_size` tokenizer (imported models too); FoundryError otherwise."""
    spec = adapter.spec
    if objective not in spec.objectives:
        raise FoundryError(
            f"train.objective = {objective!r}, but the model ({spec.name}) supports only "
            f"{', '.join(spec.objectives)}.",
            "Change train.objective or train another model (--model).",
        )
    check = getattr(adapter.config, "check_objective", None)  # e.g. a bidirectional RNN is masked_lm only
    if callable(check):
        check(objective)
    if adapter.max_context is not None and block_size > adapter.max_context:
        raise FoundryError(
            f"train.block_size = {block_size} is longer than the model's context ({adapter.max_context}).",
            f"Lower train.block_size to at most {adapter.max_context}.",
        )
    capacity = getattr(adapter.config, "vocab_size", None)  # our dataclasses and HF configs both have it
    if capacity and vocab_size > capacity:
        raise FoundryError(
            f"The tokenizer has {vocab_size} tokens but the model embeds only {capacity}.",
            "Use the model's own tokenizer (drop tokenizer_override) or one of the same vocabulary.",
        )


def run(
    params: Params,
    model_dir: Path,
    data_dir: Path,
    out: Path,
    plots_dir: Path,
    logs_dir: Path = Path("logs"),
    progress: bool = True,
    verify: bool = True,
) -> dict[str, Any]:
    """Train the model of `model_dir` on `data_dir`, save it to `out`, the loss plots to `plots_dir` and the
    timing to `logs_dir`; returns the summary (final losses, tokens/s, seconds, MLflow run id, parameters).

    Raises FoundryError for missing or damaged inputs, a model that does not fit the data or settings, and
    a diverged run (nothing is written then).
    """
    from model_foundry.data.collators import make_collator
    from model_foundry.data.tokenizer_training import check_tokenizer_fits
    from model_foundry.data.tokens import TokenizedData
    from model_foundry.evaluation.finite import nonfinite_parameters
    from model_foundry.model_folder import (
        load_tokenizer,
        model_metadata,
        parent_record,
        read_model_info,
        weights_tag,
    )
    from model_foundry.training import report
    from model_foundry.training.device import Runtime
    from model_foundry.training.hooks import MetricsLog, ProgressBar
    from model_foundry.training.loop import raise_diverged, train
    from model_foundry.training.state import TrainState

    cfg = params.train
    runtime = Runtime.create(cfg.device, cfg.precision, cfg.threads)
    data = TokenizedData.open(data_dir)
    tokenizer = load_tokenizer(data.tokenizer_dir)
    check_tokenizer_fits(tokenizer, cfg.objective)
    model_dir, out = Path(model_dir), Path(out)
    adapter, loaded = build_adapter(model_dir, data.vocab_size, cfg.seed, verify)
    check_fits_model(adapter, cfg.objective, cfg.block_size, data.vocab_size)
    adapter.tokenizer = tokenizer
    collator = make_collator(cfg.objective, tokenizer, cfg.mlm_probability)
    _, base_meta = read_model_info(model_dir)
    base_name = base_meta.get("model_name") or model_dir.name
    fine_tuned_from = base_name if loaded else None  # a scratch model starts from a config, not weights
    parent = parent_record(model_dir)
    architecture = adapter.spec.name
    tags = tracking.standard_tags(out.name, architecture, fine_tuned_from, "train")
    run_name = tags.get("dvc_exp_name") or out.name
    with tracking.start_run(run_name, tags) as tracker:
        tracker.log_params(
            {**params.flat(), "parameters": adapter.num_parameters(), "runtime": runtime.describe()}
        )
        print(f"training {out.name}: {adapter.num_parameters():,} parameters on {runtime.describe()}")
        state = TrainState.create(adapter, cfg, runtime)
        hooks = [ProgressBar(progress), MetricsLog(tracker.log)]
        result = train(state, data.tokens("train"), data.tokens("val"), cfg, collator, runtime, hooks)
        if bad := nonfinite_parameters(adapter.model):  # e.g. a last-step gradient overflow, clipping off
            raise_diverged(cfg.steps, f"weights are non-finite ({', '.join(bad[:3])})", cfg)
        final_train, final_val = state.train_history[-1][1], state.val_history[-1][1]
        metadata = model_metadata(
            out.name,
            architecture,
            base_meta.get("source") or params.model.source,
            fine_tuned_from=fine_tuned_from,
            base_model=base_name,
            model_id=None,
            parent=parent,
            training={
                "objective": cfg.objective,
                "steps": cfg.steps,
                "tokens": state.tokens,
                "seed": cfg.seed,
                "tokenizer": data.meta["tokenizer"],
                "final_train_loss": round(final_train, 6),
                "final_val_loss": round(final_val, 6),
            },
        )
        saved = adapter.to("cpu").save_checkpoint(out, metadata)
        report.write_loss_csvs(Path(plots_dir), state.train_history, state.val_history)
        with tempfile.TemporaryDirectory() as tmp:
            png = report.loss_curve_png(
                state.train_history, state.val_history, Path(tmp) / "loss_curve.png", out.name
            )
            tracker.log_artifact(png)
        summary = {
            "final_train_loss": final_train,
            "final_val_loss": final_val,
            "train_tokens_per_s": result.tokens_per_second,
            "train_seconds": result.seconds,
        }
        tracker.log(summary)
        weights_sha = weights_tag(saved)
        if weights_sha:
            tracker.set_tags({tracking.WEIGHTS_TAG: weights_sha})
            # DVC skips evaluate when these exact weights were evaluated before: give this run that
            # evaluation. In a fresh clone the store is empty, but dvc.lock records how these bytes scored.
            if tracker.attach_earlier_evaluation(weights_sha) is None:
                tracker.attach_recorded_evaluation(out)
        timing = {"model": out.name, "run_id": tracker.run_id, "runtime": runtime.describe(), **summary}
        report.write_timing(Path(logs_dir), timing)
    return {**summary, "run_id": tracker.run_id, "parameters": adapter.num_parameters()}
