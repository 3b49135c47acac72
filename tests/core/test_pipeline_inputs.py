"""`dvc repro` re-runs exactly the stages whose inputs changed, inputs outside the stage outputs included.

A local model `source:` folder, a `data.source` file and a `tokenizer_override` folder are not DVC
dependencies by themselves (params name them); the inputs stage fingerprints them into data/inputs/*.json,
which the stages reading them depend on. One byte changed in each kind of input re-runs the right stages.
"""

from __future__ import annotations

import re
import shutil

import pytest

from conftest import make_repo_copy, run_cmd, tiny_params

pytestmark = pytest.mark.slow


def _repro(repo, *targets: str) -> set[str]:
    """The stages `dvc repro` ran."""
    proc = run_cmd(
        ["dvc", "repro", *targets], repo, env={"MLFLOW_TRACKING_URI": f"sqlite:///{repo / 'mlflow.db'}"}
    )
    return set(re.findall(r"Running stage '([\w-]+)'", proc.stdout))


def _flip_last_byte(path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_one_byte_in_each_kind_of_input_reruns_the_stages_that_read_it(tmp_path):
    from localhub.repos import build_qwen2

    source = tmp_path / "qwen-src"  # a local folder in Hugging Face format, outside the repo
    build_qwen2(source)
    tokenizer = tmp_path / "tok"
    tokenizer.mkdir()
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, tokenizer / name)

    params = tiny_params(model_name="local-qwen2", data={"source": "corpus/docs.txt"})
    params["models"]["local-qwen2"] = {
        "architecture": "hf-qwen2",
        "source": str(source),
        "license_accepted": True,
        "tokenizer_override": str(tokenizer),
    }
    repo = make_repo_copy(tmp_path / "repo", params)
    docs = repo / "corpus/docs.txt"
    docs.parent.mkdir()
    docs.write_text(
        "".join(f"Document {i}: the quick brown fox jumps over the lazy dog.\n\n" for i in range(60))
    )

    assert _repro(repo, "tokenize") == {"inputs", "import", "convert", "tokenize"}
    assert _repro(repo, "tokenize") == {"inputs"}  # nothing changed: nothing downstream runs

    docs.write_text(docs.read_text().replace("lazy", "lazY", 1))  # the corpus file
    assert _repro(repo, "tokenize") == {"inputs", "import", "tokenize"}

    config = tokenizer / "tokenizer_config.json"  # the tokenizer_override folder
    config.write_text(config.read_text() + "\n")
    assert _repro(repo, "tokenize") == {"inputs", "tokenize"}

    _flip_last_byte(source / "model.safetensors")  # the model source folder: one weight byte
    assert _repro(repo, "tokenize") == {"inputs", "import", "convert", "tokenize"}
    assert _repro(repo, "tokenize") == {"inputs"}
