"""Damaged model folders, wrong JSON types in files we read, incomplete safetensors headers, tokenizers that
cannot be built: each is one `error:` naming the file with a `hint:` (exit 2), never a traceback and never a
silently different model. Real models (a tiny scratch GPT, tiny Llamas imported from the local Hub's builds),
damaged on disk as a bad disk, an interrupted copy or a hand edit would leave them.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from badinput.checks import assert_clean_error, foundry, snapshot
from localhub.repos import LLAMA, LLAMA_SHARDED

REPO = Path(__file__).resolve().parents[2]


# --- building real model folders --------------------------------------------------------------------------
def _project(root: Path) -> Path:
    """A project folder (git repo, params.yaml) that the hash cache finds its `.foundry-cache/` in."""
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    shutil.copy(REPO / "params.yaml", root / "params.yaml")
    (root / "models").mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="module")
def good_models(tmp_path_factory, hub_repos) -> dict[str, Path]:
    """{"gpt": a saved scratch GPT with its tokenizer, "llama": an imported tiny Llama, "sharded": ...}."""
    import torch

    from model_foundry.adapters import get_spec
    from model_foundry.data.tokenizer_training import train_tokenizer
    from model_foundry.hub import QuietReporter, import_model

    root = tmp_path_factory.mktemp("good")
    texts = [f"the quick brown fox {i} jumps over the lazy dog {i * 7}" for i in range(200)]
    tok = train_tokenizer("bpe", texts, 300, "causal_lm")
    spec = get_spec("gpt")
    config = spec.config_cls(vocab_size=len(tok), n_layer=1, n_head=2, n_embd=32, block_size=32)
    torch.manual_seed(0)
    adapter = spec.adapter_cls().build(config, spec)
    adapter.tokenizer = tok
    adapter.save_checkpoint(root / "gpt", {"model_name": "gpt", "training": {"objective": "causal_lm"}})
    out = {"gpt": root / "gpt"}
    for key, repo in (("llama", LLAMA), ("sharded", LLAMA_SHARDED)):
        result = import_model(
            str(hub_repos[repo]), root, name=key, accept_license=True, reporter=QuietReporter()
        )
        out[key] = result.path
    return out


def rewrite_header(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Apply `change` to a safetensors file's JSON header in place; the tensor data stays as it was."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    change(header)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    path.write_bytes(len(text).to_bytes(8, "little") + text + raw[8 + n :])


def _first_tensor(header: dict[str, Any]) -> dict[str, Any]:
    return header[min(k for k in header if k != "__metadata__")]


def _edit_json(path: Path, **changes: Any) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def _overlap(h: dict[str, Any]) -> None:
    names = sorted((k for k in h if k != "__metadata__"), key=lambda k: h[k]["data_offsets"])
    a, b = h[names[0]], h[names[1]]
    width = a["data_offsets"][1] - a["data_offsets"][0]
    b["data_offsets"] = [
        a["data_offsets"][0],
        a["data_offsets"][0] + (b["data_offsets"][1] - b["data_offsets"][0]),
    ]
    assert width  # the first tensor is not empty, so the second now overlaps it


W = "model.safetensors"
# name → (model, damage(folder), words the error must contain). Every kind: JSON files we read (config,
# metadata, shard index, tokenizer settings), the weights' headers and bytes, and mismatched config/weights.
DAMAGE: dict[str, tuple[str, Callable[[Path], None], list[str]]] = {
    "flipped-header-byte": ("gpt", lambda f: _flip(f / W, 9), [W]),
    "flipped-weight-byte": ("gpt", lambda f: _flip(f / W, (f / W).stat().st_size - 3), [W, "sha256"]),
    "flipped-weight-byte-imported": (
        "llama",
        lambda f: _flip(f / W, (f / W).stat().st_size - 3),
        [W, "sha256"],
    ),
    "truncated-weights": (
        "gpt",
        lambda f: (f / W).write_bytes((f / W).read_bytes()[:-100]),
        [W, "truncated"],
    ),
    "empty-weights": ("llama", lambda f: (f / W).write_bytes(b""), [W, "empty"]),
    "header-length-too-big": ("gpt", lambda f: _flip(f / W, 6), [W, "header length"]),
    "header-string-offsets": (
        "gpt",
        lambda f: rewrite_header(
            f / W,
            lambda h: _first_tensor(h).update(
                data_offsets=[str(o) for o in _first_tensor(h)["data_offsets"]]
            ),
        ),
        [W, "data_offsets"],
    ),
    "header-float-offsets": (
        "llama",
        lambda f: rewrite_header(
            f / W,
            lambda h: _first_tensor(h).update(
                data_offsets=[float(o) for o in _first_tensor(h)["data_offsets"]]
            ),
        ),
        [W, "data_offsets"],
    ),
    "header-unknown-dtype": (
        "llama",
        lambda f: rewrite_header(f / W, lambda h: _first_tensor(h).update(dtype="F7")),
        [W, "dtype"],
    ),
    "header-overlapping-offsets": ("gpt", lambda f: rewrite_header(f / W, _overlap), [W, "overlap"]),
    "header-shape-not-ints": (
        "gpt",
        lambda f: rewrite_header(f / W, lambda h: _first_tensor(h).update(shape="big")),
        [W, "shape"],
    ),
    "header-metadata-not-strings": (
        "gpt",
        lambda f: rewrite_header(f / W, lambda h: h.update(__metadata__={"format": 1})),
        [W, "__metadata__"],
    ),
    "truncated-metadata": (
        "gpt",
        lambda f: (f / "metadata.json").write_text((f / "metadata.json").read_text()[:40]),
        ["metadata.json"],
    ),
    "metadata-not-an-object": (
        "llama",
        lambda f: (f / "metadata.json").write_text("[1, 2]"),
        ["metadata.json"],
    ),
    "metadata-sha256-wrong-type": ("gpt", lambda f: _edit_json(f / "metadata.json", sha256=5), ["sha256"]),
    "metadata-format-unknown": ("gpt", lambda f: _edit_json(f / "metadata.json", format=2), ["format"]),
    "metadata-parent-name-int": (
        "gpt",
        lambda f: _edit_json(f / "metadata.json", parent={"name": 5, "sha256": None}),
        ["parent"],
    ),
    "config-architecture-disagrees": (
        "gpt",
        lambda f: _edit_json(f / "config.json", architecture="bert"),
        ["config.json", "metadata.json"],
    ),
    "metadata-latin1": (
        "gpt",
        lambda f: (f / "metadata.json").write_bytes(b'{"a": "\xe9"}'),
        ["metadata.json"],
    ),
    "truncated-config": (
        "llama",
        lambda f: (f / "config.json").write_text((f / "config.json").read_text()[:30]),
        ["config.json"],
    ),
    "config-duplicate-key": (
        "gpt",
        lambda f: (f / "config.json").write_text('{"n_layer": 1, "n_layer": 2}'),
        ["config.json", "duplicate"],
    ),
    "config-wrong-type-scratch": ("gpt", lambda f: _edit_json(f / "config.json", n_embd="32"), ["n_embd"]),
    "config-wrong-type-imported": (
        "llama",
        lambda f: _edit_json(f / "config.json", hidden_size="64"),
        ["config.json"],
    ),
    "config-mismatched-scratch": ("gpt", lambda f: _edit_json(f / "config.json", n_embd=64), ["config.json"]),
    "config-mismatched-imported": (
        "llama",
        lambda f: _edit_json(f / "config.json", hidden_size=128),
        ["config.json"],
    ),
    "config-model-type-list": (
        "llama",
        lambda f: _edit_json(f / "config.json", model_type=["llama"]),
        ["model_type"],
    ),
    "index-weight-map-int": (
        "sharded",
        lambda f: _edit_json(f / "model.safetensors.index.json", weight_map={"a": 5}),
        ["weight_map"],
    ),
    "index-shard-path": (
        "sharded",
        lambda f: _edit_json(f / "model.safetensors.index.json", weight_map={"a": "../x.safetensors"}),
        ["weight_map"],
    ),
    "index-missing-shard": (
        "sharded",
        lambda f: next(f.glob("model-00002-*.safetensors")).unlink(),
        ["model-00002"],
    ),
    "truncated-tokenizer": (
        "gpt",
        lambda f: (f / "tokenizer.json").write_text((f / "tokenizer.json").read_text()[:50]),
        ["tokenizer.json"],
    ),
    "tokenizer-model-wrong-type": (
        "llama",
        lambda f: _edit_json(f / "tokenizer.json", model=5),
        ["tokenizer.json"],
    ),
    "tokenizer-chat-template-int": (
        "llama",
        lambda f: _edit_json(f / "tokenizer_config.json", chat_template=5),
        ["chat_template"],
    ),
}
# Damage `info` cannot see (it reads no tensor data and no tokenizer): it shows the metadata and exits 0.
INFO_SEES_NOTHING = {
    "flipped-weight-byte", "flipped-weight-byte-imported", "config-mismatched-scratch",
    "config-mismatched-imported", "config-wrong-type-imported", "truncated-tokenizer",
    "tokenizer-model-wrong-type", "tokenizer-chat-template-int", "index-missing-shard",
}  # fmt: skip


def damaged_project(tmp_path: Path, good_models: dict[str, Path], case: str) -> tuple[Path, str]:
    model, damage, _ = DAMAGE[case]
    project = _project(tmp_path / "project")
    shutil.copytree(good_models[model], project / "models" / case)
    damage(project / "models" / case)
    return project, f"models/{case}"


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_generate_refuses_a_damaged_model_folder(tmp_path, good_models, case):
    project, folder = damaged_project(tmp_path, good_models, case)
    before = snapshot(project)
    proc = foundry(["generate", "--model", folder, "--prompt", "the", "--max-new-tokens", "2"], project)
    assert_clean_error(proc, project, before, must_mention=DAMAGE[case][2])
    assert "dvc checkout" in proc.stderr or "re-import" in proc.stderr


@pytest.mark.parametrize("case", sorted(set(DAMAGE) - INFO_SEES_NOTHING))
def test_info_refuses_a_damaged_model_folder(tmp_path, good_models, case):
    project, folder = damaged_project(tmp_path, good_models, case)
    before = snapshot(project)
    assert_clean_error(foundry(["info", folder], project), project, before, must_mention=DAMAGE[case][2])


@pytest.mark.parametrize("case", ["flipped-weight-byte", "truncated-metadata", "config-mismatched-imported"])
def test_evaluate_refuses_a_damaged_model_folder(tmp_path, good_models, case):
    """evaluate checks the model before it reads any data (the --data folder need not exist)."""
    project, folder = damaged_project(tmp_path, good_models, case)
    before = snapshot(project)
    proc = foundry(["evaluate", "--model", folder, "--data", "data/tokens", "--metrics", "m.json"], project)
    assert_clean_error(proc, project, before, must_mention=DAMAGE[case][2])
    assert not (project / "m.json").exists()


@pytest.mark.parametrize("case", ["flipped-weight-byte-imported", "index-weight-map-int", "empty-weights"])
def test_train_refuses_a_damaged_imported_model(tmp_path, good_models, case):
    """The train stage loads an imported model with the same checks (called in-process: it needs token data
    before it loads the model)."""
    from model_foundry.errors import FoundryError
    from model_foundry.stages.train import build_adapter

    project, folder = damaged_project(tmp_path, good_models, case)
    with pytest.raises(FoundryError) as e:
        build_adapter(project / folder, tokenizer_size=512, seed=0)
    assert all(w.lower() in str(e.value).lower() for w in DAMAGE[case][2]) and e.value.hint


def test_no_verify_skips_only_the_hash_check(tmp_path, good_models):
    """A flipped byte in the tensor data is found by the sha256 check alone; --no-verify loads the model."""
    project, folder = damaged_project(tmp_path, good_models, "flipped-weight-byte")
    proc = foundry(["generate", "--model", folder, "--prompt", "the", "--max-new-tokens", "2", "--no-verify"],
                   project)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    shown = foundry(["info", folder, "--json"], project)
    assert shown.returncode == 0 and json.loads(shown.stdout)["architecture"] == "gpt"


def test_intact_models_load_and_their_hashes_are_cached(tmp_path, good_models):
    """Verification hashes each file once per stat: the second check reads the cache (poisoned here to prove
    it is used), and a rewritten file (new mtime/ctime) is hashed again."""
    from model_foundry.errors import FoundryError
    from model_foundry.model_folder.checks import HASH_CACHE_NAME, check_model_folder

    project = _project(tmp_path / "project")
    folder = project / "models" / "llama"
    shutil.copytree(good_models["llama"], folder)
    _, meta = check_model_folder(folder)
    cache_file = project / ".foundry-cache" / HASH_CACHE_NAME
    entries = json.loads(cache_file.read_text())
    assert sorted(entries.values()) == sorted(meta["sha256"].values())
    cache_file.write_text(json.dumps(dict.fromkeys(entries, "0" * 64)))
    with pytest.raises(FoundryError, match="sha256"):
        check_model_folder(folder)  # the cache is trusted while the file's stat is unchanged
    cache_file.write_text(json.dumps(entries))
    check_model_folder(folder)
    (folder / W).write_bytes((folder / W).read_bytes())  # same bytes, new ctime: hashed again, still good
    check_model_folder(folder)
    assert len(json.loads(cache_file.read_text())) == 1
    proc = foundry(
        ["generate", "--model", "models/llama", "--prompt", "hi", "--max-new-tokens", "2"], project
    )
    assert proc.returncode == 0, proc.stderr


# --- import: what imports also loads ----------------------------------------------------------------------
def _source_with(
    hub_repos: dict[str, Path], tmp_path: Path, repo: str, damage: Callable[[Path], None]
) -> Path:
    source = tmp_path / "source"
    shutil.copytree(hub_repos[repo], source)
    damage(source)
    return source


def _no_fast_tokenizer(f: Path) -> None:
    """Only a slow sentencepiece file, and not a valid one: it cannot become a tokenizer.json."""
    (f / "tokenizer.json").unlink()
    (f / "tokenizer.model").write_bytes(b"not a sentencepiece model")
    (f / "tokenizer_config.json").write_text('{"tokenizer_class": "LlamaTokenizer"}')


def _shape_disagrees(f: Path) -> None:
    """A weight whose shape has the right number of elements but not the shape config.json gives."""

    def change(h: dict[str, Any]) -> None:
        t = next(
            t for k, t in h.items() if k != "__metadata__" and len(t["shape"]) == 2 and t["shape"][0] > 1
        )
        rows, cols = t["shape"]
        t["shape"] = [rows // 2, cols * 2] if rows % 2 == 0 else [1, rows * cols]

    rewrite_header(f / W, change)


IMPORT_DAMAGE: dict[str, tuple[str, Callable[[Path], None], list[str]]] = {
    "unknown-dtype": (
        LLAMA,
        lambda f: rewrite_header(f / W, lambda h: _first_tensor(h).update(dtype="Q4")),
        ["dtype"],
    ),
    "float-offsets": (
        LLAMA,
        lambda f: rewrite_header(
            f / W,
            lambda h: _first_tensor(h).update(
                data_offsets=[float(o) for o in _first_tensor(h)["data_offsets"]]
            ),
        ),
        ["data_offsets"],
    ),
    "overlapping-offsets": (LLAMA, lambda f: rewrite_header(f / W, _overlap), ["overlap"]),
    "out-of-range-offsets": (
        LLAMA,
        lambda f: rewrite_header(f / W, lambda h: _first_tensor(h).update(data_offsets=[-8, 0])),
        ["offsets"],
    ),
    "shape-vs-config": (LLAMA, _shape_disagrees, ["shape"]),
    "index-weight-map-int": (
        LLAMA_SHARDED,
        lambda f: _edit_json(f / "model.safetensors.index.json", weight_map={"a": 5}),
        ["weight_map"],
    ),
    "config-model-type-int": (LLAMA, lambda f: _edit_json(f / "config.json", model_type=5), ["model_type"]),
    "slow-tokenizer-cannot-convert": (LLAMA, _no_fast_tokenizer, ["tokenizer"]),
    "truncated-tokenizer": (
        LLAMA,
        lambda f: (f / "tokenizer.json").write_text((f / "tokenizer.json").read_text()[:50]),
        ["tokenizer"],
    ),
    "chat-template-int": (
        LLAMA,
        lambda f: _edit_json(f / "tokenizer_config.json", chat_template=5),
        ["chat_template"],
    ),
}


@pytest.mark.parametrize("case", sorted(IMPORT_DAMAGE))
def test_import_refuses_what_would_not_load(tmp_path, hub_repos, case):
    repo, damage, words = IMPORT_DAMAGE[case]
    project = _project(tmp_path / "project")
    source = _source_with(hub_repos, tmp_path, repo, damage)
    before = snapshot(project)
    proc = foundry(["import-model", str(source), "--models-dir", "models", "--name", "m", "--accept-license",
                    "--no-dvc"], project)  # fmt: skip
    assert_clean_error(proc, project, before, must_mention=words)


def test_tokenizer_override_must_be_a_string(tmp_path):
    """`tokenizer_override: 5` in params.yaml (a folder path of the wrong type) is refused with the rule."""
    import yaml

    project = _project(tmp_path / "project")
    raw = yaml.safe_load((project / "params.yaml").read_text())
    raw["models"][raw["model_name"]]["tokenizer_override"] = 5
    (project / "params.yaml").write_text(yaml.safe_dump(raw))
    before = snapshot(project)
    assert_clean_error(foundry(["validate"], project), project, before, must_mention="tokenizer_override")
