"""The GPT adapter: shapes, save/load round trip, Hugging Face GPT-2 parity, generation."""

from __future__ import annotations

import torch

from model_foundry.adapters import get_spec
from model_foundry.adapters.gpt import SPEC as GPT_SPEC
from model_foundry.adapters.gpt import GPTConfig
from model_foundry.adapters.gpt.model import GPTAdapter
from model_foundry.generation import GREEDY, SamplingParams, generate
from model_foundry.model_folder import load_adapter

CFG = GPTConfig(n_layer=2, n_head=2, n_embd=32, block_size=16, vocab_size=97)


def _adapter(seed: int = 0) -> GPTAdapter:
    torch.manual_seed(seed)
    return GPTAdapter.build(CFG, GPT_SPEC)


def test_registry_resolves_gpt_lazily():
    spec = get_spec("gpt")
    assert spec.config_cls is GPTConfig and spec.adapter_cls() is GPTAdapter


def test_forward_shapes_and_loss():
    a = _adapter()
    x = torch.randint(0, 97, (3, 16))  # (B, T)
    out = a(x, x)
    assert out.logits.shape == (3, 16, 97) and out.loss.ndim == 0 and out.loss.dtype == torch.float32
    assert abs(out.loss.item() - torch.log(torch.tensor(97.0)).item()) < 0.5  # ~uniform at init


def test_same_seed_same_weights():
    assert all(
        torch.equal(p, q)
        for p, q in zip(_adapter(1).model.parameters(), _adapter(1).model.parameters(), strict=True)
    )


def test_save_load_round_trip_and_hf_parity(tmp_path):
    from transformers import AutoModelForCausalLM, GPT2LMHeadModel

    a = _adapter()
    a.save_checkpoint(tmp_path / "m", {"model_name": "m"})
    b = load_adapter(tmp_path / "m")
    x = torch.randint(0, 97, (2, 16))
    a.model.eval(), b.model.eval()
    torch.testing.assert_close(a.logits(x), b.logits(x), rtol=0, atol=0)
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "m").eval()
    assert isinstance(hf, GPT2LMHeadModel)
    torch.testing.assert_close(hf(x).logits, a.logits(x))
    greedy_hf = hf.generate(x[:, :4], max_new_tokens=8, do_sample=False, pad_token_id=0)
    assert generate(b, x[:, :4], 8, GREEDY).tokens == greedy_hf[:, 4:].tolist()


def test_generate_respects_context_and_seed():
    a = _adapter()
    prompt = torch.randint(0, 97, (1, 15))
    params = SamplingParams(temperature=1.0, top_k=5)
    out1 = generate(a, prompt, 10, params, generator=torch.Generator().manual_seed(3))
    out2 = generate(a, prompt, 10, params, generator=torch.Generator().manual_seed(3))
    assert len(out1.tokens[0]) == 10 and out1 == out2  # context cropped to block_size, no error
