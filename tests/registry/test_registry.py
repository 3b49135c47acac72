"""The derived registry on a real git + DVC project (tests/registry/registry_repo.py): list, info, lineage,
compare, get, validate, delete and --gc, push/pull to a local remote, and its bad inputs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from registry_repo import copy_repo, make_registry_repo

from conftest import VENV_BIN, run_cmd
from model_foundry.registry.dvc import dvc_md5
from model_foundry.registry.records import scan

LIST_KEYS = {
    "name", "path", "checksum", "size", "nfiles", "location", "in_workspace", "recorded_by", "experiment",
    "experiments", "architecture", "method", "source", "source_kind", "parameters", "created", "license",
    "fine_tuned_from", "parent_checksum", "key_metric", "warnings",
}  # fmt: skip


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_registry_repo(tmp_path_factory.mktemp("registry") / "repo")


@pytest.fixture
def repo(built: Path, tmp_path: Path) -> Path:
    """A private copy of the built project (tests change it)."""
    return copy_repo(built, tmp_path / "repo")


def foundry(repo: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """`foundry ARGS` in the project, with its own MLflow store (`mlflow.db`, absent until a run logs)."""
    return run_cmd(
        ["foundry", *args], repo, check=check, env={"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    )


def lock_md5(repo: Path, path: str, rev: str | None = None) -> str:
    text = (
        (repo / "dvc.lock").read_text()
        if rev is None
        else run_cmd(["git", "show", f"{rev}:dvc.lock"], repo).stdout
    )
    for stage in yaml.safe_load(text)["stages"].values():
        for out in stage.get("outs", []):
            if out["path"] == path:
                return str(out["md5"])
    raise AssertionError(f"{path} not in dvc.lock")


def exp_rev(repo: Path, name: str) -> str:
    refs = run_cmd(["git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps"], repo).stdout
    return next(line.split()[0] for line in refs.splitlines() if line.endswith(f"/{name}"))


def test_list_models_derives_every_model_with_its_lineage_and_location(built: Path) -> None:
    out = json.loads(foundry(built, "list-models", "--json").stdout)
    models = {m["name"]: m for m in out["models"]}
    assert set(models) == {"base", "child-a", "child-b"}
    assert all(set(m) == LIST_KEYS for m in out["models"])
    base, a, b = models["base"], models["child-a"], models["child-b"]
    assert base["recorded_by"] == "models/base.dvc" and base["location"] == "workspace"
    assert base["checksum"] == dvc_md5(built / "models/base") and base["method"] == "scratch"
    # child-a was made by exp-a and replaced in the workspace by exp-b's child-b: listed from the cache.
    assert a["location"] == "experiment exp-a" and not a["in_workspace"] and a["experiments"] == ["exp-a"]
    assert a["checksum"] == lock_md5(built, "models/child-a", exp_rev(built, "exp-a"))
    assert a["fine_tuned_from"] == "base" and a["parent_checksum"] == base["checksum"]  # from dvc.lock deps
    assert a["parameters"] == base["parameters"] and a["method"] == "full"  # metadata read from the cache
    metrics = json.loads(run_cmd(["git", "show", f"{exp_rev(built, 'exp-a')}:metrics.json"], built).stdout)
    assert a["key_metric"] == {"perplexity": metrics["perplexity"]}
    assert b["location"] == "workspace" and b["recorded_by"] == "dvc.lock stage derive"
    assert b["key_metric"] == {"perplexity": json.loads((built / "metrics.json").read_text())["perplexity"]}
    assert out["warnings"] == []
    # Filters, and the same command under `foundry models`.
    only_a = json.loads(foundry(built, "models", "list", "--exp", "exp-a", "--json").stdout)["models"]
    assert [m["name"] for m in only_a] == ["child-a"]
    assert json.loads(foundry(built, "list-models", "--arch", "bert", "--json").stdout)["models"] == []
    table = foundry(built, "list-models").stdout
    assert "experiment exp-a" in table and base["checksum"][:8] in table


def test_list_models_imports_no_torch_dvc_or_mlflow(built: Path) -> None:
    code = (
        "import sys\n"
        "from model_foundry.cli import app\n"
        "try:\n    app(['list-models'], standalone_mode=False)\nexcept SystemExit:\n    pass\n"
        "loaded = {m.split('.')[0] for m in sys.modules}\n"
        "heavy = sorted(loaded & {'torch', 'transformers', 'dvc', 'mlflow'})\n"
        "print('HEAVY', heavy)\n"
    )
    out = run_cmd([sys.executable, "-c", code], built).stdout
    assert "HEAVY []" in out and "child-a" in out


def test_model_info_lineage_and_compare(built: Path) -> None:
    info = json.loads(foundry(built, "model-info", "child-a", "--json").stdout)
    assert [link["name"] for link in info["lineage"]] == ["child-a", "base"]
    assert info["lineage"][1]["checksum"] == dvc_md5(built / "models/base")
    files = {f["path"]: f for f in info["files"]}
    assert {"model.safetensors", "config.json", "metadata.json", "tokenizer.json"} <= set(files)
    assert files["model.safetensors"]["sha256"] == info["metadata"]["sha256"]["model.safetensors"]
    assert any("no MLflow store" in w for w in info["warnings"])  # this project never logged to MLflow
    text = foundry(built, "model-info", "child-a").stdout
    assert "experiment exp-a" in text and "lineage:" in text

    tree = foundry(built, "lineage", "base").stdout.splitlines()
    assert tree[0].startswith("* base (scratch,") and {"child-a", "child-b"} == {
        line.split("└─ ")[1].split(" ")[0] for line in tree[1:]
    }
    data = json.loads(foundry(built, "lineage", "child-b", "--json").stdout)
    assert [n["name"] for n in data["ancestors"]] == ["child-b", "base"]

    compared = json.loads(foundry(built, "compare", "child-a", "child-b", "--json").stdout)
    assert compared["params"]["seed"] == [1, 2] and compared["params"]["name"] == ["child-a", "child-b"]
    assert len(compared["metrics"]["perplexity"]) == 2 and None not in compared["metrics"]["perplexity"]


def test_get_brings_back_an_experiments_model_byte_identical(repo: Path) -> None:
    expected = lock_md5(repo, "models/child-a", exp_rev(repo, "exp-a"))
    lock_before = (repo / "dvc.lock").read_bytes()
    out = foundry(repo, "get", "child-a").stdout
    assert "from experiment exp-a" in out
    assert dvc_md5(repo / "models/child-a") == expected
    assert (repo / "dvc.lock").read_bytes() == lock_before  # the workspace did not switch experiment
    assert "/child-a" in (repo / "models/.gitignore").read_text().split()
    assert "models/child-a" not in run_cmd(["git", "status", "--porcelain"], repo).stdout
    listed = {m.name: m for m in scan(repo).models}
    assert listed["child-a"].location == "workspace" and listed["child-a"].warnings == ()
    assert "nothing to do" in foundry(repo, "get", "child-a").stdout
    # Bad input: an experiment that did not make it, other bytes in the way, an object missing from the cache.
    wrong = foundry(repo, "get", "child-a", "--exp", "exp-b", check=False)
    assert wrong.returncode == 2 and "did not record child-a" in wrong.stderr and "exp-a" in wrong.stderr
    (repo / "models/child-a/config.json").write_text("{}")
    taken = foundry(repo, "get", "child-a", check=False)
    assert taken.returncode == 2 and "--force" in taken.stderr
    foundry(repo, "get", "child-a", "--force")
    assert dvc_md5(repo / "models/child-a") == expected


def test_get_of_a_model_missing_from_the_cache_says_what_to_do(repo: Path) -> None:
    from model_foundry.registry.gc import objects_dir
    from model_foundry.registry.records import cache_listing, cached_object

    checksum = scan(repo).get("child-a").checksum
    assert checksum is not None
    weights = next(
        e for e in cache_listing(objects_dir(repo), checksum) or [] if e["relpath"] == "model.safetensors"
    )
    cached_object(objects_dir(repo), weights["md5"]).unlink()
    assert scan(repo).get("child-a").location == "missing"
    out = foundry(repo, "get", "child-a", check=False)
    assert out.returncode == 2 and "not in the DVC cache" in out.stderr and "hint:" in out.stderr
    assert not (repo / "models/child-a").exists()


def test_validate_model_catches_damage_and_names_the_file(repo: Path) -> None:
    assert foundry(repo, "validate-model", "--all").stdout.count("intact") == 2
    weights = repo / "models/child-b/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x01  # one flipped bit in the last tensor's bytes
    weights.write_bytes(bytes(data))
    out = foundry(repo, "validate-model", "child-b", check=False)
    assert out.returncode == 1 and "model.safetensors" in out.stdout and "DAMAGED" in out.stdout
    assert foundry(repo, "validate-model", "base").returncode == 0
    listed = scan(repo).get("child-b")
    assert any("changed since dvc.lock stage derive" in w for w in listed.warnings)
    missing = foundry(repo, "validate-model", "child-a", check=False)  # in an experiment, not the workspace
    assert missing.returncode == 2 and "foundry get child-a" in missing.stderr


def test_delete_refuses_a_parent_and_gc_frees_what_the_dry_run_said(repo: Path) -> None:
    refused = foundry(repo, "delete-model", "base", "--yes", check=False)
    assert refused.returncode == 2 and "child-a" in refused.stderr + refused.stdout
    assert (repo / "models/base").is_dir()

    foundry(repo, "get", "child-a")  # an experiment's model brought back: deleting it frees nothing of exp-a
    dry = foundry(repo, "delete-model", "child-a", "--gc", "--dry-run").stdout
    assert "models/child-a" in dry and (repo / "models/child-a").is_dir()
    freed_dry = int(dry.rsplit("(", 1)[1].split(" bytes")[0])
    done = foundry(repo, "delete-model", "child-a", "--gc", "--yes").stdout
    assert not (repo / "models/child-a").exists()
    assert int(done.rsplit("(", 1)[1].split(" bytes")[0]) == freed_dry
    # exp-a still references child-a's bytes: they stay in the cache and `get` brings them back.
    foundry(repo, "get", "child-a")
    assert dvc_md5(repo / "models/child-a") == lock_md5(repo, "models/child-a", exp_rev(repo, "exp-a"))


def test_bad_inputs_are_errors_or_warnings_never_tracebacks(repo: Path) -> None:
    unknown = foundry(repo, "model-info", "child-c", check=False)
    assert unknown.returncode == 2 and "No model called 'child-c'" in unknown.stderr
    assert "child-a" in unknown.stderr or "child-b" in unknown.stderr  # the closest names
    (repo / "models/base/metadata.json").write_text("{not json")
    shutil.copytree(repo / "models/child-b", repo / "models/stray")
    (repo / "models/stray/metadata.json").unlink()
    shutil.rmtree(repo / "models/child-b")  # a dvc.lock entry whose folder is gone
    gone = scan(repo).get("child-b")
    assert gone.location == "experiment exp-b" and any("not checked out" in w for w in gone.warnings)
    (repo / "dvc.lock").write_text((repo / "dvc.lock").read_text() + "\n  :: [broken\n")
    out = foundry(repo, "list-models", "--json")
    data = json.loads(out.stdout)
    warnings = data["warnings"] + [w for m in data["models"] for w in m["warnings"]]
    assert any("metadata.json does not parse" in w for w in warnings)
    assert any("models/stray has no DVC record" in w for w in warnings)
    assert any("dvc.lock does not parse" in w for w in warnings)
    assert any("models/stray has no metadata.json" in w for w in warnings)
    assert "Traceback" not in out.stderr


def test_push_clone_pull_validate(repo: Path, tmp_path: Path) -> None:
    """README "Moving models", as written: a default remote committed and in config.local (the
    experiments predate the commit), `dvc push -A` (every commit's models)
    and `dvc exp push -A origin` (every experiment: its git ref and its models), then a fresh clone pulls
    byte-identical folders, and `foundry get` fetches an experiment's model from the remote."""
    remote, origin = tmp_path / "remote", tmp_path / "origin.git"
    run_cmd(["git", "init", "-q", "--bare", str(origin)], tmp_path)
    run_cmd(["git", "remote", "add", "origin", str(origin)], repo)
    run_cmd(["dvc", "remote", "add", "-d", "storage", str(remote)], repo)  # in .dvc/config: committed
    run_cmd(["git", "add", "-A"], repo)
    run_cmd(["git", "commit", "-qm", "results of exp-b and the remote"], repo)
    # The experiments predate that commit: DVC reads each commit's own .dvc/config, plus config.local.
    run_cmd(["dvc", "remote", "add", "--local", "-d", "storage", str(remote)], repo)
    run_cmd(["dvc", "push", "-q", "-A"], repo)
    run_cmd(["dvc", "exp", "push", "-q", "-A", "origin"], repo)
    run_cmd(["git", "push", "-q", "origin", "HEAD"], repo)
    clone = tmp_path / "clone"
    run_cmd(["git", "clone", "-q", str(origin), str(clone)], tmp_path)
    run_cmd(["dvc", "pull", "-q"], clone)
    out = foundry(clone, "validate-model", "--all")
    assert out.stdout.count("intact") == 2
    for name in ("base", "child-b"):
        for file in (repo / "models" / name).iterdir():
            assert (clone / "models" / name / file.name).read_bytes() == file.read_bytes()
    listed = {m.name: m for m in scan(clone).models}
    assert listed["child-b"].location == "workspace"
    # An experiment's model: its ref comes with `dvc exp pull`, its bytes from the remote with `foundry get`.
    run_cmd(["dvc", "exp", "pull", "-q", "--no-cache", "origin", "exp-a"], clone)
    assert scan(clone).get("child-a").location == "remote only"
    foundry(clone, "get", "child-a", "--exp", "exp-a")
    assert dvc_md5(clone / "models/child-a") == lock_md5(repo, "models/child-a", exp_rev(repo, "exp-a"))
    # A model only in the remote: the clone's cache lacks an object; an unreachable remote is a clear error.
    shutil.rmtree(clone / "models/base")
    shutil.rmtree(clone / ".dvc/cache")
    assert scan(clone).get("base").location == "remote only"
    shutil.move(remote, tmp_path / "gone")
    out = foundry(clone, "get", "base", check=False)
    assert out.returncode == 2 and "error:" in out.stderr and "Traceback" not in out.stderr
    shutil.move(tmp_path / "gone", remote)
    foundry(clone, "get", "base")
    assert dvc_md5(clone / "models/base") == dvc_md5(repo / "models/base")


def test_dvc_get_fetches_a_model_by_path(built: Path, tmp_path: Path) -> None:
    """The documented way to fetch a model with DVC's own tooling: `dvc get <repo> models/x`."""
    run_cmd([str(VENV_BIN / "dvc"), "get", str(built), "models/base", "-o", str(tmp_path / "base")], tmp_path)
    assert dvc_md5(tmp_path / "base") == dvc_md5(built / "models/base")


def test_commands_refuse_what_they_cannot_answer(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    for args in (["list-models"], ["validate-model", "--all"], ["model-info", "base"]):
        out = foundry(outside, *args, check=False)
        assert out.returncode == 2 and "is not in a DVC project" in out.stderr, args
    unknown = foundry(repo, "list-models", "--exp", "exp-c", check=False)
    assert unknown.returncode == 2 and "No DVC experiment called 'exp-c'" in unknown.stderr
    assert "exp-a" in unknown.stderr or "exp-b" in unknown.stderr  # the closest names
    assert foundry(repo, "get", "child-a", "--exp", "nope", check=False).returncode == 2
    # No terminal to confirm a delete: refused, nothing deleted.
    asked = run_cmd(["foundry", "delete-model", "child-b"], repo, check=False, stdin=subprocess.DEVNULL)
    assert asked.returncode == 2 and "--yes" in asked.stderr and (repo / "models/child-b").is_dir()
    # A damaged dvc.lock: child-b is judged against exp-b's record of the same bytes, with the lock's warning.
    lock = repo / "dvc.lock"
    intact_lock = lock.read_text()
    lock.write_text(intact_lock + "  :: [broken\n")
    checked = foundry(repo, "validate-model", "child-b")
    assert "child-b: intact" in checked.stdout and "dvc.lock does not parse" in checked.stderr
    lock.write_text(intact_lock)
    # A .dvc file that does not parse, or repeats a key (DVC refuses it; YAML would keep the last value):
    # gc cannot know what it references, so it collects nothing.
    dvc_file = repo / "models/base.dvc"
    intact = dvc_file.read_text()
    for damage, why in (("outs: [\n", "does not parse"), ("outs: []\n", "repeated key 'outs'")):
        dvc_file.write_text(intact + damage)
        refused = foundry(repo, "models", "gc", "--dry-run", check=False)
        assert refused.returncode == 2 and "models/base.dvc" in refused.stderr and why in refused.stderr


def test_compare_uses_effective_params_and_mlflow_metric_names(built: Path) -> None:
    from model_foundry.registry.compare import compare_models

    table = compare_models(scan(built), ["child-a", "child-b", "base"])
    assert table["params_unknown"] == ["base"]  # tracked by a .dvc file: no stage recorded its params
    assert table["params"]["seed"] == [1, 2, None] and "name" in table["params"]
    assert set(table["metrics"]) == {"perplexity", "val_loss"}
