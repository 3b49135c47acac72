"""The Reporter an import talks through: what is shown, what is kept as a warning, when it asks."""

from __future__ import annotations

import dataclasses
import io

import pytest

from localhub.repos import GPT2
from model_foundry.errors import FoundryError
from model_foundry.hub import QuietReporter, Reporter, accept_for_pipeline, import_model, plan_import
from model_foundry.hub.report import import_summary


def test_default_reporter_writes_to_stderr_and_keeps_warnings(capsys):
    reporter = Reporter()
    reporter.info("Licence of x: mit")
    reporter.warn("low memory")
    reporter.warn("warning: already prefixed")
    err = capsys.readouterr().err.splitlines()
    assert err == ["Licence of x: mit", "warning: low memory", "warning: already prefixed"]
    assert reporter.warnings == ["low memory", "warning: already prefixed"]
    assert reporter.progress and reporter.confirm("accept?") is None  # nobody to ask


def test_stream_and_prompt():
    out = io.StringIO()
    asked: list[str] = []
    reporter = Reporter(stream=out, ask=lambda q: asked.append(q) or True)
    reporter.info("hello")
    assert out.getvalue() == "hello\n" and reporter.confirm("ok?") is True and asked == ["ok?"]


def test_quiet_reporter_prints_nothing(capsys):
    reporter = QuietReporter(ask=lambda q: False)
    reporter.info("shown")
    reporter.warn("careful")
    assert capsys.readouterr() == ("", "")
    assert reporter.messages == ["shown", "warning: careful"] and reporter.warnings == ["careful"]
    assert not reporter.progress and reporter.confirm("accept?") is False


def test_the_imported_folder_records_format_and_the_licence_text_is_shown(hub_repos, tmp_path):
    reporter = QuietReporter()
    result = import_model(str(hub_repos[GPT2]), tmp_path / "models", accept_license=True, reporter=reporter)
    from model_foundry.model_folder import read_model_info
    from model_foundry.model_folder.layout import METADATA_FORMAT

    _, meta = read_model_info(result.path)
    assert meta["format"] == METADATA_FORMAT and meta["sha256"] == result.sha256
    assert meta["parameters"] == result.parameters and meta["dtype"] == "float32"
    assert "metadata.json" in meta["import"]["files"]
    assert any(m.startswith("Licence of ") for m in reporter.messages)
    assert result.warnings == reporter.warnings

    # what `foundry import-model` prints: what happened, in words (a local folder here: its weights copied)
    head, licence, weights = import_summary(result).splitlines()
    assert head.startswith(
        f"imported {hub_repos[GPT2]} → {result.path} (hf-gpt2, {result.parameters:,} parameters"
    )
    assert licence == f"  licence: {result.license}" and result.license
    assert weights == "  weights: 1 file copied (the folder stays independent; --link hard-links instead)"
    hub = dataclasses.replace(result, revision="0123456789abcdef", license=None)
    _, licence, weights = import_summary(hub).splitlines()
    assert licence.startswith("  licence: not stated by the source") and "None" not in licence
    assert weights == (
        "  weights: 1 file copied (a hard link to the Hub cache was not possible: it is on another "
        "filesystem, or links are not allowed)"
    )
    linked = dataclasses.replace(hub, linked_files=1)
    assert import_summary(linked).endswith(
        "weights: 1 file hard-linked from the Hub cache (no extra disk space)"
    )


def test_the_pipeline_never_asks(hub_repos):
    asked: list[str] = []
    reporter = QuietReporter(ask=lambda q: asked.append(q) or True)
    plan = plan_import(str(hub_repos[GPT2]), reporter=reporter)
    with pytest.raises(FoundryError) as e:
        accept_for_pipeline(plan, False, "tiny", reporter)
    assert e.value.message.startswith("models.tiny: ") and "no terminal" in e.value.message
    assert "license_accepted: true" in e.value.hint and asked == []
    ack = accept_for_pipeline(plan, True, "tiny", reporter)
    assert ack is not None and ack["via"] == "params.yaml models.tiny.license_accepted"
