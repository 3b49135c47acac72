"""Every file read is normalised once: byte-order marks, UTF-16/32, CRLF/CR line breaks, NFC; JSONL records
end at LF only; other encodings get a hint that fits. The tokenize stage records what encoding did."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_foundry.config import DataConfig, parse_params
from model_foundry.data.corpus import import_corpus, load_documents, read_split, split_documents
from model_foundry.errors import FoundryError
from model_foundry.stages import tokenize

DOCS = ["Cats are small.\nThey purr.", "Dogs bark.", "Fish swim."]
TXT = "\n\n".join(DOCS) + "\n"
JSONL = "".join(json.dumps({"text": d}, ensure_ascii=False) + "\n" for d in DOCS)


def _crlf(s: str) -> str:
    return s.replace("\n", "\r\n")


def _cr(s: str) -> str:
    return s.replace("\n", "\r")


FORMATS = {  # name: (suffix, bytes); each must read as the three DOCS
    "txt": (".txt", TXT.encode()),
    "txt-crlf": (".txt", _crlf(TXT).encode()),
    "txt-cr": (".txt", _cr(TXT).encode()),
    "txt-bom": (".txt", b"\xef\xbb\xbf" + _crlf(TXT).encode()),
    "txt-utf16le": (".txt", b"\xff\xfe" + _crlf(TXT).encode("utf-16-le")),
    "txt-utf16be": (".txt", b"\xfe\xff" + TXT.encode("utf-16-be")),
    "txt-utf32le": (".txt", b"\xff\xfe\x00\x00" + TXT.encode("utf-32-le")),
    "jsonl": (".jsonl", JSONL.encode()),
    "jsonl-crlf": (".jsonl", _crlf(JSONL).encode()),
    "jsonl-bom": (".jsonl", b"\xef\xbb\xbf" + JSONL.encode()),
    "jsonl-utf16": (".jsonl", b"\xff\xfe" + JSONL.encode("utf-16-le")),
    "jsonl-escaped-crlf": (".jsonl", "".join(json.dumps({"text": _crlf(d)}) + "\n" for d in DOCS).encode()),
}


@pytest.mark.parametrize("name", FORMATS)
def test_every_format_reads_as_the_same_documents(tmp_path, name):
    suffix, data = FORMATS[name]
    path = tmp_path / f"corpus{suffix}"
    path.write_bytes(data)
    docs = load_documents(DataConfig(source=str(path)))
    if suffix == ".txt":  # one document: split into paragraphs, as a one-file corpus is
        assert docs == [TXT.strip()]
        train, val = split_documents(docs, 0.34, seed=0)
        assert sorted(train + val) == sorted(DOCS)
    else:
        assert docs == DOCS
    assert not any("\r" in d or "\ufeff" in d for d in docs)


def test_crlf_repro_is_three_paragraphs_and_many_files_keep_no_cr(tmp_path):
    (tmp_path / "crlf.txt").write_bytes(
        b"Cats are small.\r\nThey purr.\r\n\r\nDogs bark.\r\n\r\nFish swim.\r\n"
    )
    train, val = split_documents(load_documents(DataConfig(source=str(tmp_path / "crlf.txt"))), 0.34, 0)
    assert sorted(train + val) == ["Cats are small.\nThey purr.", "Dogs bark.", "Fish swim."]
    for i in range(12):
        (tmp_path / "many" / f"{i}.txt").parent.mkdir(exist_ok=True)
        (tmp_path / "many" / f"{i}.txt").write_bytes(f"line one {i}\r\nline two\r\n".encode())
    stats = import_corpus(DataConfig(source=str(tmp_path / "many")), tmp_path / "out")
    docs = read_split(tmp_path / "out/train.jsonl") + read_split(tmp_path / "out/val.jsonl")
    assert len(docs) == 12 and all(d.endswith("\nline two") and "\r" not in d for d in docs)
    assert stats["normalisation"]["line_breaks_converted"] == 12 and stats["normalisation"]["files"] == 12


def test_jsonl_keeps_line_separators_inside_strings(tmp_path):
    text = "first\u2028second\u2029third\x85fourth"
    path = tmp_path / "u2028.jsonl"
    path.write_text(json.dumps({"text": text}, ensure_ascii=False) + "\n" + json.dumps({"text": "b"}) + "\n")
    assert load_documents(DataConfig(source=str(path))) == [text, "b"]


def test_unicode_is_nfc(tmp_path):
    (tmp_path / "a.txt").write_text("cafe\u0301 and re\u0301sume\u0301")
    assert load_documents(DataConfig(source=str(tmp_path / "a.txt"))) == ["café and résumé"]


def test_bom_counts_are_recorded(tmp_path):
    (tmp_path / "a.txt").write_bytes(b"\xef\xbb\xbf" + "\n\n".join(f"P {i}." for i in range(20)).encode())
    (tmp_path / "b.txt").write_bytes(b"\xff\xfe" + "more text".encode("utf-16-le"))
    stats = import_corpus(DataConfig(source=str(tmp_path)), tmp_path / "out")
    assert stats["normalisation"]["byte_order_marks"] == 2
    assert stats["normalisation"]["utf16_or_utf32_files"] == 1


@pytest.mark.parametrize(
    ("data", "hint"),
    [
        ("caf\xe9 au lait, na\xefve".encode("latin-1"), "iconv -f latin1"),
        ("plain text here".encode("utf-16-le"), "iconv -f UTF-16LE"),
        ("plain text here".encode("utf-16-be"), "iconv -f UTF-16BE"),
        ("Привет, как дела?".encode("cp1251"), "file -i"),
        ("日本語のテキスト".encode("shift_jis"), "file -i"),
    ],
)
def test_other_encodings_get_a_fitting_hint(tmp_path, data, hint):
    path = tmp_path / "x.txt"
    path.write_bytes(data)
    with pytest.raises(FoundryError) as err:
        load_documents(DataConfig(source=str(path)))
    assert "not UTF-8" in err.value.message and hint in err.value.hint
    if hint != "iconv -f latin1":
        assert "latin1" not in err.value.hint


def _bert_folder(folder: Path) -> None:
    """An imported BERT tokenizer folder with truncation at 128 and padding to 128."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(
        ["word " * 20, "some [sep] [pad] words"] * 5, trainers.WordPieceTrainer(special_tokens=specials)
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    tok.enable_truncation(128)
    tok.enable_padding(length=128, pad_id=0, pad_token="[PAD]")
    PreTrainedTokenizerFast(
        tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]", sep_token="[SEP]",
        mask_token="[MASK]",
    ).save_pretrained(str(folder))  # fmt: skip


def test_tokenize_stage_keeps_whole_documents_and_records_text_counts(tmp_path, capsys):
    from conftest import tiny_params

    (tmp_path / "src").mkdir()
    for i in range(20):
        (tmp_path / "src" / f"{i}.txt").write_bytes(("word " * 300 + "☃ [SEP] [PAD]\r\n").encode())
    _bert_folder(tmp_path / "bert")
    raw = tiny_params(data={"source": str(tmp_path / "src"), "val_fraction": 0.25})
    raw["model_name"] = "bert-wordpiece-mlm"
    raw["models"]["bert-wordpiece-mlm"]["tokenizer_override"] = str(tmp_path / "bert")
    params = parse_params(raw)
    import_corpus(params.data, tmp_path / "corpus")
    meta = tokenize.run(params, tmp_path / "corpus", tmp_path / "model", tmp_path / "tok")
    ids = np.fromfile(tmp_path / "tok/train.bin", dtype=np.dtype(meta["dtype"]))
    # 300 "word" + ☃ ([UNK]) + "[", "sep", "]", "[", "pad", "]" + the separator
    assert meta["tokens"]["train"] == 15 * 308 == len(ids)
    assert (ids == meta["separator_id"]).sum() == 15 and 0 not in ids  # no [PAD] id
    text = meta["text"]["train"]
    assert text["documents"] == 15 and text["unk_tokens"] == 15 and text["dropped_characters"] == 0
    assert text["unk_share"] == pytest.approx(15 / text["characters"], abs=1e-6)
    assert meta["corpus_normalisation"]["line_breaks_converted"] == 20
    assert "note: train split: 15 unknown tokens" in capsys.readouterr().out
