"""How fast `foundry list-models` answers on a project with 50 models across 20 DVC experiments.

Builds a real git + DVC project in a temp folder: 10 models tracked by `dvc add` (as `foundry import-model`
tracks imports) and a pipeline whose two stages write `models/${name}` and `models/${name}-ft` (1 MB of
weights and a metadata.json each, no torch), run as 20 `dvc exp run` experiments (40 models, 38 of them only
in experiments and the DVC cache). A sqlite MLflow store gets 100 runs tagged with those models.

Then, medians of interleaved rounds, wall-clock of whole commands as a user runs them:
- `foundry list-models` (target < 0.5 s) and `foundry list-models --metrics` (target < 3 s);
- references from the same session: `dvc exp show --json` and `python -c "import mlflow"`, which the
  registry avoids (printed as ratios).

Usage: `.venv/bin/python benchmarks/bench_registry.py [--rounds 5] [--keep DIR]` (about 2 minutes to build).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent
ENV = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "DVC_NO_ANALYTICS": "1",
       "MLFLOW_DISABLE_TELEMETRY": "true"}  # fmt: skip

WRITE = """import json, os, sys
out, seed = sys.argv[1], int(sys.argv[2])
os.makedirs(out, exist_ok=True)
open(os.path.join(out, "model.safetensors"), "wb").write(os.urandom(1 << 20))
parent = sys.argv[3] if len(sys.argv) > 3 else None
if len(sys.argv) > 5:  # --metrics FILE
    json.dump({"perplexity": 10.0 + seed}, open(sys.argv[5], "w"))
meta = {"format": 1, "model_name": os.path.basename(out), "architecture": "gpt", "source": "scratch",
        "parameters": 262144, "created_at": "2026-01-01T00:00:00+00:00", "license": "mit",
        "parent": {"name": parent, "sha256": "0" * 32 + ".dir"} if parent else None,
        "training": {"method": "full", "seed": seed} if parent else None}
json.dump({k: v for k, v in meta.items() if v is not None}, open(os.path.join(out, "metadata.json"), "w"))
json.dump({"architecture": "gpt"}, open(os.path.join(out, "config.json"), "w"))
"""

DVC_YAML = """stages:
  make:
    cmd: python write.py models/${name} ${seed}
    deps:
      - write.py
    params:
      - name
      - seed
    outs:
      - models/${name}
  finetune:
    cmd: python write.py models/${name}-ft ${seed} ${name} --metrics metrics.json
    deps:
      - write.py
      - models/${name}
    outs:
      - models/${name}-ft
      - metrics.json:
          cache: false
"""


def run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, text=True, check=True)


def build(root: Path, experiments: int = 20, imports: int = 10, runs: int = 100) -> None:
    root.mkdir(parents=True)
    run(["git", "init", "-q"], root)
    run(["git", "config", "user.email", "bench@example.com"], root)
    run(["git", "config", "user.name", "bench"], root)
    run(["dvc", "init", "-q"], root)
    (root / "write.py").write_text(WRITE)
    (root / "dvc.yaml").write_text(DVC_YAML)
    (root / "params.yaml").write_text("name: exp-0\nseed: 0\n")
    for i in range(imports):
        run([sys.executable, "write.py", f"models/imported-{i}", str(i)], root)
        run(["dvc", "add", "-q", f"models/imported-{i}"], root)
    run(["git", "add", "-A"], root)
    run(["git", "commit", "-qm", "imports and pipeline"], root)
    for i in range(experiments):
        run(["dvc", "exp", "run", "-q", "--name", f"e{i}", "-S", f"name=m{i}", "-S", f"seed={i}"], root)
    code = (
        "import mlflow, sys\n"
        f"mlflow.set_tracking_uri('sqlite:///{root / 'mlflow.db'}')\n"
        "mlflow.set_experiment('model-foundry')\n"
        f"for i in range({runs}):\n"
        "    tags = {'model_name': f'm{i % 20}-ft', 'stage': 'train'}\n"
        "    with mlflow.start_run(run_name=f'm{i % 20}-ft', tags=tags):\n"
        "        mlflow.log_metrics({'train_loss': 2.0 + i / 100, 'eval_perplexity': 10.0 + i})\n"
    )
    run([sys.executable, "-c", code], root)


def timed(args: list[str], cwd: Path) -> float:
    start = time.perf_counter()
    subprocess.run(args, cwd=cwd, env=ENV, capture_output=True, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--keep", type=Path, help="Build (or reuse) the project here instead of a temp folder."
    )
    args = parser.parse_args()
    tmp = None
    if args.keep and (args.keep / ".dvc").is_dir():
        root = args.keep
    else:
        tmp = None if args.keep else Path(tempfile.mkdtemp(prefix="bench-registry-"))
        root = args.keep or (tmp / "project")  # type: ignore[operator]
        start = time.perf_counter()
        build(root)
        print(f"built 50 models in 20 experiments + 100 MLflow runs in {time.perf_counter() - start:.0f} s")
    listed = json.loads(run([str(BIN / "foundry"), "list-models", "--json"], root).stdout)["models"]
    where = [m["location"] for m in listed]
    print(f"models listed: {len(listed)} ({where.count('workspace')} in the workspace, "
          f"{sum(w.startswith('experiment') for w in where)} only in experiments)")  # fmt: skip
    commands = {
        "foundry list-models": [str(BIN / "foundry"), "list-models"],
        "foundry list-models --metrics": [str(BIN / "foundry"), "list-models", "--metrics"],
        "dvc exp show --json (reference)": [str(BIN / "dvc"), "exp", "show", "--json"],
        "python -c 'import mlflow' (reference)": [sys.executable, "-c", "import mlflow"],
    }
    for command in commands.values():  # warm the OS file cache and the registry's stat-keyed md5 cache
        timed(command, root)
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(args.rounds):
        for name, command in commands.items():
            times[name].append(timed(command, root))
    medians = {name: statistics.median(values) for name, values in times.items()}
    reference = medians["dvc exp show --json (reference)"]
    print(f"{'command':<40} {'median s':>9} {'vs dvc exp show':>16}")
    for name, value in medians.items():
        print(f"{name:<40} {value:>9.3f} {value / reference:>15.2f}x")
    plain, metrics = medians["foundry list-models"], medians["foundry list-models --metrics"]
    print(f"targets: list-models < 0.5 s: {'met' if plain < 0.5 else 'NOT met'}; "
          f"--metrics < 3 s: {'met' if metrics < 3 else 'NOT met'}")  # fmt: skip
    if tmp is not None:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
