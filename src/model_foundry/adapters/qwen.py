"""Qwen2 (Qwen1.5/2/2.5, QwQ, Qwen2.5-Coder) and Qwen3, imported from the Hub.

Qwen v1 (`model_type: qwen`) needs the repository's own code and is refused at import (hub/validate.py).
"""

from __future__ import annotations

from model_foundry.adapters.hf_causal import HFCausalAdapter
from model_foundry.adapters.hf_config import HFFamily

# ChatML, as the Qwen instruct models use it; base checkpoints often ship no template of their own.
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


class QwenAdapter(HFCausalAdapter):
    family = HFFamily(
        model_classes={"qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM"},
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        chat_template=CHATML,
    )
