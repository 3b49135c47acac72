"""An entry's own tokenizer:/train:/evaluate: keys win over the global sections, and the stages say so.

The repro: `dvc exp run -S model_name=gpt-bpe -S train.steps=20` trained 300 steps (gpt-bpe's own
`train.steps`), and nothing said the 20 was ignored.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from conftest import VENV_BIN, run_cmd, tiny_params
from model_foundry.config import Shadow, load_params, parse_params, shadowed_settings

FOUNDRY = str(VENV_BIN / "foundry")
LINE = (
    "train.steps = 300 from models.gpt-bpe.train (global train.steps = 20 is shadowed; "
    "override with -S models.gpt-bpe.train.steps=20)"
)


def _gpt_bpe_with_global_steps(steps: int) -> dict:
    raw = tiny_params(model_name="gpt-bpe")
    raw["models"]["gpt-bpe"]["train"]["steps"] = 300
    raw["train"]["steps"] = steps  # what `-S train.steps=20` writes
    return raw


def test_entry_wins_and_the_shadowed_global_is_reported():
    raw = _gpt_bpe_with_global_steps(20)
    p = parse_params(raw)
    assert p.train.steps == 300
    assert Shadow("gpt-bpe", "train", "steps", 300, 20) in p.shadowed
    assert LINE in [str(s) for s in p.shadowed]


def test_equal_values_and_keys_the_global_leaves_out_are_not_reported():
    raw = {
        "train": {"objective": "causal_lm", "steps": 300, "lr": "2e-3"},  # YAML 1.1 reads 2e-3 as a string
        "tokenizer": {"type": "bpe"},
        "models": {
            "e": {
                "train": {"objective": "causal_lm", "steps": 300, "lr": 0.002, "warmup_steps": 30},
                "tokenizer": {"type": "char"},
            }
        },
    }
    assert shadowed_settings(raw, "e") == [Shadow("e", "tokenizer", "type", "char", "bpe")]


def test_overriding_the_entry_value_takes_effect_without_a_note():
    raw = _gpt_bpe_with_global_steps(20)
    raw["models"]["gpt-bpe"]["train"]["steps"] = 20  # what `-S models.gpt-bpe.train.steps=20` writes
    p = parse_params(raw)
    assert p.train.steps == 20 and all(s.key != "steps" for s in p.shadowed)


def test_load_params_reports_each_shadowed_key(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(_gpt_bpe_with_global_steps(20)))
    lines: list[str] = []
    load_params(path, echo=lines.append)
    assert f"note: {LINE}" in lines
    assert load_params(path, echo=None).train.steps == 300  # quiet on request


def test_stage_command_prints_the_precedence_line(tmp_path: Path):
    """Through the real CLI: the import stage loads params and prints the line to stderr."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(_gpt_bpe_with_global_steps(20)))
    args = [FOUNDRY, "import", "--params", "params.yaml", "--corpus-out", "corpus", "--source-out", "source"]
    proc = run_cmd(args, tmp_path)
    assert f"note: {LINE}" in proc.stderr.splitlines()
    assert LINE not in proc.stdout  # stdout stays the stage's own report
