"""Model names: the folder under models/, so they must be safe path components and unique."""

from __future__ import annotations

import re
from pathlib import Path

from model_foundry.errors import FoundryError
from model_foundry.hub.sources import FolderSource, Source

NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")
MAX_LENGTH = 100


def default_name(source: Source) -> str:
    """`Qwen/Qwen2.5-0.5B` → `qwen2.5-0.5b`; a folder → its (lower-cased) name."""
    if isinstance(source, FolderSource):
        base = source.repo_id.split("/")[-1] if source.repo_id else source.path.name
    else:
        base = source.repo_id.split("/")[-1]
    name = re.sub(r"[^a-z0-9._-]+", "-", base.lower()).strip("-._")
    return name[:MAX_LENGTH] or "model"


def check_name(name: str) -> str:
    if not name:
        raise FoundryError(
            "The model name is empty.", "Pass --name with letters/digits, e.g. --name qwen-0.5b."
        )
    if not NAME.match(name) or len(name) > MAX_LENGTH:
        raise FoundryError(
            f"Model name {name!r} is not allowed: names are one folder under models/.",
            "Use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit "
            f"(at most {MAX_LENGTH} characters, no '/').",
        )
    return name


def taken(models_dir: Path, name: str) -> bool:
    """A folder, a file or a DVC pointer (`<name>.dvc`, data not checked out) already uses the name."""
    return (
        (models_dir / name).exists()
        or (models_dir / name).is_symlink()
        or (models_dir / f"{name}.dvc").exists()
    )


def choose_name(models_dir: Path, name: str, version_suffix: bool = False) -> str:
    """The name to import to: `name` if free, else `name-v2`, `-v3`, ... with `version_suffix`."""
    check_name(name)
    if not taken(models_dir, name):
        return name
    if not version_suffix:
        raise FoundryError(
            f"{models_dir / name} already exists.",
            "Pick another --name, pass --version-suffix to import as "
            f"{name}-v2 (-v3, ...), or remove the old model first.",
        )
    for n in range(2, 10_000):
        candidate = f"{name}-v{n}"
        if not taken(models_dir, candidate):
            return check_name(candidate)
    raise FoundryError(f"No free version suffix for {name}.")
