"""GPT-2 checkpoints imported from the Hub (the scratch `gpt` architecture also saves in this layout)."""

from __future__ import annotations

from model_foundry.adapters.hf_causal import HFCausalAdapter
from model_foundry.adapters.hf_config import HFFamily


class HFGPT2Adapter(HFCausalAdapter):
    family = HFFamily(
        model_classes={"gpt2": "GPT2LMHeadModel"},
        stop_tokens=("<|endoftext|>",),
        ignored_keys=(".attn.bias", ".attn.masked_bias"),  # causal-mask buffers in old pickles
    )
