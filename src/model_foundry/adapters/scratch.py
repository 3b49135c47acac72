"""Shared persistence of the models defined in this repo (gpt, bert, lstm, gru, rnn).

config dataclass ↔ config.json (with `architecture` and, for gpt/bert, Hugging Face's keys beside ours), state
dict ↔ model.safetensors (tied weights saved once, renames/transposes to a Hugging Face layout where there is
one), tokenizer files and metadata.json beside them — the folder layout is `model_folder`'s.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self, cast

import torch
from torch import nn

from model_foundry.adapters.base import BaseAdapter
from model_foundry.adapters.spec import ArchitectureSpec
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir, write_json
from model_foundry.model_folder import (
    CONFIG_NAME,
    WEIGHTS_NAME,
    describe_weights,
    first_line,
    has_tokenizer,
    load_tokenizer,
    read_model_info,
    write_metadata,
)
from model_foundry.model_folder.checks import restore_hint
from model_foundry.schema import build

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

    class ScratchConfig(DataclassInstance, Protocol):
        """The config dataclass of a model defined here (GPTConfig, BertConfig, RNNConfig's cells)."""

        vocab_size: int  # 0 until it is set from the tokenizer


def normal_init(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2/BERT initialisation (for `nn.Module.apply`): N(0, std) matrices and embeddings, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


class ScratchAdapter(BaseAdapter):
    """Adapters for models defined in this repo: config dataclass ↔ config.json, state dict ↔ safetensors.

    Subclasses set `module_cls` and may override `tied_weights`, `to_saved`/`from_saved` (a weight map to a
    Hugging Face layout) and `hf_config` (extra config.json keys that let transformers load the folder).
    """

    module_cls: ClassVar[type[nn.Module]]  # called with the config: module_cls(config)
    config: ScratchConfig  # an instance of spec.config_cls (subclasses name the class)

    @classmethod
    def build(cls, config: DataclassInstance, spec: ArchitectureSpec) -> Self:
        """A freshly initialised `module_cls(config)` (seed torch first); config.vocab_size must be set.

        Raises FoundryError when config.vocab_size is 0 (not yet taken from the tokenizer).
        """
        if getattr(config, "vocab_size", 1) <= 0:
            raise FoundryError(
                "The model config has no vocab_size.", "Set it from the tokenizer before building."
            )
        return cls(cls.module_cls(config), config, spec)

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) int64 ids → (B, T, V) logits: the module's forward."""
        return self.model(input_ids)

    def get_config(self) -> dict[str, Any]:
        """The config dataclass as a dict (config.json holds it beside `architecture` and `hf_config`)."""
        return dataclasses.asdict(self.config)

    def tied_weights(self) -> dict[str, str]:
        """{parameter: the one it shares storage with}; saved once (safetensors refuses shared tensors)."""
        return {}

    def to_saved(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Our state dict (tied copies removed) → the saved layout: renames, transposes, extra rows."""
        return state

    def from_saved(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The saved layout → our state dict, before tied copies are restored."""
        return tensors

    def export_state_dict(self) -> dict[str, torch.Tensor]:
        """The tensors model.safetensors holds: our state dict without tied copies, in the saved layout."""
        tied = self.tied_weights()
        return self.to_saved({k: v for k, v in self.model.state_dict().items() if k not in tied})

    def import_state_dict(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The saved tensors → a full state dict for `load_state_dict` (tied copies restored)."""
        state = self.from_saved(dict(tensors))
        for ours, shared in self.tied_weights().items():
            state[ours] = state[shared]
        return state

    def hf_config(self) -> dict[str, Any]:
        """Extra config.json keys that let transformers load the folder ({}: not a Hugging Face layout)."""
        return {}

    def save_checkpoint(self, path: str | Path, metadata: dict[str, Any]) -> dict[str, Any]:
        """safetensors + config.json + tokenizer + metadata.json, written atomically; returns the metadata."""
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.export_state_dict().items()}
        with atomic_dir(path) as tmp:
            save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            write_json(
                tmp / CONFIG_NAME,
                {**self.hf_config(), "architecture": self.spec.name, **self.get_config()},
                atomic=False,
            )
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp))
            return write_metadata(
                tmp, {**metadata, "architecture": self.spec.name}, describe_weights(tmp, self.model)
            )

    @classmethod
    def config_from_folder(cls, path: str | Path, spec: ArchitectureSpec) -> ScratchConfig:
        """The config dataclass that config.json of `path` describes (checked by the architecture's rules).

        Raises FoundryError naming the file when a value breaks a rule.
        """
        path = Path(path)
        raw, _ = read_model_info(path)
        names = {f.name for f in dataclasses.fields(spec.config_cls)}
        try:
            config = build(
                spec.config_cls, {k: v for k, v in raw.items() if k in names}, str(path / CONFIG_NAME)
            )
        except FoundryError as e:  # the rule's hint is for params.yaml; this file was written by us
            raise FoundryError(e.message, restore_hint(path / CONFIG_NAME)) from None
        # spec.config_cls is a DataclassInstance class for every entry; those of the scratch entries (the only
        # ones a ScratchAdapter is given) also have vocab_size (tests/adapters/test_contract.py builds each).
        return cast("ScratchConfig", config)

    @classmethod
    def load_checkpoint(
        cls, path: str | Path, spec: ArchitectureSpec, device: str | torch.device = "cpu"
    ) -> Self:
        """Rebuild the model from config.json and load its weights (and the folder's tokenizer, if any).

        The model is built with its parameters on the meta device (`meta_load.empty_parameters`: no random
        init, buffers made as usual) and the file's tensors — copy-on-write memory maps — are assigned in
        their place (`meta_load.assign`), converted only where the layout differs (transposed weights).

        Raises FoundryError when config.json breaks the architecture's rules or the weights do not match it
        (missing or unexpected tensors, other shapes).
        """
        from safetensors.torch import load_file

        from model_foundry.adapters import meta_load

        path = Path(path)
        config = cls.config_from_folder(path, spec)
        with meta_load.empty_parameters():
            adapter = cls.build(config, spec)
        try:
            tensors = adapter.import_state_dict(load_file(str(path / WEIGHTS_NAME)))
            meta_load.assign(adapter.model, tensors, meta_load.tied_parameters(adapter.model))
        except (RuntimeError, KeyError, ValueError) as e:  # missing/unexpected keys, size mismatch
            raise FoundryError(
                f"{path / WEIGHTS_NAME} does not match {path / CONFIG_NAME} ({spec.name}): {first_line(e)}",
                restore_hint(path / CONFIG_NAME),
            ) from None
        adapter.model.to(device)
        if has_tokenizer(path):
            adapter.tokenizer = load_tokenizer(path)
        return adapter
