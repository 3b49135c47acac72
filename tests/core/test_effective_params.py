"""`dvc exp show` shows the settings each run used: the train stage writes plots/effective_params.json (a
metrics file in dvc.yaml), with the catalog entry's own train:/tokenizer: keys over the global sections.

No pipeline runs here: the file the train stage writes is checked in tests/core/test_tracking.py (same
bytes on retraining); this checks its content for an entry with overrides and that DVC displays it."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import make_repo_copy, run_cmd, tiny_params
from model_foundry.config import parse_params
from model_foundry.training import report


def _overridden() -> dict:
    """Tiny params selecting gpt-bpe, whose own `train.steps` (9) overrides the global one (6)."""
    raw = tiny_params(model_name="gpt-bpe")
    raw["models"]["gpt-bpe"]["train"]["steps"] = 9
    assert raw["train"]["steps"] == 6
    return raw


def test_the_entry_overrides_win() -> None:
    settings = report.effective_params(parse_params(_overridden()), 1234, "bpe", 320)
    assert settings["steps"] == 9 and settings["lr"] == 0.002 and settings["objective"] == "causal_lm"
    assert settings["tokenizer"] == "bpe" and settings["vocab_size"] == 320
    assert settings["architecture"] == "gpt" and settings["parameters"] == 1234
    lora = settings["lora"]  # lists joined, None left out: only values DVC displays
    assert lora["modules_to_save"] == "" and "target_modules" not in lora and "output_name" not in settings


def test_dvc_exp_show_displays_the_effective_value(tmp_path: Path) -> None:
    """The workspace row of `dvc exp show --json` in a repo copy (~10 s: a copy and two DVC calls)."""
    raw = _overridden()
    repo = make_repo_copy(tmp_path / "repo", raw)
    settings = report.effective_params(parse_params(raw), 1234, "bpe", 320)
    report.write_effective_params(repo / "plots", settings)

    (row,) = [
        r
        for r in json.loads(run_cmd(["dvc", "exp", "show", "--json"], repo).stdout)
        if r["rev"] == "workspace"
    ]
    data = row["data"]
    shown = data["metrics"]["plots/effective_params.json"]["data"]
    assert shown["steps"] == 9  # what the run used
    assert shown["tokenizer"] == "bpe" and shown["architecture"] == "gpt" and shown["lora"]["r"] == 8
    assert data["params"]["params.yaml"]["data"]["train"]["steps"] == 6  # params.yaml's global value

    header = run_cmd(["dvc", "exp", "show", "--csv"], repo).stdout.splitlines()[0].split(",")
    assert {"steps", "lr", "tokenizer", "train.steps"} <= set(header)  # short names, no file prefixes
