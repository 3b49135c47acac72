"""GPT-style decoder, nanoGPT-readable.

Module names follow Hugging Face's GPT-2 on purpose: a saved folder is a valid `GPT2LMHeadModel` checkpoint
(`AutoModelForCausalLM.from_pretrained("models/<name>")` works). The only difference is that GPT-2 stores its
projection matrices as Conv1D (in, out), so they are transposed on save and load — see `HF_TRANSPOSED`.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model_foundry.adapters.base import ScratchAdapter, normal_init
from model_foundry.adapters.gpt_config import SPEC, GPTConfig

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
    """GPT-2's gelu_new (tanh approximation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.float32:
            return TanhGELU.apply(x)
        return F.gelu(x, approximate="tanh")  # one fused kernel on GPUs, and under bf16 autocast


class CausalSelfAttention(nn.Module):
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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 × (B, T, C)
        hs = C // self.n_head
        q, k, v = (t.view(B, T, self.n_head, hs).transpose(1, 2) for t in (q, k, v))  # (B, nh, T, hs)
        if x.device.type == "cpu" and self.causal_mask.size(0) >= T:
            y = self._explicit_attention(q, k, v)  # (B, nh, T, hs)
        else:
            y = F.scaled_dot_product_attention(
                q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
            )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C)
        return self.resid_dropout(self.c_proj(y))

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

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # pre-norm residual, (B, T, C)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer)),
                ln_f=nn.LayerNorm(cfg.n_embd),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying
        self.apply(normal_init)
        for name, p in self.named_parameters():  # scaled init of residual projections (GPT-2 paper)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        B, T = idx.shape
        if T > self.cfg.block_size:  # noqa: SIM300 (T is a length, not a constant)
            raise ValueError(f"sequence of {T} tokens is longer than block_size {self.cfg.block_size}")
        pos = torch.arange(T, device=idx.device)  # (T,)
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        return self.lm_head(self.transformer.ln_f(x))  # (B, T, V)


class GPTAdapter(ScratchAdapter):
    spec = SPEC
    module_cls = GPT

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
