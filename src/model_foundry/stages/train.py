"""train stage: train the model on the tokenized data and save it in the canonical layout.

Hashed outputs (the model folder, the loss plots) are deterministic for a fixed seed and thread count;
timings go to MLflow and `logs/`, which DVC does not track. A diverged run (NaN/Infinity losses or weights)
raises FoundryError before anything is written: the output folder and plots keep their previous content,
and the MLflow run ends FAILED.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import math
import tempfile
from pathlib import Path
from typing import Any

from model_foundry import tracking
from model_foundry.config import Params
from model_foundry.io import atomic_write_text, write_json
from model_foundry.metadata import model_metadata


def _csv(rows: list[tuple[int, float]], column: str) -> str:
    """A plot CSV (step, value); raises ValueError on a NaN/Infinity value: it is never written."""
    if bad := [step for step, value in rows if not math.isfinite(value)]:
        raise ValueError(f"non-finite {column} at steps {bad}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["step", column])
    writer.writerows((step, f"{value:.6f}") for step, value in rows)
    return buf.getvalue()


def build_adapter(params: Params, model_dir: Path, vocab_size: int, verify: bool = True) -> Any:
    """A fresh model for scratch entries (seeded), the converted checkpoint otherwise."""
    import torch

    from model_foundry.adapters.base import load_adapter, read_model_info

    entry = params.model
    torch.manual_seed(params.train.seed)
    if entry.is_scratch:
        read_model_info(model_dir)  # the convert stage's folder must exist
        config = dataclasses.replace(entry.arch, vocab_size=vocab_size)
        return entry.spec.adapter_cls().build(config)
    return load_adapter(model_dir, verify=verify)  # damaged files: FoundryError


def check_fits_model(adapter: Any, block_size: int, vocab_size: int) -> None:
    """Training sequences must fit the model's context, token ids its embedding (imported models too)."""
    from model_foundry.errors import FoundryError

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
    from model_foundry.adapters.base import METADATA_NAME, load_tokenizer
    from model_foundry.data.collators import make_collator
    from model_foundry.data.tokenizer_training import check_tokenizer_fits
    from model_foundry.data.tokens import TokenizedData
    from model_foundry.evaluation.finite import nonfinite_parameters
    from model_foundry.io import read_json
    from model_foundry.training.device import Runtime
    from model_foundry.training.loop import raise_diverged, train

    cfg = params.train
    entry = params.model
    runtime = Runtime.create(cfg.device, cfg.precision, cfg.threads)
    data = TokenizedData.open(data_dir)
    tokenizer = load_tokenizer(data.tokenizer_dir)
    check_tokenizer_fits(tokenizer, cfg.objective)
    adapter = build_adapter(params, Path(model_dir), data.vocab_size, verify)
    check_fits_model(adapter, cfg.block_size, data.vocab_size)
    adapter.tokenizer = tokenizer
    collator = make_collator(cfg.objective, tokenizer, cfg.mlm_probability)
    parent = None if entry.is_scratch else params.model_name
    out = Path(out)
    tags = tracking.standard_tags(out.name, entry.architecture, parent, "train")
    run_name = tags.get("dvc_exp_name") or out.name
    with tracking.start_run(run_name, tags) as tracker:
        tracker.log_params(
            {**params.flat(), "parameters": adapter.num_parameters(), "runtime": runtime.describe()}
        )
        print(f"training {out.name}: {adapter.num_parameters():,} parameters on {runtime.describe()}")
        result = train(
            adapter, data.tokens("train"), data.tokens("val"), cfg, collator, runtime, tracker.log, progress
        )
        if bad := nonfinite_parameters(adapter.model):  # e.g. a last-step gradient overflow, clipping off
            raise_diverged(cfg.steps, f"weights are non-finite ({', '.join(bad[:3])})", cfg)
        metadata = model_metadata(
            out.name,
            entry.architecture,
            entry.source,
            fine_tuned_from=parent,
            base_model=params.model_name,
            model_id=None,
            training={
                "objective": cfg.objective,
                "steps": cfg.steps,
                "tokens": result.tokens,
                "seed": cfg.seed,
                "tokenizer": data.meta["tokenizer"],
                "final_train_loss": round(result.train_history[-1][1], 6),
                "final_val_loss": round(result.val_history[-1][1], 6),
            },
        )
        adapter.to("cpu").save_checkpoint(out, metadata)
        plots_dir = Path(plots_dir)
        atomic_write_text(plots_dir / "train_loss.csv", _csv(result.train_history, "train_loss"))
        atomic_write_text(plots_dir / "val_loss.csv", _csv(result.val_history, "val_loss"))
        with tempfile.TemporaryDirectory() as tmp:
            png = tracking.loss_curve_png(
                result.train_history, result.val_history, Path(tmp) / "loss_curve.png", out.name
            )
            tracker.log_artifact(png)
        summary = {
            "final_train_loss": result.train_history[-1][1],
            "final_val_loss": result.val_history[-1][1],
            "train_tokens_per_s": result.tokens_per_second,
            "train_seconds": result.seconds,
        }
        tracker.log(summary)
        weights_sha = tracking.weights_tag(read_json(out / METADATA_NAME))
        tracker.set_tags({tracking.WEIGHTS_TAG: weights_sha})
        # DVC skips evaluate when these exact weights were evaluated before: give this run that evaluation.
        # In a fresh clone the store is empty, but dvc.lock records how these exact bytes scored.
        if tracker.attach_earlier_evaluation(weights_sha) is None:
            tracker.attach_recorded_evaluation(out)
        timing = {"model": out.name, "run_id": tracker.run_id, "runtime": runtime.describe(), **summary}
        write_json(Path(logs_dir) / "train_timing.json", timing)
    return {**summary, "run_id": tracker.run_id, "parameters": adapter.num_parameters()}
