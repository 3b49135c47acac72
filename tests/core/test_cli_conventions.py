"""The conventions of a Typer/click CLI, on every command: --version/-V, -h = --help, a completion script, a
one-line summary and an example in each help, the commands people type first listed before the pipeline
stages, no "..." at 80 columns, one positional MODEL (a name or a folder) wherever a command names a model,
and `foundry info` as a fast, import-light summary (`--json`: metadata.json as it is).

Help is rendered in-process (click's own rendering, a few ms a command); the version, completion and `info`'s
imports and time are checked in subprocesses, as a user runs them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from conftest import REPO, VENV_BIN, run_cmd
from model_foundry.cli import app
from model_foundry.cli.options import STAGES_PANEL
from model_foundry.errors import FoundryError
from model_foundry.io import write_json
from model_foundry.registry.resolve import MODEL_HELP

FOUNDRY = str(VENV_BIN / "foundry")
ROOT = get_command(app)
STAGES = ["inputs", "import", "convert", "tokenize", "train", "evaluate"]
FIRST = ["import-model", "generate", "info", "chat", "serve", "list-models", "model-info", "compare"]
# Every command as its words: the top-level ones and those of `foundry models`.
COMMANDS = [[name] for name in ROOT.commands] + [  # type: ignore[attr-defined]
    ["models", name]
    for name in ROOT.commands["models"].commands  # type: ignore[attr-defined]
]
# The commands that name a model, and the arguments they need besides MODEL.
MODEL_COMMANDS = {
    "generate": [], "info": [], "chat": [], "serve": [], "merge-lora": ["--out", "merged"], "model-info": [],
    "lineage": [], "validate-model": [], "get": [], "delete-model": ["--dry-run"], "compare": ["tiny"],
}  # fmt: skip
MODEL_FOLDER_COMMANDS = ("generate", "info", "chat", "serve", "merge-lora")  # these read the folder itself
GPT_CONFIG = {"architecture": "gpt", "vocab_size": 64, "n_layer": 1, "n_head": 2, "n_embd": 32,
              "block_size": 32}  # fmt: skip


def _help(args: list[str], columns: int = 100) -> str:
    result = CliRunner().invoke(app, args, env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.stdout


def test_version_and_completion_script() -> None:
    """--version/-V print one line; --show-completion prints a bash script whose completion names commands."""
    from importlib.metadata import version

    expected = f"foundry (model-foundry) {version('model-foundry')}\n"
    for flag in ("--version", "-V"):
        assert run_cmd([FOUNDRY, flag], REPO).stdout == expected
    script = run_cmd([FOUNDRY, "--show-completion", "bash"], REPO, env={"SHELL": "/bin/bash"}).stdout
    assert "_foundry_completion" in script and "complete " in script
    words = {"_FOUNDRY_COMPLETE": "complete_bash", "COMP_WORDS": "foundry gen", "COMP_CWORD": "1"}
    assert run_cmd([FOUNDRY], REPO, env=words).stdout.split() == ["generate"]


@pytest.mark.parametrize("words", COMMANDS, ids=" ".join)
def test_every_help_has_a_summary_and_an_example(words: list[str]) -> None:
    """-h is --help; the help starts with one summary line (a sentence) and shows an example command."""
    text = _help([*words, "-h"])
    assert text == _help([*words, "--help"])
    lines = text.splitlines()
    assert lines[0].startswith(f"Usage: foundry {' '.join(words)} ") and lines[1] == ""
    summary = lines[2].strip()
    assert summary.endswith(".") and lines[3] == "", f"not a one-line summary: {lines[2:4]}"
    examples = text[text.index("Example") :].splitlines()[1:]
    assert any(line.strip().startswith("foundry ") or " foundry " in line for line in examples), text


def _sections(text: str) -> dict[str, list[str]]:
    """{section title: its command names} of `foundry --help`."""
    sections: dict[str, list[str]] = {}
    title = None
    for line in text.splitlines():
        if line and not line.startswith(" ") and line.endswith(":"):
            title = line[:-1]
            sections[title] = []
        elif line.strip().endswith(":"):  # the examples after the sections
            title = None
        elif title and line.startswith("  ") and not line.startswith("   ") and line.strip():
            sections[title].append(line.split()[0])
    return sections


def test_root_help_lists_first_commands_then_the_stages_without_truncation() -> None:
    """At 80 columns: the commands people type first, then the stages in their own section; no "..." and no
    line past 80 columns."""
    text = _help(["--help"], columns=80)
    sections = _sections(text)
    assert list(sections)[:3] == ["Options", "Commands", STAGES_PANEL]
    assert sections[STAGES_PANEL] == STAGES
    commands = sections["Commands"]
    assert [c for c in commands if c in FIRST] == FIRST and "validate" in commands and "models" in commands
    assert not set(commands) & set(STAGES)
    listed = text[text.index("Commands:") :]
    assert "..." not in listed and max(len(line) for line in text.splitlines()) <= 80
    assert "\x1b[" not in text  # plain text, in a pipe as in a terminal


def test_help_is_fast_and_plain_in_a_pipe() -> None:
    """`foundry --help` piped to a file: no ANSI codes, and it imports neither rich nor anything heavy."""
    probe = (
        "import sys\nfrom model_foundry.cli import app\n"
        "try:\n    app(['--help'])\nexcept SystemExit:\n    pass\n"
        "print('LOADED', ' '.join(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rich', 'torch', 'transformers', 'mlflow', 'dvc'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=REPO, check=True)
    assert "\x1b[" not in out.stdout and "Pipeline stages (run by dvc.yaml):" in out.stdout
    assert out.stdout.rstrip().endswith("LOADED")


@pytest.mark.parametrize("name", sorted(MODEL_COMMANDS))
def test_model_naming_commands_take_a_positional_model(name: str) -> None:
    """The first argument is MODEL, with the one help text (registry/resolve.py)."""
    command = ROOT.commands[name]  # type: ignore[attr-defined]
    argument = next(p for p in command.params if p.param_type_name == "argument")
    assert argument.metavar.strip("[]").startswith("MODEL")
    assert MODEL_HELP in (argument.help or "")


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A DVC project folder (no git) with models/tiny: a gpt config, metadata and one small weight file."""
    import numpy as np
    from safetensors.numpy import save_file

    (tmp_path / ".dvc").mkdir()
    folder = tmp_path / "models" / "tiny"
    folder.mkdir(parents=True)
    write_json(folder / "config.json", GPT_CONFIG)
    save_file({"wte.weight": np.zeros((64, 32), dtype=np.float32)}, str(folder / "model.safetensors"))
    meta = {
        "format": 1, "model_name": "tiny", "architecture": "gpt", "source": "scratch", "license": "mit",
        "created_at": "2026-01-02T03:04:05+00:00", "parameters": 1_071_872, "dtype": "float32",
        "parent": {"name": "tiny-base", "sha256": "c" * 32 + ".dir"},
        "training": {"method": "full", "objective": "causal_lm", "steps": 600},
    }  # fmt: skip
    write_json(folder / "metadata.json", meta)
    # models/away: recorded by its .dvc file, not checked out
    (tmp_path / "models/away.dvc").write_text("outs:\n- md5: " + "d" * 32 + ".dir\n  path: away\n")
    monkeypatch.chdir(tmp_path)
    return tmp_path


def _outcome(args: list[str]) -> tuple[int, str, object]:
    """(exit code, stdout, the FoundryError's message and hint or None) of the command run in-process."""
    result = CliRunner().invoke(app, args)
    error = result.exception
    if error is not None and not isinstance(error, (FoundryError, SystemExit)):
        raise error
    shown = (error.message, error.hint) if isinstance(error, FoundryError) else None
    return result.exit_code, result.stdout, shown


@pytest.mark.parametrize("name", sorted(MODEL_COMMANDS))
def test_a_name_and_its_folder_mean_the_same_model(project: Path, name: str) -> None:
    """MODEL as a name and as the path models/<name> give the same answer: for the model of the workspace
    (the commands that only read it), and for one DVC records but the workspace lacks (where it is and how
    to get it back); a model nobody has is an error naming it, whichever spelling."""
    extra = MODEL_COMMANDS[name]
    if name in ("info", "model-info", "lineage"):
        code, text, error = _outcome([name, "tiny", *extra])
        assert (code, error) == (0, None) and "tiny" in text
        assert _outcome([name, "models/tiny", *extra]) == (code, text, error)
    by_name = _outcome([name, "away", *extra])
    assert by_name == _outcome([name, "models/away", *extra])
    if name in MODEL_FOLDER_COMMANDS:
        assert by_name[2] is not None and "models/away is not checked out here" in by_name[2][0]
        assert "neither the DVC cache nor a DVC remote holds its bytes" in str(by_name[2][1])  # no cache here
    for spelling in ("gone", "models/gone"):
        code, _, error = _outcome([name, spelling, *extra])
        assert code != 0 and error is not None and "gone" in error[0], (spelling, error)


def test_info_summary(project: Path) -> None:
    """What a person reads: the name, the architecture, parameters in human units, source, licence, the
    lineage, created_at and what it means, each weight file with its size."""
    code, text, error = _outcome(["info", "tiny"])
    assert code == 0 and error is None
    lines = text.splitlines()
    assert lines[0] == "tiny  (models/tiny)"
    for expected in (
        "  architecture: gpt — GPT-2 style decoder",
        "  objective:    causal_lm",
        "  parameters:   1.07 M (1,071,872)",
        "  dtype:        float32",
        "  source:       scratch",
        "  licence:      mit",
        "  lineage:      tiny (full) ← tiny-base (not in the workspace",
        "  training:     full, 600 steps",
        "  created_at:   2026-01-02T03:04:05+00:00  (the pipeline's reproducible time",
        "    model.safetensors ",
    ):
        assert any(line.startswith(expected) for line in lines), (expected, text)
    assert "last git commit that changed params.yaml, dvc.yaml or src/" in text
    assert lines[lines.index("  weight files:") + 1].endswith("8.1 KiB")  # 64 × 32 float32 and the header


def test_info_json_is_metadata_json(project: Path) -> None:
    code, text, _ = _outcome(["info", "models/tiny", "--json"])
    assert code == 0
    assert json.loads(text) == json.loads((project / "models/tiny/metadata.json").read_text())


def test_info_is_fast_and_imports_nothing_heavy(project: Path) -> None:
    """`foundry info` as a user runs it: under a second of CPU (wall time depends on the machine's load) and
    no torch, transformers, mlflow or dvc in sys.modules afterwards."""
    import resource

    probe = (
        "import sys\nfrom model_foundry.cli import main\nsys.argv = ['foundry', 'info', 'tiny']\n"
        "try:\n    main()\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
        "print('HEAVY', *sorted({m.split('.')[0] for m in sys.modules} & "
        "{'torch', 'transformers', 'mlflow', 'dvc', 'peft'}))"
    )
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=project,
                         env={**os.environ}, check=True)  # fmt: skip
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime
    assert out.stdout.startswith("tiny  (models/tiny)") and out.stdout.rstrip().endswith("HEAVY")
    assert cpu < 1.0, f"foundry info took {cpu:.2f} s of CPU"
