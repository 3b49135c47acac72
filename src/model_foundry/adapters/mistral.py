"""Mistral, imported from the Hub."""

from __future__ import annotations

from model_foundry.adapters.hf_causal import HFCausalAdapter
from model_foundry.adapters.hf_config import HFFamily


class MistralAdapter(HFCausalAdapter):
    family = HFFamily(model_classes={"mistral": "MistralForCausalLM"}, stop_tokens=("</s>",))
