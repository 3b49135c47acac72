"""The `foundry recommend` command (being built: issue 12)."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Nothing registered yet."""
