"""Chat and prompt/completion data through the pipeline's stage functions: import keeps the records, tokenize
renders and packs them with loss masks over exactly the assistant tokens (with a tiny imported Qwen2 and a
scratch GPT), bad records are counted per kind, the training loop and the evaluate stage score only the
trained tokens, and text corpora are untouched."""

from __future__ import annotations

import dataclasses
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_params
from model_foundry.config import Params, parse_params
from model_foundry.data.chat_collator import MaskedCausalCollator
from model_foundry.data.chat_data import PackedWindows
from model_foundry.data.corpus import import_corpus
from model_foundry.data.encoding import encode_text
from model_foundry.data.tokens import TokenizedData
from model_foundry.errors import FoundryError
from model_foundry.model_folder import load_tokenizer
from model_foundry.stages import tokenize

BLOCK = 96  # window = 97 tokens: a few short conversations per window


def conversation(i: int) -> dict[str, Any]:
    """A short chat record; every third one has two assistant turns."""
    messages = [
        {"role": "system", "content": "Answer briefly."},
        {"role": "user", "content": f"What is {i} plus {i}?"},
        {"role": "assistant", "content": f"It is {2 * i}."},
    ]
    if i % 3 == 0:
        messages += [
            {"role": "user", "content": "And times two?"},
            {"role": "assistant", "content": f"That makes {4 * i}, of course."},
        ]
    return {"messages": messages}


def pair(i: int) -> dict[str, Any]:
    return {"prompt": f"Q: name the number after {i}. A:", "completion": f" {i + 1}"}


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def params_for(model_name: str, entry: dict[str, Any], source: Path | str, **data: Any) -> Params:
    raw = tiny_params(model_name=model_name)
    raw["models"][model_name] = entry
    raw["data"] = {**raw["data"], "source": str(source), **data}
    raw["train"] = {**raw["train"], "block_size": BLOCK}
    return parse_params(raw)


def gpt_params(source: Path | str, **data: Any) -> Params:
    entry = {"architecture": "gpt", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": BLOCK}
    return params_for("gpt-chat", entry, source, **data)


def runs(ids: np.ndarray, mask: np.ndarray) -> list[list[int]]:
    """The maximal runs of ids whose mask is 1, window by window."""
    out: list[list[int]] = []
    for row_ids, row_mask in zip(ids.tolist(), mask.tolist(), strict=True):
        for j, (t, m) in enumerate(zip(row_ids, row_mask, strict=True)):
            if m:
                if j == 0 or not row_mask[j - 1]:
                    out.append([])
                out[-1].append(t)
    return out


def split_records(corpus: Path, split: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (corpus / f"{split}.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def qwen(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    """(catalog entry, models/qc): the tiny Qwen2 fixture (ChatML template) through import and convert."""
    from localhub.repos import build_qwen2
    from model_foundry.stages import convert, ingest

    root = tmp_path_factory.mktemp("qwen")
    build_qwen2(root / "hf")
    entry = {"architecture": "hf-qwen2", "source": str(root / "hf"), "license_accepted": True}
    chat = write_jsonl(root / "raw/chat.jsonl", [conversation(i) for i in range(4)])
    params = params_for("qc", entry, chat)
    ingest.run(params, root / "corpus", root / "source")
    convert.run(params, root / "source", root / "models/qc")
    return entry, root / "models/qc"


@pytest.fixture(scope="module")
def chat_data(qwen: tuple[dict[str, Any], Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """40 chat records imported and tokenized for the Qwen2 model (the printed report captured)."""
    entry, model = qwen
    root = tmp_path_factory.mktemp("chat")
    params = params_for(
        "qc", entry, write_jsonl(root / "raw/chat.jsonl", [conversation(i) for i in range(40)])
    )
    stats = import_corpus(params.data, root / "corpus")
    meta = tokenize.run(params, root / "corpus", model, root / "tokenized")
    return {"params": params, "root": root, "stats": stats, "meta": meta, "model": model}


# --- import ----------------------------------------------------------------------------------------------


def test_import_keeps_chat_records_split_by_seed(tmp_path: Path) -> None:
    lines = [conversation(i) for i in range(10)] + ["{not json"]
    source = write_jsonl(tmp_path / "raw/chat.jsonl", lines)
    stats = import_corpus(gpt_params(source).data, tmp_path / "corpus")
    assert stats["format"] == "chat"
    assert (stats["train"]["records"], stats["val"]["records"]) == (10, 1)  # round(11 × 0.1) = 1
    assert stats["train"]["invalid_json"] + stats["val"]["invalid_json"] == 1
    kept = sorted((tmp_path / "corpus/train.jsonl").read_text().splitlines())
    kept += (tmp_path / "corpus/val.jsonl").read_text().splitlines()
    assert sorted(kept) == sorted(x if isinstance(x, str) else json.dumps(x) for x in lines)  # nothing lost
    again = import_corpus(gpt_params(source).data, tmp_path / "again")
    assert again == stats
    assert (tmp_path / "again/val.jsonl").read_bytes() == (tmp_path / "corpus/val.jsonl").read_bytes()
    other = import_corpus(gpt_params(source, seed=7).data, tmp_path / "other")
    assert other["val"]["records"] == 1  # a different record, most likely; always one in each split


def test_import_two_records_one_in_each_split_one_record_refused(tmp_path: Path) -> None:
    two = write_jsonl(tmp_path / "two.jsonl", [pair(1), pair(2)])
    stats = import_corpus(gpt_params(two, val_fraction=0.9).data, tmp_path / "c2")
    assert (stats["format"], stats["train"]["records"], stats["val"]["records"]) == (
        "prompt_completion",
        1,
        1,
    )
    one = write_jsonl(tmp_path / "one.jsonl", [pair(1)])
    with pytest.raises(FoundryError, match="too few to split"):
        import_corpus(gpt_params(one).data, tmp_path / "c1")
    assert not (tmp_path / "c1").exists()


def test_import_refuses_mixed_text_and_chat(tmp_path: Path) -> None:
    raw = tmp_path / "raw"
    write_jsonl(raw / "a.jsonl", [conversation(1), conversation(2)])
    (raw / "b.txt").write_text("Plain prose.\n\nMore prose.\n")
    with pytest.raises(FoundryError, match="mixes plain-text and chat/instruction files") as e:
        import_corpus(gpt_params(raw).data, tmp_path / "c")
    assert e.value.hint and "one kind of data" in e.value.hint
    (raw / "b.txt").unlink()
    write_jsonl(raw / "c.jsonl", [conversation(3), {"text": "a document"}])
    with pytest.raises(FoundryError, match="mixes record formats"):
        import_corpus(gpt_params(raw).data, tmp_path / "c")
    with pytest.raises(FoundryError, match="data.format is chat, but data.source is plain text"):
        import_corpus(gpt_params("builtin:pydoc_topics", format="chat").data, tmp_path / "c")
    assert not (tmp_path / "c").exists()


def test_text_corpora_are_imported_as_before(tmp_path: Path) -> None:
    """A .jsonl text corpus under format auto and text gives the same bytes; stats.json has no format key."""
    docs = [{"body": f"Document {i}.\n\nIts second paragraph."} for i in range(12)]
    source = write_jsonl(tmp_path / "docs.jsonl", docs)
    auto = import_corpus(gpt_params(source, text_field="body").data, tmp_path / "auto")
    text = import_corpus(gpt_params(source, text_field="body", format="text").data, tmp_path / "text")
    assert auto == text and "format" not in auto
    for name in ("train.jsonl", "val.jsonl", "stats.json"):
        assert (tmp_path / "auto" / name).read_bytes() == (tmp_path / "text" / name).read_bytes()
    assert json.loads((tmp_path / "auto/train.jsonl").read_text().splitlines()[0]).keys() == {"text"}


# --- tokenize --------------------------------------------------------------------------------------------


def test_loss_mask_covers_exactly_the_assistant_tokens(chat_data: dict[str, Any]) -> None:
    meta, root = chat_data["meta"], chat_data["root"]
    assert meta["layout"] == "windows" and meta["window"] == BLOCK + 1 and meta["format"] == "chat"
    assert meta["chat_template"] == "tokenizer" and meta["tokenizer"] == "native"
    tok = load_tokenizer(root / "tokenized/tokenizer")
    for split in ("train", "val"):
        windows = PackedWindows.open(root / "tokenized", split, meta)
        assert len(windows) == meta["windows"][split] and windows.ids.shape[1] == BLOCK + 1
        decoded = [tok.decode(run) for run in runs(windows.ids, windows.mask)]
        expected = [
            m["content"] + "<|im_end|>"
            for record in split_records(root / "corpus", split)
            for m in record["messages"]
            if m["role"] == "assistant"
        ]
        assert sorted(decoded) == sorted(expected)
        stats = meta["chat"][split]
        assert stats["usable"] == stats["records"] == len(split_records(root / "corpus", split))
        assert stats["trained_tokens"] == int(windows.mask.sum()) == meta["trained_tokens"][split]
        assert stats["bad_records"] == {} and stats["dropped"] == 0
    # everything unmasked in a window is template markup, system/user turns or padding
    first = PackedWindows.open(root / "tokenized", "train", meta)
    text = tok.decode(first.ids[0][first.mask[0] == 0].tolist())
    assert "<|im_start|>user\nWhat is" in text and "<|im_start|>assistant\n" in text


def test_tokenize_prints_the_report(
    qwen: tuple[dict[str, Any], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    entry, model = qwen
    params = params_for("qc", entry, write_jsonl(tmp_path / "c.jsonl", [conversation(i) for i in range(8)]))
    import_corpus(params.data, tmp_path / "corpus")
    capsys.readouterr()
    meta = tokenize.run(params, tmp_path / "corpus", model, tmp_path / "tokenized")
    out = capsys.readouterr().out
    assert f"{meta['chat']['train']['records']} chat records, {meta['chat']['train']['usable']} usable" in out
    assert "train.jsonl" in out and "val.jsonl" in out


def test_prompt_completion_with_a_scratch_gpt(tmp_path: Path) -> None:
    """The tokenizer is trained on the records' texts; the mask covers each completion and its eos."""
    from model_foundry.stages import convert, ingest

    source = write_jsonl(tmp_path / "raw/pc.jsonl", [pair(i) for i in range(30)])
    params = gpt_params(source)
    ingest.run(params, tmp_path / "corpus", tmp_path / "source")
    convert.run(params, tmp_path / "source", tmp_path / "models/gpt-chat")
    meta = tokenize.run(params, tmp_path / "corpus", tmp_path / "models/gpt-chat", tmp_path / "tokenized")
    assert (
        meta["format"] == "prompt_completion" and meta["tokenizer"] == "bpe" and meta["chat_template"] is None
    )
    tok = load_tokenizer(tmp_path / "tokenized/tokenizer")
    for split in ("train", "val"):
        windows = PackedWindows.open(tmp_path / "tokenized", split, meta)
        expected = [
            encode_text(tok, r["completion"]) + [tok.eos_token_id]
            for r in split_records(tmp_path / "corpus", split)
        ]
        assert sorted(runs(windows.ids, windows.mask)) == sorted(expected)
        # the rest of each window is the prompts (untrained) and padding
        untrained = windows.ids[(windows.mask == 0) & (windows.ids != meta["pad_id"])].tolist()
        prompts = [
            t for r in split_records(tmp_path / "corpus", split) for t in encode_text(tok, r["prompt"])
        ]
        assert sorted(untrained) == sorted(prompts)


BAD_LINES: list[Any] = [
    "{this is not json",
    {"messages": "hello"},  # missing_fields (not a list)
    {"messages": [{"role": "robot", "content": "beep"}, {"role": "assistant", "content": "boop"}]},
    {"messages": [{"role": "user", "content": 42}, {"role": "assistant", "content": "a number"}]},
    {"messages": [{"role": "user", "content": "Say nothing."}]},  # no_assistant_turn
    {"messages": [{"role": "user", "content": "Talk."}, {"role": "assistant", "content": "word " * 200}]},
]
BAD_KINDS = {
    "invalid_json": 1,
    "missing_fields": 1,
    "unknown_role": 1,
    "non_string_content": 1,
    "no_assistant_turn": 1,
    "overlong": 1,
}


@pytest.mark.parametrize("overlong", ["truncate", "drop"])
def test_bad_records_are_counted_per_kind(
    qwen: tuple[dict[str, Any], Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], overlong: str
) -> None:
    entry, model = qwen
    lines = [conversation(i) for i in range(14)] + BAD_LINES
    params = params_for(
        "qc", entry, write_jsonl(tmp_path / "c.jsonl", lines), overlong=overlong, val_fraction=0.3
    )
    stats = import_corpus(params.data, tmp_path / "corpus")
    assert stats["train"]["records"] + stats["val"]["records"] == len(lines)
    capsys.readouterr()
    meta = tokenize.run(params, tmp_path / "corpus", model, tmp_path / "tokenized")
    out = capsys.readouterr().out
    counts: dict[str, int] = {}
    for split in ("train", "val"):
        for kind, n in meta["chat"][split]["bad_records"].items():
            counts[kind] = counts.get(kind, 0) + n
    assert counts == BAD_KINDS
    usable = sum(meta["chat"][s]["usable"] for s in ("train", "val"))
    truncated = sum(meta["chat"][s]["truncated"] for s in ("train", "val"))
    assert (usable, truncated) == ((15, 1) if overlong == "truncate" else (14, 0))
    assert sum(meta["chat"][s]["records"] for s in ("train", "val")) == len(lines)
    for line in (
        "1 not a JSON object",
        "1 a role other than system/user/assistant",
        "1 a content, prompt or completion that is not a string",
        "1 nothing to train: no assistant message",
        "1 longer than the length limit",
    ):
        assert line in out
    if overlong == "truncate":  # the cut example keeps its start and fills a window exactly
        windows = {s: PackedWindows.open(tmp_path / "tokenized", s, meta) for s in ("train", "val")}
        full = [s for s, w in windows.items() if (w.ids != meta["pad_id"]).all(1).any()]
        assert full


def test_max_seq_len_is_the_example_limit(qwen: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    """Single-turn records (~55 tokens) fit in 60; two-turn ones (~95) are cut after the first answer; at
    30 tokens nothing trained is left of any record."""
    entry, model = qwen
    raw = tiny_params(model_name="qc")
    raw["models"]["qc"] = entry
    chat = write_jsonl(tmp_path / "c.jsonl", [conversation(i) for i in range(12)])
    raw["data"] = {**raw["data"], "source": str(chat)}
    raw["train"] = {**raw["train"], "block_size": BLOCK, "max_seq_len": 60}
    import_corpus(parse_params(raw).data, tmp_path / "corpus")
    meta = tokenize.run(parse_params(raw), tmp_path / "corpus", model, tmp_path / "tokenized")
    total = {k: sum(meta["chat"][s][k] for s in ("train", "val")) for k in ("usable", "truncated")}
    overlong = sum(meta["chat"][s]["bad_records"].get("overlong", 0) for s in ("train", "val"))
    assert (total["usable"], total["truncated"], overlong) == (12, 4, 4)  # records 0, 3, 6, 9
    raw["train"]["max_seq_len"] = 30
    with pytest.raises(FoundryError, match=r"no usable chat record \(\d+ records: \d+ overlong\)"):
        tokenize.run(parse_params(raw), tmp_path / "corpus", model, tmp_path / "t30")


def test_no_usable_record_fails_clearly(qwen: tuple[dict[str, Any], Path], tmp_path: Path) -> None:
    entry, model = qwen
    lines = [{"messages": [{"role": "user", "content": f"Hello {i}"}]} for i in range(6)]
    params = params_for("qc", entry, write_jsonl(tmp_path / "c.jsonl", lines))
    import_corpus(params.data, tmp_path / "corpus")
    with pytest.raises(
        FoundryError, match=r"has no usable chat record \(\d+ records: \d+ no_assistant_turn\)"
    ):
        tokenize.run(params, tmp_path / "corpus", model, tmp_path / "tokenized")
    assert not (tmp_path / "tokenized").exists()


def test_chat_data_without_a_template_fails_before_any_work(tmp_path: Path) -> None:
    from localhub.repos import build_llama

    source = write_jsonl(tmp_path / "raw/chat.jsonl", [conversation(i) for i in range(6)])
    # a scratch GPT: no tokenizer yet, no family: refused before a tokenizer is trained
    params = gpt_params(source)
    import_corpus(params.data, tmp_path / "corpus")
    (tmp_path / "models/gpt-chat").mkdir(parents=True)
    with pytest.raises(FoundryError, match="The model gpt-chat has no chat template") as e:
        tokenize.run(params, tmp_path / "corpus", tmp_path / "models/gpt-chat", tmp_path / "tokenized")
    assert e.value.hint and "prompt_completion" in e.value.hint
    assert not (tmp_path / "tokenized").exists()
    # a Llama checkpoint whose tokenizer ships no template (and the family has no fallback)
    build_llama(tmp_path / "llama")
    entry = {"architecture": "hf-llama", "source": str(tmp_path / "llama"), "license_accepted": True}
    with pytest.raises(FoundryError, match="The model ll has no chat template"):
        tokenize.run(
            params_for("ll", entry, source), tmp_path / "corpus", tmp_path / "llama", tmp_path / "tokenized"
        )
    assert not (tmp_path / "tokenized").exists()
    # prompt/completion needs no template
    pc = write_jsonl(tmp_path / "raw2/pc.jsonl", [pair(i) for i in range(6)])
    import_corpus(params_for("ll", entry, pc).data, tmp_path / "pc")
    meta = tokenize.run(
        params_for("ll", entry, pc), tmp_path / "pc", tmp_path / "llama", tmp_path / "tokenized"
    )
    assert meta["format"] == "prompt_completion" and meta["tokenizer"] == "native"


def test_masked_lm_on_chat_data_is_refused(tmp_path: Path) -> None:
    source = write_jsonl(tmp_path / "raw/pc.jsonl", [pair(i) for i in range(6)])
    entry = {"architecture": "bert", "n_layer": 1, "n_head": 2, "n_embd": 32, "block_size": BLOCK}
    raw = tiny_params(model_name="b")
    raw["models"]["b"] = {**entry, "train": {"objective": "masked_lm", "block_size": BLOCK}}
    raw["data"] = {**raw["data"], "source": str(source)}
    params = parse_params(raw)
    import_corpus(params.data, tmp_path / "corpus")
    with pytest.raises(FoundryError, match="train.objective is masked_lm") as e:
        tokenize.run(params, tmp_path / "corpus", tmp_path / "models/b", tmp_path / "tokenized")
    assert e.value.hint and "causal_lm" in e.value.hint


def test_repo_model_without_weights_trains_a_tokenizer(tmp_path: Path) -> None:
    """`source: model:<name>`: a folder with a config only gets a new tokenizer; one with weights needs its
    own."""
    source = write_jsonl(tmp_path / "raw/pc.jsonl", [pair(i) for i in range(12)])
    raw = tiny_params(model_name="child")
    raw["models"]["child"] = {"architecture": "gpt", "source": "model:base"}
    raw["data"] = {**raw["data"], "source": str(source)}
    params = parse_params(raw)
    import_corpus(params.data, tmp_path / "corpus")
    folder = tmp_path / "models/base"
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    meta = tokenize.run(params, tmp_path / "corpus", folder, tmp_path / "tokenized")
    assert meta["tokenizer"] == "bpe"
    (folder / "model.safetensors").write_bytes(b"")
    with pytest.raises(FoundryError, match="has weights but no tokenizer.json"):
        tokenize.run(params, tmp_path / "corpus", folder, tmp_path / "again")


# --- reading, training, evaluation -----------------------------------------------------------------------


def test_windows_and_collator_train_on_the_masked_tokens_only(chat_data: dict[str, Any]) -> None:
    from model_foundry.model_folder import load_adapter
    from model_foundry.training.device import Runtime
    from model_foundry.training.loop import train
    from model_foundry.training.state import TrainState

    params, root = chat_data["params"], chat_data["root"]
    data = TokenizedData.open(root / "tokenized")
    tok = load_tokenizer(data.tokenizer_dir)
    collator = data.collator("causal_lm", tok, 0.15)
    assert isinstance(collator, MaskedCausalCollator)
    with pytest.raises(FoundryError, match="but the objective is masked_lm"):
        data.collator("masked_lm", tok, 0.15)
    source = data.windows("train")
    with pytest.raises(FoundryError, match="windows of 97 tokens .* windows of 33"):
        source.draw(2, 33, torch.Generator().manual_seed(0))

    adapter = load_adapter(chat_data["model"])
    adapter.model.eval()
    # one batch: the adapter's loss is the cross-entropy over the masked targets, read from the files
    batch = source.draw(4, BLOCK + 1, torch.Generator().manual_seed(3))
    x, y = collator(batch)
    rows = torch.randint(len(data.packed_windows("train")), (4,), generator=torch.Generator().manual_seed(3))
    packed = data.packed_windows("train")
    ids = torch.from_numpy(packed.ids[rows.numpy()].astype(np.int64))
    mask = torch.from_numpy(packed.mask[rows.numpy()].astype(bool))
    assert torch.equal(x, ids[:, :-1])
    with torch.no_grad():
        logits = adapter.logits(x)
        manual = F.cross_entropy(logits[mask[:, 1:]], ids[:, 1:][mask[:, 1:]])
        assert torch.allclose(adapter(x, y).loss, manual, atol=1e-6)
    assert (~mask[:, 1:]).any()  # the windows do hold untrained targets (user turns, markup, padding)
    assert torch.equal(y != -100, mask[:, 1:]) and torch.equal(y[mask[:, 1:]], ids[:, 1:][mask[:, 1:]])

    cfg = dataclasses.replace(params.train, steps=3, batch_size=2, log_interval=1, eval_interval=3)
    runtime = Runtime.create("cpu", "fp32", 1)
    state = TrainState.create(adapter, cfg, runtime)
    train(state, data.windows("train"), data.windows("val"), cfg, collator, runtime)
    losses = [loss for _, loss in state.train_history] + [loss for _, loss in state.val_history]
    assert len(state.train_history) == 3 and all(math.isfinite(v) for v in losses)


def test_evaluate_stage_on_chat_data(chat_data: dict[str, Any], tmp_path: Path) -> None:
    from model_foundry.model_folder import load_adapter
    from model_foundry.stages import evaluate

    params, root = chat_data["params"], chat_data["root"]
    params = dataclasses.replace(params, train=dataclasses.replace(params.train, precision="fp32"))
    metrics = evaluate.run(params, chat_data["model"], root / "tokenized", tmp_path / "metrics.json")
    assert json.loads((tmp_path / "metrics.json").read_text()) == metrics
    assert "bits_per_byte" not in metrics and "bits_per_byte" not in metrics["unigram"]
    assert metrics["data_format"] == "chat" and "assistant" in metrics["note"]
    assert all(math.isfinite(metrics[k]) for k in ("val_loss", "perplexity"))
    assert math.isclose(metrics["perplexity"], math.exp(metrics["val_loss"]))
    val = PackedWindows.open(root / "tokenized", "val", chat_data["meta"])
    assert metrics["tokens_scored"] == int(val.mask[:, 1:].sum()) and metrics["windows_scored"] == len(val)
    # the same number by hand: summed cross-entropy over the masked targets of every validation window
    adapter = load_adapter(chat_data["model"])
    adapter.model.eval()
    ids = torch.from_numpy(val.ids.astype(np.int64))
    mask = torch.from_numpy(val.mask.astype(bool))[:, 1:]
    nats = 0.0
    with torch.no_grad():
        for b in range(0, len(val), params.evaluate.batch_size):  # the stage's batches
            rows = slice(b, b + params.evaluate.batch_size)
            logits = adapter.logits(ids[rows, :-1]).float()
            nats += F.cross_entropy(logits[mask[rows]], ids[rows, 1:][mask[rows]], reduction="sum").item()
    assert math.isclose(metrics["val_loss"], nats / int(mask.sum()), rel_tol=1e-6)
    assert math.isfinite(metrics["unigram"]["val_loss"]) and metrics["unigram"]["val_loss"] > 0


def test_windows_of_text_data_are_unchanged(tmp_path: Path) -> None:
    """Plain text: a TokenStream over the flat ids and the objective's own collator."""
    from model_foundry.data.collators import CausalCollator
    from model_foundry.data.tokens import TokenStream
    from model_foundry.stages import convert, ingest

    params = gpt_params("builtin:pydoc_topics")
    ingest.run(params, tmp_path / "corpus", tmp_path / "source")
    convert.run(params, tmp_path / "source", tmp_path / "models/gpt-chat")
    meta = tokenize.run(params, tmp_path / "corpus", tmp_path / "models/gpt-chat", tmp_path / "tokenized")
    assert "layout" not in meta and "chat" not in meta and meta["bytes"]["val"] > 0
    data = TokenizedData.open(tmp_path / "tokenized")
    assert isinstance(data.windows("train"), TokenStream) and not data.packed
    assert isinstance(data.collator("causal_lm", load_tokenizer(data.tokenizer_dir), 0.15), CausalCollator)
    shutil.rmtree(tmp_path / "tokenized")
