"""Fixtures of the generation tests: every causal registry entry as a loaded adapter."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import pytest

from generation.generation_helpers import BY_NAME, HUB_CAUSAL, SCRATCH_CAUSAL, fixture_repo, tiny_scratch
from model_foundry.adapters.base import BaseAdapter


@pytest.fixture(scope="module")
def hub_folder(hub_repos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """family name → the family's fixture repo imported (once per module) as a canonical model folder."""
    from model_foundry.hub import import_model
    from model_foundry.hub.report import QuietReporter

    models = tmp_path_factory.mktemp("generation-models")

    @functools.cache
    def imported(name: str) -> Path:
        family = BY_NAME[name]
        source = fixture_repo(hub_repos, family)
        result = import_model(
            str(source),
            models,
            name=f"{family.model_type}-fixture",
            accept_license=True,
            reporter=QuietReporter(),
        )
        return result.path

    return imported


@pytest.fixture(scope="module")
def hub_model(hub_folder: Callable[[str], Path]) -> Callable[[str], BaseAdapter]:
    """family name → the family's fixture repo imported (once per module) and loaded by `load_adapter`."""
    from model_foundry.model_folder import load_adapter

    def load(name: str) -> BaseAdapter:
        adapter = load_adapter(hub_folder(name))
        adapter.model.eval()
        return adapter

    return load


@pytest.fixture(scope="module")
def hub_source(hub_repos: dict[str, Path]) -> Callable[[str], Path]:
    """family name → the fixture repo folder it is imported from (for transformers' own from_pretrained)."""
    return lambda name: fixture_repo(hub_repos, BY_NAME[name])


@pytest.fixture(params=SCRATCH_CAUSAL + HUB_CAUSAL)
def causal_name(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def causal_adapter(causal_name: str, request: pytest.FixtureRequest) -> BaseAdapter:
    """Every causal registry entry: scratch ones built tiny, Hub ones imported from their fixture repo (the
    local Hub's repos are built only when a Hub family is asked for)."""
    if causal_name in BY_NAME:
        return request.getfixturevalue("hub_model")(causal_name)
    return tiny_scratch(causal_name)
