"""The adapter interface: training, evaluation and generation see every architecture through it.

Canonical model folder (see README): config.json rebuilds the model, model.safetensors holds the weights,
tokenizer files sit beside them, metadata.json records where the model came from.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from model_foundry.adapters.spec import ArchitectureSpec
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir, sha256_file, write_json
from model_foundry.model_check import restore_hint
from model_foundry.schema import build

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
METADATA_NAME = "metadata.json"
IGNORE_INDEX = -100


@dataclass
class ModelOutput:
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None = None  # scalar, fp32


def normal_init(module: nn.Module, std: float = 0.02) -> None:
    """GPT-2/BERT initialisation (for `nn.Module.apply`): N(0, std) matrices and embeddings, zero biases."""
    if isinstance(module, (nn.Linear, nn.Embedding)):
        nn.init.normal_(module.weight, mean=0.0, std=std)
    if isinstance(module, nn.Linear) and module.bias is not None:
        nn.init.zeros_(module.bias)


def lm_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over aligned labels (already shifted for causal LM; -100 where nothing is predicted)."""
    return F.cross_entropy(logits.float().flatten(0, 1), labels.flatten(), ignore_index=IGNORE_INDEX)


class BaseAdapter:
    """Wraps one nn.Module with what the pipeline needs: build, forward, save/load, tokenizer, generate."""

    spec: ClassVar[ArchitectureSpec]

    def __init__(self, model: nn.Module, config: Any, tokenizer: Any = None) -> None:
        self.model = model
        self.config = config
        self.tokenizer = tokenizer

    # --- construction -------------------------------------------------------------------------------
    @classmethod
    def build(cls, config: Any) -> BaseAdapter:
        """A freshly initialised model (seed torch before calling for reproducible weights)."""
        raise NotImplementedError(f"{cls.__name__} cannot be built from scratch")

    @classmethod
    def load_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> BaseAdapter:
        raise NotImplementedError

    def save_checkpoint(self, path: str | Path, metadata: dict[str, Any]) -> None:
        raise NotImplementedError

    # --- the model ----------------------------------------------------------------------------------
    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids → (B, T, V) logits."""
        raise NotImplementedError

    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None) -> ModelOutput:
        logits = self.logits(input_ids)
        return ModelOutput(logits=logits, loss=None if labels is None else lm_loss(logits, labels))

    __call__ = forward

    def get_config(self) -> dict[str, Any]:
        return dataclasses.asdict(self.config) if dataclasses.is_dataclass(self.config) else dict(self.config)

    @property
    def max_context(self) -> int | None:
        """Longest input the model accepts (None: unbounded, e.g. RNNs)."""
        return getattr(self.config, "block_size", None)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.model.parameters())

    def to(self, device: str | torch.device) -> BaseAdapter:
        self.model.to(device)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        eos_token_id: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Autoregressive sampling; temperature 0 is greedy. (B, T) → (B, T + new)."""
        was_training = self.model.training
        self.model.eval()
        ids = input_ids
        for _ in range(max_new_tokens):
            context = ids if self.max_context is None else ids[:, -self.max_context :]
            logits = self.logits(context)[:, -1, :].float()  # (B, V)
            if not bool(torch.isfinite(logits.logsumexp(-1)).all()):  # NaN, +inf, or every token -inf
                raise FoundryError(
                    "The model gave non-finite logits (NaN or infinity): it cannot generate.",
                    "Its weights are damaged or diverged: retrain it or restore it with `dvc checkout`.",
                )
            if temperature == 0:
                nxt = logits.argmax(dim=-1, keepdim=True)
            else:
                logits = logits / temperature
                if top_k:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1, None]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                nxt = torch.multinomial(F.softmax(logits, dim=-1), 1, generator=generator)
            ids = torch.cat([ids, nxt], dim=1)
            if eos_token_id is not None and bool((nxt == eos_token_id).all()):
                break
        self.model.train(was_training)
        return ids


class ScratchAdapter(BaseAdapter):
    """Adapters for models defined in this repo: config dataclass ↔ config.json, state dict ↔ safetensors.

    Subclasses set `module_cls` and may override `tied_weights`, `to_saved`/`from_saved` (a weight map to a
    Hugging Face layout) and `hf_config` (extra config.json keys that let transformers load the folder).
    """

    module_cls: ClassVar[type[nn.Module]]

    @classmethod
    def build(cls, config: Any) -> ScratchAdapter:
        if getattr(config, "vocab_size", 1) <= 0:
            raise FoundryError(
                "The model config has no vocab_size.", "Set it from the tokenizer before building."
            )
        return cls(cls.module_cls(config), config)

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids)

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
        tied = self.tied_weights()
        return self.to_saved({k: v for k, v in self.model.state_dict().items() if k not in tied})

    def import_state_dict(self, tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        state = self.from_saved(dict(tensors))
        for ours, shared in self.tied_weights().items():
            state[ours] = state[shared]
        return state

    def hf_config(self) -> dict[str, Any]:
        return {}

    def save_checkpoint(self, path: str | Path, metadata: dict[str, Any]) -> None:
        from safetensors.torch import save_file

        tensors = {k: v.detach().to("cpu").contiguous() for k, v in self.export_state_dict().items()}
        with atomic_dir(path) as tmp:
            save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            write_json(
                tmp / CONFIG_NAME, {**self.hf_config(), "architecture": self.spec.name, **self.get_config()}
            )
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp))
            write_json(tmp / METADATA_NAME, self._metadata(tmp, metadata))

    def _metadata(self, folder: Path, metadata: dict[str, Any]) -> dict[str, Any]:
        dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
        weights = sorted(folder.glob("*.safetensors"))
        return {
            **metadata,
            "architecture": self.spec.name,
            "parameters": self.num_parameters(),
            "dtype": dtype,
            "sha256": {w.name: sha256_file(w) for w in weights},
        }

    @classmethod
    def load_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> ScratchAdapter:
        """Rebuild the model from config.json and load its weights; FoundryError when they do not match."""
        from safetensors.torch import load_file

        path = Path(path)
        raw, _ = read_model_info(path)
        names = {f.name for f in dataclasses.fields(cls.spec.config_cls)}
        try:
            config = build(
                cls.spec.config_cls, {k: v for k, v in raw.items() if k in names}, str(path / CONFIG_NAME)
            )
        except FoundryError as e:  # the rule's hint is for params.yaml; this file was written by us
            raise FoundryError(e.message, restore_hint(path / CONFIG_NAME)) from None
        adapter = cls.build(config)
        try:
            tensors = adapter.import_state_dict(load_file(str(path / WEIGHTS_NAME), device=str(device)))
            adapter.model.load_state_dict(tensors, strict=True)
        except (RuntimeError, KeyError, ValueError) as e:  # missing/unexpected keys, size mismatch
            raise FoundryError(
                f"{path / WEIGHTS_NAME} does not match {path / CONFIG_NAME} ({cls.spec.name}): "
                f"{_first_line(e)}",
                restore_hint(path / CONFIG_NAME),
            ) from None
        adapter.model.to(device)
        if (path / "tokenizer.json").is_file():
            adapter.tokenizer = load_tokenizer(path)
        return adapter


def _first_line(e: BaseException, limit: int = 300) -> str:
    """The start of an exception's message, for an error line (torch's are many lines long)."""
    text = " ".join(str(e).split())
    return text[:limit] + ("…" if len(text) > limit else "")


def load_tokenizer(path: str | Path) -> Any:
    """The tokenizer saved in a folder, as a transformers fast tokenizer (no remote code).

    Raises FoundryError naming the folder when its tokenizer files are damaged or cannot be built.
    """
    from transformers import PreTrainedTokenizerFast

    path = Path(path)
    check_tokenizer_files(path)
    try:
        return PreTrainedTokenizerFast.from_pretrained(str(path))
    except Exception as e:  # noqa: BLE001 — tokenizers/transformers raise many types for a bad file
        raise tokenizer_error(path, e) from None


def check_tokenizer_files(path: Path) -> None:
    """The folder's tokenizer JSON files parse and are objects of the expected shape (before transformers)."""
    from model_foundry.model_check import read_json_object, require_types

    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        if (path / name).is_file():
            data = read_json_object(path / name)
            if name == "tokenizer.json":
                require_types(data, {"model": dict, "added_tokens": list}, str(path / name))
            if name == "tokenizer_config.json":
                types = {"chat_template": (str, list), "model_max_length": (int, float),
                         "added_tokens_decoder": dict, "tokenizer_class": str}  # fmt: skip
                require_types(data, types, str(path / name))


def tokenizer_error(path: Path, e: BaseException) -> FoundryError:
    """The error for a tokenizer that transformers cannot build from the folder's files."""
    return FoundryError(
        f"The tokenizer in {path} cannot be built: {e.__class__.__name__}: {_first_line(e)}",
        restore_hint(path / "tokenizer.json"),
    )


def read_model_info(path: str | Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, metadata.json) of a canonical model folder, with a clear error when it is not one or
    either file is damaged (not JSON, not an object, fields of the wrong type)."""
    from model_foundry.model_check import read_model_files

    return read_model_files(path)


def load_adapter(path: str | Path, device: str | torch.device = "cpu", verify: bool = True) -> BaseAdapter:
    """Load any canonical model folder with the adapter its architecture is registered with.

    First `model_check.check_model_folder`: damaged JSON files, safetensors headers and (when `verify`)
    weights that differ from the sha256 metadata.json records are refused with FoundryError, before loading.
    """
    from model_foundry.adapters import get_spec
    from model_foundry.model_check import check_model_folder

    config, meta = read_model_info(path)
    spec = get_spec(meta.get("architecture") or config.get("architecture"))
    if not any(Path(path).glob("*.safetensors")):  # model.safetensors or shards
        raise FoundryError(
            f"{path} has no weights yet.", "Run the train stage (`dvc repro`) to produce them."
        )
    check_model_folder(path, verify=verify)
    return spec.adapter_cls().load_checkpoint(path, device=device)
