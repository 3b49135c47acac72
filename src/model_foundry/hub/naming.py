"""Import names: the folder under models/.

The rule itself lives in model_foundry.naming (one rule for catalog keys, folders, import names and registry
ids); this module adds the default name for a source and the search for a free name.
"""

from __future__ import annotations

from pathlib import Path

from model_foundry.errors import FoundryError
from model_foundry.hub.sources import FolderSource, Source
from model_foundry.naming import MAX_LENGTH, check_name, suggest_name

__all__ = ["MAX_LENGTH", "check_name", "choose_name", "default_name", "taken"]


def default_name(source: Source) -> str:
    """`Qwen/Qwen2.5-0.5B` → `qwen2-5-0-5b`; a folder → its name, made valid the same way.

    The result always satisfies model_foundry.naming's rule (it is built by `suggest_name`).
    """
    if isinstance(source, FolderSource):
        base = source.repo_id.split("/")[-1] if source.repo_id else source.path.name
    else:
        base = source.repo_id.split("/")[-1]
    return suggest_name(base)


def taken(models_dir: Path, name: str) -> bool:
    """A folder, a file or a DVC pointer (`<name>.dvc`, data not checked out) already uses the name."""
    return (
        (models_dir / name).exists()
        or (models_dir / name).is_symlink()
        or (models_dir / f"{name}.dvc").exists()
    )


def choose_name(models_dir: Path, name: str, version_suffix: bool = False) -> str:
    """The name to import to: `name` if free, else `name-v2`, `-v3`, ... with `version_suffix`.

    Raises FoundryError when `name` breaks the naming rule, or is taken and `version_suffix` is off.
    """
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
        suffix = f"-v{n}"
        candidate = f"{name[: MAX_LENGTH - len(suffix)].rstrip('-')}{suffix}"
        if not taken(models_dir, candidate):
            return check_name(candidate)
    raise FoundryError(f"No free version suffix for {name}.")
