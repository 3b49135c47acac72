"""Checkpoints that lack weights their class needs: refused at import and at load, or (opted in) initialised
once, seeded, and saved, so every load is identical. And the parameter count is transformers' own."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from hub_helpers import assert_empty, publish_variant

from conftest import VENV_BIN, run_cmd, tiny_params
from localhub.repos import BERT, _fast_tokenizer, train_wordpiece_tokenizer
from model_foundry.errors import FoundryError
from model_foundry.hub import QuietReporter, import_model
from model_foundry.io import sha256_file
from model_foundry.model_folder import load_adapter, read_model_info

HEAD = [
    "cls.predictions.bias",
    "cls.predictions.decoder.bias",
    "cls.predictions.transform.LayerNorm.bias",
    "cls.predictions.transform.LayerNorm.weight",
    "cls.predictions.transform.dense.bias",
    "cls.predictions.transform.dense.weight",
]


def quiet_import(source: str | Path, models: Path, **kwargs):
    kwargs.setdefault("accept_license", True)
    return import_model(str(source), models, reporter=QuietReporter(), **kwargs)


def logits(folder: Path) -> torch.Tensor:
    adapter = load_adapter(folder)
    adapter.model.eval()
    with torch.no_grad():
        return adapter.logits(torch.arange(5, 25)[None])


def tiny_bert_config(vocab_size: int):
    from transformers import BertConfig

    return BertConfig(
        vocab_size=vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64,
    )  # fmt: skip


def tiny_decoder_config(cls_name: str, tie: bool):
    import transformers

    if cls_name.startswith("GPT2"):
        return transformers.GPT2Config(vocab_size=300, n_positions=64, n_embd=32, n_layer=1, n_head=2,
                                       tie_word_embeddings=tie)  # fmt: skip
    return transformers.Qwen2Config(
        vocab_size=300, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=64, tie_word_embeddings=tie,
    )  # fmt: skip


def save_model(cls_name: str, config, out: Path, tokenizer=None, seed: int = 0) -> Path:
    import transformers

    torch.manual_seed(seed)
    getattr(transformers, cls_name)(config).save_pretrained(out)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def bert_tokenizer():
    return _fast_tokenizer(
        train_wordpiece_tokenizer(),
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
    )  # fmt: skip


@pytest.fixture(scope="module")
def encoder(bert_tokenizer, tmp_path_factory) -> Path:
    """The issue's repro: `BertModel` (encoder and pooler, no MLM head) + a tokenizer."""
    out = tmp_path_factory.mktemp("enc") / "enc"
    return save_model("BertModel", tiny_bert_config(len(bert_tokenizer)), out, bert_tokenizer)


@pytest.fixture(scope="module")
def full_bert(bert_tokenizer, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("mlm") / "mlm"
    return save_model("BertForMaskedLM", tiny_bert_config(len(bert_tokenizer)), out, bert_tokenizer)


# --- the masked-LM repro ------------------------------------------------------------------------------
def test_headless_bert_is_refused_at_import(encoder, tmp_path):
    with open(os.devnull) as stdin:
        proc = run_cmd(
            [str(VENV_BIN / "foundry"), "import-model", str(encoder), "--name", "enc", "--accept-license",
             "--no-dvc", "-q"],
            tmp_path, check=False, stdin=stdin,
        )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    error = next(line for line in proc.stderr.splitlines() if line.startswith("error:"))
    assert "lacks 6 tensors that BertForMaskedLM needs" in error and all(k in error for k in HEAD)
    assert "hint:" in proc.stderr and "--init-missing" in proc.stderr
    assert "pooler.dense.weight" in proc.stderr  # the unused tensors are named too
    assert_empty(tmp_path / "models")


def test_init_missing_is_seeded_saved_recorded_and_every_load_is_identical(encoder, tmp_path):
    source_sha = sha256_file(encoder / "model.safetensors")
    result = quiet_import(encoder, tmp_path / "a", name="enc", init_missing=True, link=True)
    assert any("initialised once with seed 0" in w for w in result.warnings)
    _, meta = read_model_info(result.path)
    assert meta["init_missing"]["keys"] == HEAD and meta["init_missing"]["seed"] == 0
    assert meta["init_missing"]["replaced"] == {"model.safetensors": source_sha}
    assert meta["sha256"] == {"model.safetensors": sha256_file(result.path / "model.safetensors")}
    # --link hard-linked the user's file first: initialising must not have written through the link
    assert sha256_file(encoder / "model.safetensors") == source_sha
    assert torch.equal(logits(result.path), logits(result.path))
    again = quiet_import(encoder, tmp_path / "b", name="enc", init_missing=True)
    assert again.sha256 == result.sha256  # seeded: the same source gives the same folder


def test_two_evaluate_runs_give_identical_metrics(encoder, tmp_path):
    """Through the pipeline's stage functions: the catalog key `init_missing`, then evaluate twice."""
    from model_foundry.config import parse_params
    from model_foundry.stages import convert, evaluate, ingest, tokenize

    raw = tiny_params(model_name="enc")
    entry = {"architecture": "hf-bert", "source": str(encoder), "license_accepted": True,
             "train": {"objective": "masked_lm"}, "evaluate": {"pseudo_ppl_sequences": 2}}  # fmt: skip
    raw["models"]["enc"] = entry
    ingest.run(parse_params(raw), tmp_path / "corpus", tmp_path / "source")
    with pytest.raises(FoundryError) as e:
        convert.run(parse_params(raw), tmp_path / "source", tmp_path / "models/enc")
    assert "BertForMaskedLM needs" in e.value.message and "`init_missing: true` in models.enc" in e.value.hint
    assert_empty(tmp_path / "models")
    params = parse_params({**raw, "models": {**raw["models"], "enc": {**entry, "init_missing": True}}})
    convert.run(params, tmp_path / "source", tmp_path / "models/enc")
    tokenize.run(params, tmp_path / "corpus", tmp_path / "models/enc", tmp_path / "tokenized")
    first = evaluate.run(params, tmp_path / "models/enc", tmp_path / "tokenized", tmp_path / "m1.json")
    second = evaluate.run(params, tmp_path / "models/enc", tmp_path / "tokenized", tmp_path / "m2.json")
    assert first == second and (tmp_path / "m1.json").read_bytes() == (tmp_path / "m2.json").read_bytes()


def test_init_missing_must_be_a_boolean():
    from model_foundry.config import parse_params

    raw = tiny_params(model_name="enc")
    raw["models"]["enc"] = {"architecture": "hf-bert", "source": "x/y", "init_missing": "yes"}
    with pytest.raises(FoundryError, match="init_missing = 'yes' must be true or false"):
        parse_params(raw)


def test_headless_hub_checkpoint_with_init_missing_keeps_the_hub_cache_intact(
    local_hub, hub_repos, encoder, tmp_path
):
    """Hub weights are hard-linked from the cache: the initialisation must write new files, not into them."""
    repo = "broken/headless-bert"
    publish_variant(
        local_hub, hub_repos[BERT], repo,
        {"model.safetensors": (encoder / "model.safetensors").read_bytes(),
         "config.json": (encoder / "config.json").read_text()},
    )  # fmt: skip
    with pytest.raises(FoundryError, match="BertForMaskedLM needs"):
        quiet_import(repo, tmp_path / "models", cache_dir=tmp_path / "cache")
    assert_empty(tmp_path / "models")
    quiet_import(repo, tmp_path / "models", cache_dir=tmp_path / "cache", init_missing=True)
    blobs = list((tmp_path / "cache").glob("models--broken--headless-bert/blobs/*"))
    hub_sha = local_hub.file(repo, "model.safetensors").sha256
    blob = next(b for b in blobs if b.name == hub_sha)
    assert sha256_file(blob) == hub_sha  # the cache blob is still the Hub's file


# --- causal families ----------------------------------------------------------------------------------
@pytest.mark.parametrize("cls_name", ["Qwen2Model", "GPT2Model"])
def test_tied_decoder_without_lm_head_imports_and_loads_identically(cls_name, tmp_path):
    """With tie_word_embeddings the head *is* the embedding: a base-model checkpoint is complete."""
    source = save_model(cls_name, tiny_decoder_config(cls_name, tie=True), tmp_path / "src")
    result = quiet_import(source, tmp_path / "models", name="base")
    _, meta = read_model_info(result.path)
    assert "init_missing" not in meta and not any("lacks" in w for w in result.warnings)
    assert torch.equal(logits(result.path), logits(result.path))


@pytest.mark.parametrize("cls_name", ["Qwen2Model", "GPT2Model"])
def test_untied_decoder_without_lm_head_is_refused_unless_init_missing(cls_name, tmp_path):
    source = save_model(cls_name, tiny_decoder_config(cls_name, tie=False), tmp_path / "src")
    with pytest.raises(FoundryError) as e:
        quiet_import(source, tmp_path / "models", name="base")
    assert "lacks 1 tensors" in e.value.message and "lm_head.weight" in e.value.message
    assert "--init-missing" in e.value.hint
    assert_empty(tmp_path / "models")
    result = quiet_import(source, tmp_path / "models", name="base", init_missing=True)
    assert read_model_info(result.path)[1]["init_missing"]["keys"] == ["lm_head.weight"]
    assert torch.equal(logits(result.path), logits(result.path))


# --- at every load ------------------------------------------------------------------------------------
def test_load_refuses_a_folder_whose_weights_lost_a_tensor(full_bert, tmp_path):
    from safetensors.torch import load_file, save_file

    result = quiet_import(full_bert, tmp_path / "models", name="mlm")
    weights = result.path / "model.safetensors"
    tensors = load_file(weights)
    del tensors["cls.predictions.transform.dense.weight"]
    weights.unlink()  # a copy of the user's folder, not a link: rewrite it as a damaged file
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(FoundryError) as e:
        load_adapter(result.path)  # the recorded sha256 no longer matches
    assert "model.safetensors" in e.value.message and "sha256" in e.value.message
    with pytest.raises(FoundryError) as e:
        load_adapter(result.path, verify=False)  # without that check, the tensor check still refuses it
    assert "cls.predictions.transform.dense.weight" in e.value.message and "re-import" in e.value.hint


def test_tensor_of_the_wrong_shape_is_refused(full_bert, tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for f in full_bert.iterdir():
        (source / f.name).write_bytes(f.read_bytes())
    config = json.loads((source / "config.json").read_text())
    (source / "config.json").write_text(json.dumps({**config, "intermediate_size": 48}))
    with pytest.raises(FoundryError) as e:
        quiet_import(source, tmp_path / "models")
    assert "do not have the shape config.json gives BertForMaskedLM" in e.value.message
    assert "intermediate.dense.weight: checkpoint (64, 32) vs model (48, 32)" in e.value.message
    assert_empty(tmp_path / "models")


# --- the parameter count ------------------------------------------------------------------------------
def test_parameter_count_is_transformers_num_parameters(bert_tokenizer, tmp_path):
    """A stored position-index buffer (non-persistent in the class) and a stored copy of a tied head are in
    the safetensors header, but are not parameters of the model."""
    import transformers
    from safetensors.torch import save_file

    torch.manual_seed(0)
    bert = transformers.BertForMaskedLM(tiny_bert_config(len(bert_tokenizer)))
    gpt2 = transformers.GPT2LMHeadModel(tiny_decoder_config("GPT2Model", tie=True))
    extra = {
        "bert": {"bert.embeddings.position_ids": torch.arange(64)[None]},
        "gpt2": {"lm_head.weight": gpt2.transformer.wte.weight.detach().clone()},
    }
    for name, model in (("bert", bert), ("gpt2", gpt2)):
        folder = tmp_path / name
        model.save_pretrained(folder)
        state = {k: v.contiguous() for k, v in transformers.modeling_utils.load_state_dict(
            str(folder / "model.safetensors")).items()}  # fmt: skip
        save_file({**state, **extra[name]}, folder / "model.safetensors", metadata={"format": "pt"})
        header_count = sum(t.numel() for t in {**state, **extra[name]}.values())
        result = quiet_import(folder, tmp_path / "models", name=name)
        expected = type(model).from_pretrained(str(folder)).num_parameters()
        assert result.parameters == expected == read_model_info(result.path)[1]["parameters"]
        assert header_count > expected
        assert load_adapter(result.path).num_parameters() == expected
