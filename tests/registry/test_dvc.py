"""DVC's content hash, computed without DVC, agrees with what `dvc add` records."""

from __future__ import annotations

import yaml

from conftest import run_cmd
from model_foundry.registry.dvc import dvc_md5, recorded_metrics_for


def test_folder_and_file_hash_match_dvc_add(tmp_path):
    run_cmd(["git", "init", "-q"], tmp_path)
    run_cmd(["dvc", "init", "-q"], tmp_path)
    folder = tmp_path / "m"
    (folder / "sub").mkdir(parents=True)
    (folder / "a.json").write_text('{"x": 1}\n')
    (folder / "sub" / "w.bin").write_bytes(bytes(range(256)) * 3 + b"\r\n")
    (tmp_path / "f.txt").write_bytes(b"line\r\n")
    run_cmd(["dvc", "add", "m", "f.txt", "-q"], tmp_path)
    for name in ("m", "f.txt"):
        recorded = yaml.safe_load((tmp_path / f"{name}.dvc").read_text())["outs"][0]["md5"]
        assert dvc_md5(tmp_path / name) == recorded


def test_recorded_metrics_need_the_same_folder_bytes_and_an_unchanged_metrics_file(tmp_path):
    model = tmp_path / "models" / "m-trained"
    model.mkdir(parents=True)
    (model / "w.bin").write_bytes(b"weights")
    metrics = tmp_path / "metrics.json"
    metrics.write_text('{"perplexity": 12.5}\n')
    lock = {
        "schema": "2.0",
        "stages": {
            "evaluate": {
                "cmd": "foundry evaluate",
                "deps": [{"path": "models/m-trained", "hash": "md5", "md5": dvc_md5(model)}],
                "outs": [{"path": "metrics.json", "hash": "md5", "md5": dvc_md5(metrics)}],
            }
        },
    }
    (tmp_path / "dvc.lock").write_text(yaml.safe_dump(lock))
    assert recorded_metrics_for(tmp_path, model) == {"perplexity": 12.5}

    (model / "w.bin").write_bytes(b"weightz")  # other bytes: the lock says nothing about them
    assert recorded_metrics_for(tmp_path, model) is None
    (model / "w.bin").write_bytes(b"weights")
    metrics.write_text('{"perplexity": 99.0}\n')  # the metrics file changed since it was locked
    assert recorded_metrics_for(tmp_path, model) is None
    assert recorded_metrics_for(tmp_path / "elsewhere", model) is None


def test_folder_hash_size_and_file_count_match_dvc_3_without_scm(tmp_path):
    """Nested folders, an empty file, binary bytes and CRLF text: `dvc_md5` is the md5 `dvc add` records, and
    the .dvc file's size and nfiles are the folder's bytes and files. DVC 3 hashes the bytes as they are (DVC
    2 turned CRLF into LF first for text files): a CRLF file's md5 is that of its raw bytes."""
    import hashlib
    import sys

    folder = tmp_path / "m"
    (folder / "adapter" / "deep" / "deeper").mkdir(parents=True)
    files = {
        "config.json": b'{"n_embd": 32}\n',
        "empty.txt": b"",
        "model.bin": bytes(range(256)) * 5 + b"\x00\r\n\xff",
        "adapter/notes.txt": b"first line\r\nsecond line\r\n",
        "adapter/deep/deeper/weights.bin": bytes(reversed(range(256))),
    }
    for rel, data in files.items():
        (folder / rel).write_bytes(data)
    run_cmd([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], tmp_path)
    run_cmd([sys.executable, "-m", "dvc", "add", "-q", "m"], tmp_path)
    out = yaml.safe_load((tmp_path / "m.dvc").read_text())["outs"][0]
    assert out["md5"] == dvc_md5(folder)
    assert out["size"] == sum(len(data) for data in files.values())
    assert out["nfiles"] == len(files)

    crlf = tmp_path / "crlf.txt"
    crlf.write_bytes(files["adapter/notes.txt"])
    run_cmd([sys.executable, "-m", "dvc", "add", "-q", "crlf.txt"], tmp_path)
    recorded = yaml.safe_load((tmp_path / "crlf.txt.dvc").read_text())["outs"][0]["md5"]
    assert recorded == dvc_md5(crlf) == hashlib.md5(crlf.read_bytes()).hexdigest()
    assert recorded != hashlib.md5(crlf.read_bytes().replace(b"\r\n", b"\n")).hexdigest()
