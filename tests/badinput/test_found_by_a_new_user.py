"""Cases a fresh-clone trial found after the rest of the bad-input suite: each meets the error contract."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from tests.badinput.checks import assert_clean_error, foundry, snapshot

PARAMS = {
    "model_name": "tiny",
    "models": {"tiny": {"architecture": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32}},
    "data": {"source": "corpus"},
    "train": {"block_size": 32, "batch_size": 4, "threads": 1, "steps": 2},
}


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus/a.txt").write_text("Some text.\n\nMore text here.\n", encoding="utf-8")
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(PARAMS, sort_keys=False), encoding="utf-8")
    return tmp_path


def refused(project: Path, args: list[str], must_mention) -> str:
    before = snapshot(project)
    return assert_clean_error(foundry(args, project), project, before, must_mention)


def test_jsonl_with_an_unpaired_surrogate_escape(project: Path) -> None:
    """JSON allows "\\ud800" alone; it is not Unicode text and used to crash writing the split."""
    (project / "corpus/a.txt").unlink()
    (project / "corpus/b.jsonl").write_text(
        "".join(f'{{"text": "record {i} is fine"}}\n' for i in range(12)) + '{"text": "a \\ud800 b"}\n',
        encoding="utf-8",
    )
    refused(project, ["import", "--corpus-out", "data/corpus", "--source-out", "data/source"], ["b.jsonl:13"])


@pytest.mark.parametrize(
    "extra",
    ["model_name: tiny\n", "train:\n  lr: 0.1\n  lr: 0.2\n"],
    ids=["top-level", "inside-a-section"],
)
def test_a_key_written_twice_is_refused(project: Path, extra: str) -> None:
    """PyYAML keeps the last of two equal keys without a word: a hand edit further down would win silently."""
    with open(project / "params.yaml", "a", encoding="utf-8") as f:
        f.write(extra)
    refused(project, ["validate"], ["written twice"])


@pytest.mark.parametrize(
    "args",
    [
        ["generate", "models/x", "--max-new-tokens", "-5"],
        ["import-model", "--bogus", "x"],
        ["no-such-command"],
        ["info"],
    ],
    ids=["bad-value", "unknown-option", "unknown-command", "missing-argument"],
)
def test_command_line_usage_errors_follow_the_error_format(project: Path, args: list[str]) -> None:
    refused(project, args, ["--help"])


def test_absurd_step_counts_are_refused(project: Path) -> None:
    params = {**PARAMS, "train": {**PARAMS["train"], "steps": 10**20}}
    (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    refused(project, ["validate"], ["train.steps"])


def test_a_corpus_file_of_another_kind_is_refused_before_anything_runs(project: Path) -> None:
    (project / "corpus/notes.csv").write_text("a,b\n", encoding="utf-8")
    params = {**PARAMS, "data": {"source": "corpus/notes.csv"}}
    (project / "params.yaml").write_text(yaml.safe_dump(params), encoding="utf-8")
    refused(
        project,
        [
            "inputs",
            "--data-out",
            "data/inputs/data.json",
            "--model-out",
            "data/inputs/model.json",
            "--tokenizer-out",
            "data/inputs/tokenizer.json",
        ],  # fmt: skip
        ["notes.csv", ".txt or .jsonl"],
    )


def test_importing_a_damaged_model_foundry_folder_is_refused(tmp_path: Path) -> None:
    """A folder we wrote records its weights' sha256: a flipped byte must not be imported as the model."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    from model_foundry.data.tokenizer_training import train_tokenizer
    from model_foundry.model_folder import load_adapter

    src = tmp_path / "src"
    torch.manual_seed(0)
    GPT2LMHeadModel(
        GPT2Config(n_layer=1, n_head=2, n_embd=32, n_positions=32, vocab_size=320)
    ).save_pretrained(src)
    train_tokenizer("bpe", ["some words here and there"] * 20, 320, "causal_lm").save_pretrained(src)
    project = tmp_path / "proj"
    project.mkdir()
    ok = foundry(["import-model", str(src), "--name", "first", "--accept-license", "--no-dvc"], project)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    imported = project / "models" / "first"
    load_adapter(imported)  # intact: loads

    weights = imported / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF  # one flipped byte in the tensor data: the header still parses
    weights.write_bytes(bytes(data))
    refused(project, ["import-model", str(imported), "--name", "second", "--accept-license", "--no-dvc"],
            ["model.safetensors", "sha256"])  # fmt: skip
