"""An imported model is the source model: same logits as transformers' own from_pretrained, same greedy
tokens, through the BaseAdapter contract (forward/loss, prefill/decode, save/load, tokenizer) and
`model_foundry.generation` (generate, chat template, stop tokens)."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import pytest
import torch
import transformers

from localhub.repos import FAMILY_FIXTURES, GPT2_BIN, LLAMA, LLAMA_SHARDED, QWEN2
from model_foundry.adapters import ARCHITECTURES
from model_foundry.adapters.base import BaseAdapter, lm_loss
from model_foundry.errors import FoundryError
from model_foundry.generation import GREEDY, chat_ids, generate, stop_token_ids
from model_foundry.hub import QuietReporter, import_model
from model_foundry.model_folder import load_adapter, read_model_info

# Every Hub family's fixture repo (repo → registry name), by objective, so a new row of families.py is
# checked here too; plus the sharded Llama repo.
FAMILY_REPOS = {repo: name for name, repo in FAMILY_FIXTURES.items()}
CAUSAL = {r: n for r, n in FAMILY_REPOS.items() if ARCHITECTURES[n].objectives == ("causal_lm",)}
CAUSAL[LLAMA_SHARDED] = "hf-llama"
MASKED = {r: n for r, n in FAMILY_REPOS.items() if ARCHITECTURES[n].objectives == ("masked_lm",)}


@pytest.fixture(scope="module")
def imported(hub_repos: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every fixture family imported once through the local Hub (+ the pickle repo, + a folder import)."""
    models = tmp_path_factory.mktemp("parity-models")
    out = {}
    for repo in [*CAUSAL, *MASKED, GPT2_BIN]:
        result = import_model(
            repo, models, accept_license=True, allow_pickle=repo == GPT2_BIN, reporter=QuietReporter()
        )
        out[repo] = result.path
    out["folder"] = import_model(str(hub_repos[QWEN2]), models, name="qwen2-folder", accept_license=True,
                                 reporter=QuietReporter()).path  # fmt: skip
    return out


def ids(n: int = 12, seed: int = 0, vocab: int = 500) -> torch.Tensor:
    return torch.randint(5, vocab, (2, n), generator=torch.Generator().manual_seed(seed))


def reference(source: Path, masked: bool = False) -> torch.nn.Module:
    auto = transformers.AutoModelForMaskedLM if masked else transformers.AutoModelForCausalLM
    return auto.from_pretrained(str(source), dtype=torch.float32).eval()


@pytest.mark.parametrize("repo", [*CAUSAL, GPT2_BIN])
def test_causal_logits_and_greedy_tokens_match_transformers(repo, imported, hub_repos):
    adapter = load_adapter(imported[repo])
    assert adapter.spec.name == CAUSAL.get(repo, "hf-gpt2")
    ref = reference(hub_repos[repo])
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(adapter.logits(x), ref(input_ids=x).logits)
        expected = ref.generate(
            x[:1], max_new_tokens=8, do_sample=False, attention_mask=torch.ones_like(x[:1])
        )
    new, stop = expected[0, x.size(1) :].tolist(), stop_token_ids(adapter)
    assert generate(adapter, x[:1], 8, GREEDY, stop).tokens[0] == new  # through the KV cache
    # the contract's default prefill/decode (no KV cache: every step recomputed) picks the same tokens
    plain = copy.copy(adapter)
    plain.prefill = functools.partial(BaseAdapter.prefill, plain)  # type: ignore[method-assign]
    plain.decode = functools.partial(BaseAdapter.decode, plain)  # type: ignore[method-assign]
    assert generate(plain, x[:1], 8, GREEDY, stop).tokens[0] == new


def test_folder_import_equals_hub_import(imported):
    hub_meta, folder_meta = (read_model_info(imported[k])[1] for k in (QWEN2, "folder"))
    assert hub_meta["sha256"] == folder_meta["sha256"]
    x = ids()
    a, b = load_adapter(imported[QWEN2]), load_adapter(imported["folder"])
    with torch.no_grad():
        torch.testing.assert_close(a.logits(x), b.logits(x), rtol=0, atol=0)


@pytest.mark.parametrize("repo", list(MASKED))
def test_masked_logits_match_transformers(repo, imported, hub_repos):
    adapter = load_adapter(imported[repo])
    assert adapter.spec.name == MASKED[repo]
    ref = reference(hub_repos[repo], masked=True)
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
    with pytest.raises(FoundryError, match="masked LM"):
        generate(adapter, x, 3)


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
    ids_ = chat_ids(adapter, [{"role": "user", "content": "hi"}])
    text = tok.decode(ids_)
    assert text.startswith("<|im_start|>user\nhi<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    assert set(stop_token_ids(adapter)) >= {tok.convert_tokens_to_ids("<|im_end|>")}
    # a model without a template of its own gets the family's (Qwen: ChatML with a default system prompt)
    tok.chat_template = None
    assert tok.decode(chat_ids(adapter, [{"role": "user", "content": "hi"}])).startswith(
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
