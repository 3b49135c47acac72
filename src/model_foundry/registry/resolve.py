"""NAME|PATH → a model folder: the one rule `foundry generate`, `chat` and `serve` follow. Torch-free."""

from __future__ import annotations

import os
from pathlib import Path

from model_foundry.errors import FoundryError


def model_folder(arg: str, root: Path | None = None) -> Path:
    """The model folder `arg` names: an existing folder as it is, else `<project root>/models/<arg>`.

    Raises FoundryError for a file, for a path (anything with a separator, or starting with '.') that does not
    exist, for a name the project's registry does not know (naming the closest ones), and for a name it
    records but has not checked out (saying `foundry get NAME`).
    """
    from model_foundry.project import project_root

    path = Path(arg)
    if path.is_dir():
        return path
    if path.exists():
        raise FoundryError(f"{arg} is a file, not a model folder.", "Give a models/<name> folder or a name.")
    root = root or project_root()
    folder = root / "models" / arg
    if folder.is_dir():
        return folder
    if os.sep in arg or "/" in arg or arg.startswith("."):
        raise FoundryError(
            f"{arg} does not exist.", "Give a model folder, or a name from `foundry list-models`."
        )
    from model_foundry.registry.records import scan

    record = scan(root).get(arg)  # FoundryError naming the closest names when there is no such model
    raise FoundryError(
        f"models/{arg} is not checked out here ({record.location}).",
        f"`foundry get {arg}` brings it into the workspace.",
    )
