"""Corpus import: sources, deterministic split, and clear errors that leave nothing behind."""

from __future__ import annotations

import json

import pytest

from model_foundry.config import DataConfig
from model_foundry.data.corpus import import_corpus, load_documents, read_split, split_documents
from model_foundry.errors import FoundryError


def test_builtin_corpus_is_offline_english_prose():
    docs = load_documents(DataConfig())
    assert len(docs) > 50
    assert sum(map(len, docs)) > 400_000


def test_split_is_deterministic_and_disjoint():
    docs = [f"document {i} " * 10 for i in range(40)]
    train, val = split_documents(docs, 0.1, seed=1)
    assert (train, val) == split_documents(docs, 0.1, seed=1)
    assert len(val) == 4 and not set(train) & set(val) and len(train) + len(val) == 40
    assert split_documents(docs, 0.1, seed=2)[1] != val


def test_few_documents_are_split_by_paragraph():
    text = "\n\n".join(f"Paragraph {i}." for i in range(20))
    train, val = split_documents([text], 0.2, seed=0)
    assert len(val) == 4 and len(train) == 16


def test_one_paragraph_is_too_small():
    with pytest.raises(FoundryError, match="too small"):
        split_documents(["just one line"], 0.1, seed=0)


def test_txt_jsonl_and_folder_sources(tmp_path):
    (tmp_path / "a.txt").write_text("alpha text\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.jsonl").write_text(
        json.dumps({"body": "beta"}) + "\n\n" + json.dumps({"body": "g"})
    )
    (tmp_path / "ignored.csv").write_text("x")
    docs = load_documents(DataConfig(source=str(tmp_path), text_field="body"))
    assert docs == ["alpha text", "beta", "g"]
    assert load_documents(DataConfig(source=[str(tmp_path / "a.txt")])) == ["alpha text"]


def test_missing_source_names_it(tmp_path):
    with pytest.raises(FoundryError) as info:
        load_documents(DataConfig(source=str(tmp_path / "nope.txt")))
    assert "nope.txt" in info.value.message and "does not exist" in info.value.message


def test_non_utf8_names_file_and_offset(tmp_path):
    bad = tmp_path / "latin.txt"
    bad.write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(FoundryError) as info:
        load_documents(DataConfig(source=str(bad)))
    assert "latin.txt" in info.value.message and "offset 3" in info.value.message
    assert "iconv" in info.value.hint


def test_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n ")
    with pytest.raises(FoundryError, match="empty"):
        load_documents(DataConfig(source=str(tmp_path / "empty.txt")))


def test_bad_jsonl_line(tmp_path):
    (tmp_path / "x.jsonl").write_text('{"text": "ok"}\n{broken\n')
    with pytest.raises(FoundryError, match=r"x.jsonl:2 is not valid JSON"):
        load_documents(DataConfig(source=str(tmp_path / "x.jsonl")))
    (tmp_path / "y.jsonl").write_text('{"content": "ok"}\n')
    with pytest.raises(FoundryError, match="no string field 'text'"):
        load_documents(DataConfig(source=str(tmp_path / "y.jsonl")))


def test_wrong_file_type_and_empty_folder(tmp_path):
    (tmp_path / "a.csv").write_text("x")
    with pytest.raises(FoundryError, match="not a .txt or .jsonl"):
        load_documents(DataConfig(source=str(tmp_path / "a.csv")))
    with pytest.raises(FoundryError, match="holds no .txt"):
        load_documents(DataConfig(source=str(tmp_path)))


def test_import_corpus_writes_splits_and_stats(tmp_path):
    stats = import_corpus(DataConfig(), tmp_path / "corpus")
    train = read_split(tmp_path / "corpus" / "train.jsonl")
    assert len(train) == stats["train"]["documents"]
    assert json.loads((tmp_path / "corpus" / "stats.json").read_text()) == stats


def test_failed_import_leaves_nothing_and_keeps_old_output(tmp_path):
    out = tmp_path / "corpus"
    import_corpus(DataConfig(), out)
    before = (out / "train.jsonl").read_bytes()
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"\xff\xfe")
    with pytest.raises(FoundryError):
        import_corpus(DataConfig(source=str(bad)), out)
    assert (out / "train.jsonl").read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []
