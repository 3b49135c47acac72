"""Serving: `foundry serve` under 8 concurrent clients vs the same 8 requests one after another, vs Hugging
Face `generate` at batch 8; time to first token and latency percentiles; start times of serve and chat.

The ~100M-parameter Qwen2-shaped model of `qwen_shaped.py` (fp32) is written once as a model folder
(`--folder`, default /tmp/foundry-bench/qwen-100m; `--dtype bfloat16` serves bf16 weights, with a folder of
its own). Then:

  start      `foundry serve FOLDER --max-batch-size 8`: seconds from launch to the first `GET /health` 200
             (target < 1 s) and to `GET /ready` 200 (the model loaded); `foundry chat FOLDER` in a
             pseudo-terminal: seconds from spawn to its prompt (target < 0.5 s).
  sequential 8 streamed greedy completions (prompts of 16-20 tokens: 16 random BPE tokens decoded and
             re-encoded; `--new-tokens` each), one after another,
             through the official `openai` client.
  concurrent the same 8 requests from 8 threads at once: the server batches them (continuous batching).
  hf batch 8 (after the server stopped) `model.generate` on 8 prompts of 16 token ids as one batch (the
             same lengths: no padding), greedy, `min_new_tokens` = `--new-tokens`.

Aggregate tokens/s = generated tokens ÷ wall time of the whole set. TTFT = send → first text chunk;
latency = send → last chunk; p50/p99 over the requests of all rounds. Greedy answers of the concurrent
rounds must equal the sequential ones (checked, printed). Rounds alternate sequential and concurrent.

    .venv/bin/python benchmarks/bench_serve.py                    # 2 rounds × 8 requests × 64 tokens
    .venv/bin/python benchmarks/bench_serve.py --rounds 1 --new-tokens 16   # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from qwen_shaped import build_model, machine_line, prompt_ids, prompt_text, save_folder  # noqa: E402

FOUNDRY = str(Path(sys.executable).parent / "foundry")
CLIENTS = 8


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as e:
        return int(e.code)
    except OSError:
        return 0


def start_server(folder: Path, port: int) -> tuple[subprocess.Popen[str], float, float]:
    """Launch `foundry serve`; (process, seconds to /health 200, seconds to /ready 200)."""
    started = time.perf_counter()
    proc = subprocess.Popen(
        [FOUNDRY, "serve", str(folder), "--port", str(port), "--max-batch-size", str(CLIENTS),
         "--max-tokens-cap", "1024"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    health = ready = None
    while ready is None:
        if proc.poll() is not None:
            raise SystemExit(f"foundry serve exited: {proc.stderr.read() if proc.stderr else ''}")
        if health is None and get(f"http://127.0.0.1:{port}/health") == 200:
            health = time.perf_counter() - started
        if health is not None and get(f"http://127.0.0.1:{port}/ready") == 200:
            ready = time.perf_counter() - started
        time.sleep(0.005)
    assert health is not None
    return proc, health, ready


def chat_prompt_seconds(folder: Path) -> float:
    """Seconds from spawning `foundry chat FOLDER` in a pseudo-terminal to its prompt."""
    import pexpect

    from model_foundry.chat_repl import PROMPT

    started = time.perf_counter()
    child = pexpect.spawn(FOUNDRY, ["chat", str(folder)], encoding="utf-8", timeout=60)
    child.expect_exact(PROMPT)
    seconds = time.perf_counter() - started
    child.sendcontrol("d")
    child.expect(pexpect.EOF)
    return seconds


def ask(api: object, model: str, prompt: str, new_tokens: int) -> dict[str, object]:
    """One streamed greedy completion: its text, tokens, TTFT and latency (seconds)."""
    sent = time.perf_counter()
    first = None
    text, tokens = "", 0
    stream = api.completions.create(  # type: ignore[attr-defined]
        model=model, prompt=prompt, max_tokens=new_tokens, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    for chunk in stream:
        if chunk.choices and chunk.choices[0].text:
            first = first or time.perf_counter()
            text += chunk.choices[0].text
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
    done = time.perf_counter()
    return {"text": text, "tokens": tokens, "ttft": (first or done) - sent, "latency": done - sent}


def hf_batch(prompts: list[list[int]], new_tokens: int, dtype: str) -> float:
    """Tokens/s of transformers' `generate` on the prompts as one batch (greedy, no eos)."""
    model = build_model().to(getattr(torch, dtype))
    ids = torch.tensor(prompts)
    with torch.no_grad():
        model.generate(ids[:, :4], max_new_tokens=2, do_sample=False, pad_token_id=0)  # warm-up
        start = time.perf_counter()
        out = model.generate(
            ids, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=False, eos_token_id=None,
            pad_token_id=0,
        )  # fmt: skip
        wall = time.perf_counter() - start
    return (out.size(1) - ids.size(1)) * ids.size(0) / wall


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main(argv: list[str] | None = None) -> None:
    import openai

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--folder", type=Path, default=None, help="default: /tmp/foundry-bench/qwen-100m[-bf16]")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32", help="the served weights")
    args = ap.parse_args(argv)
    torch.set_num_threads(os.cpu_count() or 1)
    print(machine_line(), flush=True)
    suffix = "" if args.dtype == "float32" else "-bf16"
    folder = save_folder(args.folder or Path(f"/tmp/foundry-bench/qwen-100m{suffix}"), dtype=args.dtype)
    from model_foundry.model_folder import load_tokenizer

    tokenizer = load_tokenizer(folder)
    texts = [prompt_text(16, 100 + i, tokenizer) for i in range(CLIENTS)]
    lengths = [len(tokenizer(t)["input_ids"]) for t in texts]
    print(f"prompts: {lengths} tokens", flush=True)

    chat_s = chat_prompt_seconds(folder)
    port = free_port()
    proc, health_s, ready_s = start_server(folder, port)
    print(f"start: serve /health 200 after {health_s:.2f} s, /ready 200 after {ready_s:.2f} s; "
          f"chat prompt after {chat_s:.2f} s", flush=True)  # fmt: skip
    api = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="none", max_retries=0, timeout=600)
    model = folder.name
    try:
        ask(api, model, texts[0], 4)  # warm-up
        results: dict[str, list[dict[str, object]]] = {"sequential": [], "concurrent": []}
        walls: dict[str, list[float]] = {"sequential": [], "concurrent": []}
        answers: dict[str, list[str]] = {}
        for r in range(args.rounds):
            for mode in ("sequential", "concurrent") if r % 2 == 0 else ("concurrent", "sequential"):
                start = time.perf_counter()
                if mode == "sequential":
                    got = [ask(api, model, t, args.new_tokens) for t in texts]
                else:
                    with ThreadPoolExecutor(CLIENTS) as pool:
                        got = list(pool.map(lambda t: ask(api, model, t, args.new_tokens), texts))
                wall = time.perf_counter() - start
                walls[mode].append(wall)
                results[mode] += got
                answers[mode] = [str(g["text"]) for g in got]
                tokens = sum(int(str(g["tokens"])) for g in got)
                print(f"round {r}: {mode:10s} {tokens} tokens in {wall:.2f} s = {tokens / wall:.1f} tokens/s",
                      flush=True)  # fmt: skip
        ready = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/ready").read())
    finally:
        proc.terminate()
        proc.wait(30)
    per_set = CLIENTS * args.new_tokens
    rate = {mode: per_set / statistics.median(w) for mode, w in walls.items()}
    hf = hf_batch([prompt_ids(16, seed=100 + i) for i in range(CLIENTS)], args.new_tokens, args.dtype)
    print(f"\nlargest batch the server decoded: {ready['largest_batch']} (batched decode: "
          f"{ready['batched_decode']}); concurrent answers equal sequential: "
          f"{answers['concurrent'] == answers['sequential']}")  # fmt: skip
    print(f"aggregate: sequential {rate['sequential']:.1f} tokens/s, concurrent {rate['concurrent']:.1f} "
          f"tokens/s ({rate['concurrent'] / rate['sequential']:.2f}×), hf generate batch 8 {hf:.1f} tokens/s "
          f"(concurrent / hf = {rate['concurrent'] / hf:.2f}×)")  # fmt: skip
    for mode, got in results.items():
        ttft = [float(str(g["ttft"])) for g in got]
        latency = [float(str(g["latency"])) for g in got]
        print(f"{mode:10s}: TTFT p50 {pct(ttft, 0.5) * 1000:.0f} ms, p99 {pct(ttft, 0.99) * 1000:.0f} ms; "
              f"latency p50 {pct(latency, 0.5):.2f} s, p99 {pct(latency, 0.99):.2f} s")  # fmt: skip
    print(f"start: serve /health {health_s:.2f} s (target 1 s), chat prompt {chat_s:.2f} s (target 0.5 s)")


if __name__ == "__main__":
    main()
