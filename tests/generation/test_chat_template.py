"""Prompt and chat messages → ids, and a model's stop tokens: the same functions for scratch and Hub."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from generation.generation_helpers import tiny_scratch
from model_foundry.adapters.base import BaseAdapter
from model_foundry.errors import FoundryError
from model_foundry.generation import GREEDY, chat_ids, continue_text, generate, prompt_ids, stop_token_ids
from model_foundry.model_folder import load_tokenizer

HI = [{"role": "user", "content": "hi"}]


def test_hub_model_template_stop_tokens_and_fallback(hub_model: Callable[[str], BaseAdapter]) -> None:
    adapter = hub_model("hf-qwen2")
    tok = adapter.tokenizer
    text = tok.decode(chat_ids(adapter, HI))
    assert text.startswith("<|im_start|>user\nhi<|im_end|>") and text.endswith("<|im_start|>assistant\n")
    # config eos, tokenizer eos and the family's stop tokens (<|im_end|>, <|endoftext|>)
    assert stop_token_ids(adapter) == sorted(
        {tok.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")}
    )
    # without a template of its own the model gets its family's (Qwen: ChatML with a default system prompt)
    tok.chat_template = None
    assert tok.decode(chat_ids(adapter, HI)).startswith("<|im_start|>system\n")


def test_scratch_models_use_their_tokenizer_template_and_eos(hub_repos: dict[str, Path]) -> None:
    from localhub.repos import QWEN2

    adapter = tiny_scratch("gpt")
    adapter.tokenizer = load_tokenizer(hub_repos[QWEN2])  # a tokenizer with a chat template
    tok = adapter.tokenizer
    assert (
        tok.decode(chat_ids(adapter, HI, add_generation_prompt=False)) == "<|im_start|>user\nhi<|im_end|>\n"
    )
    assert stop_token_ids(adapter) == [tok.eos_token_id]  # no family: the tokenizer's eos only
    tok.chat_template = None
    with pytest.raises(FoundryError, match="no chat template"):
        chat_ids(adapter, HI)


def test_message_text_is_data_not_markup(hub_model: Callable[[str], BaseAdapter]) -> None:
    adapter = hub_model("hf-qwen2")
    im_end = adapter.tokenizer.convert_tokens_to_ids("<|im_end|>")
    plain = chat_ids(adapter, HI)
    typed = chat_ids(adapter, [{"role": "user", "content": "hi<|im_end|>"}])
    assert typed.count(im_end) == plain.count(im_end)  # the typed one is text, not a turn end


def test_prompt_ids_start_from_bos_or_eos(hub_model: Callable[[str], BaseAdapter]) -> None:
    gpt2, qwen2 = hub_model("hf-gpt2"), hub_model("hf-qwen2")
    assert prompt_ids(gpt2, "") == [gpt2.tokenizer.bos_token_id]
    assert qwen2.tokenizer.bos_token_id is None and prompt_ids(qwen2, "") == [qwen2.tokenizer.eos_token_id]
    assert prompt_ids(gpt2, "Hello") == gpt2.tokenizer("Hello")["input_ids"]
    with pytest.raises(FoundryError, match="no tokenizer"):
        prompt_ids(tiny_scratch("gpt"), "Hello")


def test_continue_text_is_the_prompt_and_the_generated_tokens(
    hub_model: Callable[[str], BaseAdapter],
) -> None:
    adapter = hub_model("hf-llama")
    ids = prompt_ids(adapter, "Hello there")
    new = generate(adapter, torch.tensor([ids]), 6, GREEDY, stop_token_ids(adapter)).tokens[0]
    text = continue_text(adapter, "Hello there", 6, GREEDY)
    assert text == adapter.tokenizer.decode(ids + new, skip_special_tokens=True)
