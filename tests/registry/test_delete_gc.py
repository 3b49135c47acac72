"""Deleting a model (plan, refusal, execution) and freeing the DVC cache objects nothing references, on a real
git + DVC repo: models added with `dvc add` and committed, one committed then removed, experiments whose
outputs are not in the workspace, and objects that nothing ever committed."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import run_cmd
from model_foundry.errors import FoundryError
from model_foundry.registry.delete import execute_delete, format_plan, pipeline_hint, plan_delete
from model_foundry.registry.gc import (
    GcReport,
    cache_dir,
    cache_objects,
    collect_garbage,
    objects_dir,
    referenced_md5s,
    unreferenced_objects,
)
from model_foundry.resources import fmt_bytes

DVC_YAML = {
    "stages": {
        "make": {
            "cmd": "mkdir -p out && seq 1 ${x}000 > out/seq.txt && echo ${x} > out/x.txt",
            "params": ["x"],
            "outs": ["out"],
        }
    }
}


def make_model(folder: Path, seed: int) -> dict[str, bytes]:
    """A small model-like folder (config + 'weights' of distinct random bytes); returns its files."""
    rng = random.Random(seed)
    files = {
        "config.json": json.dumps({"architecture": "gpt", "seed": seed}).encode(),
        "model.safetensors": rng.randbytes(3000 + 100 * seed),
    }
    folder.mkdir(parents=True)
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return files


def out_md5(dvc_text: str) -> str:
    """The md5 of the first output of a .dvc file's text."""
    return str(yaml.safe_load(dvc_text)["outs"][0]["md5"])


def object_md5s(root: Path, dir_md5: str) -> set[str]:
    """A folder's md5 and its files' md5s, from the `.dir` listing in the cache."""
    listing = json.loads((objects_dir(root) / dir_md5[:2] / dir_md5[2:]).read_text())
    return {dir_md5, *(entry["md5"] for entry in listing)}


def commit(root: Path, message: str) -> None:
    run_cmd(["git", "add", "-A"], root)
    run_cmd(["git", "commit", "-qm", message], root)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The repo, plus the md5 sets of each kind of data it holds (see the module docstring)."""
    root = tmp_path_factory.mktemp("gc") / "proj"
    root.mkdir()
    run_cmd(["git", "init", "-q"], root)
    run_cmd(["git", "config", "user.email", "tests@example.com"], root)
    run_cmd(["git", "config", "user.name", "tests"], root)
    run_cmd(["dvc", "init", "-q"], root)
    (root / "params.yaml").write_text("x: 1\n")
    (root / "dvc.yaml").write_text(yaml.safe_dump(DVC_YAML))
    commit(root, "pipeline")

    # base and child: committed models (child was fine-tuned from base); old: committed, then removed
    names = ["base", "child", "old"]
    files = {name: make_model(root / "models" / name, seed) for seed, name in enumerate(names)}
    run_cmd(["dvc", "add", "-q", "models/base", "models/child", "models/old"], root)
    commit(root, "models")
    md5 = {name: object_md5s(root, out_md5((root / f"models/{name}.dvc").read_text())) for name in files}
    run_cmd(["git", "rm", "-q", "models/old.dvc"], root)
    shutil.rmtree(root / "models/old")
    gitignore = root / "models/.gitignore"
    gitignore.write_text("".join(f"{line}\n" for line in gitignore.read_text().split() if line != "/old"))
    commit(root, "remove old")

    # two experiments: exp-two's output is in no workspace, only in its experiment commit
    run_cmd(["dvc", "exp", "run", "-q", "-n", "exp-two", "-S", "x=2"], root)
    run_cmd(["dvc", "exp", "run", "-q", "-n", "exp-three", "-S", "x=3"], root)
    refs = run_cmd(["git", "for-each-ref", "--format=%(refname)", "refs/exps"], root).stdout.split()
    (exp_two,) = [ref for ref in refs if ref.endswith("/exp-two")]
    lock = yaml.safe_load(run_cmd(["git", "show", f"{exp_two}:dvc.lock"], root).stdout)
    md5["exp-two"] = object_md5s(root, lock["stages"]["make"]["outs"][0]["md5"])
    assert (root / "out/x.txt").read_text() == "3\n"  # the workspace holds exp-three's output

    # loose: added, never committed (deleted below); trash: added, then folder and .dvc file removed
    files["loose"] = make_model(root / "models/loose", 7)
    make_model(root / "trash", 8)
    run_cmd(["dvc", "add", "-q", "models/loose", "trash"], root)
    md5["loose"] = object_md5s(root, out_md5((root / "models/loose.dvc").read_text()))
    md5["trash"] = object_md5s(root, out_md5((root / "trash.dvc").read_text()))
    shutil.rmtree(root / "trash")
    (root / "trash.dvc").unlink()
    return {"root": root, "files": files, "md5": md5}


def test_plan_lists_folder_dvc_file_and_bytes_and_refuses_a_parent(project: dict[str, Any]) -> None:
    root: Path = project["root"]
    plan = plan_delete(root, "base", ["child"], None)
    folder, dvc_file = root / "models/base", root / "models/base.dvc"
    assert plan.folders == [folder] and plan.dvc_files == [dvc_file]
    weights = sum(len(data) for data in project["files"]["base"].values())
    assert plan.sizes == {folder: weights, dvc_file: dvc_file.stat().st_size}
    assert plan.bytes == weights + dvc_file.stat().st_size
    assert plan.dependants == ["child"] and plan.pipeline_stage is None and plan.hint_pipeline is None

    text = format_plan(plan)
    assert f"{folder}/  {fmt_bytes(weights)}" in text and str(dvc_file) in text
    assert f"({plan.bytes:,} bytes)" in text and "Models fine-tuned from base: child" in text

    with pytest.raises(FoundryError) as refused:
        execute_delete(plan, force=False)
    assert "parent of child" in refused.value.message and "--force" in (refused.value.hint or "")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors"]
    assert dvc_file.is_file()


def test_plan_of_a_pipeline_output_says_how_to_drop_it_and_bad_names_are_refused(
    project: dict[str, Any],
) -> None:
    root: Path = project["root"]
    plan = plan_delete(root, "child", [], "train")
    assert plan.hint_pipeline == pipeline_hint("child", "train")
    assert "stage `train`" in format_plan(plan) and "No model names child as its parent." in format_plan(plan)
    hint = pipeline_hint("gpt-tiny-trained", "train")
    assert "next `dvc repro` recreates it" in hint and "remove the `gpt-tiny` entry from `models:`" in hint
    assert "remove the `gpt-tiny` entry" in pipeline_hint("gpt-tiny", "convert")

    for bad in ("../x", "old", "Base"):  # a path, a model only in history, a name breaking the rule
        with pytest.raises(FoundryError):
            plan_delete(root, bad, [], None)


def test_delete_and_gc_free_exactly_the_dry_run_objects_and_keep_history_and_experiments(
    project: dict[str, Any],
) -> None:
    root: Path = project["root"]
    md5 = project["md5"]
    assert objects_dir(root) == cache_dir(root) / "files/md5" == root / ".dvc/cache/files/md5"
    before = {obj.md5: obj for obj in cache_objects(root)}
    assert set().union(*md5.values()) <= before.keys()

    # what --gc --dry-run says before the delete (its .dvc file counted as gone) is what gc frees after it
    loose = plan_delete(root, "loose", [], None)
    planned = collect_garbage(root, dry_run=True, excluding=loose.dvc_files)
    garbage = md5["loose"] | md5["trash"]
    assert planned == GcReport(len(garbage), sum(before[m].size for m in garbage))
    trash_bytes = sum(before[m].size for m in md5["trash"])
    assert collect_garbage(root, dry_run=True) == GcReport(len(md5["trash"]), trash_bytes)  # loose still used

    execute_delete(loose, force=False)
    assert not (root / "models/loose").exists() and not (root / "models/loose.dvc").exists()
    assert not list((root / "models").glob(".foundry-*"))  # nothing half-deleted left beside it
    assert "/loose" not in (root / "models/.gitignore").read_text()
    assert run_cmd(["git", "status", "--porcelain", "models"], root).stdout == ""  # git sees a clean models/

    base = plan_delete(root, "base", ["child"], None)
    execute_delete(base, force=True)  # a committed model: deleted from the workspace, kept by history
    assert not (root / "models/base").exists()

    # DVC's own gc with the same scope removes the same objects
    dvc_dry = run_cmd(
        ["dvc", "gc", "-w", "-a", "-T", "-A", "--all-experiments", "--dry", "-f"], root
    ).stdout.splitlines()
    dvc_paths = {
        Path(line.removeprefix("Removing ").strip()) for line in dvc_dry if line.startswith("Removing ")
    }
    assert {obj.path for obj in unreferenced_objects(root)} == dvc_paths

    dry = collect_garbage(root, dry_run=True)
    assert dry == planned and {o.md5 for o in cache_objects(root)} == before.keys()  # dry run deletes nothing
    assert collect_garbage(root, dry_run=False) == planned
    after = {obj.md5 for obj in cache_objects(root)}
    assert after == before.keys() - garbage  # exactly those, and exactly the reported bytes
    assert collect_garbage(root, dry_run=True) == GcReport(0, 0)
    assert md5["base"] | md5["old"] | md5["exp-two"] | md5["child"] <= after
    assert md5["base"] | md5["old"] | md5["exp-two"] <= referenced_md5s(root)

    # DVC still agrees with the cache: the workspace is intact, history and experiments restore
    assert run_cmd(["dvc", "status", "out", "models/child.dvc"], root).stdout.strip().endswith("up to date.")
    old_dvc = run_cmd(["git", "show", "HEAD~1:models/old.dvc"], root).stdout
    (root / "models/old.dvc").write_text(old_dvc)
    run_cmd(["dvc", "checkout", "-q", "models/old.dvc"], root)
    for name, data in project["files"]["old"].items():
        assert (root / "models/old" / name).read_bytes() == data
    run_cmd(["git", "checkout", "-q", "--", "models/base.dvc"], root)  # (the test repo's own git)
    run_cmd(["dvc", "checkout", "-q", "models/base.dvc"], root)
    weights = project["files"]["base"]["model.safetensors"]
    assert (root / "models/base/model.safetensors").read_bytes() == weights
    run_cmd(["dvc", "exp", "apply", "exp-two"], root)
    assert (root / "out/x.txt").read_text() == "2\n"
    assert (root / "out/seq.txt").read_text().splitlines()[-1] == "2000"


def test_cache_found_without_dvc_gc_works_without_git_and_refuses_a_shared_cache(tmp_path: Path) -> None:
    """No git, no DVC call: a hand-made cache with a `.dir` listing, a plain object, a DVC temp file."""
    root = tmp_path / "p"
    objects = root / ".dvc/cache/files/md5"

    def put(data: bytes) -> str:
        import hashlib

        md5 = hashlib.md5(data).hexdigest()
        (objects / md5[:2]).mkdir(parents=True, exist_ok=True)
        (objects / md5[:2] / md5[2:]).write_bytes(data)
        return md5

    kept_file, lost_file = put(b"weights"), put(b"old weights")
    listing = json.dumps([{"md5": kept_file, "relpath": "w.bin"}]).encode()
    kept_dir = put(listing)
    (objects / kept_dir[:2] / kept_dir[2:]).rename(objects / kept_dir[:2] / (kept_dir[2:] + ".dir"))
    temp = objects / kept_file[:2] / "0123.tmp"  # an object DVC is still writing: never garbage
    temp.write_bytes(b"partial")
    (root / "m.dvc").write_text(yaml.safe_dump({"outs": [{"md5": kept_dir + ".dir", "path": "m"}]}))

    assert referenced_md5s(root) >= {kept_dir + ".dir", kept_file}
    assert [obj.md5 for obj in unreferenced_objects(root)] == [lost_file]
    assert collect_garbage(root, dry_run=False) == GcReport(1, len(b"old weights"))
    assert temp.is_file() and (objects / kept_file[:2] / kept_file[2:]).is_file()
    assert not (objects / lost_file[:2] / lost_file[2:]).exists()

    import zc.lockfile  # DVC's lock: a running `dvc` command holds it

    lock = zc.lockfile.LockFile(str(root / ".dvc/tmp/lock"))
    with pytest.raises(FoundryError, match="DVC is running"):
        collect_garbage(root, dry_run=True)
    lock.close()

    (root / ".dvc/config").write_text("[core]\n    analytics = false\n[cache]\n    dir = ../../shared\n")
    assert cache_dir(root) == (tmp_path / "shared").resolve()
    (root / ".dvc/config.local").write_text("[cache]\n    dir = 'cache2'\n")
    assert cache_dir(root) == (root / ".dvc/cache2").resolve()
    (root / ".dvc/config.local").unlink()
    with pytest.raises(FoundryError, match="outside the project") as refused:
        collect_garbage(root, dry_run=True)
    assert "-p" in (refused.value.hint or "")
    with pytest.raises(FoundryError, match="not a DVC project"):
        collect_garbage(tmp_path, dry_run=True)
