"""Every recorded state of the project's models: the workspace, each branch or tag commit, each experiment.

A *snapshot* is one place DVC recorded outputs: the workspace's `dvc.lock` and `models/*.dvc` files, a
commit's (read through git), or a DVC experiment's (`refs/exps/…`, whose commits hold the experiment's
`dvc.lock` and `metrics.json`). Reading goes through three git processes whatever the history's size
(`for-each-ref`, one `log`, one `cat-file --batch`), so the registry lists 20 experiments in milliseconds; no
DVC import.

Experiment refs follow DVC 3's layout, `refs/exps/<2 hex>/<38 hex of the baseline commit>/<name>`
(dvc/repo/experiments/refs.py, `ExpRefInfo`); `refs/exps/exec/…` and `refs/exps/celery/…` are DVC's own
bookkeeping and are skipped.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass, field
from pathlib import Path

LOCK_PATH = "dvc.lock"
MODELS_DIR = "models"


@dataclass(frozen=True)
class Snapshot:
    """One recorded state.

    kind: "workspace", "experiment" or "commit".
    label: how people name it: "workspace", the experiment's name, or the commit's short sha.
    rev: the git commit (None for the workspace); time: its commit time (seconds since 1970; the workspace: 0,
        ordered first anyway).
    files: the texts of `dvc.lock`, `metrics.json`-like files and `models/*.dvc` files it holds, by path.
    """

    kind: str
    label: str
    rev: str | None
    time: int
    files: dict[str, str] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """`workspace`, `experiment <name>` or `commit <sha>`."""
        return self.label if self.kind == "workspace" else f"{self.kind} {self.label}"


def _git(root: Path, *args: str, stdin: str | None = None) -> str | None:
    try:
        proc = subprocess.run(
            ["git", *args], cwd=root, input=stdin, capture_output=True, text=True, check=False, timeout=60
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


def _read_blobs(root: Path, specs: list[str]) -> dict[str, str]:
    """`<rev>:<path>` → text, for each spec git has (one `git cat-file --batch` process for all)."""
    if not specs:
        return {}
    try:
        proc = subprocess.run(
            ["git", "cat-file", "--batch"],
            cwd=root,
            input="\n".join(specs).encode() + b"\n",
            capture_output=True,
            check=False,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return {}
    out, pos, found = proc.stdout, 0, {}
    for spec in specs:
        end = out.find(b"\n", pos)
        if end < 0:
            break
        header = out[pos:end].split()
        pos = end + 1
        if len(header) != 3 or header[1] != b"blob":  # "<spec> missing", or a tree
            continue
        size = int(header[2])
        found[spec] = out[pos : pos + size].decode("utf-8", errors="replace")
        pos += size + 1  # the blob, then a newline
    return found


def _experiment_refs(root: Path) -> list[tuple[str, str, int]]:
    """(experiment name, commit, commit time) for every DVC experiment, newest first."""
    text = _git(
        root,
        "for-each-ref",
        "--sort=-committerdate",
        "--format=%(objectname) %(committerdate:unix) %(refname)",
        "refs/exps",
    )
    found = []
    for line in (text or "").splitlines():
        sha, when, ref = line.split(" ", 2)
        parts = ref.split("/")
        if len(parts) != 5 or parts[2] in ("exec", "celery", "runs", "temp"):
            continue
        found.append((parts[4], sha, int(when)))
    return found


def _branch_commits(root: Path) -> list[tuple[str, int, list[str]]]:
    """(commit, time, paths it changed) for every commit on a branch or tag that changed dvc.lock, a
    `models/*.dvc` file or a metrics file, newest first."""
    text = _git(
        root,
        "log",
        "--branches",
        "--tags",
        "--format=@%H %ct",
        "--name-only",
        "--",
        LOCK_PATH,
        f"{MODELS_DIR}/*.dvc",
    )
    commits: list[tuple[str, int, list[str]]] = []
    for line in (text or "").splitlines():
        if line.startswith("@"):
            sha, when = line[1:].split()
            commits.append((sha, int(when), []))
        elif line.strip() and commits:
            commits[-1][2].append(line.strip())
    return commits


def workspace_snapshot(root: Path, extra: tuple[str, ...] = ()) -> Snapshot:
    """The workspace: `dvc.lock`, `models/*.dvc` and the `extra` files (metrics files), as on disk."""
    files = {}
    paths = [LOCK_PATH, *extra, *(p.relative_to(root).as_posix() for p in (root / MODELS_DIR).glob("*.dvc"))]
    for rel in paths:
        try:
            files[rel] = (root / rel).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError):
            continue
    return Snapshot("workspace", "workspace", None, 0, files)


def recorded_snapshots(root: Path, metrics_paths: tuple[str, ...] = ("metrics.json",)) -> list[Snapshot]:
    """The experiments (newest first), then the branch and tag commits (newest first) that recorded outputs.

    Each snapshot holds its `dvc.lock`, the `metrics_paths` it has, and, for commits, the `models/*.dvc` files
    that commit changed (an unchanged one is read where it changed). Outside git: [].
    """
    wanted: list[tuple[str, str, str | None, int, list[str]]] = []
    for name, sha, when in _experiment_refs(root):
        wanted.append(("experiment", name, sha, when, [LOCK_PATH, *metrics_paths]))
    for sha, when, changed in _branch_commits(root):
        dvc_files = [p for p in changed if p.endswith(".dvc")]
        wanted.append(("commit", sha[:7], sha, when, [LOCK_PATH, *metrics_paths, *dvc_files]))
    blobs = _read_blobs(root, [f"{sha}:{path}" for _, _, sha, _, paths in wanted for path in paths])
    snapshots = []
    for kind, label, rev, when, paths in wanted:
        files = {path: blobs[f"{rev}:{path}"] for path in paths if f"{rev}:{path}" in blobs}
        snapshots.append(Snapshot(kind, label, rev, when, files))
    return snapshots


def experiment_names(root: Path) -> list[str]:
    """The names of the project's DVC experiments, newest first (what `dvc exp list --all-commits` names)."""
    return [name for name, _, _ in _experiment_refs(root)]
