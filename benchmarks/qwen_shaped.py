"""The ~100M-parameter Qwen2-shaped model of the generation benchmarks (issue 12: "hidden 768, 12 layers").

12 layers, hidden 768, 12 query heads and 4 KV heads (head dim 64), SwiGLU 2048, a 32,000-token vocabulary
with tied embeddings: 100.1M parameters, 400 MB in fp32. Random weights (seeded): speed does not depend on
the values. The tokenizer is a word-level one over the 32,000 strings "w0" … "w31999" (no merges), so every
id decodes to a word and a prompt of N words is N tokens.

    model = build_model()                          # transformers Qwen2ForCausalLM, eval mode, fp32
    adapter = as_adapter(model)                    # the project's HFCausalAdapter over it (hf-qwen2)
    folder = save_folder(Path("/tmp/qwen-100m"))   # a canonical model folder (config, weights, tokenizer)
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch

CONFIG = dict(
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    num_key_value_heads=4,
    intermediate_size=2048,
    vocab_size=32000,
    tie_word_embeddings=True,
    max_position_embeddings=2048,
)


def machine_line() -> str:
    """The CPU, cores, threads, torch, and whether bf16 is native (AVX512-BF16 or AMX): figures depend on
    them."""
    from model_foundry.training.device import cpu_has_fast_bf16

    return (
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}, cpu_capability "
        f"{torch.backends.cpu.get_cpu_capability()}, native bf16: {cpu_has_fast_bf16()}"
    )


def build_model(seed: int = 0) -> Any:
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(**CONFIG)).eval()


def build_tokenizer() -> Any:
    """A word-level fast tokenizer over "w0" … "w31999" (whitespace-split, decoded with spaces)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(CONFIG["vocab_size"])}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="w0")


def build_bpe_tokenizer() -> Any:
    """A byte-level BPE (Qwen/GPT-2 style) trained on the stdlib's pydoc topics, up to 32,000 tokens."""
    from pydoc_data.topics import topics

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=CONFIG["vocab_size"], special_tokens=["<|endoftext|>"], initial_alphabet=alphabet,
        show_progress=False,
    )  # fmt: skip
    tok.train_from_iterator([topics[k] for k in sorted(topics)], trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def as_adapter(model: Any) -> Any:
    """The project's adapter (registry entry hf-qwen2) over `model`, with the word-level tokenizer."""
    from model_foundry.adapters import get_spec

    spec = get_spec("hf-qwen2")
    return spec.adapter_cls()(model, model.config, spec, build_tokenizer())


def save_folder(folder: Path, seed: int = 0, dtype: str = "float32") -> Path:
    """Write the model as a canonical model folder (through the adapter's save path) unless it is there, with
    its weights in `dtype` ("float32" or "bfloat16"; metadata.json `load.dtype` says to load them so)."""
    from model_foundry.model_folder import model_metadata

    if not (folder / "metadata.json").is_file():
        adapter = as_adapter(build_model(seed).to(getattr(torch, dtype)))
        adapter.tokenizer = build_bpe_tokenizer()
        metadata = model_metadata(folder.name, "hf-qwen2", "scratch")
        metadata["load"] = {"dtype": dtype}
        adapter.save_checkpoint(folder, metadata)
    return folder


def prompt_ids(length: int, seed: int) -> list[int]:
    """`length` random token ids (a prompt), reproducible from `seed`."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, CONFIG["vocab_size"], (length,), generator=generator).tolist()


def prompt_text(length: int, seed: int, tokenizer: Any = None) -> str:
    """A prompt as text: `length` random tokens of `tokenizer` decoded (None: the word-level tokenizer's
    words, exactly `length` tokens; a BPE's text may re-encode to a few more or fewer)."""
    if tokenizer is None:
        return " ".join(f"w{i}" for i in prompt_ids(length, seed))
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(1, len(tokenizer), (length,), generator=generator).tolist()
    return str(tokenizer.decode(ids))
