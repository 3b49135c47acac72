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
import shutil
import sys
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_foundry import tracking
from model_foundry.config import Params, TrainConfig
from model_foundry.errors import FoundryError
from model_foundry.model_folder import model_metadata

if TYPE_CHECKING:
    from model_foundry.adapters.lora import LoRAInfo
    from model_foundry.training.resume import RunIdentity


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
    from model_foundry.model_folder import CONFIG_NAME, is_adapter_only, load_adapter, read_model_info

    model_dir = Path(model_dir)
    if is_adapter_only(model_dir):  # a LoRA output without merged weights: train on the merged model
        from model_foundry.adapters.lora import merge

        return merge(load_adapter(model_dir, verify=verify)), True
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
    resume_from: Path | None = None,
) -> dict[str, Any]:
    """Train the model of `model_dir` on `data_dir`, save it to `out`, the loss plots and the settings used
    to `plots_dir` (`training.report`: train_loss.csv, val_loss.csv, effective_params.json)
    and the timing to `logs_dir`; returns the summary (final losses, tokens/s, seconds, MLflow run id,
    parameters, the step resumed from or None).

    `train.method`: full trains every weight; lora trains peft adapters on the frozen model and writes the
    merged model plus `adapter/` (`save_lora_output`). Checkpoints go to `<project root>/checkpoints/<out
    name>/` every `train.checkpoint_interval` steps and on SIGINT/SIGTERM (then training stops, nothing is
    saved to `out`, and FoundryError says how to continue); `train.resume: auto` continues from a matching
    one (`training.resume`), `resume_from` from that checkpoint (which must match). The checkpoints are
    deleted once the model is saved. The MLflow run of a resumed checkpoint continues (same run id): steps
    between the checkpoint and the interruption are logged twice, with the same values (resume is exact).

    Under torchrun (`train.nproc` > 1) every rank runs this; rank 0 alone logs, prints and writes. With
    `train.strategy: fsdp` the checkpoints are sharded (`training.checkpoint`) and the trained model is
    gathered to rank 0 and rebuilt whole there (`_unsharded`), so `out` has the one-process layout.

    Raises FoundryError for missing or damaged inputs, a model that does not fit the data or settings, LoRA
    on a model without trained weights, a checkpoint that does not match (with `resume_from`), a stop by
    signal, and a diverged run (nothing is written then).
    """
    from model_foundry.data.tokenizer_training import check_tokenizer_fits
    from model_foundry.data.tokens import TokenizedData
    from model_foundry.evaluation.finite import nonfinite_parameters
    from model_foundry.model_folder import load_tokenizer, parent_record, read_model_info, weights_tag
    from model_foundry.project import project_root
    from model_foundry.registry.dvc import dvc_md5
    from model_foundry.training import distributed, report
    from model_foundry.training.checkpoint import CheckpointHook, load_checkpoint, read_sidecar
    from model_foundry.training.device import Runtime
    from model_foundry.training.hooks import MetricsLog, ProgressBar
    from model_foundry.training.launch import relaunch_if_needed
    from model_foundry.training.loop import raise_diverged, train
    from model_foundry.training.resume import (
        RunIdentity,
        check_settings,
        checkpoint_root,
        digest_settings,
        explicit_checkpoint,
        params_digest,
        remove_run_checkpoints,
        resumable_checkpoint,
    )
    from model_foundry.training.state import TrainState

    cfg = params.train
    relaunch_if_needed(cfg)  # train.nproc > 1 outside torchrun: this command again under torchrun, then exit
    runtime = Runtime.create(cfg.device, cfg.precision, cfg.threads)
    job = runtime.dist  # rank 0 alone talks to MLflow, prints and writes; every rank trains
    data = TokenizedData.open(data_dir)
    tokenizer = load_tokenizer(data.tokenizer_dir)
    check_tokenizer_fits(tokenizer, cfg.objective)
    model_dir, out = Path(model_dir), Path(out)
    adapter, loaded = build_adapter(model_dir, data.vocab_size, cfg.seed, verify)
    check_fits_model(adapter, cfg.objective, cfg.block_size, data.vocab_size)
    adapter.tokenizer = tokenizer
    collator = data.collator(cfg.objective, tokenizer, cfg.mlm_probability)
    _, base_meta = read_model_info(model_dir)
    base_name = base_meta.get("model_name") or model_dir.name
    fine_tuned_from = base_name if loaded else None  # a scratch model starts from a config, not weights
    parent = parent_record(model_dir)
    lora = _apply_method(adapter, cfg, loaded, model_dir)
    total_parameters = adapter.num_parameters()
    if cfg.gradient_checkpointing:
        adapter.enable_gradient_checkpointing()
    settings = digest_settings(params)
    identity = RunIdentity(out.name, cfg.method, parent["sha256"], params_digest(params), dvc_md5(data_dir))
    state = TrainState.create(adapter, cfg, runtime)
    root = checkpoint_root(project_root(), out.name)
    start = None
    if resume_from is not None:
        start = explicit_checkpoint(resume_from)
        check_settings(read_sidecar(start), identity, settings, start)
    elif cfg.resume == "auto":
        start = resumable_checkpoint(root, identity, state, _note, settings)
    run_id = (
        tracking.existing_run(read_sidecar(start).get("mlflow_run_id")) if start and job.is_main else None
    )
    architecture = adapter.spec.name
    tags = tracking.standard_tags(out.name, architecture, fine_tuned_from, "train")
    # the run is named after the model (`<model>@<experiment>` under `dvc exp run`; also the tag dvc_exp_name)
    name = tracking.check_model_name(out.name)
    run = tracking.start_run(name, tags, run_id=run_id) if job.is_main else distributed.NullTracker()
    say = print if job.is_main else _quiet
    with run as tracker:
        tracker.set_tags(lineage_tags(identity, fine_tuned_from, lora))
        if run_id is None:  # a continued run has its params and dataset already
            tracker.log_params(
                {
                    **params.flat(),
                    "parameters": total_parameters,
                    "runtime": runtime.describe(),
                    "world_size": job.world_size,
                }
            )
            tracker.log_dataset(tracking.dataset_name(params.data.source), identity.data_hash, data_dir)
        say(f"training {out.name}: {total_parameters:,} parameters on {runtime.describe()}")
        if lora is not None:
            say(lora.describe())
        resumed = None
        if start is not None:
            load_checkpoint(start, state, identity.as_dict())
            resumed = state.step
            say(
                f"resuming from {start} (step {state.step} of {cfg.steps}); MLflow run {tracker.run_id} "
                "continues"
            )
        sidecar = {**identity.as_dict(), "mlflow_run_id": tracker.run_id, "settings": settings}
        with CheckpointHook(
            root, cfg.checkpoint_interval, cfg.keep_checkpoints, sidecar, before_save=tracker.flush
        ) as checkpoints:
            # every rank has the checkpoint hook (a signal stops all together); rank 0 alone writes
            hooks = (
                [ProgressBar(progress), MetricsLog(tracker.log), checkpoints]
                if job.is_main
                else [checkpoints]
            )
            result = train(state, data.windows("train"), data.windows("val"), cfg, collator, runtime, hooks)
        if result.stopped:
            if not job.is_main:  # rank 0 alone says so (and fails the torchrun job)
                distributed.destroy()
                raise SystemExit(0)
            raise FoundryError(
                f"Training stopped at step {state.step} of {cfg.steps} by a signal; the checkpoint "
                f"{checkpoints.saved[-1]} holds it. No model was saved to {out}.",
                "Run the same command again (`dvc repro`, or `dvc exp run` with the same params) to continue "
                "from it: train.resume: auto picks it up.",
            )
        if distributed.is_sharded(adapter.model):  # FSDP: rank 0 gets the whole model, the others are done
            adapter = _unsharded(adapter, model_dir, data.vocab_size, cfg, loaded, verify)
        if adapter is not None and (bad := nonfinite_parameters(adapter.model)):  # e.g. a last-step overflow
            raise_diverged(cfg.steps, f"weights are non-finite ({', '.join(bad[:3])})", cfg)
        final_train, final_val = state.train_history[-1][1], state.val_history[-1][1]
        training: dict[str, Any] = {
            "objective": cfg.objective,
            "method": cfg.method,
            "steps": cfg.steps,
            "tokens": state.tokens,
            "seed": cfg.seed,
            "tokenizer": data.meta["tokenizer"],
            "final_train_loss": round(final_train, 6),
            "final_val_loss": round(final_val, 6),
            "params_digest": identity.params_digest,
            "dataset_md5": identity.data_hash,
        }
        if lora is not None:
            training["lora"] = lora_record(cfg, lora)
        metadata = model_metadata(
            out.name,
            architecture,
            base_meta.get("source") or params.model.source,
            fine_tuned_from=fine_tuned_from,
            base_model=base_name,
            model_id=None,
            parent=parent,
            training=training,
        )
        if not job.is_main:  # rank 0 writes the model, plots and logs and prints the summary
            distributed.destroy()
            raise SystemExit(0)
        adapter.to("cpu")
        if lora is None:
            saved = adapter.save_checkpoint(out, metadata)
        else:
            saved = save_lora_output(adapter, out, metadata, base_name, cfg.merge, model_dir)
        remove_run_checkpoints(root, identity)  # the model is saved: its checkpoints are spent
        report.write_loss_csvs(Path(plots_dir), state.train_history, state.val_history)
        with tempfile.TemporaryDirectory() as tmp:
            png = report.loss_curve_png(
                state.train_history, state.val_history, Path(tmp) / "loss_curve.png", out.name
            )
            tracker.log_artifact(png)
        settings_used = report.effective_params(
            params, total_parameters, data.meta["tokenizer"], data.vocab_size
        )
        report.write_effective_params(Path(plots_dir), settings_used)
        summary = {
            "final_train_loss": final_train,
            "final_val_loss": final_val,
            "train_tokens_per_s": result.tokens_per_second,
            "train_seconds": result.seconds,
        }
        tracker.log(summary)
        tracker.log_model(out, saved)  # the LoggedModel (external: weights stay in the DVC-tracked folder)
        weights_sha = weights_tag(saved)
        if weights_sha:
            tracker.set_tags({tracking.WEIGHTS_TAG: weights_sha})
            # DVC skips evaluate when these exact weights were evaluated before: give this run that
            # evaluation. In a fresh clone the store is empty, but dvc.lock records how these bytes scored.
            if tracker.attach_earlier_evaluation(weights_sha) is None:
                tracker.attach_recorded_evaluation(out)
        timing = {"model": out.name, "run_id": tracker.run_id, "runtime": runtime.describe(), **summary}
        report.write_timing(Path(logs_dir), timing)
    distributed.destroy()
    return {**summary, "run_id": tracker.run_id, "parameters": total_parameters, "resumed_from": resumed}


def default_output(params: Params, model_dir: Path) -> Path:
    """`foundry train` without --out: `models/<train.output_name>`, else `models/<parent>-<method>` beside the
    parent folder (`gpt-tiny-trained-lora`). Raises FoundryError when that folder exists (pass --out to
    replace a folder on purpose) or the name breaks the naming rules."""
    from model_foundry.naming import check_name

    name = params.train.output_name or f"{Path(model_dir).name}-{params.train.method}"
    check_name(name, "The output name")
    out = Path(model_dir).parent / name
    if out.exists():
        raise FoundryError(
            f"The output {out} exists already.",
            f"Pass --out {out} to replace it, or set train.output_name (or --out) to a new name.",
        )
    return out


def _note(line: str) -> None:
    """A one-line note on stderr, from rank 0 only under torchrun."""
    from model_foundry.training.distributed import current

    if current().is_main:
        print(line, file=sys.stderr)


def _unsharded(
    adapter: Any, model_dir: Path, vocab_size: int, cfg: TrainConfig, loaded: bool, verify: bool
) -> Any:
    """The trained FSDP-sharded `adapter` as a whole model on rank 0's CPU, None on the other ranks.

    Every rank takes part in gathering the shards (`distributed.gather_full_state`); rank 0 then builds the
    same model again unsharded (`build_adapter`, and LoRA's wrapping for train.method: lora) and loads the
    gathered weights into it, so it is saved exactly as a one-process run's model is.
    """
    from model_foundry.training import distributed

    full = distributed.gather_full_state(adapter.model)
    if not distributed.current().is_main:
        return None
    whole, _ = build_adapter(model_dir, vocab_size, cfg.seed, verify)
    whole.tokenizer = adapter.tokenizer
    _apply_method(whole, cfg, loaded, model_dir)
    whole.model.load_state_dict(full)
    return whole


def _quiet(*args: Any, **kwargs: Any) -> None:
    """`print` on ranks other than 0."""


def _apply_method(adapter: Any, cfg: TrainConfig, loaded: bool, model_dir: Path) -> LoRAInfo | None:
    """`train.method: lora`: inject the adapters (only they train) and return what was done; full: None.

    Raises FoundryError for LoRA on a model without trained weights (a scratch config) and for targets
    peft cannot adapt (`adapters.lora.apply_lora`).
    """
    if cfg.method != "lora":
        return None
    from model_foundry.adapters.lora import apply_lora

    if not loaded:
        raise FoundryError(
            f"train.method = 'lora' adapts trained weights, but {model_dir} holds a {adapter.spec.name} "
            "config without weights (a scratch model).",
            "Train it first with train.method: full, then fine-tune the trained model with LoRA: a catalog "
            "entry with `source: model:<name>-trained` and `train: {method: lora}`.",
        )
    return apply_lora(adapter, cfg.lora)


def lora_record(cfg: TrainConfig, lora: LoRAInfo) -> dict[str, Any]:
    """The LoRA settings and counts metadata.json and MLflow record (targets as applied, sorted)."""
    return {
        "r": cfg.lora.r,
        "alpha": cfg.lora.alpha,
        "dropout": cfg.lora.dropout,
        "target_modules": lora.targets,
        "modules_to_save": lora.modules_to_save,
        "trainable_parameters": lora.trainable,
        "total_parameters": lora.total,
    }


def lineage_tags(identity: RunIdentity, parent: str | None, lora: LoRAInfo | None) -> dict[str, str]:
    """The MLflow tags that say where a trained model came from (the same facts as its metadata.json)."""
    tags = {
        "foundry.parent": parent or "",
        "foundry.parent_checksum": identity.parent_checksum or "",
        "foundry.method": identity.method,
        "foundry.params_digest": identity.params_digest,
        "foundry.dataset_md5": identity.data_hash,
    }
    if lora is not None:
        tags["foundry.lora_targets"] = ",".join(lora.targets)
    return tags


def save_lora_output(
    adapter: Any, out: Path, metadata: dict[str, Any], base_name: str, merge: bool, model_dir: Path
) -> dict[str, Any]:
    """Write a LoRA run's folder `out` atomically and return its metadata.json.

    `out/adapter/`: the PEFT-format adapter (adapter_config.json + adapter_model.safetensors, canonical bytes,
    `base_model_name_or_path` = `base_name`), which `peft.PeftModel.from_pretrained(base, out / "adapter")`
    loads; in a subfolder, because a top-level adapter_config.json makes transformers' from_pretrained treat
    the folder as an adapter. `merge`: the merged full model beside it in the canonical layout (plain
    transformers loads it); otherwise metadata.json, config.json (the parent's) and the tokenizer only, and
    `model_folder.load_adapter` applies the adapter to the parent folder when loading it.
    """
    from model_foundry.adapters.lora import ADAPTER_WEIGHTS_NAME, write_lora_files
    from model_foundry.adapters.lora import merge as merge_lora
    from model_foundry.io import atomic_dir, sha256_file
    from model_foundry.model_folder import ADAPTER_DIR, CONFIG_NAME, write_metadata

    with atomic_dir(out) as tmp, tempfile.TemporaryDirectory() as staging:
        (Path(staging) / ADAPTER_DIR).mkdir()
        write_lora_files(adapter, Path(staging) / ADAPTER_DIR, base_name)
        weights = Path(staging) / ADAPTER_DIR / ADAPTER_WEIGHTS_NAME
        training = {**metadata["training"], "adapter_sha256": sha256_file(weights)}
        metadata = {**metadata, "training": training}
        if merge:
            saved = merge_lora(adapter).save_checkpoint(tmp, metadata)
        else:
            shutil.copyfile(model_dir / CONFIG_NAME, tmp / CONFIG_NAME)
            if adapter.tokenizer is not None:
                adapter.tokenizer.save_pretrained(str(tmp))
            info = {"parameters": adapter.num_parameters(), "dtype": _dtype(adapter), "sha256": {}}
            saved = write_metadata(tmp, metadata, info)
        shutil.move(str(Path(staging) / ADAPTER_DIR), str(tmp / ADAPTER_DIR))
    return saved


def _dtype(adapter: Any) -> str:
    return str(next(adapter.model.parameters()).dtype).removeprefix("torch.")
