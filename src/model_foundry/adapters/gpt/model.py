"""GPT-style decoder, nanoGPT-readable.

Module names follow Hugging Face's GPT-2 on purpose: a saved folder is a valid `GPT2LMHeadModel` checkpoint
(`AutoModelForCausalLM.from_pretrained("models/<name>")` works). The only difference is that GPT-2 stores its
projection matrices as Conv1D (in, out), so they are transposed on save and load — see `HF_TRANSPOSED`.

Generation reads the prompt once and then one token at a time through a KV cache (`KVCache`: per layer the
keys and values of the tokens read so far); positions continue from the cache length. Learned positions stop
at block_size: a sequence that would outgrow it is recomputed from its last block_size tokens at every step
(`GPTAdapter.decode`), which is what reading the cropped window without a cache gives.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
import torch.utils.checkpoint
from torch import nn

from model_foundry.adapters.base import CachedState
from model_foundry.adapters.gpt import GPTConfig
from model_foundry.adapters.scratch import ScratchAdapter, normal_init

# Our nn.Linear weights that Hugging Face's GPT-2 keeps transposed (Conv1D); `{}` is the layer index.
HF_TRANSPOSED = (
    "transformer.h.{}.attn.c_attn.weight",
    "transformer.h.{}.attn.c_proj.weight",
    "transformer.h.{}.mlp.c_fc.weight",
    "transformer.h.{}.mlp.c_proj.weight",
)


# On CPU, short blocks train faster with explicit attention (one batched matmul against an additive causal
# mask, softmax, one more) than with SDPA's flash kernel: the attention block's forward + backward is ~7%
# faster at T = 64, even at 128 and slower beyond. Longer blocks, and every other device, use
# F.scaled_dot_product_attention (which also never holds the (T, T) scores in memory).
CPU_EXPLICIT_ATTENTION_MAX_T = 128

# GPT-2's gelu_new, 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))), is the same function as x·σ(x·(A + B·x²)).
GELU_A = 2.0 * math.sqrt(2.0 / math.pi)
GELU_B = GELU_A * 0.044715


class TanhGELU(torch.autograd.Function):
    """gelu_new through sigmoid, in few memory passes. On CPU torch.tanh (and so F.gelu(approximate="tanh"))
    is ~3× slower than torch.sigmoid: this forward + backward is 1.5× (2 threads) to 2× (1 thread) faster.
    Same values up to float rounding."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor) -> torch.Tensor:
        a = torch.tensor(GELU_A, dtype=x.dtype)
        s = torch.addcmul(a, x, x, value=GELU_B).mul_(x).sigmoid_()  # σ(u), u = x·(A + B·x²)
        ctx.save_for_backward(x, s)
        return x * s

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        x, s = ctx.saved_tensors
        # d/dx x·σ(u) = σ + x·u'·σ·(1 − σ) = σ·(1 + d·(1 − σ)),  d = x·u' = x·(A + 3B·x²)
        d = torch.addcmul(torch.tensor(GELU_A, dtype=x.dtype), x, x, value=3.0 * GELU_B).mul_(x)
        d.addcmul_(d, s, value=-1.0)  # d·(1 − σ)
        return torch.addcmul(s, s, d).mul_(grad)  # σ·(1 + d·(1 − σ))·grad


class GELU(nn.Module):
    """GPT-2's gelu_new: the tanh approximation of GELU (Hendrycks & Gimpel, https://arxiv.org/abs/1606.08415;
    transformers' `NewGELUActivation`), elementwise, any shape."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32:
            return TanhGELU.apply(x)
        return F.gelu(x, approximate="tanh")  # one fused kernel on GPUs, and under bf16 autocast


class CausalSelfAttention(nn.Module):
    causal_mask: torch.Tensor  # (T, T) buffer, T = min(block_size, CPU_EXPLICIT_ATTENTION_MAX_T)

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # q, k, v in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.resid_dropout = nn.Dropout(cfg.dropout)
        # 0 on and below the diagonal, -inf above: added to the scores on the explicit path. Not saved.
        T = min(cfg.block_size, CPU_EXPLICIT_ATTENTION_MAX_T)
        self.register_buffer("causal_mask", torch.full((T, T), float("-inf")).triu(1), persistent=False)

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None) -> torch.Tensor:
        """(B, T, C) → (B, T, C). With `kv`, the T tokens follow the kv.length cached ones, and are cached."""
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 × (B, T, C)
        hs = C // self.n_head
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        past = 0
        if kv is not None:
            past = kv.length
            k, v = kv.append(k, v)  # (B, nh, past + T, hs)
        if past:
            y = self._cached_attention(q, k, v, past)  # (B, nh, T, hs)
        elif x.device.type == "cpu" and self.causal_mask.size(0) >= T:
            y = self._explicit_attention(q, k, v)  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
            )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))

    @staticmethod
    def _cached_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, past: int) -> torch.Tensor:
        """q (B, nh, T, hs) of positions past … past + T − 1 against k, v (B, nh, past + T, hs): query i sees
        keys 0 … past + i. One new token sees every key, so decoding one token needs no mask."""
        T, S = q.size(2), k.size(2)
        mask = None
        if T > 1:
            mask = torch.ones(T, S, dtype=torch.bool, device=q.device).tril(diagonal=past)  # (T, S)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, nh, T, hs)

    def _explicit_attention(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        B, nh, T, hs = q.shape
        q, k, v = (t.reshape(B * nh, T, hs) for t in (q, k, v))  # (B·nh, T, hs)
        # (B·nh, T, T) scores: mask + q·kᵀ/√hs in one batched matmul
        att = torch.baddbmm(self.causal_mask[:T, :T], q, k.transpose(1, 2), alpha=1.0 / math.sqrt(hs))
        att = F.dropout(att.softmax(dim=-1), self.dropout, self.training)
        return torch.bmm(att, v).view(B, nh, T, hs)


class MLP(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.act = GELU()
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x: torch.Tensor, kv: LayerKV | None = None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), kv)  # pre-norm residual, (B, T, C)
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    """The decoder stack without its head (Hugging Face: `GPT2Model`, the `transformer.*` weights).

    A container (GPT.forward runs it), with typed attributes where nanoGPT has an nn.ModuleDict: the same
    names, so the same state dict keys.
    """

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(cfg.vocab_size, cfg.n_embd)  # token embeddings (V, C)
        self.wpe = nn.Embedding(cfg.block_size, cfg.n_embd)  # learned positions (block_size, C)
        self.drop = nn.Dropout(cfg.dropout)
        self.h = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.gradient_checkpointing = False  # recompute block activations in backward (training only)
        self.transformer = Transformer(cfg)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        self.apply(normal_init)
        for name, p in self.named_parameters():  # scaled init of residual projections (GPT-2 paper)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def forward(self, idx: torch.Tensor, cache: KVCache | None = None) -> torch.Tensor:
        """(B, T) ids → (B, T, V) logits. With `cache`, the ids follow the cached tokens (their positions
        continue from cache.length) and their keys and values are appended to it."""
        B, T = idx.shape
        past = 0 if cache is None else cache.length
        if past + T > self.cfg.block_size:
            raise ValueError(f"sequence of {past + T} tokens is longer than block_size {self.cfg.block_size}")
        pos = torch.arange(past, past + T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.transformer.h):
            if self.gradient_checkpointing and self.training and cache is None:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)  # (B, T, C)
            else:
                x = block(x, None if cache is None else cache.layers[i])
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, V)


class LayerKV:
    """Keys and values of one attention layer for the tokens read so far.

    Buffers of `capacity` positions are allocated at the first append (dtype and device of the keys) and
    filled in place: k, v (B, nh, capacity, hs), positions 0 … length − 1 in use.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.length = 0
        self.k: torch.Tensor | None = None
        self.v: torch.Tensor | None = None

    def append(self, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add (B, nh, T, hs) keys and values; returns all of them so far, (B, nh, length, hs) each."""
        B, nh, T, hs = k.shape
        if self.k is None or self.v is None:
            self.k = k.new_empty(B, nh, self.capacity, hs)
            self.v = v.new_empty(B, nh, self.capacity, hs)
        end = self.length + T
        if end > self.capacity:
            raise ValueError(f"the KV cache holds {self.capacity} positions, not {end}")
        self.k[:, :, self.length : end] = k
        self.v[:, :, self.length : end] = v
        self.length = end
        return self.k[:, :, :end], self.v[:, :, :end]


class KVCache:
    """One `LayerKV` per block, block_size positions each (B = 1, gpt-small: 2 × 12 × 1024 × 768 floats)."""

    def __init__(self, cfg: GPTConfig) -> None:
        self.layers = [LayerKV(cfg.block_size) for _ in range(cfg.n_layer)]

    @property
    def length(self) -> int:
        return self.layers[0].length


class GPTAdapter(ScratchAdapter):
    """The GPT decoder behind the adapter contract; saves as a Hugging Face GPT-2 checkpoint."""

    module_cls = GPT
    model: GPT
    config: GPTConfig

    def enable_gradient_checkpointing(self) -> None:
        """Each block's activations are recomputed in backward (`torch.utils.checkpoint`, non-reentrant)."""
        self.model.gradient_checkpointing = True

    def prefill(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, CachedState]:
        """(B, T) prompt → (B, T', V) logits and a `CachedState` over a fresh `KVCache`.

        T' = min(T, block_size): a longer prompt is read from its last block_size tokens."""
        ids = self._window(input_ids)
        cache = KVCache(self.config)
        return self.model(ids, cache), CachedState(cache, ids)

    def decode(self, input_ids: torch.Tensor, state: CachedState) -> tuple[torch.Tensor, CachedState]:
        """(B, n) next ids → (B, n, V) logits through the KV cache (updated in place).

        When the cache cannot take n more positions (block_size reached), the last block_size tokens are
        recomputed into a new cache instead: at every step from then on, as without a cache.
        """
        n = input_ids.size(1)
        if state.length + n > self.config.block_size:
            logits, state = self.prefill(torch.cat([state.ids, input_ids], dim=1))
            return logits[:, -n:], state
        logits = self.model(input_ids, state.cache)  # (B, n, V)
        return logits, CachedState(state.cache, torch.cat([state.ids, input_ids], dim=1))

    def _transposed(self) -> set[str]:
        return {t.format(i) for t in HF_TRANSPOSED for i in range(self.config.n_layer)}

    def tied_weights(self) -> dict[str, str]:
        return {"lm_head.weight": "transformer.wte.weight"}  # as in GPT-2 checkpoints

    def to_saved(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        transposed = self._transposed()
        return {k: (v.t() if k in transposed else v) for k, v in state.items()}

    def from_saved(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        transposed = self._transposed()
        sd = {k: v for k, v in tensors.items() if not k.endswith(".attn.bias")}  # GPT-2's saved causal masks
        return {k: (v.t() if k in transposed else v) for k, v in sd.items()}

    def hf_config(self) -> dict[str, Any]:
        """GPT-2 config.json keys (`GPT2Config`) so that transformers loads the folder; the fixed values are
        GPT-2's own (https://huggingface.co/openai-community/gpt2/blob/main/config.json)."""
        c = self.config
        tok = self.tokenizer
        special = {f"{t}_token_id": getattr(tok, f"{t}_token_id", None) for t in ("bos", "eos", "pad")}
        return {
            "model_type": "gpt2",
            "architectures": ["GPT2LMHeadModel"],
            "n_positions": c.block_size,
            "n_ctx": c.block_size,
            "n_inner": None,
            "activation_function": "gelu_new",
            "resid_pdrop": c.dropout,
            "embd_pdrop": c.dropout,
            "attn_pdrop": c.dropout,
            "layer_norm_epsilon": 1e-5,
            "initializer_range": 0.02,
            "tie_word_embeddings": True,
            **special,
        }
