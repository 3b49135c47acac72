"""Imported Hugging Face models behind the BaseAdapter contract: loading and saving, for both objectives.

What differs between families is data, a row of `families.py` carried by the spec the adapter is given
(`adapter.family`): which transformers class loads the folder, the positions it reserves; its stop tokens
and fallback chat template are read by `model_foundry.generation`. The model is loaded with
that concrete class, never through `auto_map`, so repository code is never run (no `trust_remote_code`).
The loss is computed from the logits with `base.lm_loss` on already-aligned labels, like every other adapter
(HF's `labels=` shifts again). `causal.py` and `masked.py` add the objective.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import torch

from model_foundry.adapters.base import BaseAdapter
from model_foundry.adapters.hf.families import HFFamily, family_of, model_class
from model_foundry.adapters.spec import ArchitectureSpec
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir
from model_foundry.model_folder import (
    METADATA_NAME,
    describe_weights,
    inherit,
    load_tokenizer,
    read_model_info,
    write_metadata,
)
from model_foundry.model_folder.checks import restore_hint

if TYPE_CHECKING:
    from transformers.tokenization_utils_base import PreTrainedTokenizerBase

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def require_complete(path: Path, model_cls: Any) -> None:
    """FoundryError unless the folder's weights hold every tensor `model_cls` needs, in the right shape."""
    from model_foundry.adapters.hf.weights import check_weights, missing_error, require_shapes

    check = check_weights(path, model_cls)
    require_shapes(
        check,
        str(path),
        "config.json and the weights are from different models: " + restore_hint(path / "config.json"),
    )
    if check.missing:
        raise missing_error(
            check,
            str(path),
            "The weight files changed after the import (metadata.json records their sha256), or the folder "
            "was not written by Model Foundry: re-import the model with `foundry import-model` (with "
            "--init-missing to initialise the missing tensors once, seeded, and save them).",
        )


def load_fast(path: Path, model_cls: Any, dtype: torch.dtype | str) -> Any | None:
    """`model_cls` built on the meta device with the folder's tensors assigned (mmap, copy-on-write); None
    when this folder needs transformers' own loader (key renames, several names of one tied weight in the
    file, `_keep_in_fp32_modules`, anything left on meta).

    The same model as `from_pretrained(path, dtype=dtype)`, bit for bit (tests/adapters/test_meta_load.py):
    built the way `from_pretrained` builds it (`_from_config` under the dtype), so buffers that are not in the
    file (rotary `inv_freq`, `position_ids`) are made as there, in eval mode, with the folder's generation
    config. A tensor missing from the file (or of another shape) makes this return None: then call
    `require_complete`, since `from_pretrained` would fill it at random. FoundryError (`config_error`) when
    config.json cannot build the class.
    """
    from safetensors.torch import load_file

    from model_foundry.adapters import meta_load
    from model_foundry.adapters.hf.weights import config_error, quiet_transformers, weight_files

    tensors: dict[str, torch.Tensor] = {}
    try:
        for file in weight_files(path):
            tensors.update(load_file(str(file)))  # views of a private (copy-on-write) mmap of the file
    except Exception:  # noqa: BLE001 — a damaged or missing file: require_complete names it
        return None
    try:
        config = model_cls.config_class.from_pretrained(str(path), local_files_only=True)
        if dtype == "auto":
            dtype = _config_dtype(config) or meta_load.first_float_dtype(tensors) or torch.float32
        if dtype != torch.float32 and (
            getattr(model_cls, "_keep_in_fp32_modules", None)
            or getattr(model_cls, "_keep_in_fp32_modules_strict", None)
        ):
            return None  # transformers keeps some tensors in float32: its dtype plan decides which
        config.name_or_path = str(path)
        # marked as initialised: transformers' init (post_init) skips the meta parameters (assign replaces
        # them, marks and all) and still makes the buffers
        with quiet_transformers(), meta_load.empty_parameters({"_is_hf_initialized": True}):
            model = model_cls._from_config(config, dtype=dtype)
    except Exception as e:  # noqa: BLE001 — transformers raises many types for a bad config
        raise config_error(path, model_cls, e) from None
    tied = meta_load.tied_parameters(model)
    for alias, source in tied.items():
        if alias in tensors and source in tensors:
            return None  # from_pretrained decides which copy wins
        if alias in tensors:  # the file holds the tied weight under its other name
            tensors[source] = tensors[alias]
        if source in tensors:
            tensors[alias] = tensors[source]
    try:
        meta_load.assign(model, tensors, tied)
    except RuntimeError:  # other key names than the class's: transformers' renaming rules apply
        return None
    if meta_load.meta_tensors(model):
        return None
    model.eval()
    _load_generation_config(model, path)
    return model


def _config_dtype(config: Any) -> torch.dtype | None:
    """config.json's `dtype` (`torch_dtype` before transformers 5) as a torch dtype, None when absent."""
    dtype = getattr(config, "dtype", None)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None)
    return dtype if isinstance(dtype, torch.dtype) else None


def _load_generation_config(model: Any, path: Path) -> None:
    """The folder's generation_config.json (else one from config.json), as `from_pretrained` sets it."""
    if not model.can_generate():
        return
    from transformers import GenerationConfig

    try:
        model.generation_config = GenerationConfig.from_pretrained(str(path), local_files_only=True)
    except OSError:
        model.generation_config = GenerationConfig.from_pretrained(
            str(path), config_file_name="config.json", _from_model_config=True, local_files_only=True
        )


def load_pretrained(path: Path, model_cls: Any, dtype: torch.dtype | str) -> Any:
    """transformers' `from_pretrained` (the reference loader, slower); FoundryError for a bad config or a
    tensor it would initialise at random."""
    from transformers.utils import logging as hf_logging

    from model_foundry.adapters.hf.weights import config_error

    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a local folder loads in a blink: no "Loading weights" bar
    try:
        model, info = model_cls.from_pretrained(
            str(path), dtype=dtype, local_files_only=True, output_loading_info=True
        )
    except Exception as e:  # noqa: BLE001 — transformers/huggingface_hub raise many types for a bad config
        raise config_error(path, model_cls, e) from None
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    if info["missing_keys"]:  # require_complete already refuses this; never load random weights
        raise FoundryError(f"{path}: weights missing at load: {sorted(info['missing_keys'])[:8]}.")
    return model


class HFAdapter(BaseAdapter):
    """Shared by causal and masked families: load with the family's concrete class, save as HF does.

    source_metadata, source_dir: the metadata.json and folder the model was loaded from (a saved copy
    inherits their licence and origin); {} and None for a model not loaded from a folder.
    """

    # transformers' PreTrainedModel and PretrainedConfig: Any to mypy here (transformers is not followed).
    model: Any
    config: Any

    def __init__(
        self,
        model: Any,
        config: Any,
        spec: ArchitectureSpec,
        tokenizer: PreTrainedTokenizerBase | None = None,
        *,
        source_metadata: dict[str, Any] | None = None,
        source_dir: Path | None = None,
    ) -> None:
        super().__init__(model, config, spec, tokenizer)
        self.source_metadata = source_metadata or {}
        self.source_dir = source_dir

    @property
    def family(self) -> HFFamily:
        """The row of `families.py` this model's registry entry was derived from."""
        return family_of(self.spec)

    @classmethod
    def load_checkpoint(
        cls, path: str | Path, spec: ArchitectureSpec, device: str | torch.device = "cpu"
    ) -> Self:
        """Load the folder with the family's class; FoundryError if its weights lack a tensor the class needs.

        Without that check transformers would fill the gap with random values, different at every load.
        The model is built on the meta device and given the file's tensors (`load_fast`): it succeeds only
        when the file holds every tensor of the model under its own name and shape, so it never needs the
        check. Any other folder (a tensor missing or misshapen, other key names, weights kept in float32) goes
        through `require_complete` (which refuses missing and misshapen tensors) and transformers'
        `from_pretrained`. dtype: metadata.json's `load.dtype` (float32 when
        absent; auto = config.json's, else the weights'). Returned in eval mode, as `from_pretrained` does.
        """
        path = Path(path)
        config, meta = read_model_info(path)
        model_cls = model_class(family_of(spec), config.get("model_type"), str(path))
        dtype_name = (meta.get("load") or {}).get("dtype", "float32")
        if dtype_name != "auto" and dtype_name not in TORCH_DTYPES:
            raise FoundryError(
                f"{path / METADATA_NAME}: load.dtype = {dtype_name!r} must be one of auto, "
                f"{', '.join(TORCH_DTYPES)}.",
                restore_hint(path / METADATA_NAME),
            )
        dtype = "auto" if dtype_name == "auto" else TORCH_DTYPES[dtype_name]
        model = load_fast(path, model_cls, dtype)
        if model is None:  # also when a tensor is missing: require_complete says which, before any load
            require_complete(path, model_cls)
            model = load_pretrained(path, model_cls, dtype)
        model.to(device)
        return cls(
            model,
            model.config,
            spec,
            load_tokenizer(path, required=False),
            source_metadata=meta,
            source_dir=path,
        )

    def get_config(self) -> dict[str, Any]:
        """What config.json records (transformers' `to_dict`), without `_name_or_path`: where the model was
        loaded from is no part of the model (the same model loaded from two folders has one config)."""
        config = self.config.to_dict()
        config.pop("_name_or_path", None)
        return config

    @property
    def max_context(self) -> int | None:
        """Longest input in tokens: config.json's positions less those the family reserves (RoBERTa: 2)."""
        n = getattr(self.config, "max_position_embeddings", None) or getattr(self.config, "n_positions", None)
        return None if n is None else n - self.family.context_offset

    def enable_gradient_checkpointing(self) -> None:
        """transformers' own (`PreTrainedModel.activation_checkpointing_enable` in transformers 5, formerly
        `gradient_checkpointing_enable`), non-reentrant, so it works with frozen embeddings under LoRA too."""
        kwargs = {"use_reentrant": False}
        if hasattr(self.model, "activation_checkpointing_enable"):
            self.model.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:  # transformers before the rename
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)

    def save_checkpoint(self, path: str | Path, metadata: dict[str, Any]) -> dict[str, Any]:
        """Hugging Face layout (safetensors) + tokenizer + licence + metadata.json, written atomically.

        A trained or fine-tuned copy inherits the licence and origin of the folder it was loaded from.
        Returns the metadata.json written.
        """
        with atomic_dir(path) as tmp:
            self.model.save_pretrained(str(tmp))
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp))
            meta = inherit(self.source_metadata, self.source_dir, metadata, tmp)
            return write_metadata(
                tmp, {**meta, "architecture": self.spec.name}, describe_weights(tmp, self.model)
            )
