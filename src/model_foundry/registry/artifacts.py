"""The models declared in dvc.yaml's `artifacts:` section, so DVC's tooling (DVC Studio's model registry,
`dvc artifacts get`, VS Code) sees the models the CLI lists.

The entries are derived, never hand-kept:
- every catalog entry of params.yaml gives two pipeline outputs, `models/<name>` (imported, copied or freshly
  initialised by the convert stage) and `models/<name>-trained` (the train stage); `pipeline_artifacts`
  builds them and a test keeps dvc.yaml's section equal to it (`python -m model_foundry.registry.artifacts`
  rewrites it);
- `foundry import-model` adds one for the folder it tracks (`declare_artifact`), as dvclive's
  `log_artifact` does for the models it tracks.

Artifact ids are the model names: catalog keys and import names already follow GTO's rule for artifact
names (lower-case letters, digits and '-', no dots; model_foundry.naming), so the registry id of every model
is its name. The format of an entry (`path`, `type`, `desc`, `labels`, `meta`) is DVC's
(https://dvc.org/doc/user-guide/project-structure/dvcyaml-files#artifacts). `dvc artifacts get` resolves an
artifact only through a GTO version tag (`<name>@v1.0.0`); this project documents `dvc get . models/<name>`
instead (README, "Moving models"), which needs no tag.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

DVC_YAML = "dvc.yaml"
SECTION = "artifacts"


def artifact_entry(path: str, description: str, labels: list[str], meta: dict[str, Any]) -> dict[str, Any]:
    """One `artifacts:` entry: a model at `path` (relative to the repo root)."""
    return {"path": path, "type": "model", "desc": description, "labels": labels, "meta": meta}


def pipeline_artifacts(catalog: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The artifacts of the pipeline's outputs for every catalog entry (params.yaml `models:`), by id.

    The convert output `<name>` is labelled with its architecture and source; the train output
    `<name>-trained` with its architecture and `trained`, and its parent in `meta`.
    """
    from model_foundry.config import repo_model_name

    found: dict[str, dict[str, Any]] = {}
    for name, entry in catalog.items():
        architecture = str(entry.get("architecture", ""))
        source = str(entry.get("source", "scratch"))
        parent = repo_model_name(source)
        description = str(entry.get("description") or f"{architecture} model `{name}` of params.yaml")
        first = (
            "copy of a model of this repo"
            if parent
            else ("initial weights" if source == "scratch" else "import")
        )
        found[name] = artifact_entry(
            f"models/{name}",
            f"{description} ({first}; the pipeline's convert stage)",
            [architecture, "pipeline"],
            {"source": source, **({"parent": parent} if parent else {})},
        )
        found[f"{name}-trained"] = artifact_entry(
            f"models/{name}-trained",
            f"{description} (trained; the pipeline's train stage)",
            [architecture, "pipeline", "trained"],
            {"source": source, "parent": name},
        )
    return found


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()  # round trip: comments and key order of dvc.yaml stay as they are
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    return yaml


def write_artifacts(root: Path, entries: dict[str, dict[str, Any]], replace_all: bool = False) -> bool:
    """Set `entries` in `<root>/dvc.yaml`'s artifacts section (keeping the others unless `replace_all`),
    written atomically; returns whether the file changed. Raises OSError when it cannot be read or written."""
    from model_foundry.io import atomic_write_text

    path = root / DVC_YAML
    yaml = _yaml()
    text = path.read_text(encoding="utf-8") if path.is_file() else ""
    data = yaml.load(text) if text.strip() else None
    if data is None:
        from ruamel.yaml.comments import CommentedMap

        data = CommentedMap()
    section = data.get(SECTION)
    if section is None or replace_all:
        from ruamel.yaml.comments import CommentedMap

        section = CommentedMap()
        data[SECTION] = section
    changed = replace_all
    for key, entry in entries.items():
        if section.get(key) != entry:
            section[key] = entry
            changed = True
    if not changed:
        return False
    out = io.StringIO()
    yaml.dump(data, out)
    if out.getvalue() == text:
        return False
    atomic_write_text(path, out.getvalue())
    return True


def declare_artifact(
    root: Path, name: str, path: str, description: str, labels: list[str], meta: dict[str, Any]
) -> bool:
    """Declare the folder `path` (relative to `root`; one `dvc add` tracks) as the model artifact `name` in
    `<root>/dvc.yaml`; returns whether dvc.yaml changed. Raises OSError or ruamel's YAMLError when dvc.yaml
    cannot be read, parsed or written."""
    return write_artifacts(root, {name: artifact_entry(path, description, labels, meta)})


def main() -> None:
    """Rewrite the artifacts of dvc.yaml from params.yaml's catalog (run from the repo root)."""
    import yaml

    root = Path.cwd()
    catalog = yaml.safe_load((root / "params.yaml").read_text(encoding="utf-8"))["models"]
    current = _yaml().load((root / DVC_YAML).read_text(encoding="utf-8")).get(SECTION) or {}
    wanted = {
        **{k: v for k, v in current.items() if v.get("meta", {}).get("imported")},
        **pipeline_artifacts(catalog),
    }
    print(
        "dvc.yaml changed"
        if write_artifacts(root, wanted, replace_all=True)
        else "dvc.yaml already up to date"
    )


if __name__ == "__main__":
    main()
