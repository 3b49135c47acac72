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
