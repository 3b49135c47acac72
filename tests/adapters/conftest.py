"""Fixtures of the adapter tests."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from localhub.repos import FAMILY_FIXTURES


@pytest.fixture(scope="module")
def imported(hub_repos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Registry name of a Hub family → its fixture repo imported (once per module) through the local Hub."""
    from model_foundry.hub import QuietReporter, import_model

    models = tmp_path_factory.mktemp("imported-models")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            result = import_model(
                FAMILY_FIXTURES[name], models, accept_license=True, reporter=QuietReporter()
            )
            done[name] = result.path
        return done[name]

    return get
