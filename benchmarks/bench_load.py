"""Loading speed: the project's loader against transformers' `from_pretrained` and reading the file.

The model: a ~100M-parameter Qwen2-shaped model (hidden 768, 12 layers, 12 heads, 4 key/value heads,
intermediate 2048, vocab 32000, tied embeddings; fp32, ≈ 400 MB), built once with transformers'
`Qwen2ForCausalLM` (seeded) and saved through the project's `HFAdapter.save_checkpoint`, so it is a canonical
folder with metadata.json, in `<tmp>/project/models/bench-qwen2` (`<tmp>/project` holds a dvc.yaml so that the
sha256 cache of `verify=True` has a project to live in). Four ways to load it:

  (a) read:      `Path.read_bytes()` of model.safetensors (the floor: the bytes, from the page cache);
  (b) hf:        `Qwen2ForCausalLM.from_pretrained(folder)` (transformers' loader, fp32);
  (c) project:   `model_folder.load_adapter(folder, verify=False)` (meta build + mmap'd tensors);
  (d) verified:  `model_folder.load_adapter(folder, verify=True)` (+ the sha256 check, hash cache warm);
  (e) build:     `Qwen2ForCausalLM(config)`: a fresh model, randomly initialised (a load must not be slower).

Each load runs in a FRESH process (`--child`): imports first (printed separately), then only the load call is
timed; then one forward of one token, timed apart ("first forward"): a memory-mapped model reads its pages
from the page cache when they are first used, so that column shows the part of the work the mmap defers.
The five run interleaved, `--rounds` times, after one untimed warm-up of each (page cache and hash cache
warm); the figures are medians, with ratios to (a).

    .venv/bin/python benchmarks/bench_load.py                  # 3 rounds
    .venv/bin/python benchmarks/bench_load.py --rounds 5 --keep /tmp/bench-load   # keep the folder
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

SIZE = {
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "num_key_value_heads": 4,
    "intermediate_size": 2048,
    "vocab_size": 32000,
    "max_position_embeddings": 2048,
    "tie_word_embeddings": True,
}
CASES = {
    "read": "(a) read model.safetensors",
    "hf": "(b) Qwen2ForCausalLM.from_pretrained",
    "project": "(c) load_adapter(verify=False)",
    "verified": "(d) load_adapter(verify=True)",
    "build": "(e) Qwen2ForCausalLM(config), random init",
}


def make_folder(root: Path) -> Path:
    """The Qwen2-shaped model saved by the project into root/project/models/bench-qwen2 (once)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from model_foundry.adapters import get_spec

    project = root / "project"
    folder = project / "models" / "bench-qwen2"
    if (folder / "metadata.json").is_file():
        return folder
    project.mkdir(parents=True, exist_ok=True)
    (project / "dvc.yaml").write_text("stages: {}\n")  # a project: the hash cache lives in its .foundry-cache
    torch.manual_seed(0)
    model = Qwen2ForCausalLM(Qwen2Config(**SIZE))
    spec = get_spec("hf-qwen2")
    adapter = spec.adapter_cls()(model, model.config, spec)
    adapter.save_checkpoint(folder, {"model_name": folder.name, "load": {"dtype": "float32"}})
    return folder


def child(case: str, folder: Path) -> None:
    """One load in this process; prints {"import_s", "load_s", "forward_s", "parameters"} as JSON."""
    start = time.perf_counter()
    import torch
    from transformers import Qwen2ForCausalLM

    from model_foundry.model_folder import load_adapter

    imported = time.perf_counter()
    model = None
    if case == "read":
        data = (folder / "model.safetensors").read_bytes()
    elif case == "build":  # what loading must not be slower than: building the model afresh
        from transformers import Qwen2Config

        model = Qwen2ForCausalLM(Qwen2Config(**SIZE))
    elif case == "hf":
        model = Qwen2ForCausalLM.from_pretrained(str(folder), dtype=torch.float32, local_files_only=True)
    else:
        model = load_adapter(folder, verify=case == "verified").model
    loaded = time.perf_counter()
    forward_s, parameters = 0.0, 0
    if model is None:
        parameters = len(data) // 4
    else:
        parameters = sum(p.numel() for p in model.parameters())
        with torch.no_grad():
            t = time.perf_counter()
            model(input_ids=torch.tensor([[1]]))
            forward_s = time.perf_counter() - t
    out = {"import_s": imported - start, "load_s": loaded - imported, "forward_s": forward_s}
    print(json.dumps({**out, "parameters": parameters}))


def run_child(case: str, folder: Path) -> dict[str, float]:
    proc = subprocess.run(
        [sys.executable, __file__, "--child", case, str(folder)], capture_output=True, text=True, check=False
    )
    if proc.returncode:
        raise SystemExit(f"{case} failed:\n{proc.stderr[-3000:]}")
    result: dict[str, float] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3, help="timed loads of each kind (medians)")
    ap.add_argument("--keep", type=Path, help="write (or reuse) the model folder here instead of a temp dir")
    ap.add_argument("--child", nargs=2, metavar=("CASE", "FOLDER"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        child(args.child[0], Path(args.child[1]))
        return

    import torch

    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"cpu capability {torch.backends.cpu.get_cpu_capability()}, torch {torch.__version__}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-load-") as tmp:
        root = args.keep or Path(tmp)
        start = time.perf_counter()
        folder = make_folder(root)
        size = (folder / "model.safetensors").stat().st_size
        print(f"model: {folder} ({size / 1e6:.0f} MB), written in {time.perf_counter() - start:.1f} s")
        for case in CASES:  # warm-up: page cache, hash cache (d), .pyc files
            run_child(case, folder)
        runs: dict[str, list[dict[str, float]]] = {case: [] for case in CASES}
        for _ in range(args.rounds):
            for case in CASES:
                runs[case].append(run_child(case, folder))
        print(
            f"{runs['hf'][0]['parameters'] / 1e6:.1f}M parameters; medians of {args.rounds} fresh processes\n"
        )
        floor = statistics.median(r["load_s"] for r in runs["read"])
        print(f"{'':42} {'load':>8} {'× read':>8} {'imports':>8} {'first forward':>14}")
        for case, label in CASES.items():
            med = {
                k: statistics.median(r[k] for r in runs[case]) for k in ("load_s", "import_s", "forward_s")
            }
            forward = f"{med['forward_s']:.3f} s" if case != "read" else "-"
            print(
                f"{label:42} {med['load_s']:7.3f}s {med['load_s'] / floor:7.1f}× {med['import_s']:7.2f}s "
                f"{forward:>14}"
            )
        hf = statistics.median(r["load_s"] for r in runs["hf"])
        ours = statistics.median(r["load_s"] for r in runs["project"])
        built = statistics.median(r["load_s"] for r in runs["build"])
        print(f"\nproject: {hf / ours:.1f}× faster than from_pretrained, {built / ours:.1f}× than building")


if __name__ == "__main__":
    main()
