"""The registry commands: list-models, model-info, validate-model, get, delete-model, lineage, compare.

Each is a top-level command and a member of the `foundry models` group (`foundry models list` =
`foundry list-models`). The registry is derived on each call from dvc.lock, experiments, `.dvc` files,
metadata.json and MLflow (model_foundry.registry.records); nothing here writes a registry file.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from model_foundry.cli.options import ModelArg
from model_foundry.registry.resolve import MODEL_HELP

if TYPE_CHECKING:
    from model_foundry.registry.records import ModelRecord, Registry

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON (for scripts) instead of a table.")]


def _name(registry: Registry, model: str) -> str:
    """The registry name MODEL (a name or a models/<name> path) means (registry/resolve.py)."""
    from model_foundry.registry.resolve import model_name

    return model_name(model, registry.root)


def _registry(with_runs: bool = False) -> Registry:
    """The registry of the project around the working directory; FoundryError outside a DVC project."""
    from model_foundry.errors import FoundryError
    from model_foundry.project import dvc_root, project_root
    from model_foundry.registry.records import scan

    root = project_root()
    if dvc_root(root) is None:
        raise FoundryError(
            f"{root} is not in a DVC project: the registry is read from a project's dvc.lock, .dvc files and "
            "experiments.",
            "Run the command inside a Model Foundry project (the folder holding dvc.yaml and .dvc/).",
        )
    return scan(root, with_runs=with_runs)


def _known_experiment(registry: Registry, experiment: str | None) -> None:
    """FoundryError when `experiment` is given and no DVC experiment of the project has that name."""
    from model_foundry.errors import FoundryError
    from model_foundry.registry.history import experiment_names

    if experiment is None:
        return
    names = experiment_names(registry.root)
    if experiment not in names:
        import difflib

        close = difflib.get_close_matches(experiment, names, n=3, cutoff=0.5)
        known = f"Its experiments: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}." if names else ""
        raise FoundryError(
            f"No DVC experiment called {experiment!r} in {registry.root}.",
            f"Did you mean {' or '.join(close)}?"
            if close
            else known or "This project has no DVC experiments.",
        )


def _human_bytes(size: int | None) -> str:
    from model_foundry.resources import fmt_bytes

    return "-" if size is None else fmt_bytes(size)


def _human_count(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n:,}"


def _print_warnings(warnings: list[str]) -> None:
    for warning in warnings:
        print(f"warning: {warning}", file=sys.stderr)


def _console() -> Any:
    from rich.console import Console

    # A pipe or a file gets the whole table (no terminal width to fit); markup and highlighting are off.
    return Console(width=None if sys.stdout.isatty() else 200, highlight=False, markup=False, emoji=False)


def list_models(
    arch: Annotated[
        str | None, typer.Option("--arch", help="Only this architecture (e.g. gpt, qwen2).")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", help="Only this source: scratch, hub, folder, model, or a Hub id."),
    ] = None,
    exp: Annotated[
        str | None, typer.Option("--exp", help="Only models this DVC experiment recorded.")
    ] = None,
    metrics: Annotated[
        bool,
        typer.Option("--metrics", help="Also read MLflow (key metrics of models dvc.lock has none for)."),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List every model the project has made or imported.

    The workspace, every experiment and commit DVC recorded, and models/*.dvc. Read from dvc.lock, git,
    metadata.json and the DVC cache (MLflow only with --metrics); warnings (a folder with no DVC record, a
    changed folder, damaged metadata) go to stderr.

    \b
    Examples:
      foundry list-models
      foundry list-models --arch gpt --metrics
      foundry list-models --exp my-experiment --json
    """
    from model_foundry.registry.records import filter_models

    registry = _registry(with_runs=metrics)
    _known_experiment(registry, exp)
    models = filter_models(registry.models, arch, source, exp)
    warnings = [*registry.warnings, *(w for m in models for w in m.warnings)]
    if as_json:
        print(json.dumps({"models": [m.to_json() for m in models], "warnings": warnings}, indent=2))
        return
    _print_warnings(warnings)
    if not models:
        print("No models." if not registry.models else "No model matches the filters.")
        return
    from rich.table import Table

    table = Table(box=None, pad_edge=False)
    for column in (
        "name", "arch", "method", "source", "params", "size", "checksum", "parent", "created", "license",
        "where", "metric",
    ):  # fmt: skip
        table.add_column(column, overflow="fold")
    for m in models:
        metric = f"{m.key_metric[0]} {m.key_metric[1]:.4g}" if m.key_metric else "-"
        table.add_row(
            m.name, m.architecture or "-", m.method or "-", m.source or "-", _human_count(m.parameters),
            _human_bytes(m.size), m.short_checksum, m.fine_tuned_from or "-", (m.created or "-")[:10],
            m.license or "-", m.location, metric,
        )  # fmt: skip
    _console().print(table)


def _files(model: ModelRecord, root: Path) -> list[dict[str, Any]]:
    """The model's files: relpath, size (bytes, workspace copies only), DVC md5 and metadata's sha256."""
    from model_foundry.registry.gc import objects_dir
    from model_foundry.registry.records import cache_listing

    sha = (model.metadata or {}).get("sha256") or {}
    folder = root / model.path
    listing = cache_listing(objects_dir(root), model.checksum) if model.checksum else None
    md5s = {str(e["relpath"]): e.get("md5") for e in listing or [] if e.get("relpath")}
    names = sorted(set(md5s) | ({p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}
                                if folder.is_dir() else set()))  # fmt: skip
    return [
        {
            "path": name,
            "size": (folder / name).stat().st_size if (folder / name).is_file() else None,
            "md5": md5s.get(name),
            "sha256": sha.get(name) if isinstance(sha, dict) else None,
        }
        for name in names
    ]


def model_info(model_arg: ModelArg, as_json: JsonOpt = False) -> None:
    """Everything the registry knows about one model.

    Where it is, its checksum and versions, the lineage up to its root with each ancestor's checksum, its
    MLflow runs (metrics and the `mlflow ui` URL), its files (size, md5, sha256), its licence and metrics.
    (`foundry info` reads one folder and answers at once; this reads DVC, git and MLflow.)

    \b
    Examples:
      foundry model-info gpt-tiny-trained
      foundry model-info models/gpt-tiny-trained --json
    """
    from model_foundry.registry.lineage import ancestors

    registry = _registry(with_runs=True)
    name = _name(registry, model_arg)
    model = registry.get(name)
    chain = [
        {"name": n, "known": False} if isinstance(n, str) else
        {"name": n.name, "known": True, "checksum": n.checksum, "method": n.method, "location": n.location}
        for n in ancestors(registry, name)
    ]  # fmt: skip
    files = _files(model, registry.root)
    acknowledgment = (model.metadata or {}).get("license_acknowledgment") or (model.metadata or {}).get(
        "acknowledgment"
    )
    info = {
        **model.to_json(full=True),
        "lineage": chain,
        "files": files,
        "license_acknowledgment": acknowledgment,
    }
    if as_json:
        info["warnings"] = list(registry.warnings)
        print(json.dumps(info, indent=2, default=str))
        return
    _print_warnings([*registry.warnings, *model.warnings])
    out = [
        f"{model.name}  ({model.path})",
        f"  where:        {model.location}"
        + (f" (made by experiment {model.experiment})" if model.experiment else ""),
        f"  checksum:     {model.checksum or '-'}  ({model.recorded_by or 'no DVC record'})",
        f"  size:         {_human_bytes(model.size)} in {model.nfiles} files"
        if model.size is not None
        else "  size:         - (no DVC record)",
        f"  architecture: {model.architecture or '-'}   method: {model.method or '-'}   "
        f"parameters: {_human_count(model.parameters)}",
        f"  source:       {model.source or '-'} ({model.source_kind or '?'})",
        f"  created:      {model.created or '-'}",
        f"  licence:      {model.license or '-'}"
        + (f" (acknowledged: {acknowledgment})" if acknowledgment else ""),
        "  lineage:",
    ]
    for link in chain:
        if link["known"]:
            out.append(
                f"    {link['name']} ({link['method'] or '?'}) {link['checksum'] or '-'}"
                f"  [{link['location']}]"
            )
        else:
            out.append(f"    {link['name']} (not in the registry)")
    if model.metrics:
        out.append(
            "  metrics (dvc.lock): " + ", ".join(f"{k}={v:.4g}" for k, v in _flat(model.metrics).items())
        )
    if len(model.versions) > 1:
        out.append("  versions:")
        from model_foundry.registry.gc import objects_dir
        from model_foundry.registry.records import in_cache

        objects = objects_dir(registry.root)
        out += [
            f"    {v.checksum}  {v.where}  ({v.recorded_by}; "
            f"{'in the DVC cache' if in_cache(objects, v.checksum) else 'not in the DVC cache'})"
            for v in model.versions
        ]
    unread = any("MLflow" in w for w in registry.warnings)
    out.append(
        "  MLflow runs:"
        if model.runs
        else f"  MLflow runs: {'not read (see the warning)' if unread else 'none'}"
    )
    for run in model.runs:
        key = ", ".join(
            f"{k}={v:.4g}" for k, v in sorted(run.metrics.items()) if "loss" in k or "perplexity" in k
        )
        out.append(f"    {run.name} [{run.stage}, {run.status}] {run.start_time}  {key}\n      {run.url}")
    out.append("  files:")
    for f in files:
        digest = f"sha256 {f['sha256']}" if f["sha256"] else f"md5 {f['md5']}" if f["md5"] else "-"
        size = _human_bytes(f["size"]) if f["size"] is not None else "(not checked out)"
        out.append(f"    {f['path']:<32} {size:>17}  {digest}")
    print("\n".join(out))


def _flat(metrics: dict[str, Any], prefix: str = "") -> dict[str, float]:
    flat: dict[str, float] = {}
    for key, value in metrics.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            flat[f"{prefix}{key}"] = float(value)
    return flat


def validate_model(
    model_arg: Annotated[
        str | None,
        typer.Argument(metavar="[MODEL]", help=f"{MODEL_HELP} (Or --all.)", show_default=False),
    ] = None,
    all_models: Annotated[bool, typer.Option("--all", help="Check every model in the workspace.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check that a model folder's bytes are intact.

    Its DVC hash against dvc.lock / the .dvc file, each weight file's sha256 against metadata.json, every
    safetensors header and tensor shape against the config, and that the config and tokenizer load. Exit 0
    when intact, 1 with each offending file named.

    \b
    Examples:
      foundry validate-model gpt-tiny-trained
      foundry validate-model --all --json
    """
    from model_foundry.errors import FoundryError
    from model_foundry.registry.checks import validate_model_folder
    from model_foundry.registry.gc import objects_dir

    if (model_arg is None) == (not all_models):
        raise FoundryError("Give one model or --all.", "e.g. `foundry validate-model gpt-tiny-trained`.")
    registry = _registry()
    if all_models:
        models = [m for m in registry.models if m.in_workspace]
    else:
        models = [registry.get(_name(registry, model_arg or ""))]
    objects = objects_dir(registry.root)
    report: list[dict[str, Any]] = []
    failed = 0
    for model in models:
        if not model.in_workspace:
            raise FoundryError(
                f"{model.path} is not in the workspace ({model.location}).",
                f"`foundry get {model.name}` brings it back, then validate it.",
            )
        problems = validate_model_folder(
            registry.root / model.path, model.checksum, model.recorded_by, objects
        )
        failed += bool(problems)
        report.append(
            {
                "name": model.name,
                "ok": not problems,
                "problems": [vars(p) for p in problems],
                "dvc_record": model.recorded_by,  # None: no DVC hash to compare with
            }
        )
    if as_json:
        print(json.dumps({"models": report, "warnings": list(registry.warnings)}, indent=2))
    else:
        _print_warnings(list(registry.warnings))  # e.g. a dvc.lock that does not parse: no hash to compare
        for entry in report:
            unchecked = "" if entry["dvc_record"] else " (no DVC record: its DVC hash was not compared)"
            print(f"{entry['name']}: {'intact' if entry['ok'] else 'DAMAGED'}{unchecked}")
            for p in entry["problems"]:
                print(f"  {p['file']}: {p['message']}")
        if all_models and not report:
            print("No model in the workspace.")
    if failed:
        raise typer.Exit(1)


def get(
    model_arg: ModelArg,
    exp: Annotated[
        str | None, typer.Option("--exp", help="The experiment whose version to bring back.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace a models/NAME holding other bytes.")
    ] = False,
) -> None:
    """Bring a model back into models/ from the DVC cache.

    A model recorded by an experiment, a commit or the cache, written into the workspace without switching
    it: from the DVC cache, or fetched from the DVC remote first; verified against its checksum.

    \b
    Examples:
      foundry get gpt-tiny-trained
      foundry get gpt-small-trained --exp my-experiment --force
    """
    from model_foundry.registry.get import get_model

    registry = _registry()
    name = _name(registry, model_arg)
    _known_experiment(registry, exp)
    model = registry.get(name)
    result = get_model(registry.root, model, exp, force)
    if result.already_there:
        print(f"{name}: models/{name} already holds {result.checksum} ({result.where}); nothing to do.")
        return
    fetched = " (fetched from the DVC remote)" if result.fetched else ""
    print(
        f"{name}: wrote models/{name} ({result.files} files, {result.checksum}) from {result.where}{fetched}"
    )


def delete_model(
    model_arg: ModelArg,
    gc: Annotated[
        bool,
        typer.Option(
            "--gc",
            help="Then free the DVC cache objects no remaining model references: none in the workspace "
            "(dvc.lock, *.dvc), in any commit of any branch or tag, or in any DVC experiment. (`dvc gc -w` "
            "alone would also delete other experiments' data.)",
        ),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show the plan (and the bytes --gc frees); change nothing.")
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Delete even when other models were made from it.")
    ] = False,
) -> None:
    """Delete a model's folder and .dvc file (shows the plan).

    The plan, shown first, lists the folders, .dvc files, bytes and the models made from it. A model others
    were fine-tuned from is refused unless --force.

    \b
    Examples:
      foundry delete-model gpt-tiny-trained --dry-run --gc
      foundry delete-model gpt-tiny-trained --yes --gc
    """
    from model_foundry.errors import FoundryError
    from model_foundry.registry.delete import execute_delete, format_plan, plan_delete
    from model_foundry.registry.gc import collect_garbage

    registry = _registry()
    name = _name(registry, model_arg)
    model = registry.get(name)
    dependants = [m.name for m in registry.children(name)]
    stage = next((v.stage for v in model.versions if v.kind == "workspace" and v.stage), None)
    plan = plan_delete(registry.root, name, dependants, stage)
    print(format_plan(plan))
    if dry_run:
        if gc:
            report = collect_garbage(registry.root, dry_run=True, excluding=plan.dvc_files)
            print(
                f"--gc would free {report.objects} cache objects, "
                f"{_human_bytes(report.bytes)} ({report.bytes} bytes)."
            )
        return
    if plan.dependants and not force:
        execute_delete(plan, force)  # refuses, naming the dependants and --force
    if not yes:
        if not sys.stdin.isatty():
            raise FoundryError(
                f"Not deleting {name} without a confirmation: there is no terminal to ask.",
                "Pass --yes to delete without asking (--dry-run shows the plan only).",
            )
        if not typer.confirm("Delete?", default=False):
            print("Nothing deleted.")
            raise typer.Exit(1)
    from model_foundry.locking import project_lock

    with project_lock(registry.root / "models", f"delete-model {name}"):
        execute_delete(plan, force)
    print(f"Deleted {name}.")
    if gc:
        report = collect_garbage(registry.root, dry_run=False)
        print(
            f"Freed {report.objects} DVC cache objects, {_human_bytes(report.bytes)} ({report.bytes} bytes)."
        )


def gc(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Report the objects and bytes; delete nothing.")
    ] = False,
) -> None:
    """Free the DVC cache objects nothing references any more.

    Nothing: no model, workspace, commit (all branches and tags) or experiment (README, "Deleting models and
    freeing the DVC cache").

    \b
    Examples:
      foundry models gc --dry-run
      foundry models gc
    """
    from model_foundry.project import project_root
    from model_foundry.registry.gc import collect_garbage

    report = collect_garbage(project_root(), dry_run=dry_run)
    verb = "Would free" if dry_run else "Freed"
    print(f"{verb} {report.objects} DVC cache objects, {_human_bytes(report.bytes)} ({report.bytes} bytes).")


def lineage(model_arg: ModelArg, as_json: JsonOpt = False) -> None:
    """The tree of a model's ancestors and descendants.

    Each with its checksum, method (import / scratch / full / lora) and the MLflow run that made it.

    \b
    Examples:
      foundry lineage gpt-tiny-lora-trained
      foundry lineage models/gpt-tiny-trained --json
    """
    from dataclasses import asdict

    from model_foundry.registry.lineage import ancestors, descendants, format_tree

    registry = _registry(with_runs=True)
    name = _name(registry, model_arg)
    registry.get(name)
    if as_json:
        chain = [n if isinstance(n, str) else {k: v for k, v in asdict(n).items() if k != "children"}
                 for n in ancestors(registry, name)]  # fmt: skip
        print(json.dumps({"ancestors": chain, "descendants": asdict(descendants(registry, name))}, indent=2))
        return
    _print_warnings(list(registry.warnings))
    print("\n".join(format_tree(registry, name)))


def compare(
    models: Annotated[
        list[str],
        typer.Argument(metavar="MODEL...", help=f"Two or more models. {MODEL_HELP}", show_default=False),
    ],
    as_json: JsonOpt = False,
) -> None:
    """Metrics side by side, and the params that differ.

    Each model's metrics come from its dvc.lock metrics file and MLflow runs; the params are those of the
    stages that made them.

    \b
    Examples:
      foundry compare gpt-tiny-trained gpt-small-trained
      foundry compare gpt-tiny-trained models/lstm-tiny-trained --json
    """
    from model_foundry.registry.compare import compare_models

    registry = _registry(with_runs=True)
    names = [_name(registry, model) for model in models]
    table = compare_models(registry, names)
    if as_json:
        print(json.dumps(table, indent=2))
        return
    _print_warnings(list(registry.warnings))
    from rich.table import Table

    for title, rows in (("metrics", table["metrics"]), ("params that differ", table["params"])):
        out = Table(title=title, box=None, pad_edge=False, title_justify="left")
        out.add_column("")
        for n in names:
            out.add_column(n, overflow="fold")
        for key, values in rows.items():
            out.add_row(key, *(_cell(v) for v in values))
        _console().print(out if rows else f"{title}: none")
    if table["params_unknown"]:
        print(f"params not recorded by a pipeline stage (imported): {', '.join(table['params_unknown'])}")


def _cell(value: Any) -> str:
    """A table cell: '-' for a missing value, whole numbers without an exponent, others to 6 digits."""
    if value is None:
        return "-"
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}" if isinstance(value, float) else str(value)


COMMANDS: dict[str, tuple[str, Callable[..., None]]] = {
    "list-models": ("list", list_models),
    "model-info": ("info", model_info),
    "validate-model": ("validate", validate_model),
    "get": ("get", get),
    "delete-model": ("delete", delete_model),
    "lineage": ("lineage", lineage),
    "compare": ("compare", compare),
}


def register(app: typer.Typer) -> None:
    """The top-level commands, and the same commands under `foundry models`."""
    group = typer.Typer(
        help="The model registry (list, info, get, delete, gc, …).\n\n"
        "Derived on each call from dvc.lock, experiments, .dvc files, metadata.json and MLflow.",
        epilog="\b\nExamples:\n  foundry models list\n  foundry models info gpt-tiny-trained\n"
        "  foundry models gc --dry-run",
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    for top, (short, command) in COMMANDS.items():
        app.command(top)(command)
        group.command(short)(command)
    group.command("gc")(gc)
    app.add_typer(group, name="models")
