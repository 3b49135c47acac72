"""Token ids → text, one token at a time, as the full decode would write it.

Decoding each new token alone is wrong twice: a SentencePiece (Llama-style) token's leading space depends on
what comes before it, and a byte-level BPE token may hold half a UTF-8 character (decoded as U+FFFD). So,
as vLLM's incremental detokenizer and transformers' TextStreamer do, each step decodes a short window that
starts a few tokens back (the prompt's tail at first) and keeps what the newest tokens add; text ending in
U+FFFD waits for the next token. Each step decodes a handful of tokens: O(n) over an answer, not O(n²).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

REPLACEMENT = "\ufffd"  # what a tokenizer decodes half a UTF-8 character to
CONTEXT = 5  # prompt tokens decoded before the first new one (as vLLM's first prefix_offset)


class IncrementalDetokenizer:
    """Text of the tokens pushed after `prompt_ids`, piece by piece; special tokens left out.

        detok = IncrementalDetokenizer(tokenizer, prompt_ids)
        text = "".join(detok.push(t) for t in new_ids) + detok.flush()

    `push` returns the text that token completes ("" while a character is incomplete); `flush` returns what
    is still held back (an unfinished character, as U+FFFD: nothing pushed is dropped).
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, prompt_ids: Sequence[int]) -> None:
        self.tokenizer = tokenizer
        self.ids: list[int] = list(prompt_ids[-CONTEXT:])  # the window: context, then unread tokens
        self.prefix = 0  # ids[prefix:read] were already turned into text (the context of the next piece)
        self.read = len(self.ids)

    def _decode(self, ids: list[int]) -> str:
        return str(self.tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False))

    def _advance(self, final: bool) -> str:
        before = self._decode(self.ids[self.prefix : self.read])
        after = self._decode(self.ids[self.prefix :])
        if len(after) <= len(before) or (after.endswith(REPLACEMENT) and not final):
            return ""  # nothing new yet (a special token) or half a character
        self.ids = self.ids[self.read :]  # the tokens just read become the next piece's context
        self.prefix, self.read = 0, len(self.ids)
        return after[len(before) :]

    def push(self, token: int) -> str:
        """Add one generated token id; returns the text it completes (possibly "")."""
        self.ids.append(token)
        return self._advance(final=False)

    def flush(self) -> str:
        """The text still held back at the end (an unfinished character decodes as U+FFFD)."""
        return self._advance(final=True)
