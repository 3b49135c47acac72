"""dvc.yaml's `artifacts:` section: derived from params.yaml's catalog, ids valid for GTO, readable by DVC."""

from __future__ import annotations

from pathlib import Path

import yaml
from gto.constants import check_string_is_valid

from conftest import REPO, run_cmd
from model_foundry.registry.artifacts import declare_artifact, pipeline_artifacts


def test_dvc_yaml_declares_every_catalog_model() -> None:
    catalog = yaml.safe_load((REPO / "params.yaml").read_text())["models"]
    declared = yaml.safe_load((REPO / "dvc.yaml").read_text())["artifacts"]
    expected = pipeline_artifacts(catalog)
    stale = {k for k in expected if declared.get(k) != expected[k]}
    assert not stale, (
        f"dvc.yaml's artifacts differ for {sorted(stale)}: run `python -m model_foundry.registry.artifacts`"
    )
    assert all(check_string_is_valid(name) for name in declared)  # GTO's artifact-name rule (no dots)
    assert not check_string_is_valid("qwen2.5-0.5b")  # the rule these ids avoid


def test_declare_artifact_keeps_comments_and_dvc_reads_it(tmp_path: Path) -> None:
    (tmp_path / "dvc.yaml").write_text("# the pipeline\nstages:\n  hello:\n    cmd: echo hi  # says hi\n")
    run_cmd(["git", "init", "-q"], tmp_path)
    run_cmd(["dvc", "init", "-q"], tmp_path)
    assert declare_artifact(
        tmp_path, "tiny-qwen2", "models/tiny-qwen2", "imported", ["hf-qwen2", "import"], {"source": "a/b"}
    )
    assert not declare_artifact(
        tmp_path, "tiny-qwen2", "models/tiny-qwen2", "imported", ["hf-qwen2", "import"], {"source": "a/b"}
    )
    text = (tmp_path / "dvc.yaml").read_text()
    assert "# the pipeline" in text and "# says hi" in text
    assert yaml.safe_load(text)["artifacts"]["tiny-qwen2"]["path"] == "models/tiny-qwen2"
    listed = run_cmd(["dvc", "stage", "list"], tmp_path).stdout  # DVC parses the file with its schema
    assert "hello" in listed
