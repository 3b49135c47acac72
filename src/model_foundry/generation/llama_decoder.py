"""A lean decode loop for the Llama-shaped Hub families (Qwen2/2.5, Qwen3, Llama, Mistral), over the
transformers model's own weights (no copy).

Why: transformers' `forward` pays for generality at every token (cache objects, mask builders, output
classes, hooks). At batch 1 on a CPU decoding is bound by reading the weights once per token, so what is
left to win is that overhead (gpt-fast's and nanochat's point: a preallocated cache and a plain loop).

    decoder = LlamaDecoder(adapter.model, rows=8)
    logits = decoder.prefill(0, prompt_ids, total=len(prompt_ids) + 64)   # (V,) next-token logits of row 0
    logits = decoder.decode(torch.tensor([token]))                        # (1, V): one step of rows [0, 1)

Rows and the cache: the KV cache is one tensor per layer, (rows, kv_heads, capacity, head_dim) for keys and
the same for values, grown (never shrunk) when a request needs more positions. Rows in use are always the
first `n` (a finished row is swapped with the last one: `remove`), so a decode step reads `cache[:n]`
without gathering. Each row has its own length: one decode step writes each row's new key and value at its
own position and masks the positions past it, so requests of different lengths, admitted at different
times, decode together (continuous batching: `generation/scheduler.py`).

Numerics follow transformers' modules op for op (RMSNorm in fp32 cast back before the weight, RoPE tables
from the model's own rotary module, so every static rope type it knows works; SDPA with grouped KV heads),
so fp32 logits match transformers' to float rounding and greedy tokens match `generate`
(tests/generation/test_llama_decoder.py). Layers with a sliding window (Mistral, some Qwen2 configs) are
exact only while a sequence stays within the window: `fits` refuses longer requests and the engine falls
back to the transformers path for them.

Shapes: B = rows decoded together, T = tokens read, C = hidden size, H/K = query/KV heads, D = head dim,
L = cache positions read, V = vocabulary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

CHUNK = 256  # the cache grows by multiples of this many positions
FEW_ROWS = 16  # up to this many rows (tokens × batch) a linear layer runs as W xᵀ (see _Linear)


class _Linear:
    """y = x Wᵀ + b over an nn.Linear's own tensors, computed as (W xᵀ)ᵀ for the few rows of decoding.

    Why: for 2-8 rows PyTorch's CPU `linear` (x Wᵀ) ran 1.3-1.7× slower than W xᵀ in bf16 and fp32 here
    (benchmarks/README.md, "Decoding"); prompts (many rows) keep `F.linear`. A single row is `torch.mv`, the
    fastest of the forms for bf16 weights read from memory (13.7 GB/s against 10.6 for `linear`).
    """

    def __init__(self, module: torch.nn.Module) -> None:
        if type(module) is not torch.nn.Linear:  # e.g. a peft LoRA layer: its forward is not x Wᵀ + b
            raise TypeError(f"{type(module).__name__} is not a plain nn.Linear")
        self.weight: torch.Tensor = module.weight  # (N, K)
        self.bias: torch.Tensor | None = module.bias  # (N,)
        # 16-bit weights on a CPU: oneDNN's one-row product ran 1.4-2× slower than its two-row one here
        self.half_cpu = self.weight.device.type == "cpu" and self.weight.dtype in (
            torch.bfloat16,
            torch.float16,
        )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """(…, K) → (…, N)."""
        rows = x.numel() // x.size(-1)
        if rows > FEW_ROWS:
            return F.linear(x, self.weight, self.bias)
        x2d = x.reshape(rows, -1)  # (rows, K)
        one = rows == 1
        y = torch.mv(self.weight, x2d[0])[None] if one else (self.weight @ x2d.t()).t()  # (rows, N)
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], -1)


@dataclass(frozen=True)
class _Layer:
    """One decoder layer's weights (the transformers module's own tensors) and settings."""

    attn_norm: torch.Tensor  # (C,)
    mlp_norm: torch.Tensor  # (C,)
    q: _Linear  # C → H·D (bias in Qwen2)
    k: _Linear  # C → K·D
    v: _Linear  # C → K·D
    o: _Linear  # H·D → C
    q_norm: torch.nn.Module | None  # Qwen3: RMSNorm over each head's D before RoPE
    k_norm: torch.nn.Module | None
    gate: _Linear  # C → I
    up: _Linear  # C → I
    down: _Linear  # I → C
    sliding_window: int | None  # tokens this layer attends to (None: all)


class LlamaDecoder:
    """Batched prefill/decode over a transformers Llama-family causal LM (`model.model.layers`, `lm_head`).

    rows: how many sequences the cache holds at once (the largest batch). The model is used read-only;
    run inside `torch.inference_mode()` or `torch.no_grad()` (the engine does). TypeError when a projection is
    not a plain nn.Linear (a peft LoRA layer applied unmerged): use the adapter's own path then.
    """

    def __init__(self, model: Any, rows: int) -> None:
        inner = model.model
        config = model.config
        self.model = model
        self.rows = rows
        self.eps = float(inner.norm.variance_epsilon)
        self.embed = inner.embed_tokens.weight  # (V, C)
        self.final_norm = inner.norm.weight  # (C,)
        self.lm_head = _Linear(model.lm_head)  # C → V (tied to embed where the config ties them)
        self.rotary = inner.rotary_emb
        first = inner.layers[0].self_attn
        self.head_dim = int(first.head_dim)
        self.n_heads = int(config.num_attention_heads)
        self.n_kv = int(config.num_key_value_heads)
        self.scaling = float(first.scaling)
        self.layers = [_layer(block, config) for block in inner.layers]
        self.max_context: int | None = getattr(config, "max_position_embeddings", None)
        self.device = self.embed.device
        self.dtype = self.embed.dtype
        self.lengths = [0] * rows  # tokens in each row's cache
        self.used = 0  # rows [0, used) hold sequences
        self.capacity = 0
        self.keys: list[torch.Tensor] = []  # per layer (rows, K, capacity, D)
        self.values: list[torch.Tensor] = []
        self.cos = self.sin = torch.empty(0)  # (capacity, D) RoPE tables

    # --- capacity ---------------------------------------------------------------------------------------
    def fits(self, total: int) -> bool:
        """Whether a sequence of `total` tokens (prompt + new tokens) decodes exactly: within the context and
        within every sliding window."""
        if self.max_context is not None and total > self.max_context:
            return False
        return all(layer.sliding_window is None or total <= layer.sliding_window for layer in self.layers)

    def _reserve(self, total: int) -> None:
        """Grow the cache and the RoPE tables to at least `total` positions (existing rows are kept)."""
        if total <= self.capacity:
            return
        capacity = -(-total // CHUNK) * CHUNK
        if self.max_context is not None:
            capacity = max(total, min(capacity, self.max_context))
        shape = (self.rows, self.n_kv, capacity, self.head_dim)
        for i in range(len(self.layers)):
            for store in (self.keys, self.values):
                grown = torch.zeros(shape, dtype=self.dtype, device=self.device)
                if i < len(store):
                    grown[:, :, : self.capacity] = store[i]
                    store[i] = grown
                else:
                    store.append(grown)
        positions = torch.arange(capacity, device=self.device)[None]  # (1, L)
        probe = torch.empty(1, dtype=self.dtype, device=self.device)
        cos, sin = self.rotary(probe, positions)  # (1, L, D): the model's own rope type and scaling
        self.cos, self.sin = cos[0], sin[0]
        self.capacity = capacity

    # --- rows ---------------------------------------------------------------------------------------------
    def prefill(self, row: int, ids: list[int], total: int) -> torch.Tensor:
        """Read a prompt into `row` (= `used`: the next free row) and return its next-token logits, (V,).

        total: the most positions this sequence will reach (prompt + new tokens); the cache is grown for it.
        Raises ValueError when the row is not the next free one or the sequence does not `fit`.
        """
        if row != self.used or row >= self.rows:
            raise ValueError(f"row {row}: the next free row is {self.used} (of {self.rows})")
        if not self.fits(total) or not ids:
            raise ValueError(f"a sequence of {total} tokens does not fit this decoder")
        self._reserve(total)
        T = len(ids)
        x = F.embedding(torch.tensor([ids], device=self.device), self.embed)  # (1, T, C)
        cos, sin = self.cos[:T], self.sin[:T]  # (T, D)
        for i, layer in enumerate(self.layers):
            h = _rms_norm(x, layer.attn_norm, self.eps)
            q, k, v = self._qkv(layer, h, cos, sin)  # (1, H, T, D), (1, K, T, D) ×2
            self.keys[i][row, :, :T] = k[0]
            self.values[i][row, :, :T] = v[0]
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scaling, enable_gqa=True)
            x = x + layer.o(y.transpose(1, 2).reshape(1, T, -1))  # (1, T, C)
            x = x + _mlp(layer, _rms_norm(x, layer.mlp_norm, self.eps))
        self.lengths[row] = T
        self.used += 1
        return self._logits(x[:, -1])[0]  # (V,): only the last position is needed

    def decode(self, tokens: torch.Tensor) -> torch.Tensor:
        """One step for rows [0, B): (B,) int64 next tokens → (B, V) logits of the position after them."""
        B = tokens.size(0)
        lengths = self.lengths[:B]
        if self.used != B or max(lengths) >= self.capacity:
            raise ValueError(f"decode of {B} rows: {self.used} in use, capacity {self.capacity}")
        pos = torch.tensor(lengths, device=self.device)  # (B,) where each row's new token goes
        x = F.embedding(tokens[:, None], self.embed)  # (B, 1, C)
        cos, sin = self.cos[pos][:, None], self.sin[pos][:, None]  # (B, 1, D)
        L = max(lengths) + 1
        mask = None  # one row sees its whole cache; several: each up to its own length
        if B > 1:
            mask = (torch.arange(L, device=self.device)[None] <= pos[:, None])[:, None, None]  # (B,1,1,L)
        rows = torch.arange(B, device=self.device)
        for i, layer in enumerate(self.layers):
            h = _rms_norm(x, layer.attn_norm, self.eps)
            q, k, v = self._qkv(layer, h, cos, sin)  # (B, H, 1, D), (B, K, 1, D) ×2
            keys, values = self.keys[i], self.values[i]
            keys[rows, :, pos] = k[:, :, 0]  # (B, K, D) at each row's own position
            values[rows, :, pos] = v[:, :, 0]
            y = F.scaled_dot_product_attention(
                q, keys[:B, :, :L], values[:B, :, :L], attn_mask=mask, scale=self.scaling, enable_gqa=True
            )  # (B, H, 1, D)
            x = x + layer.o(y.transpose(1, 2).reshape(B, 1, -1))  # (B, 1, C)
            x = x + _mlp(layer, _rms_norm(x, layer.mlp_norm, self.eps))
        for r in range(B):
            self.lengths[r] += 1
        return self._logits(x[:, 0])  # (B, V)

    def remove(self, row: int) -> None:
        """Free `row`: the last row in use moves into its place (its cache entries are copied), so rows in use
        stay [0, used). Callers keep their own per-row lists in the same order (swap with the last, pop)."""
        last = self.used - 1
        if not 0 <= row <= last:
            raise ValueError(f"row {row} is not in use ({self.used} rows)")
        if row != last:
            n = self.lengths[last]
            for store in (self.keys, self.values):
                for cache in store:
                    cache[row, :, :n] = cache[last, :, :n]
            self.lengths[row] = n
        self.lengths[last] = 0
        self.used = last

    # --- the math -----------------------------------------------------------------------------------------
    def _qkv(
        self, layer: _Layer, h: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(B, T, C) normed input → q (B, H, T, D), k and v (B, K, T, D), RoPE applied to q and k."""
        B, T, _ = h.shape
        q = layer.q(h).view(B, T, self.n_heads, self.head_dim)
        k = layer.k(h).view(B, T, self.n_kv, self.head_dim)
        v = layer.v(h).view(B, T, self.n_kv, self.head_dim).transpose(1, 2)
        if layer.q_norm is not None and layer.k_norm is not None:
            q, k = layer.q_norm(q), layer.k_norm(k)
        q, k = q.transpose(1, 2), k.transpose(1, 2)
        cos, sin = cos.unsqueeze(-3), sin.unsqueeze(-3)  # broadcast over heads
        return _rope(q, cos, sin), _rope(k, cos, sin), v

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C) last hidden states → (B, V) logits."""
        return self.lm_head(_rms_norm(x, self.final_norm, self.eps))


def _layer(block: Any, config: Any) -> _Layer:
    attn, mlp = block.self_attn, block.mlp
    # Qwen2/Qwen3 name the window per layer (None on full-attention layers); Mistral's read the config's
    per_layer = hasattr(attn, "sliding_window")
    window = attn.sliding_window if per_layer else getattr(config, "sliding_window", None)
    return _Layer(
        attn_norm=block.input_layernorm.weight,
        mlp_norm=block.post_attention_layernorm.weight,
        q=_Linear(attn.q_proj),
        k=_Linear(attn.k_proj),
        v=_Linear(attn.v_proj),
        o=_Linear(attn.o_proj),
        q_norm=getattr(attn, "q_norm", None),
        k_norm=getattr(attn, "k_norm", None),
        gate=_Linear(mlp.gate_proj),
        up=_Linear(mlp.up_proj),
        down=_Linear(mlp.down_proj),
        sliding_window=window,
    )


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm as transformers' LlamaRMSNorm: statistics in fp32, cast back, then the weight."""
    x32 = x.float()
    x32 = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + eps)
    return weight * x32.to(x.dtype)


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary position embedding, (…, T, D) with (…, T, D) tables (transformers' `rotate_half` layout)."""
    half = x.size(-1) // 2
    rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
    return x * cos + rotated * sin


def _mlp(layer: _Layer, h: torch.Tensor) -> torch.Tensor:
    """SwiGLU: down(silu(gate(h)) · up(h))."""
    return layer.down(F.silu(layer.gate(h)) * layer.up(h))
