"""The README stays true: every params field, section and CLI command it must document is there."""

from __future__ import annotations

import dataclasses

import pytest

from conftest import REPO
from model_foundry.adapters import ARCHITECTURES
from model_foundry.config import SECTIONS

README = (REPO / "README.md").read_text()


@pytest.mark.parametrize("section", list(SECTIONS))
def test_every_section_field_is_documented(section):
    assert f"**`{section}`**" in README
    missing = [f.name for f in dataclasses.fields(SECTIONS[section]) if f"| `{f.name}` |" not in README]
    assert not missing, f"README's params reference lacks {section}: {missing}"


def test_quick_start_has_the_two_commands():
    quick = README.split("## Quick start", 1)[1].split("##", 1)[0]
    assert "make run" in quick and "make test" in quick
    assert "make test" in (REPO / ".ci/run").read_text()


def test_every_architecture_is_mentioned():
    assert all(f"`{name}`" in README for name in ARCHITECTURES)


def test_supported_families_table_is_the_family_table():
    """README's "Supported families" table is `families_markdown()`: the rows of families.py, no other."""
    from model_foundry.adapters.hf.families import families_markdown

    section = README.split("### Supported families\n", 1)[1]
    table = section[section.index("|") :].split("\n\n", 1)[0] + "\n"
    assert table == families_markdown(), "paste families_markdown() into README's Supported families"
