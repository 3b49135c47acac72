"""Helpers for the hub tests: broken variants of the fixture repos, and "nothing was left behind" checks."""

from __future__ import annotations

import json
from pathlib import Path

from localhub.server import LocalHub, dir_files


def publish_variant(
    hub: LocalHub, source_dir: Path, repo_id: str, changes: dict[str, bytes | str | None]
) -> str:
    """Publish a copy of a built repo with some files replaced (bytes/str) or removed (None)."""
    files: dict[str, Path | bytes | str] = dict(dir_files(source_dir))
    for path, content in changes.items():
        if content is None:
            files.pop(path, None)
        else:
            files[path] = content
    return hub.add_repo(repo_id, files)


def config_with(source_dir: Path, **changes: object) -> str:
    config = json.loads((source_dir / "config.json").read_text())
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return json.dumps(config)


def assert_empty(models_dir: Path) -> None:
    """A failed import leaves nothing under models/: no model folder, no temp folder."""
    leftovers = sorted(p.name for p in models_dir.iterdir()) if models_dir.exists() else []
    assert leftovers == [], f"left behind in {models_dir}: {leftovers}"
