"""`foundry recommend`: the memory arithmetic, recomputed here from the formulas and the model cards' numbers
(not from model_foundry.recommend's table), through the CLI."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from conftest import VENV_BIN
from model_foundry.recommend import (
    QWEN25,
    advise,
    available_memory,
    format_report,
    kv_bytes_per_token,
    parse_ram,
    recommend,
)

FOUNDRY = str(VENV_BIN / "foundry")
GIB = 2**30
CONTEXT = 4096

# size: (parameters, layers, attention heads, kv heads, hidden, intermediate, vocab) — the model cards
# (https://huggingface.co/Qwen/Qwen2.5-<size>) and their config.json
CARDS = {
    "0.5B": (0.49e9, 24, 14, 2, 896, 4864, 151936),
    "1.5B": (1.54e9, 28, 12, 2, 1536, 8960, 151936),
    "3B": (3.09e9, 36, 16, 2, 2048, 11008, 151936),
    "7B": (7.61e9, 28, 28, 4, 3584, 18944, 152064),
    "14B": (14.7e9, 48, 40, 8, 5120, 13824, 152064),
}
# the answers the formulas give (checked against a fresh computation below, so a changed formula shows here)
EXPECTED = {
    "inference": {1: None, 2: "0.5B", 4: "1.5B", 8: "3B", 16: "3B", 32: "14B", 64: "14B"},
    "lora": {1: None, 2: None, 4: None, 8: "0.5B", 16: "1.5B", 32: "3B", 64: "7B"},
    "full": {1: None, 2: None, 4: None, 8: None, 16: "0.5B", 32: "0.5B", 64: "1.5B"},
}


def needed(size: str, purpose: str, context: int = CONTEXT) -> int:
    """Bytes `size` needs for `purpose` (bf16) at `context` tokens, from the README's formulas."""
    params, layers, heads, kv, hidden, inter, vocab = CARDS[size]
    p = round(params)
    if purpose == "inference":
        rest = p * 2 + 2 * layers * kv * (hidden // heads) * 2 * context
    else:
        activations = 34 * context * hidden * layers + 4 * context * vocab
        if purpose == "lora":
            adapter = 8 * layers * (9 * hidden + 2 * kv * (hidden // heads) + 3 * inter)
            rest = p * 2 + adapter * 16 + activations
        else:
            rest = p * 16 + activations
    return rest + GIB // 2 + math.ceil(0.1 * rest)


def foundry(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([FOUNDRY, *args], capture_output=True, text=True, timeout=60)


def recommend_json(*args: str) -> dict[str, Any]:
    result = foundry("recommend", "--json", *args)
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize("purpose", ["inference", "lora", "full"])
def test_largest_size_that_fits(purpose: str) -> None:
    for ram, expected in EXPECTED[purpose].items():
        fitting = [s for s in CARDS if needed(s, purpose) <= ram * GIB]
        assert (fitting[-1] if fitting else None) == expected, (purpose, ram)
        data = recommend_json("--ram", str(ram), "--for", purpose)
        assert data["recommended"] == expected, (purpose, ram)
        assert [s["needed_bytes"] for s in data["sizes"]] == [needed(s, purpose) for s in CARDS]
        for s in data["sizes"]:
            assert sum(s["parts"].values()) == s["needed_bytes"]
            assert s["fits"] == (s["needed_bytes"] <= ram * GIB)


def test_kv_cache_bytes_per_token_by_hand() -> None:
    # Qwen2.5-7B, bf16: 2 (K and V) · 28 layers · 4 kv heads · 128 head dim (3584 / 28) · 2 bytes
    seven_b = next(m for m in QWEN25 if m.size == "7B")
    assert kv_bytes_per_token(seven_b, 2) == 57_344
    data = recommend_json("--ram", "64")
    kv = next(s for s in data["sizes"] if s["size"] == "7B")["parts"]["kv_cache"]
    assert kv == 57_344 * 4096 == 234_881_024
    fp32 = recommend_json("--ram", "64", "--dtype", "fp32", "--context", "1000")
    assert next(s for s in fp32["sizes"] if s["size"] == "7B")["parts"]["kv_cache"] == 2 * 57_344 * 1000


def test_table_matches_the_model_cards() -> None:
    for m in QWEN25:
        params, layers, heads, kv, hidden, inter, vocab = CARDS[m.size]
        assert (m.parameters, m.layers, m.heads, m.kv_heads, m.hidden) == (params, layers, heads, kv, hidden)
        assert (m.intermediate, m.vocab) == (inter, vocab)
        assert m.tied == (m.size in ("0.5B", "1.5B", "3B"))


def test_json_schema() -> None:
    data = recommend_json("--ram", "16", "--for", "lora")
    assert set(data) == {
        "memory", "for", "dtype", "context", "recommended", "repo_id", "import_command", "catalog_entry",
        "sizes",
    }  # fmt: skip
    assert data["memory"] == {
        "available_bytes": 16 * GIB, "available_gib": 16.0, "source": "--ram", "device": "cpu",
    }  # fmt: skip
    assert (data["for"], data["dtype"], data["context"]) == ("lora", "bf16", 4096)
    assert data["repo_id"] == "Qwen/Qwen2.5-1.5B"
    assert data["import_command"] == "foundry import-model Qwen/Qwen2.5-1.5B"
    assert data["catalog_entry"] == {
        "qwen2-5-1-5b": {
            "architecture": "hf-qwen2",
            "source": "Qwen/Qwen2.5-1.5B",
            "license_accepted": True,
            "description": "Qwen2.5-1.5B base from the Hub (apache-2.0)",
        }
    }
    assert [s["size"] for s in data["sizes"]] == list(CARDS)
    for s in data["sizes"]:
        assert set(s) == {
            "size", "repo_id", "source_url", "parameters", "max_context", "needed_bytes", "needed_gib",
            "fits", "parts", "arithmetic",
        }  # fmt: skip
        assert s["max_context"] == 32_768
        assert set(s["parts"]) == {"weights", "adapter", "activations", "overhead"} == set(s["arithmetic"])
        assert s["source_url"] == f"https://huggingface.co/Qwen/Qwen2.5-{s['size']}"


# Qwen2.5 reads 32,768 tokens: pre-trained at that length; the 7B/14B cards' 131,072 need YaRN rope scaling,
# which transformers does not enable by default
MAX_CONTEXT = 32_768


@pytest.mark.parametrize("context", ["32769", "1000000"])
def test_context_longer_than_qwen_reads_is_refused(context: str) -> None:
    result = foundry("recommend", "--ram", "64", "--context", context)
    assert result.returncode == 2, result.stdout
    assert result.stdout == "" and "Traceback" not in result.stderr
    error, hint = result.stderr.splitlines()
    assert error.startswith(f"error: --context {int(context):,} is longer than any Qwen2.5 size reads")
    assert "at most 32,768 tokens" in error and "YaRN" in error
    assert hint == "  hint: Use --context 32768 or less."


def test_longest_context_qwen_reads_is_answered() -> None:
    for m in QWEN25:
        assert m.max_context == MAX_CONTEXT and "model card" in m.context_source
    data = recommend_json("--ram", "64", "--context", str(MAX_CONTEXT))
    assert data["context"] == MAX_CONTEXT and data["recommended"] == "14B"
    assert [s["needed_bytes"] for s in data["sizes"]] == [needed(s, "inference", MAX_CONTEXT) for s in CARDS]


def test_text_report_shows_arithmetic_and_what_to_paste() -> None:
    result = foundry("recommend", "--ram", "8")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "recommended: Qwen2.5-3B" in out
    assert "foundry import-model Qwen/Qwen2.5-3B" in out
    assert "architecture: hf-qwen2" in out and "source: Qwen/Qwen2.5-3B" in out
    assert "2 · 36 layers · 2 kv heads · 128 head dim · 2 bytes = 36,864 bytes/token × 4,096 tokens" in out


def test_nothing_fits_is_an_answer() -> None:
    result = foundry("recommend", "--ram", "1")
    assert result.returncode == 0
    assert "Nothing fits: even Qwen2.5-0.5B needs" in result.stdout
    # 0.91 GiB of bf16 weights + 0.5 GiB runtime + 10%: no context fits in 1 GiB
    assert "A shorter --context cannot help: even at 1 token it needs 1.50 GiB" in result.stdout
    assert "or shorter fits" not in result.stdout
    assert recommend_json("--ram", "1")["recommended"] is None


# the longest context at which Qwen2.5-0.5B fits when nothing fits at 4,096 (None: its weights do not fit)
SHORTER_CONTEXT = {
    "inference": {1: None},
    "lora": {1: None, 2: 309, 4: 1767},
    "full": {1: None, 2: None, 4: None, 8: None},
}


@pytest.mark.parametrize("purpose", ["inference", "lora", "full"])
def test_nothing_fits_advice_is_true(purpose: str) -> None:
    """Every --ram of the table: a shorter --context is advised only when one fits (and the longest one is
    named); otherwise the memory 0.5B needs is named; another --for is advised only when it fits."""
    shorter = SHORTER_CONTEXT[purpose]
    assert set(shorter) == {ram for ram, size in EXPECTED[purpose].items() if size is None}
    for ram in EXPECTED[purpose]:
        available = ram * GIB
        rec = recommend(parse_ram(ram), purpose)
        out = format_report(rec)
        if ram not in shorter:
            assert advise(rec) is None and "Nothing fits" not in out
            continue
        least = needed("0.5B", purpose, 1)
        if shorter[ram] is None:
            assert least > available  # the weights (and the runtime) alone overflow
            assert "or shorter fits" not in out
            assert f"A shorter --context cannot help: even at 1 token it needs {least / GIB:.2f} GiB" in out
            assert f"Qwen2.5-0.5B needs {needed('0.5B', purpose) / GIB:.2f} GiB of memory" in out
        else:
            n = shorter[ram]
            assert needed("0.5B", purpose, n) <= available < needed("0.5B", purpose, n + 1)
            assert f"--context {n:,} or shorter fits" in out and "cannot help" not in out
            assert recommend(available, purpose, context=n).model is not None
        for other in ("inference", "lora", "full"):
            advised = re.search(rf"^--for {other} fits: Qwen2.5-0.5B needs ([\d.]+) GiB", out, re.MULTILINE)
            fits = other != purpose and needed("0.5B", other) <= available
            assert (advised is not None) == fits, (purpose, ram, other)
            if advised:
                assert advised.group(1) == f"{needed('0.5B', other) / GIB:.2f}"
        assert "--dtype" not in out  # bf16 already


def test_fp32_that_does_not_fit_advises_bf16_when_it_does() -> None:
    rec = recommend(parse_ram(2.5), "inference", dtype="fp32")
    advice = advise(rec)
    assert rec.model is None and advice is not None and advice.dtype == "bf16"
    assert needed("0.5B", "inference") <= 2.5 * GIB  # bf16 fits
    assert "--dtype bf16 fits: Qwen2.5-0.5B needs 1.56 GiB in it." in format_report(rec)


@pytest.mark.parametrize("ram", ["0", "-4", "abc", "nan"])
def test_bad_ram_is_a_user_error(ram: str) -> None:
    result = foundry("recommend", f"--ram={ram}")
    assert result.returncode == 2
    assert result.stderr.startswith("error:") and "hint:" in result.stderr
    assert "Traceback" not in result.stderr


def test_measured_memory_without_torch_when_ram_given(tmp_path: Path) -> None:
    meminfo = tmp_path / "meminfo"
    meminfo.write_text("MemTotal:       32000000 kB\nMemAvailable:   8388608 kB\n")
    memory = available_memory(meminfo)
    if memory.device == "cpu":  # a CUDA machine answers with its GPU
        assert (memory.available, memory.source) == (8 * GIB, f"{meminfo} MemAvailable")
    code = (
        "import sys; from model_foundry.cli import app;"
        "app(['recommend', '--ram', '8', '--json'], standalone_mode=False);"
        "print('torch' in sys.modules, file=sys.stderr)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stderr.strip() == "False"
    assert json.loads(result.stdout)["recommended"] == "3B"
    measured = recommend_json()
    assert measured["memory"]["source"] != "--ram" and measured["memory"]["available_bytes"] > 0
