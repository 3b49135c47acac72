"""The architecture registry: the one place that maps an architecture name to its spec.

A new architecture is one config module (torch-free), one model file and one line here.
"""

from __future__ import annotations

from model_foundry.adapters import bert_config, gpt_config, rnn_config
from model_foundry.adapters.hf_config import hf_spec
from model_foundry.adapters.spec import OBJECTIVES, ArchitectureSpec
from model_foundry.errors import FoundryError

ARCHITECTURES: dict[str, ArchitectureSpec] = {
    "gpt": gpt_config.SPEC,
    "bert": bert_config.SPEC,
    "lstm": rnn_config.LSTM_SPEC,
    "gru": rnn_config.GRU_SPEC,
    "rnn": rnn_config.RNN_SPEC,
    # Imported from the Hugging Face Hub or a local folder (`foundry import-model`, `source:` in the catalog).
    "hf-qwen2": hf_spec("hf-qwen2", "qwen:QwenAdapter", "Qwen1.5/2/2.5, QwQ, Qwen2.5-Coder (Hub import)"),
    "hf-qwen3": hf_spec("hf-qwen3", "qwen:QwenAdapter", "Qwen3 (Hub import)"),
    "hf-llama": hf_spec(
        "hf-llama", "llama:LlamaAdapter", "Llama 2/3 and Llama-architecture models (Hub import)"
    ),
    "hf-mistral": hf_spec("hf-mistral", "mistral:MistralAdapter", "Mistral (Hub import)"),
    "hf-gpt2": hf_spec("hf-gpt2", "hf_gpt2:HFGPT2Adapter", "GPT-2 family (Hub import)"),
    "hf-bert": hf_spec("hf-bert", "hf_bert:HFBertAdapter", "BERT masked LM (Hub import)", "masked_lm"),
    "hf-roberta": hf_spec(
        "hf-roberta", "hf_bert:HFRobertaAdapter", "RoBERTa masked LM (Hub import)", "masked_lm"
    ),
}

# config.json `model_type` → the registry name of the family that imports it (exact lookups, no prefixes).
HF_MODEL_TYPES: dict[str, str] = {
    "qwen2": "hf-qwen2",
    "qwen3": "hf-qwen3",
    "llama": "hf-llama",
    "mistral": "hf-mistral",
    "gpt2": "hf-gpt2",
    "bert": "hf-bert",
    "roberta": "hf-roberta",
}


def get_spec(name: str | None) -> ArchitectureSpec:
    if not name or name not in ARCHITECTURES:
        what = "is missing" if not name else f"{name!r} is not a known architecture"
        raise FoundryError(
            f"The architecture {what}.", f"Set `architecture:` to one of: {', '.join(sorted(ARCHITECTURES))}."
        )
    return ARCHITECTURES[name]


__all__ = ["ARCHITECTURES", "HF_MODEL_TYPES", "OBJECTIVES", "ArchitectureSpec", "get_spec"]
