"""Tiny but real model repos (random weights, trained tokenizers) to serve from the LocalHub.

Every repo is what ``save_pretrained`` writes for a real architecture, plus a ``README.md`` model card
with YAML front matter and a ``LICENSE``, so import code sees the same shapes of files as on the Hub, only a
few hundred KB big. Weights are seeded (``torch.manual_seed``) and tokenizers are trained on stdlib text
(``pydoc_data.topics``), so a build is deterministic and takes a few seconds.

``transformers``/``torch``/``tokenizers`` are imported inside the functions: importing this module must not
freeze the Hugging Face environment before ``start_session_hub`` has set it.
"""

from __future__ import annotations

import json
import shutil
import textwrap
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .server import dir_files

if TYPE_CHECKING:
    from .server import LocalHub

NAMESPACE = "localhub"
QWEN2 = f"{NAMESPACE}/tiny-qwen2"
QWEN3 = f"{NAMESPACE}/tiny-qwen3"
LLAMA = f"{NAMESPACE}/tiny-llama"
MISTRAL = f"{NAMESPACE}/tiny-mistral"
GPT2 = f"{NAMESPACE}/tiny-gpt2"
BERT = f"{NAMESPACE}/tiny-bert"
ROBERTA = f"{NAMESPACE}/tiny-roberta"
LLAMA_SHARDED = f"{NAMESPACE}/tiny-llama-sharded"
LLAMA_BIG = f"{NAMESPACE}/tiny-llama-big"  # single model.safetensors > 10 MiB (resume tests)
QWEN_V1_REMOTE = f"{NAMESPACE}/tiny-qwen-v1-remote-code"
GPT2_BIN = f"{NAMESPACE}/tiny-gpt2-bin"  # pytorch_model.bin (pickle) only
LLAMA_GATED = f"{NAMESPACE}/tiny-llama-gated"

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)

APACHE_LICENSE = """\
                                 Apache License
                           Version 2.0, January 2004
                        http://www.apache.org/licenses/

   (Abbreviated copy for a test fixture of Model Foundry; see the URL above for the full text.)

   Licensed under the Apache License, Version 2.0 (the "License");
   you may not use this file except in compliance with the License.
   Unless required by applicable law or agreed to in writing, software
   distributed under the License is distributed on an "AS IS" BASIS,
   WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
"""

MIT_LICENSE = """\
MIT License

Copyright (c) 2024 localhub test fixtures

Permission is hereby granted, free of charge, to any person obtaining a copy
of this software and associated documentation files (the "Software"), to deal
in the Software without restriction, including without limitation the rights
to use, copy, modify, merge, publish, distribute, sublicense, and/or sell
copies of the Software, and to permit persons to whom the Software is
furnished to do so, subject to the following conditions:

The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED.
"""

CUSTOM_LICENSE = """\
LOCALHUB TINY COMMUNITY LICENSE AGREEMENT

A made-up, non-standard license for the gated test fixture: use only in Model Foundry tests.
Redistribution requires accepting the conditions on the repository page.
"""


@dataclass(frozen=True)
class RepoSpec:
    """How to build one fixture repo and how to publish it."""

    repo_id: str
    builder: Callable[[Path], dict[str, Path]]
    license: str = "apache-2.0"
    license_name: str | None = None
    gated: bool = False
    pipeline_tag: str = "text-generation"

    @property
    def dirname(self) -> str:
        return self.repo_id.replace("/", "--")


# ------------------------------------------------------------------------------------------ tokenizers


def _corpus() -> list[str]:
    from pydoc_data.topics import topics

    return [topics[key] for key in sorted(topics)]


def train_bpe_tokenizer(special_tokens: list[str], vocab_size: int = 512) -> Any:
    """Byte-level BPE (GPT-2/Llama/Qwen style) trained on the stdlib's pydoc topics."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special_tokens,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(), trainer)
    return tok


def train_wordpiece_tokenizer(vocab_size: int = 512) -> Any:
    """BERT-style uncased WordPiece with [CLS] ... [SEP] post-processing."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.decoder = decoders.WordPiece()
    trainer = trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
    tok.train_from_iterator(_corpus(), trainer)
    # The trainer numbers the "##x" alphabet in hash-map order: renumber canonically for reproducible files.
    rest = sorted(t for t in tok.get_vocab() if t not in specials)
    tok.model = models.WordPiece(
        vocab={t: i for i, t in enumerate(specials + rest)}, unk_token="[UNK]", continuing_subword_prefix="##"
    )
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return tok


def train_roberta_tokenizer(vocab_size: int = 512) -> Any:
    """RoBERTa-style byte-level BPE: <s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4; `<s> $A </s>` around text."""
    from tokenizers import processors

    tok = train_bpe_tokenizer(["<s>", "<pad>", "</s>", "<unk>", "<mask>"], vocab_size)
    tok.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0), trim_offsets=True)
    return tok


def _fast_tokenizer(tok: Any, **special: str | None) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(tokenizer_object=tok, model_max_length=256, **special)


def _bpe(kind: str, vocab_size: int = 512) -> Any:
    """Wrapped BPE tokenizer with the special tokens of the family (qwen, llama, gpt2)."""
    if kind == "qwen":
        tok = train_bpe_tokenizer(["<|endoftext|>", "<|im_start|>", "<|im_end|>"], vocab_size)
        fast = _fast_tokenizer(tok, eos_token="<|im_end|>", pad_token="<|endoftext|>")
        fast.chat_template = CHATML_TEMPLATE
        return fast
    if kind == "llama":
        tok = train_bpe_tokenizer(["<unk>", "<s>", "</s>"], vocab_size)
        return _fast_tokenizer(tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok = train_bpe_tokenizer(["<|endoftext|>"], vocab_size)
    return _fast_tokenizer(
        tok, bos_token="<|endoftext|>", eos_token="<|endoftext|>", unk_token="<|endoftext|>"
    )


# ------------------------------------------------------------------------------------------ model builders


def _save(model: Any, tokenizer: Any, out: Path, **save_kwargs: Any) -> dict[str, Path]:
    model.save_pretrained(out, **save_kwargs)
    tokenizer.save_pretrained(out)
    return dir_files(out)


def build_qwen2(out: Path) -> dict[str, Path]:
    """Qwen2ForCausalLM with a ChatML chat template (tied embeddings, like the small Qwen2 models)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    tok = _bpe("qwen")
    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    return _save(Qwen2ForCausalLM(config), tok, out)


def build_qwen3(out: Path) -> dict[str, Path]:
    import torch
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = _bpe("qwen")
    torch.manual_seed(1)
    config = Qwen3Config(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=256,
        tie_word_embeddings=True,
        bos_token_id=tok.convert_tokens_to_ids("<|endoftext|>"), eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    return _save(Qwen3ForCausalLM(config), tok, out)


def _llama(
    out: Path, *, seed: int, hidden: int = 64, intermediate: int = 128, **save_kwargs: Any
) -> dict[str, Path]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tok = _bpe("llama")
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    return _save(LlamaForCausalLM(config), tok, out, **save_kwargs)


def build_llama(out: Path) -> dict[str, Path]:
    return _llama(out, seed=2)


def build_mistral(out: Path) -> dict[str, Path]:
    """MistralForCausalLM with untied output embeddings, as Mistral-7B (no sliding window, as v0.3)."""
    import torch
    from transformers import MistralConfig, MistralForCausalLM

    tok = _bpe("llama")  # Mistral's specials are Llama 2's: <unk>, <s>, </s>
    torch.manual_seed(10)
    config = MistralConfig(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256, sliding_window=None,
        tie_word_embeddings=False, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    return _save(MistralForCausalLM(config), tok, out)


def build_llama_sharded(out: Path) -> dict[str, Path]:
    """Several ``model-0000k-of-0000n.safetensors`` shards plus ``model.safetensors.index.json``."""
    return _llama(out, seed=3, max_shard_size="200KB")


def build_llama_big(out: Path) -> dict[str, Path]:
    """One ``model.safetensors`` of ~14 MiB: above the client's 10 MiB write chunk, so a resume is visible."""
    return _llama(out, seed=4, hidden=384, intermediate=1024)


def build_llama_gated(out: Path) -> dict[str, Path]:
    return _llama(out, seed=5)


def build_gpt2(out: Path) -> dict[str, Path]:
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _bpe("gpt2")
    torch.manual_seed(6)
    config = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=4,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    return _save(GPT2LMHeadModel(config), tok, out)


def build_gpt2_bin(out: Path) -> dict[str, Path]:
    """Legacy repo: weights only as a pickled ``pytorch_model.bin`` (transformers 5 writes safetensors)."""
    import torch
    from transformers import GenerationConfig, GPT2Config, GPT2LMHeadModel

    tok = _bpe("gpt2")
    torch.manual_seed(7)
    config = GPT2Config(
        vocab_size=len(tok), n_positions=256, n_embd=64, n_layer=2, n_head=4,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, architectures=["GPT2LMHeadModel"],
    )  # fmt: skip
    model = GPT2LMHeadModel(config)
    out.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(out)
    GenerationConfig.from_model_config(config).save_pretrained(out)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    torch.save(state, out / "pytorch_model.bin")
    tok.save_pretrained(out)
    return dir_files(out)


def build_bert(out: Path) -> dict[str, Path]:
    import torch
    from transformers import BertConfig, BertForMaskedLM

    tok = _fast_tokenizer(
        train_wordpiece_tokenizer(),
        unk_token="[UNK]", sep_token="[SEP]", pad_token="[PAD]", cls_token="[CLS]", mask_token="[MASK]",
    )  # fmt: skip
    torch.manual_seed(8)
    config = BertConfig(
        vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=256, pad_token_id=tok.pad_token_id,
    )  # fmt: skip
    return _save(BertForMaskedLM(config), tok, out)


def build_roberta(out: Path) -> dict[str, Path]:
    """RobertaForMaskedLM: pad_token_id 1, so positions start at 2 and 258 position embeddings hold 256
    tokens (roberta-base: 514 for 512); one token type, as roberta-base."""
    import torch
    from transformers import RobertaConfig, RobertaForMaskedLM

    tok = _fast_tokenizer(
        train_roberta_tokenizer(),
        bos_token="<s>", eos_token="</s>", sep_token="</s>", cls_token="<s>", unk_token="<unk>",
        pad_token="<pad>", mask_token="<mask>",
    )  # fmt: skip
    torch.manual_seed(11)
    config = RobertaConfig(
        vocab_size=len(tok), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=128, max_position_embeddings=258, type_vocab_size=1,
        pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
    )  # fmt: skip
    return _save(RobertaForMaskedLM(config), tok, out)


QWEN_V1_CONFIGURATION = '''\
"""Minimal Qwen (v1) configuration, in the style of the original remote code (fixture)."""
from transformers import PretrainedConfig


class QWenConfig(PretrainedConfig):
    model_type = "qwen"
    keys_to_ignore_at_inference = ["past_key_values"]

    def __init__(self, vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=256, seq_length=256, layer_norm_epsilon=1e-6, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.intermediate_size = intermediate_size
        self.seq_length = seq_length
        self.layer_norm_epsilon = layer_norm_epsilon
        kwargs.setdefault("tie_word_embeddings", False)
        super().__init__(**kwargs)
'''

QWEN_V1_MODELING = '''\
"""Minimal Qwen (v1) causal LM with the original parameter names (fixture; no rotary, no cache)."""
import torch
from torch import nn
from transformers import PreTrainedModel
from transformers.modeling_outputs import CausalLMOutput

from .configuration_qwen import QWenConfig


class QWenBlock(nn.Module):
    def __init__(self, config):
        super().__init__()
        h, self.n_head = config.hidden_size, config.num_attention_heads
        self.ln_1 = nn.RMSNorm(h, eps=config.layer_norm_epsilon)
        self.attn = nn.Module()
        self.attn.c_attn = nn.Linear(h, 3 * h)
        self.attn.c_proj = nn.Linear(h, h, bias=False)
        self.ln_2 = nn.RMSNorm(h, eps=config.layer_norm_epsilon)
        self.mlp = nn.Module()
        self.mlp.w1 = nn.Linear(h, config.intermediate_size // 2, bias=False)
        self.mlp.w2 = nn.Linear(h, config.intermediate_size // 2, bias=False)
        self.mlp.c_proj = nn.Linear(config.intermediate_size // 2, h, bias=False)

    def forward(self, x):
        b, t, h = x.shape
        q, k, v = self.attn.c_attn(self.ln_1(x)).split(h, dim=-1)
        q, k, v = (z.view(b, t, self.n_head, -1).transpose(1, 2) for z in (q, k, v))
        a = nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        x = x + self.attn.c_proj(a.transpose(1, 2).reshape(b, t, h))
        y = self.ln_2(x)
        return x + self.mlp.c_proj(self.mlp.w1(y) * nn.functional.silu(self.mlp.w2(y)))


class QWenPreTrainedModel(PreTrainedModel):
    config_class = QWenConfig
    base_model_prefix = "transformer"


class QWenLMHeadModel(QWenPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.transformer = nn.Module()
        self.transformer.wte = nn.Embedding(config.vocab_size, config.hidden_size)
        self.transformer.h = nn.ModuleList(QWenBlock(config) for _ in range(config.num_hidden_layers))
        self.transformer.ln_f = nn.RMSNorm(config.hidden_size, eps=config.layer_norm_epsilon)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids, attention_mask=None, labels=None, **kwargs):
        x = self.transformer.wte(input_ids)
        for block in self.transformer.h:
            x = block(x)
        logits = self.lm_head(self.transformer.ln_f(x))
        loss = None
        if labels is not None:
            loss = nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.size(-1)), labels[:, 1:].reshape(-1), ignore_index=-100
            )
        return CausalLMOutput(loss=loss, logits=logits)
'''


def build_qwen_v1_remote_code(out: Path) -> dict[str, Path]:
    """Qwen v1 layout: ``model_type: qwen`` + ``auto_map`` to repo-local code (needs ``trust_remote_code``).

    The tokenizer is a plain tokenizer.json (the original shipped tiktoken remote code, not reproduced here).
    """
    import torch
    from safetensors.torch import save_file

    tok = _bpe("qwen")
    out.mkdir(parents=True, exist_ok=True)
    hidden, inter, layers, vocab = 64, 256, 2, len(tok)
    config = {
        "architectures": ["QWenLMHeadModel"],
        "auto_map": {
            "AutoConfig": "configuration_qwen.QWenConfig",
            "AutoModelForCausalLM": "modeling_qwen.QWenLMHeadModel",
        },
        "model_type": "qwen",
        "vocab_size": vocab,
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": 4,
        "kv_channels": hidden // 4,
        "seq_length": 256,
        "layer_norm_epsilon": 1e-6,
        "rotary_emb_base": 10000,
        "no_bias": True,
        "bf16": False,
        "fp16": False,
        "fp32": True,
        "tie_word_embeddings": False,
        "eos_token_id": tok.eos_token_id,
        "torch_dtype": "float32",
        "transformers_version": "4.32.0",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "configuration_qwen.py").write_text(QWEN_V1_CONFIGURATION)
    (out / "modeling_qwen.py").write_text(QWEN_V1_MODELING)
    (out / "generation_config.json").write_text(
        json.dumps({"eos_token_id": tok.eos_token_id, "max_new_tokens": 32}, indent=2) + "\n"
    )
    g = torch.Generator().manual_seed(9)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * 0.02

    tensors = {"transformer.wte.weight": rand(vocab, hidden), "transformer.ln_f.weight": torch.ones(hidden)}
    for i in range(layers):
        p = f"transformer.h.{i}."
        tensors.update(
            {
                p + "ln_1.weight": torch.ones(hidden),
                p + "attn.c_attn.weight": rand(3 * hidden, hidden),
                p + "attn.c_attn.bias": torch.zeros(3 * hidden),
                p + "attn.c_proj.weight": rand(hidden, hidden),
                p + "ln_2.weight": torch.ones(hidden),
                p + "mlp.w1.weight": rand(inter // 2, hidden),
                p + "mlp.w2.weight": rand(inter // 2, hidden),
                p + "mlp.c_proj.weight": rand(hidden, inter // 2),
            }
        )
    tensors["lm_head.weight"] = rand(vocab, hidden)
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    tok.save_pretrained(out)
    return dir_files(out)


# ------------------------------------------------------------------------------------------ cards, registry


SPECS: dict[str, RepoSpec] = {
    spec.repo_id: spec
    for spec in (
        RepoSpec(QWEN2, build_qwen2),
        RepoSpec(QWEN3, build_qwen3),
        RepoSpec(LLAMA, build_llama),
        RepoSpec(MISTRAL, build_mistral),
        RepoSpec(GPT2, build_gpt2, license="mit"),
        RepoSpec(BERT, build_bert, pipeline_tag="fill-mask"),
        RepoSpec(ROBERTA, build_roberta, license="mit", pipeline_tag="fill-mask"),
        RepoSpec(LLAMA_SHARDED, build_llama_sharded),
        RepoSpec(LLAMA_BIG, build_llama_big),
        RepoSpec(QWEN_V1_REMOTE, build_qwen_v1_remote_code),
        RepoSpec(GPT2_BIN, build_gpt2_bin, license="mit"),
        RepoSpec(
            LLAMA_GATED,
            build_llama_gated,
            license="other",
            license_name="localhub-tiny-community",
            gated=True,
        ),
    )
}

# The fixture repo of every Hub family (a row of adapters/hf/families.py, by registry name): the contract
# and parity tests import these; tests/adapters/test_families.py fails for a row without one.
FAMILY_FIXTURES: dict[str, str] = {
    "hf-qwen2": QWEN2,
    "hf-qwen3": QWEN3,
    "hf-llama": LLAMA,
    "hf-mistral": MISTRAL,
    "hf-gpt2": GPT2,
    "hf-bert": BERT,
    "hf-roberta": ROBERTA,
}

GATED_REPOS = frozenset(spec.repo_id for spec in SPECS.values() if spec.gated)


def model_card(spec: RepoSpec) -> str:
    """README.md with the YAML front matter the Hub turns into ``cardData``."""
    lines = ["---", f"license: {spec.license}"]
    if spec.license_name:
        lines += [f"license_name: {spec.license_name}", "license_link: LICENSE"]
    lines += [
        "library_name: transformers",
        f"pipeline_tag: {spec.pipeline_tag}",
        "tags:",
        "- localhub",
        "- tiny",
    ]
    if spec.gated:
        lines += ["extra_gated_prompt: You agree to use this model only in tests."]
    lines += ["---", ""]
    body = f"""\
        # {spec.repo_id.split("/")[-1]}

        Tiny randomly initialised model generated by `tests/localhub/repos.py` for Model Foundry tests.
        It produces gibberish; it exists to exercise download, import and loading code paths offline.
        """
    return "\n".join(lines) + "\n" + textwrap.dedent(body)


def license_text(spec: RepoSpec) -> str:
    return {"apache-2.0": APACHE_LICENSE, "mit": MIT_LICENSE}.get(spec.license, CUSTOM_LICENSE)


def build_repo(spec: RepoSpec, out: Path) -> dict[str, Path]:
    """Build one repo into ``out`` (replaced) and return its files for ``LocalHub.add_repo``."""
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    spec.builder(out)
    (out / "README.md").write_text(model_card(spec))
    (out / "LICENSE").write_text(license_text(spec))
    return dir_files(out)


_BUILT: dict[Path, dict[str, Path]] = {}


def build_all(tmp_dir: Path | str) -> dict[str, Path]:
    """Build every fixture repo under ``tmp_dir`` once (reused if already complete); repo_id -> directory."""
    tmp_dir = Path(tmp_dir).resolve()
    if tmp_dir in _BUILT:
        return dict(_BUILT[tmp_dir])
    tmp_dir.mkdir(parents=True, exist_ok=True)
    built: dict[str, Path] = {}
    for spec in SPECS.values():
        out = tmp_dir / spec.dirname
        marker = tmp_dir / f"{spec.dirname}.complete"
        if not marker.exists() or not out.is_dir():
            marker.unlink(missing_ok=True)
            build_repo(spec, out)
            marker.write_text("ok\n")
        built[spec.repo_id] = out
    _BUILT[tmp_dir] = built
    return dict(built)


def publish_all(hub: LocalHub, built: dict[str, Path]) -> dict[str, str]:
    """Add every built repo to ``hub`` on branch main (gated ones gated); repo_id -> commit sha."""
    return {
        repo_id: hub.add_repo(repo_id, dir_files(path), gated=repo_id in GATED_REPOS)
        for repo_id, path in built.items()
    }
