"""BERT encoder with a masked-LM head, in one readable file.

Module names follow Hugging Face's `BertForMaskedLM` on purpose, so a saved folder is a valid checkpoint:
`AutoModelForMaskedLM.from_pretrained("models/<name>")` works and gives the same logits. What differs is data,
not code: the decoder weight is tied to the word embeddings (not saved, as in Hugging Face checkpoints), and
a model without token types saves a zero token-type row because transformers always adds one (`HF_ONLY`).
Sequences are packed without padding, so attention is bidirectional over the whole window and takes no mask.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from model_foundry.adapters.bert import BertConfig
from model_foundry.adapters.scratch import ScratchAdapter, normal_init

# BERT's (layer_norm_eps in https://huggingface.co/google-bert/bert-base-uncased/blob/main/config.json)
LAYER_NORM_EPS = 1e-12
TIED = {
    "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight"
}  # ours → the weight it shares
TOKEN_TYPE = (
    "bert.embeddings.token_type_embeddings.weight"  # in Hugging Face's layout even when token_types = 0
)


class Embeddings(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.position_embeddings = nn.Embedding(cfg.block_size, cfg.n_embd)
        self.token_type_embeddings = nn.Embedding(cfg.token_types, cfg.n_embd) if cfg.token_types else None
        self.LayerNorm = nn.LayerNorm(cfg.n_embd, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        x = self.word_embeddings(idx) + self.position_embeddings(
            torch.arange(T, device=idx.device)
        )  # (B, T, C)
        if self.token_type_embeddings is not None:
            x = x + self.token_type_embeddings.weight[0]  # one segment: every token has type 0
        return self.dropout(self.LayerNorm(x))


class SelfAttention(nn.Module):
    """Bidirectional multi-head attention (Hugging Face: `attention.self`)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.query = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.key = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.value = nn.Linear(cfg.n_embd, cfg.n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = (
            proj(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
            for proj in (self.query, self.key, self.value)
        )
        y = F.scaled_dot_product_attention(
            q, k, v, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, C)  # (B, T, C)


class AddNorm(nn.Module):
    """Projection, dropout, residual, LayerNorm: BERT is post-norm (Hugging Face: `*.output`)."""

    def __init__(self, d_in: int, d_out: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=LAYER_NORM_EPS)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)  # (B, T, d_out)


class Layer(nn.Module):
    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = nn.ModuleDict(
            {"self": SelfAttention(cfg), "output": AddNorm(cfg.n_embd, cfg.n_embd, cfg.dropout)}
        )
        self.intermediate = nn.ModuleDict({"dense": nn.Linear(cfg.n_embd, cfg.intermediate_size)})
        self.output = AddNorm(cfg.intermediate_size, cfg.n_embd, cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attention["output"](self.attention["self"](x), x)  # (B, T, C)
        h = F.gelu(self.intermediate["dense"](x))  # (B, T, I), exact (erf) GELU as in BERT
        return self.output(h, x)  # (B, T, C)


class MLMHead(nn.Module):
    """Transform (dense, GELU, LayerNorm), then the tied decoder plus an output-only bias."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.transform = nn.ModuleDict(
            {
                "dense": nn.Linear(cfg.n_embd, cfg.n_embd),
                "LayerNorm": nn.LayerNorm(cfg.n_embd, eps=LAYER_NORM_EPS),
            }
        )
        self.decoder = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(cfg.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.transform["LayerNorm"](F.gelu(self.transform["dense"](x)))  # (B, T, C)
        return self.decoder(h) + self.bias  # (B, T, V)


class Encoder(nn.Module):
    """The layer stack (Hugging Face: `BertEncoder`, the `bert.encoder.layer.{i}` weights)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(Layer(cfg) for _ in range(cfg.n_layer))


class Body(nn.Module):
    """Embeddings and encoder (Hugging Face: `BertModel` without its pooler, the `bert.*` weights)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.embeddings = Embeddings(cfg)
        self.encoder = Encoder(cfg)


class OnlyMLMHead(nn.Module):
    """Holds the head under Hugging Face's name (`BertOnlyMLMHead`, the `cls.predictions.*` weights)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.predictions = MLMHead(cfg)


class BertMLM(nn.Module):
    """`bert.embeddings`, `bert.encoder.layer.{i}`, `cls.predictions`: Hugging Face's BertForMaskedLM tree.

    `bert`, `bert.encoder` and `cls` are containers with typed attributes (BertMLM.forward runs them).
    """

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.bert = Body(cfg)
        self.cls = OnlyMLMHead(cfg)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # weight tying
        self.apply(normal_init)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) ids → (B, T, V) logits; ValueError when T > block_size."""
        if idx.size(1) > self.cfg.block_size:
            raise ValueError(
                f"sequence of {idx.size(1)} tokens is longer than block_size {self.cfg.block_size}"
            )
        x = self.bert.embeddings(idx)  # (B, T, C)
        for layer in self.bert.encoder.layer:
            x = layer(x)
        return self.cls.predictions(x)  # (B, T, V)


class BertAdapter(ScratchAdapter):
    """The BERT encoder behind the adapter contract (masked LM); saves as a Hugging Face BertForMaskedLM."""

    module_cls = BertMLM
    model: BertMLM
    config: BertConfig

    def tied_weights(self) -> dict[str, str]:
        return TIED

    def to_saved(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.config.token_types:  # transformers always has a token-type table: a zero row is a no-op
            dtype = state[next(iter(TIED.values()))].dtype
            state[TOKEN_TYPE] = torch.zeros(1, self.config.n_embd, dtype=dtype)
        return state

    def from_saved(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if not self.config.token_types:
            tensors.pop(TOKEN_TYPE, None)
        return tensors

    def hf_config(self) -> dict[str, Any]:
        """`BertConfig` keys for config.json so transformers loads the folder as BertForMaskedLM."""
        c = self.config
        pad = getattr(self.tokenizer, "pad_token_id", None)
        return {
            "model_type": "bert",
            "architectures": ["BertForMaskedLM"],
            "hidden_size": c.n_embd,
            "num_hidden_layers": c.n_layer,
            "num_attention_heads": c.n_head,
            "intermediate_size": c.intermediate_size,
            "hidden_act": "gelu",
            "hidden_dropout_prob": c.dropout,
            "attention_probs_dropout_prob": c.dropout,
            "max_position_embeddings": c.block_size,
            "type_vocab_size": max(1, c.token_types),
            "layer_norm_eps": LAYER_NORM_EPS,
            "initializer_range": 0.02,
            "tie_word_embeddings": True,
            "is_decoder": False,
            "pad_token_id": pad,
        }
