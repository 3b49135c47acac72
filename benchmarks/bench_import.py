"""Import speed and memory: `foundry import-model <folder>` of a ~124M-parameter model vs `cp -r`.

Builds a random GPT-2-small-sized `GPT2LMHeadModel` (124M parameters, fp32, ~500 MB) saved as 3 safetensors
shards + index with a tokenizer, then times, alternately over several rounds (the machine is shared and
noisy; the figures are medians):

  (a) cp -r:   `cp -r <folder> <dest>` (what the import must at least do: read and write every byte);
  (b) foundry: `foundry import-model <folder> --accept-license --no-dvc -q` in a subprocess — CLI start-up,
      validation, header checks, copy + sha256 of every file, metadata.json, rename. Peak RSS of that
      subprocess from `resource.getrusage(RUSAGE_CHILDREN).ru_maxrss` (one fresh process per measurement);
  (b') the same with `--link` (hard links instead of copies, as for files from the Hub cache).

Targets (issue 3): wall time ≤ 1.5 × cp -r, peak RSS ≤ largest shard + 300 MB. Source files are in the page
cache for both (it was just written); each destination is deleted and synced before the next run.

For context it also times (c) `sha256` of the weight files alone (hashlib/OpenSSL, one thread): metadata.json
must hold the sha256 of every weight file, so no import can be faster than reading + hashing the bytes once.

    .venv/bin/python benchmarks/bench_import.py              # 5 rounds
    .venv/bin/python benchmarks/bench_import.py --rounds 3 --keep /tmp/bench-model
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MB = 1 << 20
FOUNDRY = str(Path(sys.executable).with_name("foundry"))


def build_model(folder: Path) -> None:
    """GPT-2 small dims (12 × 768, vocab 50257): random weights, 3 shards, a byte-level BPE tokenizer."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config())  # 124M parameters
    model.save_pretrained(folder, max_shard_size="200MB")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel()
    tok.add_special_tokens(["<|endoftext|>"])
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>").save_pretrained(folder)
    (folder / "README.md").write_text("---\nlicense: mit\n---\n# bench model\n")
    (folder / "LICENSE").write_text("MIT License (benchmark fixture)\n")


def sha256_all(files: list[Path]) -> float:
    import hashlib

    t0 = time.perf_counter()
    for path in files:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while block := f.read(8 * MB):
                h.update(block)
    return time.perf_counter() - t0


def run_child(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def child_peak_rss(cmd: list[str]) -> int:
    """Peak RSS (bytes) of `cmd`, measured in a fresh helper process so no earlier child counts."""
    probe = (
        "import resource, subprocess, sys;"
        f"subprocess.run({cmd!r}, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL);"
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)"
    )
    out = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout
    return int(out.strip()) * 1024  # ru_maxrss is in KiB on Linux


def reset(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)
    os.sync()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--keep", type=Path, help="build the model folder here (reused when it exists)")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="bench-import-"))
    src = args.keep or work / "gpt2-random"
    if not (src / "config.json").is_file():
        print(f"building a 124M-parameter model in {src} ...", flush=True)
        build_model(src)
    shards = sorted(src.glob("*.safetensors"))
    total = sum(p.stat().st_size for p in src.iterdir())
    largest = max(p.stat().st_size for p in shards)
    weights = sum(p.stat().st_size for p in shards)
    print(
        f"model folder: {len(shards)} shards, {total / MB:,.0f} MB in all, "
        f"largest shard {largest / MB:,.0f} MB"
    )

    env_cmd = [FOUNDRY, "import-model", str(src), "--accept-license", "--no-dvc", "-q", "--models-dir"]
    cp_dest, models = work / "cp-copy", work / "models"
    for p in (cp_dest, models):  # warm-up: page cache, Python bytecode
        reset(p)
    run_child(["cp", "-r", str(src), str(cp_dest)])
    run_child([*env_cmd, str(models)])
    cp_times, foundry_times, link_times, hash_times = [], [], [], []
    for _ in range(args.rounds):
        reset(cp_dest)
        cp_times.append(run_child(["cp", "-r", str(src), str(cp_dest)]))
        reset(models)
        foundry_times.append(run_child([*env_cmd, str(models)]))
        reset(models)
        link_times.append(run_child([*env_cmd, str(models), "--link"]))
        hash_times.append(sha256_all(shards))
    reset(models)
    rss = child_peak_rss([*env_cmd, str(models)])
    reset(models)
    startup = statistics.median(run_child([FOUNDRY, "--help"]) for _ in range(3))

    cp_med, foundry_med = statistics.median(cp_times), statistics.median(foundry_times)
    hash_med = statistics.median(hash_times)
    ratio = foundry_med / cp_med
    budget = largest + 300 * MB
    print(f"cp -r            : {cp_med:6.2f} s  (rounds: {', '.join(f'{t:.2f}' for t in cp_times)})")
    print(
        f"foundry import   : {foundry_med:6.2f} s  (rounds: {', '.join(f'{t:.2f}' for t in foundry_times)})"
    )
    print(f"  of which CLI start-up (foundry --help): {startup:.2f} s")
    link_med = statistics.median(link_times)
    print(f"foundry --link   : {link_med:6.2f} s  (rounds: {', '.join(f'{t:.2f}' for t in link_times)})  "
          f"= {link_med / cp_med:.2f} x cp -r")  # fmt: skip
    print(
        f"sha256 alone     : {hash_med:6.2f} s  ({weights / MB / hash_med:,.0f} MB/s; "
        f"the floor of any import that records sha256: {hash_med / cp_med:.2f} x cp -r)"
    )
    print(f"foundry / (cp -r + sha256) : {foundry_med / (cp_med + hash_med):.2f}")
    print(f"wall time ratio  : {ratio:.2f} x cp -r   (target <= 1.5)  {'OK' if ratio <= 1.5 else 'MISSED'}")
    target = f"target <= largest shard + 300 MB = {budget / MB:,.0f} MB"
    print(f"peak RSS         : {rss / MB:,.0f} MB   ({target})  {'OK' if rss <= budget else 'MISSED'}")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
