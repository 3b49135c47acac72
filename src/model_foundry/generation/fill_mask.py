"""Masked LMs (scratch bert, Hub BERT/RoBERTa): the likeliest tokens for each mask in a text.

The mask is the tokenizer's own mask token string typed in the text (`[MASK]` for BERT, `<mask>` for
RoBERTa), as transformers' fill-mask pipeline reads it: it is the one special-token string that is not
treated as data. The rest of the text is encoded as data (`data.encoding.encode_text`), and the whole is
wrapped in the tokenizer's [CLS] … [SEP] (or <s> … </s>) when it has them.

    fill_mask(load_model_for_use("models/bert-tiny-trained"), "The [MASK] sat on the mat.", top_k=5)
    → [[("cat", 0.31), ("dog", 0.12), ...]]
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    from model_foundry.adapters.base import BaseAdapter


def mask_ids(adapter: BaseAdapter, text: str) -> tuple[list[int], int]:
    """The ids of `text` with each mask token string as the mask id, and that id.

    Raises FoundryError when the model has no tokenizer or no mask token, or the text has no mask.
    """
    from model_foundry.data.encoding import encode_text
    from model_foundry.generation.chat import require_tokenizer

    tok = require_tokenizer(adapter)
    mask, mask_id = tok.mask_token, tok.mask_token_id
    if not mask or mask_id is None:
        raise FoundryError(f"The tokenizer of this {adapter.spec.name} model has no mask token.")
    pieces = text.split(mask)
    if len(pieces) == 1:
        raise FoundryError(
            f"The text has no {mask}: a masked language model fills in masks.",
            f'Write {mask} where a word is missing, e.g. "The {mask} sat on the mat."',
        )
    added = tok.added_tokens_decoder.get(mask_id)
    lstrip = bool(getattr(added, "lstrip", False))  # RoBERTa's <mask> owns the space before it
    ids: list[int] = []
    for i, piece in enumerate(pieces):
        if i:
            ids.append(mask_id)
        if lstrip and i < len(pieces) - 1:
            piece = piece.rstrip(" ")
        ids += encode_text(tok, piece) if piece else []
    if tok.cls_token_id is not None and tok.sep_token_id is not None:
        ids = [tok.cls_token_id, *ids, tok.sep_token_id]
    return ids, mask_id


def fill_mask(adapter: BaseAdapter, text: str, top_k: int = 5) -> list[list[tuple[str, float]]]:
    """For each mask in `text` (see the module docstring), in order: the top_k likeliest tokens as
    (token text, probability in [0, 1]), likeliest first.

    Raises FoundryError: top_k < 1, text that is not valid UTF-8, no mask token or none in the text, a text
    longer than the model's context, non-finite logits.
    """
    import torch

    from model_foundry.generation.chat import require_text
    from model_foundry.generation.generate import inference
    from model_foundry.generation.sampling import require_finite

    if top_k < 1:
        raise FoundryError(f"top_k = {top_k} must be 1 or more.")
    require_text(text, "The text")
    ids, mask_id = mask_ids(adapter, text)
    limit = adapter.max_context
    if limit is not None and len(ids) > limit:
        raise FoundryError(f"The text is {len(ids)} tokens long; the model reads at most {limit}.")
    tok = adapter.tokenizer
    assert tok is not None  # mask_ids checked it
    x = torch.tensor([ids], device=adapter.device)  # (1, T)
    with inference(adapter):
        logits = adapter.logits(x)[0].float()  # (T, V)
    rows = [i for i, t in enumerate(ids) if t == mask_id]
    usable = min(logits.size(-1), len(tok))  # never a padding row of the embedding
    picked = logits[rows, :usable]  # (M, V)
    require_finite(picked)
    probs, top = picked.softmax(dim=-1).topk(min(top_k, usable), dim=-1)  # (M, k) each
    return [
        [(str(tok.decode([t])).strip(), float(p)) for t, p in zip(ts, ps, strict=True)]
        for ts, ps in zip(top.tolist(), probs.tolist(), strict=True)
    ]
