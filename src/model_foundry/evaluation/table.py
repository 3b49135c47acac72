"""The evaluate stage's metrics for people: a small rounded table, the unigram baseline beside each metric.

    python -m model_foundry.evaluation.table metrics.json

    metric                  model   unigram baseline
    loss (nats/token)       4.254              6.028
    perplexity              70.39             415.20
    bits per byte           1.234              1.745
    tokens scored          12,345

metrics.json itself stays the evaluate stage's JSON (DVC and scripts read it); this module only formats it.
Pure and torch-free: it imports in milliseconds.
"""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["metrics_table", "worse_than_baseline"]


def _fixed(digits: int) -> Callable[[float], str]:
    def fmt(x: float) -> str:
        return f"{x:,.{digits}f}" if math.isfinite(x) else str(x)

    return fmt


def _count(x: float) -> str:
    return f"{int(x):,}"


def _percent(x: float) -> str:
    return f"{100 * x:.1f}%"


def _generic(x: float) -> str:
    """A metric this table does not know: counts with separators, other numbers to 4 significant digits."""
    return _count(x) if isinstance(x, int) else f"{x:.4g}"


# metrics.json key → (label, format, key of the same measure in metrics["unigram"] or None), in table order
ROWS: dict[str, tuple[str, Callable[[float], str], str | None]] = {
    "val_loss": ("loss (nats/token)", _fixed(3), "val_loss"),
    "perplexity": ("perplexity", _fixed(2), "perplexity"),
    "bits_per_byte": ("bits per byte", _fixed(3), "bits_per_byte"),
    "mlm_loss": ("MLM loss (nats/masked token)", _fixed(3), None),
    "mlm_accuracy": ("MLM accuracy", _percent, None),
    "pseudo_perplexity": ("pseudo-perplexity", _fixed(2), "perplexity"),
    "tokens_scored": ("tokens scored", _count, None),
    "windows_scored": ("windows scored", _count, None),
    "masked_tokens": ("masked tokens", _count, None),
    "pseudo_ppl_tokens": ("pseudo-perplexity tokens", _count, None),
    "pseudo_ppl_sequences": ("pseudo-perplexity sequences", _count, None),
}

# The measure that decides "worse than the baseline", by the first key present: (model key, unigram key)
VERDICT_KEYS = (("perplexity", "perplexity"), ("pseudo_perplexity", "perplexity"))


def metrics_table(metrics: dict[str, Any]) -> str:
    """The evaluate stage's metrics (the dict written to metrics.json) as an aligned text table.

    One row per number: known metrics in a fixed order with their own rounding (loss and bits per byte 3
    decimals, perplexity 2, counts with thousands separators, accuracy in %), then any other number
    (4 significant digits); the "unigram baseline" column holds the same measure of `metrics["unigram"]`
    where there is one. Text values (`note`, `data_format`) follow the table as "key: value" lines.
    Returns the lines joined by newlines, without a trailing newline. Never raises for a dict of
    numbers, strings and a "unigram" dict.
    """
    unigram = _unigram(metrics)
    rows: list[tuple[str, str, str]] = []
    numbers = {k: v for k, v in metrics.items() if _is_number(v)}
    for key, (label, fmt, base_key) in ROWS.items():
        if key in numbers:
            base = unigram.get(base_key) if base_key else None
            rows.append((label, fmt(numbers[key]), "" if base is None else fmt(base)))
    rows += [(key, _generic(v), "") for key, v in numbers.items() if key not in ROWS]

    header = ("metric", "model", "unigram baseline" if any(r[2] for r in rows) else "")
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(3)]
    lines = [f"{r[0]:<{widths[0]}}   {r[1]:>{widths[1]}}   {r[2]:>{widths[2]}}".rstrip() for r in table]
    lines += [f"{key}: {v}" for key, v in metrics.items() if isinstance(v, str)]
    return "\n".join(lines)


def worse_than_baseline(metrics: dict[str, Any]) -> tuple[str, float, float] | None:
    """(measure, model value, baseline value) when the model's perplexity (pseudo-perplexity for masked LM)
    is above the unigram baseline's, i.e. it predicts the validation text worse than token frequencies
    alone; None when it is not, or when either number is missing."""
    unigram = _unigram(metrics)
    for key, base_key in VERDICT_KEYS:
        model, base = metrics.get(key), unigram.get(base_key)
        if isinstance(model, int | float) and base is not None:
            return (key, float(model), base) if model > base else None
    return None


def _unigram(metrics: dict[str, Any]) -> dict[str, float]:
    """The numbers of metrics["unigram"] ({} when there is none)."""
    unigram = metrics.get("unigram")
    if not isinstance(unigram, dict):
        return {}
    return {k: float(v) for k, v in unigram.items() if _is_number(v)}


def _is_number(x: object) -> bool:
    return isinstance(x, int | float) and not isinstance(x, bool)


def main(argv: list[str]) -> int:
    """`python -m model_foundry.evaluation.table [metrics.json]`: print the table; 2 on a user error."""
    path = Path(argv[0] if argv else "metrics.json")
    try:
        metrics = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        print(f"error: {path} does not exist.", file=sys.stderr)
        print("  hint: The evaluate stage writes it: run `dvc repro`.", file=sys.stderr)
        return 2
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        print(f"error: {path} is not a readable JSON file: {e}", file=sys.stderr)
        print("  hint: Run the evaluate stage again: `dvc repro evaluate`.", file=sys.stderr)
        return 2
    if not isinstance(metrics, dict):
        print(f"error: {path} holds no metrics object.", file=sys.stderr)
        return 2
    print(metrics_table(metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
