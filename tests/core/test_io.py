"""Atomic writes: a folder or file is complete or absent."""

from __future__ import annotations

import pytest

from model_foundry.io import atomic_dir, atomic_write_text, read_json, write_json


def test_atomic_dir_replaces_whole_folder(tmp_path):
    final = tmp_path / "model"
    final.mkdir()
    (final / "old.txt").write_text("old")
    with atomic_dir(final) as tmp:
        assert not (tmp / "old.txt").exists()
        (tmp / "new.txt").write_text("new")
        assert not (final / "new.txt").exists()  # invisible until the end
    assert sorted(p.name for p in final.iterdir()) == ["new.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_atomic_dir_error_leaves_nothing(tmp_path):
    with pytest.raises(RuntimeError), atomic_dir(tmp_path / "model") as tmp:
        (tmp / "half.bin").write_bytes(b"x")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []


def test_json_is_stable(tmp_path):
    write_json(tmp_path / "a.json", {"b": 1, "a": [1, 2]})
    assert (tmp_path / "a.json").read_text() == '{\n  "a": [\n    1,\n    2\n  ],\n  "b": 1\n}\n'
    assert read_json(tmp_path / "a.json") == {"a": [1, 2], "b": 1}
    atomic_write_text(tmp_path / "sub" / "t.txt", "hi")
    assert (tmp_path / "sub" / "t.txt").read_text() == "hi"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_json_refuses_non_finite_numbers(tmp_path, bad):
    """NaN/Infinity are not JSON: no writer of ours emits them, and nothing is left behind."""
    with pytest.raises(ValueError):
        write_json(tmp_path / "m.json", {"val_loss": bad})
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o002, 0o077])
def test_atomic_writes_follow_the_umask(tmp_path, umask):
    """Temp-then-rename must not leave owner-only (0700/0600) outputs: colleagues and containers read them."""
    import os
    import stat

    old = os.umask(umask)
    try:
        with atomic_dir(tmp_path / "model") as tmp:
            (tmp / "w.bin").write_bytes(b"x")
        atomic_write_text(tmp_path / "metrics.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "model").stat().st_mode) == 0o777 & ~umask
    assert stat.S_IMODE((tmp_path / "model" / "w.bin").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o666 & ~umask
