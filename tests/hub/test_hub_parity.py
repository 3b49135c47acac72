"""An imported model is the source model: same logits as transformers' own from_pretrained, same greedy
tokens, through the BaseAdapter contract (forward/loss, generate, save/load, tokenizer, chat template)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import transformers

from localhub.repos import BERT, GPT2, GPT2_BIN, LLAMA, LLAMA_SHARDED, QWEN2, QWEN3
from model_foundry.adapters.base import BaseAdapter, lm_loss, load_adapter, read_model_info
from model_foundry.hub import import_model

CAUSAL = {QWEN2: "hf-qwen2", QWEN3: "hf-qwen3", LLAMA: "hf-llama", GPT2: "hf-gpt2", LLAMA_SHARDED: "hf-llama"}


@pytest.fixture(scope="module")
def imported(hub_repos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every fixture family imported once through the local Hub (+ the pickle repo, + a folder import)."""
    models = tmp_path_factory.mktemp("parity-models")
    out = {}
    for repo in [*CAUSAL, BERT, GPT2_BIN]:
        result = import_model(
            repo, models, accept_license=True, allow_pickle=repo == GPT2_BIN, progress=False
        )
        out[repo] = result.path
    out["folder"] = import_model(str(hub_repos[QWEN2]), models, name="qwen2-folder", accept_license=True,
                                 progress=False).path  # fmt: skip
    return out


def ids(n: int = 12, seed: int = 0, vocab: int = 500) -> torch.Tensor:
    return torch.randint(5, vocab, (2, n), generator=torch.Generator().manual_seed(seed))


def reference(source: Path, masked: bool = False) -> torch.nn.Module:
    auto = transformers.AutoModelForMaskedLM if masked else transformers.AutoModelForCausalLM
    return auto.from_pretrained(str(source), dtype=torch.float32).eval()


@pytest.mark.parametrize("repo", [*CAUSAL, GPT2_BIN])
def test_causal_logits_and_greedy_tokens_match_transformers(repo, imported, hub_repos):
    adapter = load_adapter(imported[repo])
    assert adapter.architecture == CAUSAL.get(repo, "hf-gpt2")
    ref = reference(hub_repos[repo])
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(adapter.logits(x), ref(input_ids=x).logits)
        expected = ref.generate(
            x[:1], max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(x[:1])
        )
    assert adapter.generate(x[:1], 8, temperature=0).tolist() == expected.tolist()
    # the generic token-by-token loop of BaseAdapter (no KV cache) picks the same tokens
    assert BaseAdapter.generate(adapter, x[:1], 8, temperature=0).tolist() == expected[:, :20].tolist()


def test_folder_import_equals_hub_import(imported):
    hub_meta, folder_meta = (read_model_info(imported[k])[1] for k in (QWEN2, "folder"))
    assert hub_meta["sha256"] == folder_meta["sha256"]
    x = ids()
    a, b = load_adapter(imported[QWEN2]), load_adapter(imported["folder"])
    with torch.no_grad():
        torch.testing.assert_close(a.logits(x), b.logits(x), rtol=0, atol=0)


def test_masked_logits_match_transformers(imported, hub_repos):
    adapter = load_adapter(imported[BERT])
    ref = reference(hub_repos[BERT], masked=True)
    x = ids(vocab=400)
    with torch.no_grad():
        torch.testing.assert_close(adapter.logits(x), ref(input_ids=x).logits)
    labels = torch.full_like(x, -100)
    labels[:, 3] = x[:, 3]
    out = adapter(x, labels)
    torch.testing.assert_close(out.loss, lm_loss(out.logits, labels))
    mask = adapter.tokenizer.mask_token_id
    top = adapter.fill_mask(
        torch.tensor([[adapter.tokenizer.cls_token_id, mask, adapter.tokenizer.sep_token_id]])
    )
    assert len(top) == 1 and len(top[0]) == 5
    with pytest.raises(Exception, match="masked LM"):
        adapter.generate(x, 3)


def test_forward_loss_uses_aligned_labels(imported):
    adapter = load_adapter(imported[QWEN2])
    x = ids(13)
    out = adapter(x[:, :-1], x[:, 1:])
    assert out.logits.shape[:2] == (2, 12)
    torch.testing.assert_close(out.loss, lm_loss(out.logits, x[:, 1:]))


def test_native_tokenizer_and_chat_template(imported):
    adapter = load_adapter(imported[QWEN2])
    tok = adapter.tokenizer
    assert tok.eos_token == "<|im_end|>" and tok.chat_template
    ids_ = adapter.apply_chat_template([{"role": "user", "content": "hi"}])
    text = tok.decode(ids_)
    assert text.startswith("<|im_start|>user\nhi<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    assert set(adapter.stop_token_ids()) >= {tok.convert_tokens_to_ids("<|im_end|>")}
    # a model without a template of its own gets the family's (Qwen: ChatML with a default system prompt)
    tok.chat_template = None
    assert tok.decode(adapter.apply_chat_template([{"role": "user", "content": "hi"}])).startswith(
        "<|im_start|>system\n"
    )


def test_save_and_load_keeps_weights_licence_and_origin(imported, tmp_path):
    adapter = load_adapter(imported[LLAMA])
    adapter.save_checkpoint(
        tmp_path / "copy", {"model_name": "copy", "fine_tuned_from": "tiny-llama", "license": None}
    )
    config, meta = read_model_info(tmp_path / "copy")
    assert meta["architecture"] == "hf-llama" and meta["fine_tuned_from"] == "tiny-llama"
    assert meta["license"] == "apache-2.0" and meta["model_id"] == LLAMA  # inherited from the imported model
    assert (tmp_path / "copy" / "LICENSE").is_file() and (tmp_path / "copy" / "tokenizer.json").is_file()
    assert set(meta["sha256"]) == {"model.safetensors"}
    again = load_adapter(tmp_path / "copy")
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(again.logits(x), adapter.logits(x))
    assert again.max_context == config["max_position_embeddings"]
