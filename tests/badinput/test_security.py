"""Security kinds of bad input: credentials in a source, symlinks in an imported folder, hostile pickles.

Each case runs the real `foundry` CLI in a subprocess against the local Hub (tests/localhub) or a real folder.
A secret must appear in no output, no file of the project (models/, the DVC cache, metadata.json, mlflow.db)
and no file of the Hub cache; a link out of the source folder must be refused before anything is read or
copied; a pickle that is not tensors alone is refused with our own message.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from badinput.checks import assert_clean_error, foundry, snapshot
from conftest import make_repo_copy, run_cmd, tiny_params
from localhub.repos import GPT2, GPT2_BIN, QWEN2
from model_foundry.credentials import redact, strip_credentials

SECRET = "hf_" + "Sekr1t" * 6  # shaped like a Hugging Face access token
PASSWORD = "pa55-w0rd-XYZ"  # not token-shaped: found only by its position in the URL


def files_holding(secret: str, *roots: Path) -> list[str]:
    """Every file under `roots` whose bytes contain `secret` (logs, metadata, DVC cache, mlflow.db, ...)."""
    needle = secret.encode()
    return [
        str(p)
        for root in roots
        if root.exists()
        for p in root.rglob("*")
        if p.is_file() and not p.is_symlink() and needle in p.read_bytes()
    ]


def hf_home() -> Path:
    return Path(os.environ["HF_HOME"])


@pytest.fixture
def project(tmp_path: Path) -> Path:
    """An empty DVC project (no git): imports are `dvc add`ed into its cache."""
    run_cmd(["dvc", "init", "--no-scm", "-q"], tmp_path)
    return tmp_path


# --- credentials -----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "clean", "removed"),
    [
        (f"https://user:{SECRET}@huggingface.co/org/m", "https://huggingface.co/org/m", "and password"),
        (f"https://{SECRET}@hf.co/org/m", "https://hf.co/org/m", "user name"),
        (f"https://huggingface.co/org/m?token={PASSWORD}&x=1", "https://huggingface.co/org/m?x=1", "'token'"),
        (f"https://huggingface.co/org/m?access_token={PASSWORD}", "https://huggingface.co/org/m", "access_"),
        (f"https://huggingface.co/org/m?x={SECRET}", "https://huggingface.co/org/m", "'x'"),
        (f"https://huggingface.co/org/m/tree/main#token={PASSWORD}", "https://huggingface.co/org/m/tree/main",
         "fragment"),
        (f"user:{PASSWORD}@huggingface.co/org/m", "huggingface.co/org/m", "user name and password"),
        (f"https://u:{PASSWORD}@[::1/org/m", "https://[::1/org/m", "user name and password"),
        (f"org/m-{SECRET}", "org/m-***", "access token"),
    ],
    ids=["userinfo", "token-as-user", "query-token", "query-access-token", "token-value", "fragment",
         "no-scheme", "unparsable-host", "bare-token"],
)  # fmt: skip
def test_credentials_are_stripped(text, clean, removed):
    got, what = strip_credentials(text)
    assert got == clean and any(removed in w for w in what), (got, what)
    assert SECRET not in got and PASSWORD not in got and redact(text) == clean


@pytest.mark.parametrize(
    "text",
    ["Qwen/Qwen2.5-0.5B", "https://huggingface.co/org/m/tree/v1.0?download=true", "./models-x", "gpt2"],
)
def test_sources_without_credentials_are_unchanged(text):
    assert strip_credentials(text) == (text, [])


@pytest.mark.parametrize("where", ["userinfo", "query", "both"])
def test_import_url_with_credentials_records_none(where, local_hub, hub_repos, project):
    host = local_hub.url.split("://", 1)[1]
    userinfo = f"user:{SECRET}@" if where in ("userinfo", "both") else ""
    query = f"?token={PASSWORD}" if where in ("query", "both") else ""
    proc = foundry(
        ["import-model", f"http://{userinfo}{host}/{GPT2}{query}", "--accept-license", "--name", "gpt", "-q"],
        project,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert "warning: SOURCE carried" in out and "not recorded" in out and "HF_TOKEN" in out
    assert SECRET not in out and PASSWORD not in out
    meta = yaml.safe_load((project / "models/gpt/metadata.json").read_text())
    assert meta["source"] == f"http://{host}/{GPT2}" and meta["model_id"] == GPT2
    assert (
        files_holding(SECRET, project, hf_home()) == [] and files_holding(PASSWORD, project, hf_home()) == []
    )


def test_hf_token_from_the_environment_is_stored_nowhere(local_hub, hub_repos, project):
    proc = foundry(
        ["import-model", GPT2, "--accept-license", "--name", "gpt", "-q"], project, env={"HF_TOKEN": SECRET}
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    assert (project / "models/gpt.dvc").is_file()  # the DVC cache holds the folder: grepped below
    assert files_holding(SECRET, project, hf_home()) == []


@pytest.mark.parametrize(
    "source",
    [
        f"http://user:{SECRET}@{{host}}/localhub/no-such-model",  # fails at the Hub (not found)
        f"https://user:{SECRET}@example.com/org/m",  # not a Hub host: the message quotes the URL
        f"http://user:{SECRET}@{{host}}/datasets/org/d",  # a dataset URL
        f"user:{PASSWORD}@huggingface.co/org/m",  # no scheme: neither id nor folder
    ],
    ids=["not-found", "foreign-host", "dataset", "no-scheme"],
)
def test_refused_source_never_echoes_credentials(source, local_hub, hub_repos, project):
    before = snapshot(project)
    proc = foundry(
        ["import-model", source.format(host=local_hub.url.split("://", 1)[1]), "--accept-license"], project
    )
    assert_clean_error(proc, project, before)
    assert SECRET not in proc.stdout + proc.stderr and PASSWORD not in proc.stdout + proc.stderr
    assert files_holding(SECRET, project) == [] and files_holding(PASSWORD, project) == []


def test_catalog_source_with_credentials_is_refused(tmp_path):
    params = tiny_params()
    params["models"]["leaky"] = {
        "architecture": "hf-gpt2", "source": f"https://user:{SECRET}@huggingface.co/org/m?token={PASSWORD}",
        "license_accepted": True,
    }  # fmt: skip
    params["model_name"] = "leaky"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    proc = foundry(["validate", "--params", "params.yaml"], tmp_path)
    line = assert_clean_error(proc, tmp_path, set(), must_mention=["models.leaky.source", "credentials"])
    assert "HF_TOKEN" in proc.stderr and "https://huggingface.co/org/m" in proc.stderr, line
    assert SECRET not in proc.stdout + proc.stderr and PASSWORD not in proc.stdout + proc.stderr


@pytest.mark.slow
def test_pipeline_with_hf_token_stores_it_nowhere(local_hub, hub_repos, tmp_path):
    """The whole pipeline (import → … → evaluate, MLflow) with HF_TOKEN set: the token is in no file."""
    params = tiny_params(model_name="tiny-qwen2")
    params["models"]["tiny-qwen2"] = {"architecture": "hf-qwen2", "source": QWEN2, "license_accepted": True}
    repo = make_repo_copy(tmp_path / "repo", params)
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}", "HF_TOKEN": SECRET}
    proc = run_cmd(["dvc", "repro"], repo, env=env)
    assert (repo / "mlflow.db").is_file() and (repo / "metrics.json").is_file()
    assert SECRET not in proc.stdout + proc.stderr
    assert files_holding(SECRET, repo, hf_home()) == []


# --- symlinks in an imported folder ----------------------------------------------------------------------
@pytest.fixture
def folder(hub_repos, tmp_path) -> Path:
    """A real model folder in Hugging Face format (tiny GPT-2: config, weights, tokenizer, card, LICENSE)."""
    return Path(shutil.copytree(hub_repos[GPT2], tmp_path / "src" / "gpt2"))


def outside_file(tmp_path: Path) -> Path:
    secret = tmp_path / "private" / "hostname"
    secret.parent.mkdir(exist_ok=True)
    secret.write_text("PRIVATE-CONTENT-OF-THIS-MACHINE\n")
    return secret


def link(folder: Path, name: str, target: Path | str) -> None:
    (folder / name).unlink(missing_ok=True)
    (folder / name).symlink_to(target)


LINKED = ["LICENSE", "README.md", "config.json", "model.safetensors", "tokenizer.json",
          "tokenizer_config.json", "vocab.json", "generation_config.json"]  # fmt: skip


@pytest.mark.parametrize("name", LINKED)
@pytest.mark.parametrize("how", ["absolute", "relative", "dangling", "etc"])
def test_link_out_of_the_folder_is_refused(name, how, folder, project, tmp_path):
    if not (folder / name).exists() and how != "dangling":
        pytest.skip(f"the fixture folder has no {name}")
    target: Path | str = {
        "absolute": lambda: outside_file(tmp_path),
        "relative": lambda: os.path.relpath(outside_file(tmp_path), folder),
        "dangling": lambda: tmp_path / "nowhere" / "gone",
        "etc": lambda: "/etc/hostname",
    }[how]()
    link(folder, name, target)
    before = snapshot(project)
    proc = foundry(["import-model", str(folder), "--accept-license", "--name", "linked"], project)
    assert_clean_error(proc, project, before, must_mention=["symbolic link", name])
    assert "PRIVATE-CONTENT" not in proc.stdout + proc.stderr
    assert not (project / "models" / "linked").exists()


def test_link_through_a_linked_subfolder_is_refused(folder, project, tmp_path):
    """The shard index may name files in subfolders: a linked folder leads out just the same."""
    (tmp_path / "elsewhere").mkdir()
    shutil.move(folder / "LICENSE", tmp_path / "elsewhere" / "LICENSE")
    (folder / "sub").symlink_to(tmp_path / "elsewhere")
    link(folder, "LICENSE", "sub/LICENSE")  # a link inside the folder, to a file outside it
    before = snapshot(project)
    proc = foundry(["import-model", str(folder), "--accept-license", "--name", "linked"], project)
    assert_clean_error(proc, project, before, must_mention=["symbolic link", "LICENSE"])


def test_links_inside_the_folder_are_followed(folder, project):
    (folder / "real").mkdir()
    shutil.move(folder / "LICENSE", folder / "real" / "LICENSE.txt")
    link(folder, "LICENSE", "real/LICENSE.txt")
    proc = foundry(["import-model", str(folder), "--accept-license", "--name", "linked", "-q"], project)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    copied = project / "models" / "linked" / "LICENSE"
    assert not copied.is_symlink() and copied.read_text() == (folder / "real" / "LICENSE.txt").read_text()


def test_link_swapped_in_after_listing_is_refused_at_fetch(folder, tmp_path):
    """The folder is checked again when each file is fetched (the import stage fetches from its record)."""
    from model_foundry.errors import FoundryError
    from model_foundry.hub.download import fetch, open_folder
    from model_foundry.hub.sources import parse_source

    snap = open_folder(parse_source(str(folder)))
    link(folder, "LICENSE", outside_file(tmp_path))
    with pytest.raises(FoundryError, match="symbolic links that point outside"):
        fetch(snap, ["config.json", "LICENSE"], progress=False)


def test_hub_cache_snapshot_folder_still_imports(local_hub, hub_repos, project):
    """A Hub cache snapshot is all links into ../../blobs: inside the repo's cache folder, so allowed."""
    proc = foundry(["import-model", GPT2, "--accept-license", "--name", "first", "-q", "--no-dvc"], project)
    assert proc.returncode == 0, proc.stderr
    snap = next((hf_home() / "hub" / "models--localhub--tiny-gpt2" / "snapshots").iterdir())
    proc = foundry(
        ["import-model", str(snap), "--accept-license", "--name", "again", "-q", "--no-dvc"], project
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert (project / "models/again/model.safetensors").is_file()


def test_tampered_hub_cache_is_refused_offline(tmp_path, project):
    """An offline import reads the Hub cache: a snapshot entry linking out of the cache is refused."""
    home = tmp_path / "hf_home"
    storage = home / "hub" / "models--org--evil"
    commit = "a" * 40
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)
    snap = storage / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text('{"model_type": "gpt2"}')
    (snap / "LICENSE").symlink_to(outside_file(tmp_path))
    before = snapshot(project)
    proc = foundry(
        ["import-model", "org/evil", "--accept-license"],
        project,
        env={"HF_HOME": str(home), "HF_HUB_OFFLINE": "1"},
    )
    assert_clean_error(proc, project, before, must_mention=["symbolic link", "LICENSE"])
    assert "PRIVATE-CONTENT" not in proc.stdout + proc.stderr


# --- hostile pickles -------------------------------------------------------------------------------------
class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("layout", ["zip", "legacy"])
def test_hostile_pickle_is_refused_with_our_message(layout, hub_repos, project, tmp_path):
    import pickle

    import torch

    folder = Path(shutil.copytree(hub_repos[GPT2_BIN], tmp_path / "src" / "bin"))
    marker = tmp_path / "code-ran"
    payload = {"transformer.wte.weight": torch.zeros(2, 2), "x": _RunsCode(marker)}
    with open(folder / "pytorch_model.bin", "wb") as f:
        if layout == "zip":
            torch.save(payload, f)
        else:
            pickle.dump(payload, f, protocol=2)
    before = snapshot(project)
    proc = foundry(
        ["import-model", str(folder), "--accept-license", "--allow-pickle", "--name", "evil"], project
    )
    line = assert_clean_error(proc, project, before, must_mention=["pytorch_model.bin", "arbitrary code"])
    out = proc.stdout + proc.stderr
    assert "weights_only` set to `False`" not in out and "weights_only=False" not in out, out
    assert line.rstrip().endswith("machine."), line  # a whole sentence, not cut mid-way
    assert not marker.exists()


@pytest.mark.parametrize(
    "args",
    [
        ["https://user:hf_SECRETsecret@huggingface.co/org/m?token=qwerty123"],  # forgot the subcommand
        ["validate", "--params", "https://user:hf_SECRETsecret@huggingface.co/p.yaml"],
        ["import-model", "--bogus", "https://user:hf_SECRETsecret@huggingface.co/org/m"],
    ],
)
def test_usage_errors_never_echo_credentials(tmp_path, args):
    """Usage errors quote the command line: what reaches the terminal (or a CI log) carries no secret."""
    proc = foundry(args, tmp_path)
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    assert "SECRET" not in out and "qwerty123" not in out and "Traceback" not in out, out
