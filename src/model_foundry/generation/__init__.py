"""Text generation over the adapter contract's prefill/decode, the same for every causal model.

    sampling.py    logits → probabilities → token (repetition penalty, temperature, top-k, top-p, min-p;
                   greedy at temperature 0)
    generate.py    the loop: prefill the prompt, decode token by token, stop tokens, max_new_tokens
    engine.py      Engine: requests → streamed text, completions, batches (what generate, chat, serve use)
    answer.py      Request, Delta, Completion; one answer's text (stop tokens and strings, finish reason)
    scheduler.py   continuous batching: requests join and leave a running batch between decode steps
    llama_decoder.py  the fused, batched decode loop of the Llama-shaped Hub families (a KV cache per row)
    detokenize.py  ids → text incrementally (leading spaces, whole UTF-8 characters)
    defaults.py    generation_config.json → default sampling settings and stop ids
    chat.py        prompt text / chat messages → ids, and a model's stop tokens
    fill_mask.py   masked LMs: the likeliest tokens for each mask
    loading.py     a model folder loaded for generation (causal, finite weights, a tokenizer) or for use

Importing it imports torch: the CLI imports it inside its commands.
"""

from __future__ import annotations

from model_foundry.generation.chat import chat_ids, chat_template, prompt_ids, stop_token_ids
from model_foundry.generation.detokenize import IncrementalDetokenizer
from model_foundry.generation.engine import Completion, Delta, Engine, Request
from model_foundry.generation.fill_mask import fill_mask
from model_foundry.generation.generate import Generation, continue_text, generate, stream_tokens
from model_foundry.generation.loading import is_masked_model, load_causal_model, load_model_for_use
from model_foundry.generation.sampling import GREEDY, SamplingParams, sample

__all__ = [
    "GREEDY",
    "Completion",
    "Delta",
    "Engine",
    "Generation",
    "IncrementalDetokenizer",
    "Request",
    "SamplingParams",
    "chat_ids",
    "chat_template",
    "continue_text",
    "fill_mask",
    "generate",
    "is_masked_model",
    "load_causal_model",
    "load_model_for_use",
    "prompt_ids",
    "sample",
    "stop_token_ids",
    "stream_tokens",
]
