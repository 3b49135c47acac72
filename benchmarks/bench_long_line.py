"""Peak memory of the tokenize stage on one enormous single-line document (a benchmark, not a timed test).

The bad-input battery found a 50 MB single-line document driving `foundry tokenize` past 7 GB (a 5 MB line
took 1.5 GB): the tokenizer keeps a record per token (id, offsets, string, masks) for the whole text. The
stage now encodes long documents in pieces of CHUNK_CHARS characters (`data.encoding.split_long`), so its
memory should follow the piece size, not the line.

For each line size this builds a project in a temp folder (params: the default scratch GPT, byte-level BPE),
a corpus of the builtin text plus one line of that many bytes of prose (words from the builtin text, single
spaces, no newline), runs `foundry import`, `foundry convert` and `foundry tokenize` as separate processes,
and prints each one's peak resident memory (ru_maxrss of the child) next to the line's size. Size 0 is the
baseline: the builtin text alone.

    .venv/bin/python benchmarks/bench_long_line.py                  # 0, 5 MB and 50 MB lines
    .venv/bin/python benchmarks/bench_long_line.py --sizes-mb 0 5   # quicker
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
FOUNDRY = [sys.executable, "-m", "model_foundry.cli"]
MB = 1_000_000


def builtin_text() -> str:
    from pydoc_data.topics import topics

    return "\n\n".join(topics[k] for k in sorted(topics))


def long_line(n_bytes: int, seed: int = 0) -> str:
    """About `n_bytes` of ASCII prose on one line: words of the builtin text joined by single spaces."""
    words = [w for w in builtin_text().split() if w.isascii()]
    rng = random.Random(seed)
    chunk = " ".join(rng.choice(words) for _ in range(100_000))
    text = (chunk + " ") * (n_bytes // (len(chunk) + 1) + 1)
    return text[:n_bytes].rstrip()


def make_project(root: Path, line_bytes: int) -> Path:
    """A project folder with params.yaml (the default model) and a corpus folder holding the long line."""
    root.mkdir(parents=True)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["source"] = "corpus"
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "corpus").mkdir()
    (root / "corpus" / "builtin.txt").write_text(builtin_text(), encoding="utf-8")
    if line_bytes:
        record = json.dumps({"text": long_line(line_bytes)}, ensure_ascii=False)
        (root / "corpus" / "line.jsonl").write_text(record + "\n", encoding="utf-8")
    return root


def run_measured(args: list[str], cwd: Path) -> tuple[float, float]:
    """(peak RSS in MiB, seconds) of one `foundry ARGS` process; exits on failure."""
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{cwd / 'mlflow.db'}",
        "TOKENIZERS_PARALLELISM": "false",
    }
    start = time.perf_counter()
    proc = subprocess.Popen(
        [*FOUNDRY, *args], cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"foundry {' '.join(args)} failed:\n{out}")
    return usage.ru_maxrss / 1024, seconds  # ru_maxrss is in KiB on Linux


def measure(line_mb: float, workdir: Path) -> dict[str, tuple[float, float]]:
    project = make_project(workdir / f"line-{line_mb:g}mb", int(line_mb * MB))
    steps = {
        "import": ["import", "--corpus-out", "data/corpus", "--source-out", "data/source"],
        "convert": ["convert", "--source", "data/source", "--out", "models/m"],
        "tokenize": ["tokenize", "--corpus", "data/corpus", "--model", "models/m", "--out", "data/tokenized"],
    }
    result = {name: run_measured(args, project) for name, args in steps.items()}
    shutil.rmtree(project, ignore_errors=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes-mb", type=float, nargs="+", default=[0, 5, 50])
    args = parser.parse_args()
    from model_foundry.data.encoding import CHUNK_CHARS

    print(f"piece size CHUNK_CHARS = {CHUNK_CHARS:,} characters; peak RSS of each process (ru_maxrss)")
    print(f"{'line':>8}  {'import':>18}  {'convert':>18}  {'tokenize':>18}")
    with tempfile.TemporaryDirectory(prefix="bench-long-line-") as tmp:
        for size in args.sizes_mb:
            r = measure(size, Path(tmp))
            cells = "  ".join(
                f"{r[k][0]:>8.0f} MiB {r[k][1]:>5.1f} s" for k in ("import", "convert", "tokenize")
            )
            print(f"{size:>5g} MB  {cells}", flush=True)


if __name__ == "__main__":
    main()
