"""Lineage chains read from metadata.json files: parents followed through models/, methods named, missing
ancestors, cycles and damaged files reported as links (never raised), and `foundry info` showing the chain."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from model_foundry.io import write_json
from model_foundry.registry.lineage import (
    MISSING,
    LineageLink,
    format_chain,
    format_checksums,
    lineage_chain,
)

GPT_CONFIG = {"architecture": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": 32}
FT_SUM = "a" * 32 + ".dir"
LORA_SUM = "b" * 64


def model(root: Path, name: str, **meta: Any) -> Path:
    """A config-only gpt folder `root/<name>` with metadata.json = format + model_name + `meta`."""
    folder = root / name
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / "config.json", GPT_CONFIG)
    write_json(folder / "metadata.json", {"format": 1, "model_name": name, "architecture": "gpt", **meta})
    return folder


@pytest.fixture
def models(tmp_path: Path) -> Path:
    """scratch → trained (full) → copied (source: model:…) → fine-tuned with LoRA."""
    root = tmp_path / "models"
    model(root, "gpt-tiny", source="scratch")
    model(root, "gpt-tiny-trained", source="scratch", parent={"name": "gpt-tiny", "sha256": None},
          training={"objective": "causal_lm"})  # fmt: skip
    model(root, "gpt-tiny-ft", source="model:gpt-tiny-trained",
          parent={"name": "gpt-tiny-trained", "sha256": FT_SUM})  # fmt: skip
    model(root, "gpt-tiny-ft-trained", source="model:gpt-tiny-trained", fine_tuned_from="gpt-tiny-ft",
          parent={"name": "gpt-tiny-ft", "sha256": LORA_SUM},
          training={"method": "lora", "lora": {"r": 8, "alpha": 16}})  # fmt: skip
    return root


def test_chain_follows_parents_to_the_first_model(models: Path) -> None:
    links = lineage_chain("gpt-tiny-ft-trained", models)
    assert links == [
        LineageLink("gpt-tiny-ft-trained", True, "gpt", "lora r=8", None),
        LineageLink("gpt-tiny-ft", True, "gpt", "copy", LORA_SUM),
        LineageLink("gpt-tiny-trained", True, "gpt", "full", FT_SUM),
        LineageLink("gpt-tiny", True, "gpt", "scratch", None),
    ]
    assert format_chain(links) == (
        "gpt-tiny-ft-trained (lora r=8) ← gpt-tiny-ft (copy) ← gpt-tiny-trained (full) ← gpt-tiny (scratch)"
    )
    assert format_checksums(links) == [f"  gpt-tiny-ft: {LORA_SUM}", f"  gpt-tiny-trained: {FT_SUM}"]
    assert lineage_chain(models / "gpt-tiny-ft-trained", models) == links  # a folder works like a name


def test_missing_ancestor_ends_the_chain_with_a_note(models: Path) -> None:
    shutil.rmtree(models / "gpt-tiny-trained")
    links = lineage_chain("gpt-tiny-ft-trained", models)
    assert [link.name for link in links] == ["gpt-tiny-ft-trained", "gpt-tiny-ft", "gpt-tiny-trained"]
    assert links[-1] == LineageLink("gpt-tiny-trained", False, checksum=FT_SUM, note=MISSING)
    assert format_chain(links).endswith(f"gpt-tiny-trained ({MISSING})")
    assert lineage_chain("no-such-model", models) == [LineageLink("no-such-model", False, note=MISSING)]


def test_a_cycle_ends_the_chain(tmp_path: Path) -> None:
    root = tmp_path / "models"
    model(root, "a", source="model:b", parent={"name": "b", "sha256": None})
    model(root, "b", source="model:a", parent={"name": "a", "sha256": None})
    links = lineage_chain("a", root)
    assert [(link.name, link.note) for link in links] == [("a", None), ("b", None), ("a", "cycle")]
    assert format_chain(links) == "a (copy) ← b (copy) ← a (cycle: already in the chain)"
    model(root, "self", training={}, parent={"name": "self", "sha256": None})
    assert [link.note for link in lineage_chain("self", root)] == [None, "cycle"]


def test_damaged_metadata_and_older_folders(tmp_path: Path) -> None:
    """A damaged ancestor ends the chain with the error; `fine_tuned_from` alone is followed; a Hub import
    and a folder with no metadata.json end it."""
    root = tmp_path / "models"
    model(root, "child", training={"method": "full"}, fine_tuned_from="broken")
    (root / "broken").mkdir()
    (root / "broken/metadata.json").write_text("{not json")
    links = lineage_chain("child", root)
    assert links[0].method == "full" and links[1].name == "broken" and links[1].present
    assert "metadata.json is damaged" in (links[1].note or "")

    model(root, "broken", source="Qwen/Qwen2.5-0.5B", architecture="hf-qwen2")
    assert format_chain(lineage_chain("child", root)) == "child (full) ← broken (import)"
    (root / "bare").mkdir()
    write_json(root / "bare/config.json", GPT_CONFIG)
    assert lineage_chain("bare", root) == [LineageLink("bare", True, "gpt", "scratch")]


def test_foundry_info_prints_metadata_and_lineage(models: Path) -> None:
    """stdout stays the metadata's JSON (scripts parse it); the chain goes to stderr."""
    from conftest import run_cmd

    project = models.parent
    (project / ".dvc").mkdir()
    shutil.rmtree(models / "gpt-tiny")
    proc = run_cmd(["foundry", "info", "models/gpt-tiny-ft-trained", "--json"], project)
    meta = json.loads(proc.stdout)
    assert meta == json.loads((models / "gpt-tiny-ft-trained/metadata.json").read_text())
    lines = proc.stderr.splitlines()
    assert lines[0] == (
        "lineage: gpt-tiny-ft-trained (lora r=8) ← gpt-tiny-ft (copy) ← gpt-tiny-trained (full) ← "
        f"gpt-tiny ({MISSING})"
    )
    assert lines[1:] == ["recorded checksums:", f"  gpt-tiny-ft: {LORA_SUM}", f"  gpt-tiny-trained: {FT_SUM}"]

    # outside the project:
    elsewhere = run_cmd(["foundry", "info", str(models / "gpt-tiny-ft"), "--json"], Path(os.sep))
    assert elsewhere.stderr.startswith("lineage: gpt-tiny-ft (copy) ← gpt-tiny-trained (full) ← gpt-tiny (")
