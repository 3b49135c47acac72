"""Bad params through the real CLI: each kind gives one `error:` + `hint:`, exit 2, no traceback, nothing new.

Kinds (issue 8, helper "params"): booleans that are not booleans (and other entry keys of the wrong type),
unreadable or hostile params files, values that validate but cannot run on this machine (memory estimated
before anything is allocated; threads bounded by the cores), and corpus sources that are empty or inside the
pipeline's own outputs. Each case runs `foundry validate` and/or the `inputs` stage (what `dvc repro` runs
first).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml
from tests.badinput.checks import assert_clean_error, foundry, snapshot

TINY = {"architecture": "gpt", "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32}
BASE = {
    "model_name": "tiny",
    "models": {"tiny": dict(TINY)},
    "data": {"source": "corpus"},
    "train": {"block_size": 32, "batch_size": 4, "threads": 1, "steps": 2},
}
INPUTS = ["inputs", "--data-out", "data/inputs/data.json", "--model-out", "data/inputs/model.json",
          "--tokenizer-out", "data/inputs/tokenizer.json"]  # fmt: skip


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """A project with a corpus, earlier pipeline outputs under data/ and models/, and valid params."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus/a.txt").write_text("Some text.\n\nMore text here.\n", encoding="utf-8")
    (tmp_path / "data/corpus").mkdir(parents=True)
    (tmp_path / "data/corpus/train.jsonl").write_text('{"text": "old output"}\n', encoding="utf-8")
    (tmp_path / "models/tiny").mkdir(parents=True)
    (tmp_path / "models/tiny/notes.txt").write_text("not a corpus\n", encoding="utf-8")
    (tmp_path / "data/raw").mkdir()
    (tmp_path / "data/raw/extra.txt").write_text(
        "A user's own corpus under data/.\n\nSecond.\n", encoding="utf-8"
    )
    write(tmp_path, BASE)
    return tmp_path


def write(project: Path, params: dict) -> None:
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False), encoding="utf-8")


def model(**entry) -> dict:
    return {**BASE, "models": {"tiny": entry}}


def with_entry(**keys) -> dict:
    return {**BASE, "models": {"tiny": {**TINY, **keys}}}


def with_section(section: str, **keys) -> dict:
    return {**BASE, section: {**BASE.get(section, {}), **keys}}


def refused(project: Path, args: list[str], must_mention, env: dict | None = None) -> str:
    before = snapshot(project)
    return assert_clean_error(foundry(args, project, env), project, before, must_mention)


def test_valid_params_pass(project: Path) -> None:
    """The fixture itself is fine: validate and the inputs stage accept it (so each refusal below is real)."""
    assert foundry(["validate"], project).returncode == 0
    proc = foundry(INPUTS, project)
    assert proc.returncode == 0, proc.stderr


# --- booleans are booleans; entry keys have types --------------------------------------------------------
HF_ENTRY = {"architecture": "hf-gpt2", "source": "openai-community/gpt2"}
TYPED = {
    "license_accepted 'false'": (model(**HF_ENTRY, license_accepted="false"),
                                 "license_accepted"),
    "license_accepted 'true'": (with_entry(license_accepted="true"), "license_accepted"),
    "license_accepted 1": (with_entry(license_accepted=1), "license_accepted"),
    "license_accepted 0": (with_entry(license_accepted=0), "license_accepted"),
    "init_missing 'yes'": (with_entry(init_missing="yes"), "init_missing"),
    "train.compile 'false'": (with_section("train", compile="false"), "compile"),
    "tie_embeddings 'false'": (model(architecture="lstm", tie_embeddings="false"),
                               "tie_embeddings"),
    "bidirectional 'no'": (model(architecture="gru", bidirectional="no"),
                           "bidirectional"),
    "tokenizer_override 5": (with_entry(tokenizer_override=5), "tokenizer_override"),
    "revision int": (model(**HF_ENTRY, revision=1234567), "revision"),
    "description list": (with_entry(description=["a"]), "description"),
    "source 5": (with_entry(source=5), "source"),
    "lr too large an int": (with_section("train", lr=10**400), "train.lr"),
    "lr NaN": (with_section("train", lr=float("nan")), "train.lr"),
    "lr Infinity": (with_section("train", lr=float("inf")), "train.lr"),
}  # fmt: skip


@pytest.mark.parametrize("command", ["validate", "inputs"])
@pytest.mark.parametrize("case", TYPED)
def test_wrong_types_refused(project: Path, case: str, command: str) -> None:
    params, field = TYPED[case]
    write(project, params)
    refused(project, ["validate"] if command == "validate" else INPUTS, field)


# --- unreadable or hostile params files --------------------------------------------------------------------
def _laughs() -> bytes:
    lines = ["a: &a [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    return ("\n".join(lines) + "\n").encode()


BLOCK_DEEP = "".join(" " * i + f"k{i}:\n" for i in range(500)) + " " * 500 + "v: 1\n"
HOSTILE = {
    "latin-1 byte": ("model_name: caf\xe9\n".encode("latin-1"), "not UTF-8"),
    "utf-16": ("model_name: tiny\n".encode("utf-16"), "not UTF-8"),
    "binary": (bytes(range(256)) * 4, "not UTF-8"),
    "flow nested 5000 deep": (("x: " + "[" * 5000 + "]" * 5000 + "\n").encode(), "levels"),
    "block nested 500 deep": (BLOCK_DEEP.encode(), "levels"),
    "billion laughs": (_laughs(), "aliases"),
    "over 1 MiB": (b"# " + b"x" * (1 << 20) + b"\nmodel_name: tiny\n", "bytes"),
    "invalid YAML": (b"model_name: [tiny\n", "not valid YAML"),
    "not a mapping": (b"- just\n- a list\n", "mapping"),
}  # fmt: skip


@pytest.mark.parametrize("command", ["validate", "inputs"])
@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_params_file_refused(project: Path, case: str, command: str) -> None:
    data, mention = HOSTILE[case]
    (project / "params.yaml").write_bytes(data)
    refused(project, ["validate"] if command == "validate" else INPUTS, ["params.yaml", mention])


def test_params_path_is_a_folder(project: Path) -> None:
    refused(project, ["validate", "--params", "corpus"], "corpus")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable_params_file(project: Path) -> None:
    (project / "params.yaml").chmod(0)
    refused(project, ["validate"], "params.yaml")


# --- values that validate but cannot run here ------------------------------------------------------------
BIG = {
    "gpt block_size 10**9": with_entry(block_size=10**9),
    "gpt n_embd 10**6": with_entry(n_embd=10**6),
    "gpt n_layer 10**30": with_entry(n_layer=10**30),
    "gpt n_layer 10**400": with_entry(n_layer=10**400),
    "gpt vocab_size 10**9": with_entry(vocab_size=10**9),
    "train.batch_size 10**7": with_section("train", batch_size=10**7),
    "evaluate.batch_size 10**9": with_section("evaluate", batch_size=10**9),
    "bert intermediate_size 10**9": {**BASE, "train": {**BASE["train"], "objective": "masked_lm"}, "models": {
        "tiny": {"architecture": "bert", "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32,
                 "intermediate_size": 10**9}}},
    "lstm hidden_size 10**6": model(architecture="lstm", hidden_size=10**6),
    "rnn n_layer 10**30": model(architecture="rnn", n_layer=10**30),
    "gru embedding_size 10**7": model(architecture="gru", embedding_size=10**7),
}  # fmt: skip


@pytest.mark.parametrize("command", ["validate", "inputs"])
@pytest.mark.parametrize("case", BIG)
def test_too_big_for_this_machine_refused(project: Path, case: str, command: str) -> None:
    write(project, BIG[case])
    line = refused(
        project, ["validate"] if command == "validate" else INPUTS, ["memory", "parameters", "available"]
    )
    assert "models.tiny" in line


def test_threads_bounded_by_cores(project: Path) -> None:
    """Absurd thread counts are refused; a few more than the cores (a committed `threads: 2` on a 1-core
    machine) still validate: the runtime only warns, because the count changes results."""
    write(project, with_section("train", threads=10**6))
    refused(project, INPUTS, ["train.threads", "CPU core"])
    write(
        project,
        {**with_section("train", threads=9 * (os.cpu_count() or 1)), "models": {"tiny": dict(HF_ENTRY)}},
    )
    refused(project, ["validate"], ["train.threads", "CPU core"])
    write(project, with_section("train", threads=(os.cpu_count() or 1) + 1))
    assert foundry(["validate"], project).returncode == 0


def test_max_ram_setting(project: Path) -> None:
    """FOUNDRY_MAX_RAM replaces the available memory as the limit (a run meant for a bigger machine)."""
    write(project, with_entry(n_layer=64, n_embd=512, n_head=8))
    assert foundry(["validate"], project, {"FOUNDRY_MAX_RAM": "1TiB"}).returncode == 0
    refused(project, ["validate"], ["FOUNDRY_MAX_RAM", "memory"], {"FOUNDRY_MAX_RAM": "200MiB"})
    refused(project, ["validate"], "FOUNDRY_MAX_RAM", {"FOUNDRY_MAX_RAM": "lots"})


# --- corpus sources: empty, or inside the pipeline's outputs ---------------------------------------------
SOURCES = {
    "empty string": ("", "empty"),
    "blank string": ("  ", "empty"),
    "empty in a list": (["corpus", ""], "empty"),
    "empty list": ([], "no corpus"),
    "the project folder": (".", "project folder"),
    "data (holds data/corpus)": ("data", "data/corpus"),
    "inside data/corpus": ("data/corpus/train.jsonl", "data/corpus"),
    "models": ("models", "models"),
    "inside models": ("models/tiny", "models"),
    "a link into models": ("link", "models"),
    "missing": ("nowhere", "does not exist"),
}


@pytest.mark.parametrize("case", SOURCES)
def test_bad_corpus_source_refused(project: Path, case: str) -> None:
    source, mention = SOURCES[case]
    (project / "link").symlink_to(project / "models/tiny")
    write(project, with_section("data", source=source))
    refused(project, INPUTS, ["data.source", mention])


def test_user_folder_under_data_is_fine(project: Path) -> None:
    """Only the pipeline's own folders are refused: a corpus kept in data/raw/ is read."""
    write(project, with_section("data", source="data/raw"))
    proc = foundry(INPUTS, project)
    assert proc.returncode == 0, proc.stderr


def test_import_stage_refuses_outputs_as_corpus(project: Path) -> None:
    """The import stage (what reads the corpus) applies the same rule as the inputs stage."""
    write(project, with_section("data", source="models"))
    refused(project, ["import", "--corpus-out", "data/corpus", "--source-out", "data/source"], "models/")
