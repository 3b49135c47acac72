"""Text generation over the adapter contract's prefill/decode, the same for every causal model.

    sampling.py  logits → probabilities → token (temperature, top-k, top-p; greedy at temperature 0)
    generate.py  the loop: prefill the prompt, decode token by token, stop tokens, max_new_tokens
    chat.py      prompt text / chat messages → ids, and a model's stop tokens
    loading.py   a model folder loaded for generation (causal, finite weights, a tokenizer)

Importing it imports torch: the CLI imports it inside its commands.
"""

from __future__ import annotations

from model_foundry.generation.chat import chat_ids, chat_template, prompt_ids, stop_token_ids
from model_foundry.generation.generate import Generation, continue_text, generate, stream_tokens
from model_foundry.generation.loading import load_causal_model
from model_foundry.generation.sampling import GREEDY, SamplingParams, sample

__all__ = [
    "GREEDY",
    "Generation",
    "SamplingParams",
    "chat_ids",
    "chat_template",
    "continue_text",
    "generate",
    "load_causal_model",
    "prompt_ids",
    "sample",
    "stop_token_ids",
    "stream_tokens",
]
