"""Fine-tuning speed and memory: the project's trainer vs `transformers.Trainer` (+ peft), full and LoRA.

The model is a tiny Qwen2 (hidden 256, 4 layers, 4 heads, 2 kv heads, MLP 688, tied embeddings, ~4M
parameters with the 4,096-token vocabulary), built with transformers from a seed and saved with
`save_pretrained` into a temp folder: no Hub. The text is the builtin corpus (Python's `pydoc_data.topics`),
split and tokenized the way the pipeline does it, with a byte-level BPE of 4,096 tokens trained on the
training split; both trainers read the very same uint16 token stream.

  (a) project: the folder loaded with the `hf-qwen2` adapter, `TrainState.create` + `training.loop.train`
      (with `adapters.lora.apply_lora` first for LoRA);
  (b) hf:      `Qwen2ForCausalLM.from_pretrained` of the same folder under `transformers.Trainer`
      (`peft.get_peft_model` first for LoRA, with the same r, alpha, dropout and target modules).

Both start from the same weights (and, for LoRA, the same adapter init: torch is seeded the same way right
before wrapping), draw the same windows of 129 tokens in the same order (a generator seeded like the
project's loop; (b) reads them from an IterableDataset), predict the same 8 × 128 targets per step (input
= window[:-1], target = window[1:]; (b) passes them as transformers' `shift_labels`), with the same AdamW
(fused, lr 1e-3, betas 0.9/0.99, weight decay 0.1 on matrices only, clip 1.0) and learning-rate schedule
(the project's warmup + cosine down to 0.1 × lr, `optim.lr_at`, given to Trainer as a LambdaLR: its own
"cosine_with_min_lr" starts the warmup at lr 0, one step behind), and log the mean training loss every 10
steps.

Every run is a fresh Python process; the trainers alternate within each round (who goes first alternates
too), all configurations are interleaved in every round, and the figures are medians over the rounds. The
step time of both is the host time between two consecutive step ends (everything included: batch, forward,
backward, clip, optimizer, logging), the first `skip` steps of each run left out. Peak RSS is the child's
`ru_maxrss` (imports, model, optimizer state and activations; the same for both: transformers is imported by
both, peft by both for LoRA). Precision: fp32 always; bf16 autocast too when the CPU runs bf16 natively
(AVX512-BF16 or AMX), for both trainers.

Also: `training.checkpoint.save_checkpoint` write time and size for this model (full and LoRA state after
one optimizer step) and for the registry's 12-layer × 768 `gpt` (vocabulary 32,000: ~110M parameters).

    .venv/bin/python benchmarks/bench_finetune.py                  # 3 rounds × (10 + 50) steps, ~8-10 min
    .venv/bin/python benchmarks/bench_finetune.py --quick          # smoke test: 2 rounds × 12 steps, fp32
    .venv/bin/python benchmarks/bench_finetune.py --json out.json  # also write every figure as JSON
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _key, _value in {
    "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true", "TRANSFORMERS_VERBOSITY": "error", "ACCELERATE_DISABLE_RICH": "1",
}.items():  # fmt: skip
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402
import torch  # noqa: E402

# The tiny Qwen2 and its data.
QWEN2 = {
    "hidden_size": 256, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
    "intermediate_size": 688, "max_position_embeddings": 512, "tie_word_embeddings": True,
    "use_cache": False,  # training: no KV cache built in the forward (for (b); (a) passes use_cache=False)
}  # fmt: skip
VOCAB = 4096
BATCH, BLOCK = 8, 128
TOKENS_PER_STEP = BATCH * BLOCK
# Optimizer and schedule, the same for both trainers and both methods.
LR, MIN_LR_RATIO, BETA1, BETA2, WEIGHT_DECAY, GRAD_CLIP = 1e-3, 0.1, 0.9, 0.99, 0.1, 1.0
LOG_EVERY = 10
# LoRA: r, alpha, dropout; targets = the hf-qwen2 family's defaults (attention + MLP projections).
LORA_R, LORA_ALPHA, LORA_DROPOUT = 8, 16, 0.0
VAL_BATCHES = 8  # fixed validation batches of 8 × 128 tokens, scored after training (fp32, not timed)
SEED = 1337
# The ~100M-parameter model of the checkpoint measurement: the registry's gpt, GPT-2 small's shape (110M).
GPT_100M = {
    "n_layer": 12,
    "n_head": 12,
    "n_embd": 768,
    "block_size": 1024,
    "vocab_size": 32_000,
    "dropout": 0.0,
}


# --- machine ---------------------------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU capability, native bf16 (AVX512-BF16, AMX), threads and library versions."""
    import peft
    import transformers

    cpu = torch.cpu

    def probe(name: str) -> bool | None:  # private torch helpers: None where this torch has none
        fn = getattr(cpu, name, None)
        return bool(fn()) if fn is not None else None

    avx512_bf16, amx = probe("_is_avx512_bf16_supported"), probe("_is_amx_tile_supported")
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "processor": model,
        "cores": os.cpu_count(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "avx512_bf16": avx512_bf16,
        "amx_tile": amx,
        "bf16_native": bool(avx512_bf16 or amx),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "peft": peft.__version__,
        "loadavg_start": os.getloadavg(),
    }


# --- data and model (built once by the parent, read by every run) ------------------------------------------
def prepare(folder: Path) -> dict[str, Any]:
    """Builtin corpus → split → byte-level BPE (4,096) → packed uint16 files; the tiny Qwen2 folder."""
    from transformers import Qwen2Config, Qwen2ForCausalLM
    from transformers.utils import logging as hf_logging

    from model_foundry.config import DataConfig
    from model_foundry.data.corpus import load_documents, split_documents
    from model_foundry.data.tokenizer_training import train_tokenizer
    from model_foundry.data.tokens import dtype_for, encode_documents

    cfg = DataConfig()
    train_docs, val_docs = split_documents(load_documents(cfg), cfg.val_fraction, cfg.seed)
    tok = train_tokenizer("bpe", train_docs, vocab_size=VOCAB, objective="causal_lm")
    dtype = dtype_for(len(tok))
    sizes = {}
    for split, docs in (("train", train_docs), ("val", val_docs)):
        sizes[split] = encode_documents(tok, docs, tok.eos_token_id, folder / f"{split}.bin", dtype)
    torch.manual_seed(SEED)
    config = Qwen2Config(
        vocab_size=len(tok), bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, **QWEN2,
    )  # fmt: skip
    model = Qwen2ForCausalLM(config)
    hf_logging.disable_progress_bar()
    model.save_pretrained(folder / "model")
    tok.save_pretrained(folder / "model")
    meta = {
        "vocab_size": len(tok), "dtype": str(np.dtype(dtype)), **sizes,
        "parameters": sum(p.numel() for p in model.parameters()),
    }  # fmt: skip
    (folder / "meta.json").write_text(json.dumps(meta))
    return meta


def load_tokens(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    meta = json.loads((folder / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    train, val = (np.memmap(folder / f"{s}.bin", dtype=dtype, mode="r") for s in ("train", "val"))
    return train, val


@torch.no_grad()
def val_loss(model: torch.nn.Module, val: np.ndarray) -> float:
    """Mean next-token cross-entropy over VAL_BATCHES fixed windows (the same in every run), fp32."""
    from model_foundry.data.tokens import random_windows

    gen = torch.Generator().manual_seed(SEED + 7)
    model.eval()
    losses = []
    for _ in range(VAL_BATCHES):
        w = random_windows(val, BATCH, BLOCK + 1, gen)
        logits = model(input_ids=w[:, :-1], use_cache=False).logits.float()
        losses.append(torch.nn.functional.cross_entropy(logits.flatten(0, 1), w[:, 1:].flatten()).item())
    model.train()
    return float(np.mean(losses))


def rss_now_mib() -> float:
    """Resident set size now (VmRSS), MiB; 0 where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def peak_rss_mib() -> float:
    """This process's peak resident set size (ru_maxrss: KiB on Linux, bytes on macOS), MiB."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def lora_targets() -> list[str]:
    from model_foundry.adapters import get_spec
    from model_foundry.adapters.lora_targets import default_targets

    targets: list[str] = default_targets(get_spec("hf-qwen2"))[0]
    return targets


# --- the runs (each in its own process) --------------------------------------------------------------------
def run_project(opts: argparse.Namespace) -> dict[str, Any]:
    """(a): the folder through the `hf-qwen2` adapter, `TrainState.create` + `training.loop.train`."""
    from model_foundry.adapters import get_spec
    from model_foundry.adapters.lora import apply_lora
    from model_foundry.adapters.lora_targets import LoRASettings
    from model_foundry.config import TrainConfig
    from model_foundry.data.collators import CausalCollator
    from model_foundry.training.device import Runtime
    from model_foundry.training.hooks import TrainHook
    from model_foundry.training.loop import train
    from model_foundry.training.state import TrainState

    train_tokens, val_tokens = load_tokens(opts.data)
    runtime = Runtime.create("cpu", opts.precision, opts.threads)
    spec = get_spec("hf-qwen2")
    adapter = spec.adapter_cls().load_checkpoint(opts.data / "model", spec)
    if opts.method == "lora":
        torch.manual_seed(opts.seed)  # the LoRA A init, as (b)'s
        apply_lora(adapter, LoRASettings(r=LORA_R, alpha=LORA_ALPHA, dropout=LORA_DROPOUT))
    cfg = TrainConfig(
        steps=opts.steps, batch_size=BATCH, block_size=BLOCK, lr=LR, min_lr_ratio=MIN_LR_RATIO,
        warmup_steps=opts.warmup, weight_decay=WEIGHT_DECAY, beta1=BETA1, beta2=BETA2, grad_clip=GRAD_CLIP,
        eval_interval=opts.steps, eval_batches=1, log_interval=LOG_EVERY, seed=opts.seed,
        threads=opts.threads, device="cpu", precision=opts.precision,
    )  # fmt: skip

    class Clock(TrainHook):
        """The host time of every step end, and the logged losses."""

        def __init__(self) -> None:
            self.ends: list[float] = []
            self.losses: list[tuple[int, float]] = []

        def on_train_start(self, state: TrainState, cfg: TrainConfig) -> None:
            self.ends.append(time.perf_counter())

        def on_log(self, step: int, metrics: dict[str, float]) -> None:
            self.losses.append((step, metrics["train_loss"]))

        def on_step_end(self, step: int, state: TrainState) -> None:
            self.ends.append(time.perf_counter())

    clock = Clock()
    rss_setup = rss_now_mib()
    t0 = time.perf_counter()
    state = TrainState.create(adapter, cfg, runtime)  # the optimizer is built inside the timed wall, as (b)'s
    train(state, train_tokens, val_tokens, cfg, CausalCollator(), runtime, hooks=[clock])
    wall = time.perf_counter() - t0
    peak_train = peak_rss_mib()
    return {
        "step_seconds": np.diff(clock.ends).tolist(),
        "wall_seconds": wall,
        "losses": clock.losses,
        "val_loss": val_loss(adapter.model, val_tokens),
        "trainable": sum(p.numel() for p in adapter.model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in adapter.model.parameters()),
        "rss_setup_mib": rss_setup,
        "peak_train_rss_mib": peak_train,
        "peak_rss_mib": peak_rss_mib(),
        "runtime": runtime.describe(),
    }


def run_hf(opts: argparse.Namespace) -> dict[str, Any]:
    """(b): `Qwen2ForCausalLM.from_pretrained` of the same folder under `transformers.Trainer` (+ peft)."""
    from transformers import Qwen2ForCausalLM, Trainer, TrainerCallback, TrainingArguments

    from model_foundry.data.tokens import random_windows
    from model_foundry.training.optim import lr_at

    train_tokens, val_tokens = load_tokens(opts.data)
    torch.set_num_threads(opts.threads)
    model: Any = Qwen2ForCausalLM.from_pretrained(opts.data / "model", dtype=torch.float32)
    if opts.method == "lora":
        from peft import LoraConfig, get_peft_model

        torch.manual_seed(opts.seed)  # the LoRA A init, as (a)'s
        config = LoraConfig(
            r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=lora_targets(),
            bias="none",
        )  # fmt: skip
        model = get_peft_model(model, config)

    class Windows(torch.utils.data.IterableDataset):  # type: ignore[type-arg]
        """The project loop's batches, in its order: `random_windows` from a generator seeded alike."""

        def __iter__(self) -> Any:
            gen = torch.Generator().manual_seed(opts.seed)
            for _ in range(opts.steps):
                for w in random_windows(train_tokens, BATCH, BLOCK + 1, gen):
                    # Qwen2's loss shifts `labels` by one; `shift_labels` gives the aligned targets instead.
                    yield {"input_ids": w[:-1], "labels": w[:-1], "shift_labels": w[1:]}

    class Clock(TrainerCallback):
        def __init__(self) -> None:
            self.ends: list[float] = []
            self.losses: list[tuple[int, float]] = []

        def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

        def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
            self.ends.append(time.perf_counter())

        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> None:
            if logs and "loss" in logs:
                self.losses.append((state.global_step, float(logs["loss"])))

    class SameSchedule(Trainer):
        """Trainer with the project's schedule (`optim.lr_at`): Trainer's warmup starts at lr 0, ours at
        lr / warmup."""

        def create_scheduler(self, num_training_steps: int, optimizer: Any = None) -> Any:
            if self.lr_scheduler is None:
                self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(
                    optimizer or self.optimizer,
                    lambda step: lr_at(
                        step, lr=1.0, warmup=opts.warmup, total=opts.steps, min_ratio=MIN_LR_RATIO
                    ),
                )
                self._created_lr_scheduler = True
            return self.lr_scheduler

    clock = Clock()
    with tempfile.TemporaryDirectory() as out_dir:
        args = TrainingArguments(
            output_dir=out_dir, per_device_train_batch_size=BATCH, max_steps=opts.steps, learning_rate=LR,
            warmup_steps=opts.warmup, weight_decay=WEIGHT_DECAY, adam_beta1=BETA1,
            adam_beta2=BETA2, max_grad_norm=GRAD_CLIP, eval_strategy="no", save_strategy="no",
            logging_strategy="steps", logging_steps=LOG_EVERY, report_to="none", disable_tqdm=True,
            use_cpu=True, seed=opts.seed, data_seed=opts.seed, dataloader_num_workers=0,
            dataloader_pin_memory=False, bf16=opts.precision == "bf16",
        )  # fmt: skip
        trainer = SameSchedule(model=model, args=args, train_dataset=Windows(), callbacks=[clock])
        rss_setup = rss_now_mib()
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
        peak_train = peak_rss_mib()
    return {
        "step_seconds": np.diff(clock.ends).tolist(),
        "wall_seconds": wall,
        "losses": clock.losses,
        "val_loss": val_loss(model, val_tokens),
        "trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "parameters": sum(p.numel() for p in model.parameters()),
        "rss_setup_mib": rss_setup,
        "peak_train_rss_mib": peak_train,
        "peak_rss_mib": peak_rss_mib(),
        "optim": str(args.optim),
        "attn_implementation": model.config._attn_implementation,
    }


def run_checkpoints(opts: argparse.Namespace) -> dict[str, Any]:
    """save_checkpoint time and size: the tiny Qwen2 (full, LoRA) and the ~100M gpt (full, LoRA)."""
    import shutil

    from model_foundry.adapters import get_spec
    from model_foundry.adapters.lora import apply_lora
    from model_foundry.adapters.lora_targets import LoRASettings
    from model_foundry.config import TrainConfig
    from model_foundry.data.collators import CausalCollator
    from model_foundry.training.checkpoint import save_checkpoint
    from model_foundry.training.device import Runtime
    from model_foundry.training.loop import train
    from model_foundry.training.state import TrainState

    runtime = Runtime.create("cpu", "fp32", opts.threads)
    sidecar = {
        "model": "bench",
        "method": "-",
        "parent_checksum": "-",
        "params_digest": "-",
        "data_hash": "-",
    }
    out: dict[str, Any] = {}
    for name in ("qwen2-tiny", "gpt-100M"):
        for method in ("full", "lora"):
            torch.manual_seed(SEED)
            if name == "qwen2-tiny":
                spec = get_spec("hf-qwen2")
                adapter = spec.adapter_cls().load_checkpoint(opts.data / "model", spec)
            else:
                spec = get_spec("gpt")
                adapter = spec.adapter_cls().build(spec.config_cls(**GPT_100M), spec)
            if method == "lora":
                apply_lora(adapter, LoRASettings(r=LORA_R, alpha=LORA_ALPHA))
            vocab = int(adapter.config.vocab_size)
            cfg = TrainConfig(
                steps=1, batch_size=1, block_size=32, warmup_steps=0, eval_batches=1, device="cpu"
            )
            state = TrainState.create(adapter, cfg, runtime)
            tokens = np.random.default_rng(0).integers(0, vocab, 4096).astype(np.uint16)
            train(state, tokens, tokens, cfg, CausalCollator(), runtime)  # one step: AdamW's moments exist
            times, sizes = [], {}
            for i in range(opts.repeats):
                root = opts.out.parent / f"ckpt-{name}-{method}-{i}"
                t = time.perf_counter()
                path = save_checkpoint(state, root, {**sidecar, "method": method})
                times.append(time.perf_counter() - t)
                sizes = {p.name: p.stat().st_size for p in sorted(path.iterdir())}
                shutil.rmtree(root)
            out[f"{name} {method}"] = {
                "parameters": sum(p.numel() for p in adapter.model.parameters()),
                "trainable": sum(p.numel() for p in adapter.model.parameters() if p.requires_grad),
                "save_seconds": statistics.median(times),
                "save_seconds_all": times,
                "files": sizes,
                "bytes": sum(sizes.values()),
            }
            del state, adapter
    return out


def child_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=["project", "hf", "checkpoints"], required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--steps", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--method", choices=["full", "lora"], default="full")
    ap.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    ap.add_argument("--repeats", type=int, default=3)
    opts = ap.parse_args(argv)
    run = {"project": run_project, "hf": run_hf, "checkpoints": run_checkpoints}[opts.child]
    opts.out.write_text(json.dumps(run(opts)))


def spawn(kind: str, folder: Path, threads: int, **extra: Any) -> dict[str, Any]:
    """One run in a fresh Python process; its results come back through a JSON file."""
    out = folder / f"result-{kind}-{time.monotonic_ns()}.json"
    cmd = [sys.executable, __file__, "--child", kind, "--data", str(folder), "--out", str(out)]
    cmd += ["--threads", str(threads)]
    for key, value in extra.items():
        cmd += [f"--{key}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            f"{kind} run failed ({' '.join(cmd[2:])}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    result: dict[str, Any] = json.loads(out.read_text())
    return result


# --- the parent: rounds, summary, tables ----------------------------------------------------------------
def steady(run: dict[str, Any], skip: int) -> list[float]:
    """A run's step times without the first `skip` (warm-up) and the last (it includes the evaluation)."""
    times: list[float] = run["step_seconds"][skip:-1]
    return times or run["step_seconds"]


def side_summary(runs: list[dict[str, Any]], skip: int) -> dict[str, Any]:
    """Median over the rounds of each run's median step, tokens/s, peak RSS and losses."""
    medians = [statistics.median(steady(run, skip)) for run in runs]
    med = statistics.median(medians)
    return {
        "median_step_ms": med * 1e3,
        "tokens_per_s": TOKENS_PER_STEP / med,
        "round_median_ms": [m * 1e3 for m in medians],
        "peak_rss_mib": statistics.median(run["peak_rss_mib"] for run in runs),
        "peak_rss_mib_all": [run["peak_rss_mib"] for run in runs],
        "rss_setup_mib": statistics.median(run["rss_setup_mib"] for run in runs),
        "val_loss": [run["val_loss"] for run in runs],
        "losses": [run["losses"] for run in runs],
        "wall_seconds": [run["wall_seconds"] for run in runs],
        "parameters": runs[0]["parameters"],
        "trainable": runs[0]["trainable"],
    }


def final_losses(a: list[list[Any]], b: list[list[Any]]) -> tuple[int, float, float]:
    """(step, (a)'s loss, (b)'s loss) at the last step both logged ([[step, loss], ...] each)."""
    la, lb = {int(s): v for s, v in a}, {int(s): v for s, v in b}
    step = max(set(la) & set(lb))
    return step, la[step], lb[step]


def compare(a: dict[str, Any], b: dict[str, Any], target: float) -> dict[str, Any]:
    """Ratios (a)/(b), per round too, and whether the targets hold (speed ≥ target, RSS no higher,
    final train loss within noise: the mean same-seed difference no larger than the spread over seeds).
    The final train loss is each run's mean loss over the last logging window both trainers logged."""
    speed = a["tokens_per_s"] / b["tokens_per_s"]
    rounds = [y / x for x, y in zip(a["round_median_ms"], b["round_median_ms"], strict=True)]
    rss = a["peak_rss_mib"] / b["peak_rss_mib"]
    finals = [final_losses(x, y) for x, y in zip(a["losses"], b["losses"], strict=True)]
    loss_a, loss_b = [f[1] for f in finals], [f[2] for f in finals]
    deltas = [x - y for x, y in zip(loss_a, loss_b, strict=True)]
    spread = max(np.ptp(loss_a), np.ptp(loss_b))
    loss_ok = abs(statistics.fmean(deltas)) <= max(spread, 0.01)
    return {
        "final_step": finals[0][0],
        "final_train_loss": {"project": loss_a, "hf_trainer": loss_b},
        "speed_ratio": speed,
        "round_speed_ratios": rounds,
        "rss_ratio": rss,
        "final_loss_deltas": deltas,
        "seed_spread": float(spread),
        "speed_ok": speed >= target,
        "rss_ok": rss <= 1.0,
        "loss_ok": bool(loss_ok),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds of every configuration")
    ap.add_argument("--steps", type=int, default=50, help="timed optimizer steps per run (after --skip)")
    ap.add_argument("--skip", type=int, default=10, help="first steps of each run left out of the medians")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both (0: all cores)")
    ap.add_argument("--precision", choices=["auto", "fp32", "bf16", "both"], default="auto",
                    help="auto: fp32, and bf16 too where the CPU runs it natively")  # fmt: skip
    ap.add_argument("--methods", nargs="+", choices=["full", "lora"], default=["full", "lora"])
    ap.add_argument("--target", type=float, default=1.5, help="tokens/s ratio (a)/(b) to reach")
    ap.add_argument("--no-checkpoints", action="store_true", help="skip the checkpoint measurement")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 rounds × 12 steps, fp32 only")
    ap.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.skip = 2, 10, 2
        args.precision = "fp32" if args.precision == "auto" else args.precision
    args.threads = args.threads or os.cpu_count() or 1
    machine = {**machine_info(), "threads": args.threads}
    if args.precision == "auto":
        precisions = ["fp32", "bf16"] if machine["bf16_native"] else ["fp32"]
    else:
        precisions = ["fp32", "bf16"] if args.precision == "both" else [args.precision]
    steps = args.skip + args.steps
    warmup = max(1, steps // 10)
    configs = [(p, m) for p in precisions for m in args.methods]
    print_machine(machine)

    with tempfile.TemporaryDirectory(prefix="bench_finetune_") as tmp:
        folder = Path(tmp)
        t0 = time.perf_counter()
        meta = prepare(folder)
        print(
            f"data: {meta['train']:,} train / {meta['val']:,} val tokens (byte-level BPE, vocab "
            f"{meta['vocab_size']:,}); tiny Qwen2 {QWEN2['num_hidden_layers']}L × {QWEN2['hidden_size']}, "
            f"{meta['parameters']:,} parameters (tied); batch {BATCH} × {BLOCK}; {args.rounds} rounds × "
            f"{steps} steps ({args.skip} skipped, lr warmup {warmup}); {', '.join(precisions)}; "
            f"prepared in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
        runs: dict[tuple[str, str], dict[str, list[dict[str, Any]]]] = {
            c: {"a": [], "b": []} for c in configs
        }
        for r in range(args.rounds):
            for i, (precision, method) in enumerate(configs):
                order = ("a", "b") if (r + i) % 2 == 0 else ("b", "a")  # alternate who goes first
                for who in order:
                    kind = "project" if who == "a" else "hf"
                    run = spawn(kind, folder, args.threads, steps=steps, warmup=warmup, seed=SEED + r,
                                method=method, precision=precision)  # fmt: skip
                    runs[(precision, method)][who].append(run)
                pa, pb = (runs[(precision, method)][w][-1] for w in ("a", "b"))
                ma, mb = (statistics.median(steady(x, args.skip)) * 1e3 for x in (pa, pb))
                print(
                    f"round {r} {precision} {method:4s}: (a) {ma:7.1f} ms/step "
                    f"{pa['peak_rss_mib']:5.0f} MiB, (b) {mb:7.1f} ms/step {pb['peak_rss_mib']:5.0f} MiB "
                    f"({mb / ma:.2f}×)",
                    flush=True,
                )

        results: dict[str, Any] = {
            "config": {
                "model": {**QWEN2, "vocab_size": meta["vocab_size"], "parameters": meta["parameters"]},
                "batch_size": BATCH, "block_size": BLOCK, "lr": LR, "min_lr_ratio": MIN_LR_RATIO,
                "betas": [BETA1, BETA2], "weight_decay": WEIGHT_DECAY, "grad_clip": GRAD_CLIP,
                "lora": {"r": LORA_R, "alpha": LORA_ALPHA, "dropout": LORA_DROPOUT,
                         "targets": lora_targets()},
                "rounds": args.rounds, "steps": steps, "skip": args.skip, "warmup": warmup,
                "threads": args.threads, "target": args.target,
            },
            "machine": machine,
            "runs": {},
        }  # fmt: skip
        for (precision, method), sides in runs.items():
            a, b = side_summary(sides["a"], args.skip), side_summary(sides["b"], args.skip)
            b["optim"] = sides["b"][0]["optim"]
            b["attn_implementation"] = sides["b"][0]["attn_implementation"]
            results["runs"][f"{precision} {method}"] = {
                "project": a,
                "hf_trainer": b,
                "compare": compare(a, b, args.target),
            }
        if not args.no_checkpoints:
            print("checkpoints: save_checkpoint of the tiny Qwen2 and the ~100M gpt ...", flush=True)
            repeats = 1 if args.quick else 3
            results["checkpoints"] = spawn("checkpoints", folder, args.threads, repeats=repeats)
        results["machine"]["loadavg_end"] = os.getloadavg()

    print_results(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return results


# --- printing ---------------------------------------------------------------------------------------------
def print_machine(m: dict[str, Any]) -> None:
    bf16 = "native" if m["bf16_native"] else "emulated (slow: fp32 only)"
    print(
        f"cpu: {m['processor']}, {m['cores']} cores, capability {m['cpu_capability']}, "
        f"avx512_bf16 {m['avx512_bf16']}, amx_tile {m['amx_tile']} → bf16 {bf16}; threads {m['threads']}; "
        f"torch {m['torch']}, transformers {m['transformers']}, peft {m['peft']}; "
        f"load average {', '.join(f'{x:.2f}' for x in m['loadavg_start'])}",
        flush=True,
    )


def print_results(res: dict[str, Any]) -> None:
    c = res["config"]
    print(
        f"\n{c['rounds']} rounds × {c['steps']} steps, first {c['skip']} of each run skipped; step = host "
        "time between step ends; median per run, then median over rounds.\n"
        f"tokens/s = {TOKENS_PER_STEP} / median step; peak RSS = the run's ru_maxrss; losses = mean train "
        f"loss of the last {LOG_EVERY} steps both logged and fp32 val loss after training (median over "
        "rounds; (a) and (b) share the seeds)."
    )
    head = f"{'ms/step':>9s}{'tokens/s':>10s}{'peak MiB':>10s}{'setup MiB':>10s}{'train':>8s}{'val':>8s}"
    for name, run in res["runs"].items():
        a, b, cmp = run["project"], run["hf_trainer"], run["compare"]
        print(f"\n{name}: {a['trainable']:,} trainable of {a['parameters']:,} parameters")
        print(f"  {'':28s}{head}")
        for label, key in (("(a) project train()", "project"), ("(b) transformers.Trainer", "hf_trainer")):
            side, train_loss = run[key], statistics.median(cmp["final_train_loss"][key])
            print(
                f"  {label:28s}{side['median_step_ms']:9.1f}{side['tokens_per_s']:10,.0f}"
                f"{side['peak_rss_mib']:10.0f}{side['rss_setup_mib']:10.0f}"
                f"{train_loss:8.4f}{statistics.median(side['val_loss']):8.4f}"
            )
        per_round = ", ".join(f"{x:.2f}" for x in cmp["round_speed_ratios"])
        deltas = ", ".join(f"{d:+.4f}" for d in cmp["final_loss_deltas"])
        print(
            f"  tokens/s (a)/(b) {cmp['speed_ratio']:.2f}× (per round {per_round}; target ≥ "
            f"{c['target']:.1f}×: {'met' if cmp['speed_ok'] else 'NOT met'}); peak RSS (a)/(b) "
            f"{cmp['rss_ratio']:.3f} ({'no higher: met' if cmp['rss_ok'] else 'higher: NOT met'})"
        )
        print(
            f"  train loss at step {cmp['final_step']}, (a) − (b) per round: {deltas}; spread over seeds "
            f"{cmp['seed_spread']:.4f} → {'within noise' if cmp['loss_ok'] else 'NOT within noise'}"
        )
        print_curves(a["losses"][0], b["losses"][0])
    for method in ("full", "lora"):  # each with its defaults: `precision: auto` is bf16 where it is native
        bf16, fp32 = res["runs"].get(f"bf16 {method}"), res["runs"].get(f"fp32 {method}")
        if bf16 and fp32:
            ratio = bf16["project"]["tokens_per_s"] / fp32["hf_trainer"]["tokens_per_s"]
            print(
                f"\n{method}: (a) in bf16 (`precision: auto` on this CPU) vs (b) in fp32 (Trainer's "
                f"default): {ratio:.2f}×"
            )
    if "checkpoints" in res:
        print("\nsave_checkpoint (median of the repeats; page cache warm, no fsync):")
        print(
            f"  {'':18s}{'parameters':>13s}{'trainable':>13s}{'size MB':>10s}{'write s':>9s}{'GB/s':>7s}"
            "  files"
        )
        for name, ck in res["checkpoints"].items():
            files = ", ".join(f"{f} {s / 1e6:.1f}" for f, s in ck["files"].items())
            print(
                f"  {name:18s}{ck['parameters']:13,d}{ck['trainable']:13,d}{ck['bytes'] / 1e6:10.1f}"
                f"{ck['save_seconds']:9.2f}{ck['bytes'] / ck['save_seconds'] / 1e9:7.2f}  {files}"
            )
    m = res["machine"]
    print(
        f"\nload average: start {', '.join(f'{x:.2f}' for x in m['loadavg_start'])}, "
        f"end {', '.join(f'{x:.2f}' for x in m['loadavg_end'])}"
    )


def print_curves(a: list[list[float]], b: list[list[float]]) -> None:
    """The logged train losses of round 0, (a) and (b) side by side (same seed, same batches)."""
    by_step = {int(s): [v, None] for s, v in a}
    for s, v in b:
        by_step.setdefault(int(s), [None, None])[1] = v
    cells = [
        f"{s:>4d}: {'-' if x is None else f'{x:.3f}'} / {'-' if y is None else f'{y:.3f}'}"
        for s, (x, y) in sorted(by_step.items())
    ]
    print("  loss curve, round 0, step: (a) / (b)")
    for i in range(0, len(cells), 4):
        print("    " + "   ".join(cells[i : i + 4]))


if __name__ == "__main__":
    if "--child" in sys.argv:
        child_main(sys.argv[1:])
    else:
        main()
