"""Llama 2/3 and models that reuse the Llama architecture, imported from the Hub."""

from __future__ import annotations

from model_foundry.adapters.hf_causal import HFCausalAdapter
from model_foundry.adapters.hf_config import HFFamily


class LlamaAdapter(HFCausalAdapter):
    family = HFFamily(
        model_classes={"llama": "LlamaForCausalLM"},
        stop_tokens=("<|eot_id|>", "<|end_of_text|>", "</s>"),  # Llama 3 turn/text ends, Llama 2 eos
    )
