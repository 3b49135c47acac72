"""Imported Hugging Face models behind the BaseAdapter contract; the causal-LM adapter decoders share.

A family (qwen.py, llama.py, ...) is a subclass that only sets `family` — data: which transformers class loads
which `model_type`, stop tokens, a fallback chat template. The model is loaded with that concrete class, never
through `auto_map`, so repository code is never run (no `trust_remote_code`). The loss is computed from the
logits with `base.lm_loss` on already-aligned labels, like every other adapter (HF's `labels=` shifts again).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any, ClassVar

import torch

from model_foundry.adapters.base import METADATA_NAME, BaseAdapter, read_model_info
from model_foundry.adapters.hf_config import HFFamily
from model_foundry.errors import FoundryError
from model_foundry.io import atomic_dir, sha256_file, write_json
from model_foundry.model_check import restore_hint

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# metadata.json keys a trained or fine-tuned copy inherits from the imported model it was loaded from.
INHERITED_METADATA = ("license", "license_file", "license_acknowledgment", "model_id", "revision", "load")
# Files copied unchanged into a saved copy (licence terms travel with the weights).
INHERITED_FILES = ("LICENSE", "LICENSE.txt", "LICENSE.md", "LICENCE", "NOTICE", "USE_POLICY.md")
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.txt", "vocab.json")


def load_hf_tokenizer(path: str | Path) -> Any:
    """The model's own tokenizer (fast, chat template included); None when the folder has none.

    FoundryError naming the folder when its tokenizer files are damaged or cannot be built.
    """
    from transformers import AutoTokenizer

    from model_foundry.adapters.base import check_tokenizer_files, tokenizer_error

    path = Path(path)
    if not any((path / name).is_file() for name in TOKENIZER_FILES):
        return None
    check_tokenizer_files(path)
    try:
        return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False, local_files_only=True)
    except Exception as e:  # noqa: BLE001 — tokenizers/transformers raise many types for a bad file
        raise tokenizer_error(path, e) from None


def require_complete(path: Path, model_cls: Any) -> None:
    """FoundryError unless the folder's weights hold every tensor `model_cls` needs, in the right shape."""
    from model_foundry.adapters.hf_weights import check_weights, missing_error, require_shapes

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


class HFAdapter(BaseAdapter):
    """Shared by causal and masked families: load with the family's concrete class, save as HF does."""

    family: ClassVar[HFFamily]

    def __init__(
        self,
        model: Any,
        config: Any,
        tokenizer: Any = None,
        *,
        architecture: str = "",
        source_metadata: dict[str, Any] | None = None,
        source_dir: Path | None = None,
    ) -> None:
        super().__init__(model, config, tokenizer)
        self.architecture = architecture
        self.source_metadata = source_metadata or {}
        self.source_dir = source_dir

    @classmethod
    def model_class(cls, model_type: str | None, where: str) -> Any:
        import transformers

        name = cls.family.model_classes.get(model_type or "")
        if name is None:
            raise FoundryError(
                f"{where}: model_type {model_type!r} is not handled by {cls.__name__}.",
                f"It loads: {', '.join(sorted(cls.family.model_classes))}. Re-import the model with "
                "`foundry import-model` so metadata.json names the right architecture.",
            )
        return getattr(transformers, name)

    @classmethod
    def load_checkpoint(cls, path: str | Path, device: str | torch.device = "cpu") -> HFAdapter:
        """Load the folder with the family's class; FoundryError if its weights lack a tensor the class needs.

        Without that check transformers would fill the gap with random values, different at every load.
        """
        path = Path(path)
        config, meta = read_model_info(path)
        from model_foundry.adapters.hf_weights import config_error

        model_cls = cls.model_class(config.get("model_type"), str(path))
        require_complete(path, model_cls)
        dtype_name = (meta.get("load") or {}).get("dtype", "float32")
        if dtype_name != "auto" and dtype_name not in TORCH_DTYPES:
            raise FoundryError(
                f"{path / METADATA_NAME}: load.dtype = {dtype_name!r} must be one of auto, "
                f"{', '.join(TORCH_DTYPES)}.",
                restore_hint(path / METADATA_NAME),
            )
        dtype = "auto" if dtype_name == "auto" else TORCH_DTYPES[dtype_name]
        try:
            model, info = model_cls.from_pretrained(
                str(path), dtype=dtype, local_files_only=True, output_loading_info=True
            )
        except Exception as e:  # noqa: BLE001 — transformers/huggingface_hub raise many types for a bad config
            raise config_error(path, model_cls, e) from None
        if info["missing_keys"]:  # the header check above already refuses this; never load random weights
            raise FoundryError(f"{path}: weights missing at load: {sorted(info['missing_keys'])[:8]}.")
        model.to(device)
        return cls(
            model,
            model.config,
            load_hf_tokenizer(path),
            architecture=meta.get("architecture", ""),
            source_metadata=meta,
            source_dir=path,
        )

    def get_config(self) -> dict[str, Any]:
        return self.config.to_dict()

    @property
    def max_context(self) -> int | None:
        n = getattr(self.config, "max_position_embeddings", None) or getattr(self.config, "n_positions", None)
        return None if n is None else n - self.family.context_offset

    def save_checkpoint(self, path: str | Path, metadata: dict[str, Any]) -> None:
        """Hugging Face layout (safetensors) + tokenizer + licence + metadata.json, written atomically."""
        meta = dict(metadata)
        for key in INHERITED_METADATA:  # a fine-tuned copy keeps its licence and origin
            if meta.get(key) is None and self.source_metadata.get(key) is not None:
                meta[key] = self.source_metadata[key]
        with atomic_dir(path) as tmp:
            self.model.save_pretrained(str(tmp))
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp))
            for name in INHERITED_FILES:
                if self.source_dir is not None and (self.source_dir / name).is_file():
                    shutil.copyfile(self.source_dir / name, tmp / name)
            weights = sorted(tmp.glob("*.safetensors"))
            dtype = str(next(self.model.parameters()).dtype).removeprefix("torch.")
            write_json(
                tmp / METADATA_NAME,
                {
                    **meta,
                    "architecture": self.architecture or meta.get("architecture"),
                    "parameters": self.num_parameters(),
                    "dtype": dtype,
                    "sha256": {w.name: sha256_file(w) for w in weights},
                },
                atomic=False,
            )

    # --- tokens --------------------------------------------------------------------------------------
    def stop_token_ids(self, eos_token_id: int | None = None) -> list[int]:
        """eos ids of the config and the tokenizer plus the family's stop tokens that the vocabulary has."""
        ids: list[int] = []
        for value in (eos_token_id, getattr(self.config, "eos_token_id", None)):
            ids += value if isinstance(value, list) else [value] if value is not None else []
        tok = self.tokenizer
        if tok is not None:
            if tok.eos_token_id is not None:
                ids.append(tok.eos_token_id)
            vocab = tok.get_vocab()
            ids += [vocab[t] for t in self.family.stop_tokens if t in vocab]
        return sorted(set(ids))


class HFCausalAdapter(HFAdapter):
    """Decoder-only causal LMs (Qwen, Llama, Mistral, GPT-2): next-token logits, generate, chat template."""

    def logits(self, input_ids: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=input_ids, use_cache=False).logits  # (B, T, V)

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
        """Hugging Face generate (KV cache); temperature 0 is greedy. (B, T) → (B, T + new)."""
        stop = self.stop_token_ids(eos_token_id)
        pad = getattr(self.tokenizer, "pad_token_id", None)
        pad = pad if pad is not None else (stop[0] if stop else 0)
        kwargs: dict[str, Any] = {"do_sample": temperature > 0, "top_k": top_k or None}
        if temperature > 0:
            kwargs["temperature"] = temperature
        else:  # greedy: clear sampling defaults a generation_config.json may carry
            kwargs.update(temperature=None, top_p=None, top_k=None)
        was_training = self.model.training
        self.model.eval()
        with torch.random.fork_rng(devices=[]):
            if generator is not None:
                torch.manual_seed(generator.initial_seed())
            out = self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                max_new_tokens=max_new_tokens,
                eos_token_id=stop or None,
                pad_token_id=pad,
                **kwargs,
            )
        self.model.train(was_training)
        return out

    def apply_chat_template(
        self, messages: list[dict[str, str]], add_generation_prompt: bool = True
    ) -> list[int]:
        """Token ids of a conversation in the model's chat format (the family's template if it has none)."""
        tok = self.tokenizer
        if tok is None:
            raise FoundryError("This model folder has no tokenizer, so it has no chat template.")
        template = tok.chat_template or self.family.chat_template
        if template is None:
            raise FoundryError(
                f"{self.architecture or type(self).__name__} has no chat template.",
                "Use a chat/instruct checkpoint, or prompt it with plain text.",
            )
        from model_foundry.data.encoding import encode_chat  # message contents are data, the markup is not

        return encode_chat(tok, messages, template, add_generation_prompt)
