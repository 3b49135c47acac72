"""Trainer speed benchmark: the project's training loop vs Hugging Face `transformers.Trainer`.

The config is nanoGPT's CPU example (4 layers, 4 heads, 128 dims, block 64, batch 12, dropout 0) on char-level
text. nanoGPT's shakespeare_char is not available offline, so the text is the builtin corpus (Python's
`pydoc_data.topics`, ~465k characters), split and char-tokenized the way the pipeline does it; both trainers
draw random block-64 windows from the very same uint16 token stream.

  (a) project: `model_foundry.training.loop.train` with the registry's `gpt` adapter;
  (b) hf:      `transformers.GPT2LMHeadModel` of the same dims trained by `transformers.Trainer`.

Both take the same steps with the same AdamW (lr 1e-3, betas 0.9/0.99, weight decay 0.1, clip 1.0) and
warmup + cosine schedule down to 0.1 × lr, from the same seed (a different one each round). Every run is a
fresh Python process (nothing one trainer sets up, allocator or threads included, carries over to the
other), and the runs alternate over several rounds because the machine is shared and noisy: the figures are
medians of per-step times, the first steps of each run skipped.
Step time is host wall time per optimizer step: (a) from the start of the iteration (batch drawing included)
to the end of zero_grad; (b) from Trainer's `on_step_begin` to `on_step_end` (its batch fetch falls outside
that window, so the comparison leans, if anything, towards (b)). Val loss is measured for both after the same
steps on the same fixed validation windows, over all 64 positions.

Also: tokens/s of the registry's `lstm` at a parameter count close to the GPT's, and with `--full` the
2000-step run of (a) (warmup 100 + cosine, as nanoGPT's example) with its val loss and wall time.

    .venv/bin/python benchmarks/bench_trainer.py                  # 5 rounds × 200 steps, + LSTM
    .venv/bin/python benchmarks/bench_trainer.py --quick          # 2 rounds × 60 steps (smoke test)
    .venv/bin/python benchmarks/bench_trainer.py --full --json benchmarks/results.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

for _key, _value in {
    "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "MLFLOW_DISABLE_TELEMETRY": "true", "TRANSFORMERS_VERBOSITY": "error",
}.items():  # fmt: skip
    os.environ.setdefault(_key, _value)

import numpy as np  # noqa: E402
import torch  # noqa: E402

# nanoGPT's config/train_shakespeare_char.py with the CPU overrides from its README.
N_LAYER, N_HEAD, N_EMBD, BLOCK, BATCH = 4, 4, 128, 64, 12
LR, MIN_LR_RATIO, BETA2, WEIGHT_DECAY, GRAD_CLIP = 1e-3, 0.1, 0.99, 0.1, 1.0
FULL_STEPS, FULL_WARMUP = 2000, 100
SEED = 1337
GPT = {"n_layer": N_LAYER, "n_head": N_HEAD, "n_embd": N_EMBD, "block_size": BLOCK, "dropout": 0.0}
TOKENS_PER_STEP = BATCH * BLOCK


# --- data (built once by the parent process, read by every run) -----------------------------------------
def prepare_data(folder: Path) -> int:
    """Builtin corpus → train/val split → char tokenizer → packed uint16 files, as the pipeline makes them."""
    from model_foundry.config import DataConfig
    from model_foundry.data.corpus import load_documents, split_documents
    from model_foundry.data.tokenizer_training import train_tokenizer
    from model_foundry.data.tokens import dtype_for, encode_documents

    cfg = DataConfig()
    train_docs, val_docs = split_documents(load_documents(cfg), cfg.val_fraction, cfg.seed)
    tok = train_tokenizer("char", train_docs, vocab_size=512, objective="causal_lm", min_frequency=1)
    dtype = dtype_for(len(tok))
    sizes = {}
    for split, docs in (("train", train_docs), ("val", val_docs)):
        sizes[split] = encode_documents(tok, docs, tok.eos_token_id, folder / f"{split}.bin", dtype)
    meta = {"vocab_size": len(tok), "dtype": str(np.dtype(dtype)), **sizes}
    (folder / "meta.json").write_text(json.dumps(meta))
    return len(tok)


def load_data(folder: Path) -> tuple[np.ndarray, np.ndarray, int]:
    meta = json.loads((folder / "meta.json").read_text())
    dtype = np.dtype(meta["dtype"])
    train, val = (np.memmap(folder / f"{s}.bin", dtype=dtype, mode="r") for s in ("train", "val"))
    return train, val, int(meta["vocab_size"])


def val_batches(val: np.ndarray, n: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The fixed validation windows every model is scored on."""
    gen = torch.Generator().manual_seed(SEED + 7)
    stream = torch.from_numpy(val.astype(np.int64))
    out = []
    for _ in range(n):
        starts = torch.randint(len(val) - BLOCK - 1, (BATCH,), generator=gen).tolist()
        w = torch.stack([stream[s : s + BLOCK + 1] for s in starts])
        out.append((w[:, :-1].contiguous(), w[:, 1:].contiguous()))
    return out


@torch.no_grad()
def val_loss(logits_fn: Any, model: torch.nn.Module, batches: list[tuple[torch.Tensor, ...]]) -> float:
    """Mean cross-entropy over the fixed validation windows (all 64 positions), fp32, eval mode."""
    model.eval()
    ce = torch.nn.functional.cross_entropy
    losses = [ce(logits_fn(x).float().flatten(0, 1), y.flatten()).item() for x, y in batches]
    model.train()
    return float(np.mean(losses))


# --- the runs (each in its own process) --------------------------------------------------------------------
def run_project(opts: argparse.Namespace) -> dict[str, Any]:
    """(a), or the LSTM: the project's `train()` with a fresh, seeded model from the architecture registry."""
    from model_foundry.adapters import get_spec
    from model_foundry.config import TrainConfig
    from model_foundry.data.collators import CausalCollator
    from model_foundry.training.device import Runtime
    from model_foundry.training.loop import train
    from model_foundry.training.state import TrainState

    train_tokens, val_tokens, vocab = load_data(opts.data)
    spec = get_spec(opts.arch)
    torch.manual_seed(opts.seed)
    adapter = spec.adapter_cls().build(
        spec.config_cls(**json.loads(opts.arch_config), vocab_size=vocab), spec
    )
    cfg = TrainConfig(
        steps=opts.steps, batch_size=BATCH, block_size=BLOCK, lr=LR, min_lr_ratio=MIN_LR_RATIO,
        warmup_steps=opts.warmup, weight_decay=WEIGHT_DECAY, beta2=BETA2, grad_clip=GRAD_CLIP,
        eval_interval=opts.steps, eval_batches=1, log_interval=max(1, opts.steps // 20), seed=opts.seed,
        threads=opts.threads, device="cpu", precision=opts.precision, compile=opts.compile,
    )  # fmt: skip
    runtime = Runtime.create("cpu", opts.precision, opts.threads)
    t0 = time.perf_counter()
    state = TrainState.create(adapter, cfg, runtime)  # the optimizer is built here, inside the timed wall
    result = train(state, train_tokens, val_tokens, cfg, CausalCollator(), runtime)
    wall = time.perf_counter() - t0
    return {
        "step_seconds": result.step_seconds,
        "wall_seconds": wall,
        "val_loss": val_loss(adapter.logits, adapter.model, val_batches(val_tokens, opts.val_batches)),
        "train_history": result.train_history,
        "parameters": adapter.num_parameters(),
        "runtime": runtime.describe(),
    }


def run_hf(opts: argparse.Namespace) -> dict[str, Any]:
    """(b): `GPT2LMHeadModel` (same dims) trained by `transformers.Trainer`, same optimizer and schedule."""
    from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainerCallback, TrainingArguments

    train_tokens, val_tokens, vocab = load_data(opts.data)
    torch.set_num_threads(opts.threads)

    class Windows(torch.utils.data.Dataset):
        """Random block-64 windows of the token stream (offsets drawn up front, seeded)."""

        def __init__(self, tokens: np.ndarray, n: int) -> None:
            self.stream = torch.from_numpy(np.asarray(tokens, dtype=np.int64))
            gen = torch.Generator().manual_seed(opts.seed)
            self.starts = torch.randint(len(tokens) - BLOCK, (n,), generator=gen).tolist()

        def __len__(self) -> int:
            return len(self.starts)

        def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
            w = self.stream[self.starts[i] : self.starts[i] + BLOCK]
            return {"input_ids": w, "labels": w}  # GPT2LMHeadModel shifts labels itself (63 targets a row)

    class StepTimer(TrainerCallback):
        def __init__(self) -> None:
            self.times: list[float] = []
            self.t = 0.0

        def on_step_begin(self, args, state, control, **kwargs):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            self.times.append(time.perf_counter() - self.t)

    torch.manual_seed(opts.seed)
    config = GPT2Config(
        vocab_size=vocab, n_positions=BLOCK, n_embd=N_EMBD, n_layer=N_LAYER, n_head=N_HEAD, resid_pdrop=0.0,
        embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None,
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    with tempfile.TemporaryDirectory() as out_dir:
        args = TrainingArguments(
            output_dir=out_dir, per_device_train_batch_size=BATCH, max_steps=opts.steps, learning_rate=LR,
            warmup_steps=opts.warmup, lr_scheduler_type="cosine_with_min_lr",
            lr_scheduler_kwargs={"min_lr_rate": MIN_LR_RATIO}, weight_decay=WEIGHT_DECAY, adam_beta1=0.9,
            adam_beta2=BETA2, max_grad_norm=GRAD_CLIP, eval_strategy="no", save_strategy="no",
            logging_strategy="no", report_to="none", disable_tqdm=True, use_cpu=True, seed=opts.seed,
            data_seed=opts.seed, dataloader_num_workers=0, dataloader_pin_memory=False,
        )  # fmt: skip
        timer = StepTimer()
        dataset = Windows(train_tokens, opts.steps * BATCH)
        trainer = Trainer(model=model, args=args, train_dataset=dataset, callbacks=[timer])
        t0 = time.perf_counter()
        trainer.train()
        wall = time.perf_counter() - t0
    batches = val_batches(val_tokens, opts.val_batches)
    return {
        "step_seconds": timer.times,
        "wall_seconds": wall,
        "val_loss": val_loss(lambda x: model(input_ids=x).logits, model, batches),
        "parameters": sum(p.numel() for p in model.parameters()),
        "optim": str(args.optim),
        "attn_implementation": model.config._attn_implementation,
    }


def child_main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--child", choices=["project", "hf"], required=True)
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--steps", type=int, required=True)
    ap.add_argument("--warmup", type=int, required=True)
    ap.add_argument("--threads", type=int, required=True)
    ap.add_argument("--val-batches", type=int, required=True)
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--arch", default="gpt")
    ap.add_argument("--arch-config", default=json.dumps(GPT))
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--compile", action="store_true")
    opts = ap.parse_args(argv)
    result = run_project(opts) if opts.child == "project" else run_hf(opts)
    opts.out.write_text(json.dumps(result))


def spawn(kind: str, folder: Path, steps: int, warmup: int, args: argparse.Namespace, **extra: Any) -> dict:
    """One run in a fresh Python process; its results come back through a JSON file."""
    out = folder / f"result-{kind}-{time.monotonic_ns()}.json"
    cmd = [
        sys.executable, __file__, "--child", kind, "--data", str(folder), "--out", str(out),
        "--steps", str(steps), "--warmup", str(warmup), "--threads", str(args.threads),
        "--val-batches", str(args.val_batches),
    ]  # fmt: skip
    for key, value in extra.items():
        if value is True:
            cmd.append(f"--{key.replace('_', '-')}")
        elif value not in (None, False):
            cmd += [f"--{key.replace('_', '-')}", str(value)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{kind} run failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


# --- the parent: rounds, summary, table ---------------------------------------------------------------------
def lstm_config(target_params: int, vocab: int) -> dict[str, Any]:
    """Two layers with hidden = embedding size: the multiple of 32 whose parameter count is nearest target."""

    def count(h: int) -> int:  # a layer: 4 gates × (input + hidden + 2 biases) × hidden; tied head + bias
        return 2 * 4 * h * (2 * h + 2) + vocab * h + vocab

    h = min(range(64, 1025, 32), key=lambda h: abs(count(h) - target_params))
    return {"n_layer": 2, "hidden_size": h, "embedding_size": h, "dropout": 0.0}


def summarize(times: list[float]) -> dict[str, float]:
    med = statistics.median(times)
    return {
        "median_step_ms": med * 1e3,
        "p10_step_ms": float(np.percentile(times, 10)) * 1e3,
        "p90_step_ms": float(np.percentile(times, 90)) * 1e3,
        "mean_step_ms": statistics.fmean(times) * 1e3,
        "tokens_per_s": TOKENS_PER_STEP / med,
        "steps_timed": len(times),
    }


def steady(run: dict[str, Any], skip: int) -> list[float]:
    times = run["step_seconds"]
    return times[skip:] if len(times) > skip else times


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds of (a) and (b)")
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per run")
    ap.add_argument("--skip", type=int, default=10, help="first steps of each run left out of the medians")
    ap.add_argument("--threads", type=int, default=0, help="torch threads for both (0: all cores)")
    ap.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16"], help="(a)'s precision")
    ap.add_argument("--compile", action="store_true", help="(a) with train.compile: true")
    ap.add_argument("--quick", action="store_true", help="smoke test: 2 rounds × 60 steps, short LSTM runs")
    ap.add_argument("--full", action="store_true", help=f"also the {FULL_STEPS}-step run of (a)")
    ap.add_argument("--no-hf", action="store_true", help="skip (b)")
    ap.add_argument("--no-lstm", action="store_true", help="skip the LSTM measurement")
    ap.add_argument("--val-batches", type=int, default=50, help="fixed validation batches of 12 windows")
    ap.add_argument("--json", type=Path, help="also write the results here as JSON")
    args = ap.parse_args(argv)
    if args.quick:
        args.rounds, args.steps, args.skip = 2, 60, 5
    args.threads = args.threads or os.cpu_count() or 1
    warmup = min(FULL_WARMUP, args.steps // 10)
    project_opts = {"precision": args.precision, "compile": args.compile}

    with tempfile.TemporaryDirectory(prefix="bench_trainer_") as tmp:
        folder = Path(tmp)
        vocab = prepare_data(folder)
        train_tokens, val_tokens, _ = load_data(folder)
        print(
            f"data: {len(train_tokens):,} train / {len(val_tokens):,} val tokens, vocab {vocab}; model "
            f"{N_LAYER}L/{N_HEAD}H/{N_EMBD}d, block {BLOCK}, batch {BATCH}; {args.rounds} rounds × "
            f"{args.steps} steps (warmup {warmup}); threads {args.threads}; torch {torch.__version__}",
            flush=True,
        )
        rounds: list[dict[str, Any]] = []
        for r in range(args.rounds):
            row: dict[str, Any] = {}
            for who in ("a", "b") if r % 2 == 0 else ("b", "a"):  # alternate who goes first
                if who == "a":
                    row["a"] = spawn(
                        "project", folder, args.steps, warmup, args, seed=SEED + r, **project_opts
                    )
                elif not args.no_hf:
                    row["b"] = spawn("hf", folder, args.steps, warmup, args, seed=SEED + r)
            line = f"round {r}: (a) {statistics.median(steady(row['a'], args.skip)) * 1e3:6.1f} ms/step"
            if "b" in row:
                line += f", (b) {statistics.median(steady(row['b'], args.skip)) * 1e3:6.1f} ms/step"
            print(line, flush=True)
            rounds.append(row)

        results: dict[str, Any] = {
            "config": {
                **GPT, "batch_size": BATCH, "vocab_size": vocab, "steps": args.steps, "warmup": warmup,
                "rounds": args.rounds, "skip": args.skip, "threads": args.threads, **project_opts,
            },
            "machine": {
                "processor": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            },
        }  # fmt: skip
        results["project"] = side_summary([row["a"] for row in rounds], args.skip)
        results["project"]["runtime"] = rounds[0]["a"]["runtime"]
        if not args.no_hf:
            results["hf_trainer"] = side_summary([row["b"] for row in rounds], args.skip)
            results["hf_trainer"]["optim"] = rounds[0]["b"]["optim"]
            results["hf_trainer"]["attn_implementation"] = rounds[0]["b"]["attn_implementation"]
            a, b = results["project"], results["hf_trainer"]
            results["ratio"] = a["tokens_per_s"] / b["tokens_per_s"]
            pairs = zip(a["round_median_ms"], b["round_median_ms"], strict=True)
            results["round_ratios"] = [y / x for x, y in pairs]

        if not args.no_lstm:
            results["lstm"] = measure_lstm(folder, args, results["project"]["parameters"], vocab)
        if args.full:
            print(f"full run: {FULL_STEPS} steps of (a) ...", flush=True)
            full = spawn("project", folder, FULL_STEPS, FULL_WARMUP, args, **project_opts)
            results["full"] = {
                "steps": FULL_STEPS, "warmup": FULL_WARMUP, "wall_seconds": full["wall_seconds"],
                "val_loss": full["val_loss"], "final_train_loss": full["train_history"][-1][1],
                **summarize(steady(full, args.skip)),
            }  # fmt: skip
        results["machine"]["loadavg_end"] = os.getloadavg()

    print_table(results)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    return results


def side_summary(runs: list[dict[str, Any]], skip: int) -> dict[str, Any]:
    return {
        **summarize([t for run in runs for t in steady(run, skip)]),
        "val_loss": [run["val_loss"] for run in runs],
        "parameters": runs[0]["parameters"],
        "round_median_ms": [statistics.median(steady(run, skip)) * 1e3 for run in runs],
        "wall_seconds": [run["wall_seconds"] for run in runs],
    }


def measure_lstm(folder: Path, args: argparse.Namespace, target_params: int, vocab: int) -> dict[str, Any]:
    from model_foundry.adapters import ARCHITECTURES

    if "lstm" not in ARCHITECTURES:
        return {"skipped": "no 'lstm' architecture in model_foundry.adapters.ARCHITECTURES"}
    cfg = lstm_config(target_params, vocab)
    steps = 40 if args.quick else 120
    runs = [
        spawn("project", folder, steps, 10, args, arch="lstm", arch_config=json.dumps(cfg)) for _ in (0, 1)
    ]
    return {
        **summarize([t for run in runs for t in steady(run, 5)]),
        "config": cfg,
        "parameters": runs[0]["parameters"],
        "steps": steps,
        "val_loss": runs[-1]["val_loss"],
    }


def print_table(res: dict[str, Any]) -> None:
    c = res["config"]
    print(
        f"\n{c['rounds']} rounds × {c['steps']} steps, the first {c['skip']} of each run skipped. Median "
        f"host step time;\ntokens/s = {TOKENS_PER_STEP} tokens / median step; val loss after "
        f"{c['steps']} steps (median over rounds)."
    )
    head = f"{'median ms':>10s}{'p10':>8s}{'p90':>8s}{'tokens/s':>10s}{'val loss':>10s}{'params':>10s}"
    print(f"{'':30s}{head}")

    def row(name: str, r: dict[str, Any]) -> None:
        vl = r["val_loss"]
        vl = statistics.median(vl) if isinstance(vl, list) else vl
        print(
            f"{name:30s}{r['median_step_ms']:10.2f}{r['p10_step_ms']:8.1f}{r['p90_step_ms']:8.1f}"
            f"{r['tokens_per_s']:10,.0f}{vl:10.4f}{r['parameters']:10,d}"
        )

    row("(a) project train(), gpt", res["project"])
    if "hf_trainer" in res:
        row("(b) transformers.Trainer", res["hf_trainer"])
        per_round = ", ".join(f"{x:.2f}" for x in res["round_ratios"])
        print(f"ratio (a)/(b) tokens/s: {res['ratio']:.2f}×  (target ≥ 1.70×; per round: {per_round})")
    lstm = res.get("lstm")
    if lstm and "skipped" in lstm:
        print(f"lstm: {lstm['skipped']}")
    elif lstm:
        row(f"lstm {lstm['config']['n_layer']}×{lstm['config']['hidden_size']}, {lstm['steps']} steps", lstm)
    full = res.get("full")
    if full:
        print(
            f"full run (a): {full['steps']} steps (warmup {full['warmup']} + cosine): val loss "
            f"{full['val_loss']:.4f}, train loss {full['final_train_loss']:.4f}, "
            f"wall {full['wall_seconds']:.1f} s "
            f"({full['median_step_ms']:.1f} ms median step, {full['tokens_per_s']:,.0f} tokens/s)"
        )
    print(f"load average at the end: {', '.join(f'{x:.2f}' for x in res['machine']['loadavg_end'])}")


if __name__ == "__main__":
    if "--child" in sys.argv:
        child_main(sys.argv[1:])
    else:
        main()
