"""The adapter contract: training, evaluation and generation see every architecture through it.

An adapter wraps one nn.Module with its config, its registry spec and its tokenizer. Scratch models share
their persistence in `scratch.py`, Hub families in `hf/adapter.py`; the model folder they read and write is
owned by `model_folder`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import torch
import torch.nn.functional as F
from torch import nn

from model_foundry.adapters.spec import ArchitectureSpec

if TYPE_CHECKING:
    from _typeshed import DataclassInstance
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

IGNORE_INDEX = -100  # label of positions that predict nothing (PyTorch's cross_entropy default)


@dataclass
class ModelOutput:
    """What `BaseAdapter.forward` returns."""

    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None = None  # scalar, fp32: mean nats per predicted token; None without labels


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy in nats per predicted token: (B, T, V) logits against (B, T) int64 labels.

    The labels are already aligned with the logits (shifted by one for causal LM, the original token at the
    masked positions for masked LM), IGNORE_INDEX (-100) where nothing is predicted. Computed in fp32 whatever
    the logits' dtype. Returns a scalar tensor (NaN when every label is IGNORE_INDEX, as torch's).
    """
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


class BaseAdapter:
    """Wraps one nn.Module with what the pipeline needs: build, forward, save/load, tokenizer, prefill/decode.

    model:     the torch module (a transformers PreTrainedModel for the Hub families).
    config:    what rebuilds it: the spec's config dataclass (scratch models; subclasses narrow the type, e.g.
               `GPTAdapter.config: GPTConfig`) or a transformers PretrainedConfig (Hub families).
    spec:      the registry entry the model was built or loaded as (`adapters.ARCHITECTURES`).
    tokenizer: the model folder's tokenizer; None for a model not trained yet or a folder without one.

    Generation itself (sampling, the token loop, stop tokens, chat) is `model_foundry.generation`, over
    `prefill`/`decode`.
    """

    model: nn.Module
    config: Any
    spec: ArchitectureSpec
    tokenizer: PreTrainedTokenizerBase | None

    def __init__(
        self,
        model: nn.Module,
        config: Any,
        spec: ArchitectureSpec,
        tokenizer: PreTrainedTokenizerBase | None = None,
    ) -> None:
        self.model = model
        self.config = config
        self.spec = spec
        self.tokenizer = tokenizer

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def build(cls, config: DataclassInstance, spec: ArchitectureSpec) -> Self:
        """A freshly initialised model of `config` (an instance of `spec.config_cls`, vocab_size set).

        Seed torch before calling for reproducible weights. Raises NotImplementedError for adapters of
        imported models (Hub families), which are only loaded; FoundryError for a config without a vocabulary.
        """
        raise NotImplementedError(f"{cls.__name__} cannot be built from scratch")

    @classmethod
    def load_checkpoint(
        cls, path: str | Path, spec: ArchitectureSpec, device: str | torch.device = "cpu"
    ) -> Self:
        """The model saved in the canonical folder `path`, on `device`, with the folder's tokenizer if any.

        Call `model_folder.load_adapter` instead: it checks the folder (JSON, safetensors headers, sha256)
        first and picks the adapter. Raises FoundryError when config.json and the weights do not match.
        """
        raise NotImplementedError

    def save_checkpoint(self, path: str | Path, metadata: dict[str, Any]) -> dict[str, Any]:
        """Write the canonical model folder `path` atomically: weights, config.json, tokenizer, metadata.

        `metadata` is the provenance (`model_folder.model_metadata`); the parameters, dtype and sha256 of the
        weight files are added (`model_folder.write_metadata`). Returns the metadata.json written.
        """
        raise NotImplementedError

    # --- the model ----------------------------------------------------------------------------------
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 token ids → (B, T, V) logits (the model's dtype; V = the model's vocabulary size).

        T must not exceed `max_context` (gpt and bert raise ValueError; `prefill` crops instead).
        """
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        """(B, T) ids → logits (B, T, V), and with (B, T) aligned labels the loss (`lm_loss`, nats/token)."""
        logits = self.logits(input_ids)
        return ModelOutput(logits=logits, loss=None if labels is None else lm_loss(logits, labels))

    __call__ = forward

    def get_config(self) -> dict[str, Any]:
        """What config.json records about the architecture (JSON-ready: str keys, plain values)."""
        raise NotImplementedError

    def enable_gradient_checkpointing(self) -> None:
        """Recompute each block's activations in the backward pass instead of keeping them (less memory,
        about one extra forward of compute; `train.gradient_checkpointing`). Raises FoundryError for models
        without blocks to checkpoint."""
        from model_foundry.errors import FoundryError

        raise FoundryError(
            f"train.gradient_checkpointing is not available for {self.spec.name} models.",
            "Set train.gradient_checkpointing: false (it helps the transformers: gpt and the Hub families).",
        )

    @property
    def max_context(self) -> int | None:
        """Longest input in tokens the model accepts (None: unbounded, e.g. RNNs)."""
        return getattr(self.config, "block_size", None)

    def num_parameters(self) -> int:
        """Number of parameters (elements, not bytes); tied weights are counted once."""
        return sum(p.numel() for p in self.model.parameters())

    def to(self, device: str | torch.device) -> Self:
        """Move the model to `device` (in place); returns the adapter."""
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        """The device of the model's (first) parameter."""
        return next(self.model.parameters()).device

    # --- generation: prefill the prompt, then decode a few tokens at a time ---------------------------
    def prefill(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, Any]:
        """Read a prompt: (B, T) int64 ids → (logits (B, T', V) at every position, state to decode from).

        T' = T, or max_context when the prompt is longer: only its last max_context tokens are read (the
        older ones are dropped, as when a sequence outgrows the context). The state is opaque: pass it to
        `decode` unchanged. This default keeps no cache: its state is the ids read so far, and every
        `decode` recomputes them. Adapters with a KV cache or a recurrent state override both methods.
        """
        ids = self._window(input_ids)
        return self.logits(ids), ids

    def decode(self, input_ids: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Read the next tokens after `state`: (B, n) ids → (logits (B, n, V) of those positions, new state).

        The state passed in may be updated in place (a KV cache grows): continue from the returned one only.
        This default recomputes the whole window (the last max_context ids) at every call.
        """
        ids = self._window(torch.cat([state, input_ids], dim=1))
        return self.logits(ids)[:, -input_ids.size(1) :], ids

    def _window(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The last max_context tokens of (B, T) ids (all of them when the model has no limit)."""
        n = self.max_context
        return input_ids if n is None or input_ids.size(1) <= n else input_ids[:, -n:]


@dataclass
class CachedState:
    """The decode state of adapters with a key/value cache.

    cache: the adapter's cache (its layout is the adapter's business); it covers the tokens of `ids`.
    ids:   (B, L) the tokens read so far, L ≤ max_context; kept to recompute a window when the next tokens
           would go past max_context (learned or rotary positions cannot slide within a cache).
    """

    cache: Any
    ids: torch.Tensor

    @property
    def length(self) -> int:
        """Tokens in the cache (positions 0 … length − 1)."""
        return self.ids.size(1)
