"""The metrics table people read (evaluation/table.py): rounding, the baseline column, `python -m`."""

from __future__ import annotations

import json
import subprocess
import sys

from model_foundry.evaluation.table import metrics_table, worse_than_baseline

CAUSAL = {
    "val_loss": 4.254012345,
    "perplexity": 70.3891234,
    "bits_per_byte": 1.2344321,
    "tokens_scored": 123456,
    "unigram": {"val_loss": 6.02812, "perplexity": 415.19876, "bits_per_byte": 1.74512},
}


def test_causal_table_rounds_and_puts_the_baseline_beside_each_metric():
    lines = metrics_table(CAUSAL).splitlines()
    assert lines[0].split() == ["metric", "model", "unigram", "baseline"]
    assert lines[1].split() == ["loss", "(nats/token)", "4.254", "6.028"]
    assert lines[2].split() == ["perplexity", "70.39", "415.20"]
    assert lines[3].split() == ["bits", "per", "byte", "1.234", "1.745"]
    assert lines[4].split() == ["tokens", "scored", "123,456"]
    assert len(lines) == 5 and len({len(line) for line in lines[:4]}) == 1  # aligned columns
    assert worse_than_baseline(CAUSAL) is None


def test_masked_and_chat_metrics_unknown_numbers_and_notes():
    masked = {
        "mlm_loss": 5.1234, "mlm_accuracy": 0.41234, "masked_tokens": 2048, "pseudo_perplexity": 1234.5678,
        "pseudo_ppl_tokens": 300, "pseudo_ppl_sequences": 2, "new_metric": 0.000123456,
        "unigram": {"val_loss": 6.0, "perplexity": 403.4, "bits_per_byte": 1.7},
    }  # fmt: skip
    text = metrics_table(masked)
    assert "41.2%" in text and "1,234.57" in text and "403.40" in text and "0.0001235" in text
    assert worse_than_baseline(masked) == ("pseudo_perplexity", 1234.5678, 403.4)
    chat = {"val_loss": 2.0, "perplexity": float("inf"), "tokens_scored": 10, "windows_scored": 2,
            "note": "assistant tokens only", "data_format": "chat",
            "unigram": {"val_loss": 3.0, "perplexity": 20.0}}  # fmt: skip
    lines = metrics_table(chat).splitlines()
    assert lines[2].split() == ["perplexity", "inf", "20.00"] and lines[-2:] == [
        "note: assistant tokens only",
        "data_format: chat",
    ]
    assert worse_than_baseline(chat) == ("perplexity", float("inf"), 20.0)
    assert "unigram" not in metrics_table({"val_loss": 1.0})  # no baseline: no column


def test_python_m_prints_the_table_of_a_metrics_file(tmp_path):
    path = tmp_path / "metrics.json"
    path.write_text(json.dumps(CAUSAL))
    cmd = [sys.executable, "-m", "model_foundry.evaluation.table"]
    out = subprocess.run([*cmd, str(path)], capture_output=True, text=True, check=True).stdout
    assert out == metrics_table(CAUSAL) + "\n"
    missing = subprocess.run([*cmd, str(tmp_path / "nope.json")], capture_output=True, text=True)
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "dvc repro" in missing.stderr
