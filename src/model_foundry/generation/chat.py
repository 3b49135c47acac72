"""What goes into generation and what ends it, for any causal model (scratch or Hub): prompt text or chat
messages → token ids, and the model's stop tokens.

Prompt and message text is data: `</s>` typed by a user is text, never a control token (`data/encoding.py`).
The chat markup comes from the tokenizer's own chat template, or else from the model family's fallback
template (`adapters/hf/families.py`, e.g. ChatML for Qwen base checkpoints).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

    from model_foundry.adapters.base import BaseAdapter


def require_tokenizer(adapter: BaseAdapter, what: str = "text") -> PreTrainedTokenizerBase:
    """The adapter's tokenizer; FoundryError when the model folder had none (`what`: what it would read)."""
    if adapter.tokenizer is None:
        raise FoundryError(
            f"This {adapter.spec.name} model has no tokenizer, so it cannot read or write {what}.",
            "Use a trained model folder (models/<name>-trained) or an imported one.",
        )
    return adapter.tokenizer


def require_text(text: str, what: str) -> None:
    """FoundryError unless `text` is Unicode text that UTF-8 can hold: an unpaired surrogate (U+D800-U+DFFF)
    is what Python makes of bytes that are not UTF-8 on a command line, and what a JSON `"\\ud800"` escape
    decodes to; no tokenizer can encode it."""
    if text.isascii():
        return
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise FoundryError(
            f"{what} is not valid UTF-8 text: character {e.start + 1} is an unpaired surrogate "
            f"(U+{ord(text[e.start]):04X}), e.g. a byte that is not UTF-8 or a lone \\ud800-style escape.",
            "Send UTF-8 text (check the terminal's, the file's or the client's encoding).",
        ) from None


def prompt_ids(adapter: BaseAdapter, text: str) -> list[int]:
    """Token ids of a plain-text prompt; an empty prompt starts from the bos token (or else the eos).

    The text is encoded as data (`data.encoding.encode_text`: no special tokens parsed or added). Raises
    FoundryError when the model has no tokenizer, or the prompt is empty and there is no bos or eos token.
    """
    from model_foundry.data.encoding import encode_text

    require_text(text, "The prompt")
    tok = require_tokenizer(adapter)
    ids = encode_text(tok, text) if text else []
    if not ids:
        start = tok.bos_token_id if tok.bos_token_id is not None else tok.eos_token_id
        ids = [start] if start is not None else []
    if not ids:
        raise FoundryError(
            "The prompt is empty and the tokenizer has no bos or eos token to start from.",
            "Give a prompt with --prompt.",
        )
    return ids


def stop_token_ids(adapter: BaseAdapter, generation_config: dict[str, Any] | None = None) -> list[int]:
    """The tokens that end a generation, from every source transformers reads: generation_config.json's
    `eos_token_id` (an int or a list; `generation_config` None: the file of the folder the adapter was
    loaded from, `defaults.generation_config_of`), config.json's eos ids, the tokenizer's eos, and the
    family's stop tokens (chat turn ends such as `<|im_end|>`) that the vocabulary has. Sorted, no repeats."""
    from model_foundry.generation.defaults import eos_ids, generation_config_of

    if generation_config is None:
        generation_config = generation_config_of(adapter)
    ids: list[int] = eos_ids(generation_config)
    eos = getattr(adapter.config, "eos_token_id", None)  # an int or a list (HF configs); scratch: absent
    ids += eos if isinstance(eos, list) else [eos] if eos is not None else []
    tok = adapter.tokenizer
    family = adapter.spec.family
    if tok is not None:
        if tok.eos_token_id is not None:
            ids.append(tok.eos_token_id)
        if family is not None and family.stop_tokens:
            vocab = tok.get_vocab()
            ids += [vocab[t] for t in family.stop_tokens if t in vocab]
    return sorted(set(ids))


def chat_template(adapter: BaseAdapter) -> str:
    """The Jinja chat template of the model: its tokenizer's, else its family's fallback
    (`data.chat_data.chat_template_for`, the one rule for training and generation).

    Raises FoundryError when there is neither (scratch models and most base checkpoints).
    """
    from model_foundry.data.chat_data import chat_template_for

    return chat_template_for(
        require_tokenizer(adapter, "a chat"),
        adapter.spec.family,
        adapter.spec.name,
        "Use a chat/instruct checkpoint, or prompt it with plain text.",
    )


def chat_ids(
    adapter: BaseAdapter, messages: list[dict[str, Any]], add_generation_prompt: bool = True
) -> list[int]:
    """Token ids of a conversation ([{"role": ..., "content": ...}, ...]) in the model's chat format.

    With add_generation_prompt the ids end with the opening of the assistant's turn. Raises FoundryError
    when the model has no template or the template fails on the messages.
    """
    from model_foundry.data.encoding import encode_chat  # contents are data, the markup is not

    for i, message in enumerate(messages):
        if isinstance(message.get("content"), str):
            require_text(message["content"], f"Message {i + 1} ({message.get('role')})")
    template = chat_template(adapter)
    return encode_chat(require_tokenizer(adapter, "a chat"), messages, template, add_generation_prompt)
