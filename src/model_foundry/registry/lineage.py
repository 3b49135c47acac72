"""Lineage: the chain of models a model folder was derived from, read from metadata.json files.

Every model folder's metadata.json names the model it came from: `parent: {name, sha256}` (written by the
train stage and by the convert stage of a `source: model:<name>` entry) or, in older folders, only
`fine_tuned_from`. Following those names through `models/<name>/` gives the chain, newest first:

    gpt-tiny-ft-trained (lora r=8) ← gpt-tiny-ft (copy) ← gpt-tiny-trained (full) ← gpt-tiny (scratch)

Pure reading: no torch, no DVC. A missing ancestor, a damaged metadata.json or a cycle ends the chain with a
note on its last link; nothing here raises.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

MISSING = "not in the workspace: in the DVC cache or an experiment?"
MAX_LINKS = 256  # far longer than any real chain; a guard against pathological folders


@dataclass(frozen=True)
class LineageLink:
    """One model of a lineage chain.

    name: the model's name (its folder's name under models/, or metadata's model_name for the first link).
    present: whether its folder is in the workspace (False: only the next-newer model's record names it).
    architecture: metadata.json's (else config.json's) architecture; None when unknown.
    method: how the model was made from its parent: metadata's `training.method` ("full", "lora r=8"), else
        "full" for a trained model, "copy" for a `source: model:<name>` copy, "scratch", or "import".
    checksum: the checksum the next-newer model recorded for this one (its `parent.sha256`: DVC md5
        `<hex>.dir` or a weights sha256); None for the first link or when none was recorded.
    note: why the chain ends here (missing folder, unreadable metadata, cycle), else None.
    """

    name: str
    present: bool
    architecture: str | None = None
    method: str | None = None
    checksum: str | None = None
    note: str | None = None


def link_method(meta: dict[str, Any]) -> str:
    """How the model of `meta` (its metadata.json) was made from its parent (see `LineageLink.method`)."""
    from model_foundry.config import repo_model_name

    training = meta.get("training")
    if isinstance(training, dict):
        method = str(training.get("method") or "full")
        lora = training.get("lora")
        if method == "lora" and isinstance(lora, dict) and lora.get("r") is not None:
            return f"lora r={lora['r']}"
        return method
    source = meta.get("source")
    if not isinstance(source, str) or source == "scratch":
        return "scratch"
    return "copy" if repo_model_name(source) is not None else "import"


def parent_of(meta: dict[str, Any]) -> tuple[str | None, str | None]:
    """(parent name, the checksum recorded for it) from metadata.json: `parent`, else `fine_tuned_from`."""
    parent = meta.get("parent")
    if isinstance(parent, dict) and isinstance(parent.get("name"), str) and parent["name"]:
        checksum = parent.get("sha256")
        return parent["name"], checksum if isinstance(checksum, str) else None
    tuned = meta.get("fine_tuned_from")
    return (tuned, None) if isinstance(tuned, str) and tuned else (None, None)


def _read(folder: Path) -> tuple[dict[str, Any], str | None]:
    """(metadata.json, architecture) of a folder; FoundryError when a file is damaged.

    metadata.json may be absent (a folder written by hand) and config.json too (an adapter-only LoRA output).
    """
    from model_foundry.model_folder.checks import check_metadata, read_json_object
    from model_foundry.model_folder.layout import CONFIG_NAME, METADATA_NAME

    meta: dict[str, Any] = {}
    if (folder / METADATA_NAME).is_file():
        meta = read_json_object(folder / METADATA_NAME)
        check_metadata(meta, str(folder / METADATA_NAME))
    architecture = meta.get("architecture")
    if architecture is None and (folder / CONFIG_NAME).is_file():
        architecture = read_json_object(folder / CONFIG_NAME).get("architecture")
    return meta, architecture if isinstance(architecture, str) else None


def lineage_chain(name_or_folder: str | Path, models_root: str | Path) -> list[LineageLink]:
    """The chain of models `name_or_folder` descends from, newest first (the model itself is the first link).

    name_or_folder: a model folder (an existing folder) or a model name, looked up as `models_root/<name>`.
    Ancestors are looked up in `models_root` (the project's models/) by the parent names metadata.json
    records (`parent_of`). The chain ends at a model with no parent (scratch, imported), at a folder that is
    not in the workspace (a link with present=False and note MISSING), at an unreadable metadata.json (its
    link carries the error in `note`) or at a cycle (the repeated name ends the chain, note "cycle").
    Never raises: the result is always at least one link.
    """
    from model_foundry.errors import FoundryError

    models_root = Path(models_root)
    start = Path(name_or_folder)
    if start.is_dir():
        folder, name = start, start.resolve().name
    else:
        folder, name = models_root / str(name_or_folder), str(name_or_folder)
    links: list[LineageLink] = []
    seen: set[str] = set()
    checksum: str | None = None
    while True:
        if name in seen or len(links) >= MAX_LINKS:
            links.append(LineageLink(name, folder.is_dir(), checksum=checksum, note="cycle"))
            return links
        seen.add(name)
        if not folder.is_dir():
            links.append(LineageLink(name, False, checksum=checksum, note=MISSING))
            return links
        try:
            meta, architecture = _read(folder)
        except (FoundryError, OSError) as e:
            note = e.message if isinstance(e, FoundryError) else f"cannot be read: {e.strerror or e}"
            links.append(LineageLink(name, True, checksum=checksum, note=note))
            return links
        if not links and isinstance(meta.get("model_name"), str):
            name = meta["model_name"]  # the first link by its recorded name (a folder may be renamed)
            seen.add(name)
        links.append(LineageLink(name, True, architecture, link_method(meta), checksum))
        parent, checksum = parent_of(meta)
        if parent is None:
            return links
        name, folder = parent, models_root / parent


def format_chain(links: list[LineageLink]) -> str:
    """One line: `name (method) ← parent (method) ← …`; a missing or unreadable link shows its note."""
    parts = []
    for link in links:
        if link.note == "cycle":
            parts.append(f"{link.name} (cycle: already in the chain)")
        elif link.note is not None:
            parts.append(f"{link.name} ({link.note})")
        else:
            parts.append(f"{link.name} ({link.method})" if link.method else link.name)
    return " ← ".join(parts)


def format_checksums(links: list[LineageLink]) -> list[str]:
    """`  <name>: <checksum>` for every link whose child recorded a checksum for it (DVC md5 or sha256)."""
    return [f"  {link.name}: {link.checksum}" for link in links if link.checksum]


@dataclass(frozen=True)
class TreeNode:
    """A model of a lineage tree (registry-wide: models in experiments and the cache count too).

    checksum: its DVC md5; method: how it was made (`link_method`); run: the MLflow training run that made
    it (when the registry was read with MLflow); location: the registry's; children: the models made from it.
    """

    name: str
    checksum: str | None
    method: str | None
    run: str | None
    location: str
    children: tuple[TreeNode, ...] = ()


def _node(model: Any, children: tuple[TreeNode, ...] = ()) -> TreeNode:
    run = next((r.run_id for r in model.runs if getattr(r, "stage", None) == "train"), None)
    return TreeNode(model.name, model.checksum, model.method, run, model.location, children)


def ancestors(registry: Any, name: str) -> list[TreeNode | str]:
    """The model `name` and its ancestors up to the root, newest first, from the registry (records.Registry):
    parents named in dvc.lock deps or metadata.json. A parent the registry does not know ends the chain as
    its bare name; a cycle ends it too. Raises FoundryError when `name` is unknown."""
    chain: list[TreeNode | str] = []
    seen: set[str] = set()
    current: str | None = name
    while current is not None and current not in seen and len(chain) < MAX_LINKS:
        seen.add(current)
        known = next((m for m in registry.models if m.name == current), None)
        if known is None:
            if not chain:
                registry.get(current)  # raises with suggestions
            chain.append(current)
            break
        chain.append(_node(known))
        current = known.fine_tuned_from
    return chain


def descendants(registry: Any, name: str, _seen: frozenset[str] = frozenset()) -> TreeNode:
    """The tree of models made from `name` (children by their recorded parent), `name` at the root."""
    model = registry.get(name)
    seen = _seen | {name}
    kids = tuple(
        descendants(registry, child.name, seen) for child in registry.children(name) if child.name not in seen
    )
    return _node(model, kids)


def format_tree(registry: Any, name: str) -> list[str]:
    """Text lines: the ancestors from the root down to `name` (marked `*`), then its descendants."""

    def label(node: TreeNode | str) -> str:
        if isinstance(node, str):
            return f"{node} (not in the registry)"
        checksum = node.checksum[:8] if node.checksum else "no checksum"
        run = f", run {node.run[:8]}" if node.run else ""
        return f"{node.name} ({node.method or '?'}, {checksum}, {node.location}{run})"

    chain = list(reversed(ancestors(registry, name)))
    lines = []
    for depth, node in enumerate(chain):
        mark = "* " if depth == len(chain) - 1 else ""
        lines.append(("   " * (depth - 1) + "└─ " if depth else "") + mark + label(node))

    def walk(node: TreeNode, depth: int) -> None:
        for child in node.children:
            lines.append("   " * (depth - 1) + "└─ " + label(child))
            walk(child, depth + 1)

    walk(descendants(registry, name), len(chain))
    return lines
