"""The README's quick start, run as written: `make run` (as `dvc repro`: the venv exists), then every command
of the blocks marked `<!-- tested by tests/core/test_readme_flows.py -->`, in order, in a temp git + DVC copy
of the project, so the README cannot drift from what works, also after an experiment.

To stay fast (about 80 s on 2 busy cores) the copy's params.yaml has tiny sizes (`conftest.tiny_params`: every
catalog entry shrunk, 6 training steps), and the `make run` results are committed as the project commits its
default run's `dvc.lock` (a clone's `make run` reproduces it). `source .venv/bin/activate` is the test's PATH
and `mlflow ui` (a server that never returns) is skipped. This test also covers what test_pipeline_e2e.py did
for one `dvc repro`: the lockfile, metrics and the MLflow run.
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
import yaml

from conftest import REPO, make_repo_copy, run_cmd, tiny_params
from model_foundry.errors import FoundryError
from model_foundry.registry.dvc import dvc_md5
from model_foundry.registry.resolve import model_folder

pytestmark = pytest.mark.slow
MARK = "<!-- tested by tests/core/test_readme_flows.py -->"
STAGES = ["inputs", "import", "convert", "tokenize", "train", "evaluate"]
SKIP = ("source .venv/bin/activate", "mlflow ui")  # the PATH the test sets; a server (anywhere in the line)


def readme_blocks(text: str) -> list[list[str]]:
    """The command lines of each fenced block right after a MARK line (comments and blank lines dropped)."""
    blocks = []
    for match in re.finditer(re.escape(MARK) + r"\n```bash\n(.*?)```", text, re.S):
        lines = (_strip_comment(line) for line in match[1].splitlines())
        blocks.append([line for line in lines if line])
    return blocks


def _strip_comment(line: str) -> str:
    """`line` without a `# comment` (a `#` outside quotes, at the start or after a space), stripped."""
    quote = None
    for i, c in enumerate(line):
        if quote:
            quote = None if c == quote else quote
        elif c in "'\"":
            quote = c
        elif c == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].strip()
    return line.strip()


def test_readme_blocks_are_found_and_parsed() -> None:
    blocks = readme_blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert len(blocks) >= 2 and all(blocks)
    assert any(line.startswith("dvc exp run") for line in blocks[0])
    assert readme_blocks(f'{MARK}\n```bash\nfoundry x --prompt "a # b"   # note\n\n# only\n```\n') == [
        ['foundry x --prompt "a # b"']
    ]


def test_quick_start_then_commands_and_reset_run_as_written(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make run" in readme.split("## The pipeline")[0]
    repo = make_repo_copy(tmp_path / "repo", tiny_params())
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}", "COLUMNS": "200"}

    def sh(line: str) -> str:
        proc = run_cmd(["bash", "-c", line], repo, check=False, env=env)
        assert proc.returncode == 0, f"README command failed: {line}\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    sh("dvc repro")  # `make run`
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert list(lock["stages"]) == STAGES
    metrics = json.loads((repo / "metrics.json").read_text())
    assert metrics["perplexity"] > 1 and "unigram" in metrics
    with sqlite3.connect(repo / "mlflow.db") as db:
        runs = db.execute("select run_uuid, status from runs").fetchall()
        tags = dict(db.execute("select key, value from tags where run_uuid = ?", (runs[0][0],)).fetchall())
        metric_keys = {k for (k,) in db.execute("select distinct key from metrics")}
    assert len(runs) == 1 and runs[0][1] == "FINISHED"  # evaluate logged into the training run
    assert tags["model_name"] == "gpt-tiny-trained" and tags["git_commit"]
    assert {"train_loss", "val_loss", "eval_perplexity", "eval_unigram_perplexity"} <= metric_keys
    run_cmd(["git", "add", "dvc.lock", "metrics.json", "plots"], repo)
    run_cmd(["git", "commit", "-qm", "the default run"], repo)
    trained = dvc_md5(repo / "models/gpt-tiny-trained")

    then, reset = readme_blocks(readme)[:2]
    outputs = []
    for line in then:
        if line.startswith(SKIP[0]) or SKIP[1] in line:
            continue
        started = time.perf_counter()
        outputs.append((line, sh(line)))
        print(f"{time.perf_counter() - started:5.1f} s  {line}")
        if line.startswith("dvc exp run"):  # the previous run's folder left the workspace: the errors say so
            missing = repo / "models/gpt-tiny-trained"
            assert not missing.exists()
            with pytest.raises(FoundryError, match="not checked out here") as e:
                model_folder(str(missing), repo)
            assert "`foundry get gpt-tiny-trained`" in e.value.hint
            assert "`git checkout params.yaml dvc.lock metrics.json plots && dvc checkout`" in e.value.hint
    generated = [out for line, out in outputs if line.startswith("foundry generate")]
    assert len(generated) == 2 and all(out.startswith("The with statement") for out in generated)
    assert "gpt-small" in next(out for line, out in outputs if line.startswith("dvc exp show"))
    assert dvc_md5(repo / "models/gpt-tiny-trained") == trained
    assert yaml.safe_load((repo / "params.yaml").read_text())["model_name"] == "gpt-small"

    for line in reset:
        sh(line)
    assert yaml.safe_load((repo / "params.yaml").read_text())["model_name"] == "gpt-tiny"
    assert dvc_md5(repo / "models/gpt-tiny-trained") == trained
    assert sh("git status --porcelain params.yaml dvc.lock metrics.json") == ""

    # A folder the workspace's own dvc.lock records: `dvc checkout` brings it back.
    shutil.rmtree(repo / "models/gpt-tiny-trained")
    with pytest.raises(FoundryError, match="not checked out here") as e:
        model_folder(str(repo / "models/gpt-tiny-trained"), repo)
    assert "`dvc checkout models/gpt-tiny-trained`" in e.value.hint
