"""The Hugging Face families Model Foundry imports: ONE table, torch-free.

Each row is data, citing the Hub config it was read from. Everything else is derived from this table: the
registry entries (`adapters/__init__.py`), the `model_type` → entry map the importer uses (`hub/validate.py`),
the list of supported families in errors and `foundry import-model --help` (`supported_families`), and the
README's table (`families_markdown`; tests/core/test_docs.py keeps it equal). Adding a family is one row here
plus one tiny fixture repo in `tests/localhub/repos.py` (`FAMILY_FIXTURES`): tests/adapters/test_families.py
fails for a row without one and checks the row against transformers; the contract and parity tests then
import the fixture, train, save, reload and compare it with transformers.

The model is always loaded with the row's concrete transformers class, never through `auto_map`, so
repository code is never run (no `trust_remote_code`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from model_foundry.errors import FoundryError
from model_foundry.schema import rule

if TYPE_CHECKING:  # type-only: the spec names its family, the table never needs the spec at runtime
    from model_foundry.adapters.spec import ArchitectureSpec

# ChatML, as the Qwen instruct models use it; base checkpoints often ship no template of their own.
# Source: https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/blob/main/tokenizer_config.json (chat_template,
# without its tool-calling branches).
CHATML = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_SOURCE = "https://huggingface.co/Qwen/Qwen2.5-0.5B-Instruct/blob/main/tokenizer_config.json"

# ChatML as Qwen3 uses it: no default system prompt. Source: the chat_template of
# https://huggingface.co/Qwen/Qwen3-0.6B/blob/main/tokenizer_config.json, without its tool-calling and
# thinking (`<think>`) branches.
CHATML_QWEN3 = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
CHATML_QWEN3_SOURCE = "https://huggingface.co/Qwen/Qwen3-0.6B/blob/main/tokenizer_config.json"

# Attention and MLP projections of the Llama layout (Qwen2/3, Llama, Mistral share the names).
LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")

Objective = Literal["causal_lm", "masked_lm"]


@dataclass(frozen=True)
class HFFamily:
    """One Hugging Face family — what differs between families, as data.

    model_type:     config.json `model_type` this row imports (exact match, no prefixes).
    name:           the registry entry (`architecture:` in metadata.json), e.g. "hf-qwen2".
    model_class:    the transformers class that loads it (never `auto_map` code).
    objective:      causal_lm or masked_lm; picks the adapter (hf/causal.py or hf/masked.py).
    note:           what checkpoints the row covers, shown in listings and errors.
    source:         the Hub config.json the row's values were read from.
    stop_tokens:    generation also stops on these tokens when the tokenizer has them (chat turn ends).
    chat_template:  used when the tokenizer ships none (Jinja, as in tokenizer_config.json), with its source.
    tied_keys:      checkpoint names that alias another tensor (output embeddings; the keys of transformers'
                    `_tied_weights_keys`); dropped when a pickle checkpoint is converted, because
                    transformers re-ties them on load.
    ignored_keys:   suffixes of legacy buffers found in old pickle checkpoints (not weights).
    context_offset: positions the model reserves: max_context = max_position_embeddings - context_offset
                    (RoBERTa numbers positions from padding_idx + 1 = 2).
    lora_targets:   default LoRA target modules (peft `target_modules`).
    lora_fan_in_fan_out: the targets are Conv1D, stored (in, out) (GPT-2 layouts): peft needs fan_in_fan_out.
    decoder:        the batched decode loop of generation (`generation/scheduler.py` DECODERS: "llama" for
                    the Llama-shaped layouts); None: the adapter's prefill/decode, row by row.
    """

    model_type: str
    name: str
    model_class: str
    objective: Objective
    note: str
    source: str
    stop_tokens: tuple[str, ...] = ()
    chat_template: str | None = None
    chat_template_source: str | None = None
    tied_keys: tuple[str, ...] = ("lm_head.weight",)
    ignored_keys: tuple[str, ...] = ()
    context_offset: int = 0
    lora_targets: tuple[str, ...] = ()
    lora_fan_in_fan_out: bool = False
    decoder: str | None = None

    @property
    def adapter(self) -> str:
        """The adapter class ("module:Class") of the row's objective."""
        return ADAPTERS[self.objective]


ADAPTERS: dict[str, str] = {
    "causal_lm": "model_foundry.adapters.hf.causal:HFCausalAdapter",
    "masked_lm": "model_foundry.adapters.hf.masked:HFMaskedAdapter",
}

FAMILIES: tuple[HFFamily, ...] = (
    HFFamily(
        model_type="qwen2",
        name="hf-qwen2",
        model_class="Qwen2ForCausalLM",
        objective="causal_lm",
        note="Qwen1.5, Qwen2, Qwen2.5, QwQ, Qwen2.5-Coder",
        source="https://huggingface.co/Qwen/Qwen2.5-0.5B/blob/main/config.json",
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        chat_template=CHATML,
        chat_template_source=CHATML_SOURCE,
        lora_targets=LLAMA_LORA_TARGETS,
        decoder="llama",
    ),
    HFFamily(
        model_type="qwen3",
        name="hf-qwen3",
        model_class="Qwen3ForCausalLM",
        objective="causal_lm",
        note="Qwen3",
        source="https://huggingface.co/Qwen/Qwen3-0.6B/blob/main/config.json",
        stop_tokens=("<|im_end|>", "<|endoftext|>"),
        chat_template=CHATML_QWEN3,
        chat_template_source=CHATML_QWEN3_SOURCE,
        lora_targets=LLAMA_LORA_TARGETS,
        decoder="llama",
    ),
    HFFamily(
        model_type="llama",
        name="hf-llama",
        model_class="LlamaForCausalLM",
        objective="causal_lm",
        note="Llama 2/3 and Llama-architecture models",
        source="https://huggingface.co/meta-llama/Llama-3.2-1B/blob/main/config.json",
        # Llama 3 turn end, tool-call end and text end (the eos ids of Llama-3.2-1B-Instruct's
        # generation_config.json), and Llama 2's eos.
        stop_tokens=("<|eot_id|>", "<|eom_id|>", "<|end_of_text|>", "</s>"),
        lora_targets=LLAMA_LORA_TARGETS,
        decoder="llama",
    ),
    HFFamily(
        model_type="mistral",
        name="hf-mistral",
        model_class="MistralForCausalLM",
        objective="causal_lm",
        note="Mistral",
        source="https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json",
        stop_tokens=("</s>",),
        lora_targets=LLAMA_LORA_TARGETS,
        decoder="llama",
    ),
    HFFamily(
        model_type="gpt2",
        name="hf-gpt2",
        model_class="GPT2LMHeadModel",
        objective="causal_lm",
        note="GPT-2",
        source="https://huggingface.co/openai-community/gpt2/blob/main/config.json",
        stop_tokens=("<|endoftext|>",),
        # causal-mask buffers of old pickles (transformers 5 has none; its GPT2LMHeadModel ignores
        # `attn.bias` and `crossattention.bias` on load, and `attn.masked_bias` is in pre-4.x pickles)
        ignored_keys=(".attn.bias", ".attn.masked_bias", ".crossattention.bias"),
        lora_targets=("c_attn", "c_proj", "c_fc"),
        lora_fan_in_fan_out=True,
    ),
    HFFamily(
        model_type="bert",
        name="hf-bert",
        model_class="BertForMaskedLM",
        objective="masked_lm",
        note="BERT, masked LM",
        source="https://huggingface.co/google-bert/bert-base-uncased/blob/main/config.json",
        tied_keys=("cls.predictions.decoder.weight", "cls.predictions.decoder.bias"),
        lora_targets=("query", "value"),
    ),
    HFFamily(
        model_type="roberta",
        name="hf-roberta",
        model_class="RobertaForMaskedLM",
        objective="masked_lm",
        note="RoBERTa, masked LM",
        source="https://huggingface.co/FacebookAI/roberta-base/blob/main/config.json",
        tied_keys=("lm_head.decoder.weight", "lm_head.decoder.bias"),
        # positions run from padding_idx + 1 (pad_token_id 1 in RoBERTa checkpoints): 514 position
        # embeddings hold 512 tokens (transformers' RobertaEmbeddings.create_position_ids_from_input_ids)
        context_offset=2,
        lora_targets=("query", "value"),
    ),
)

# config.json `model_type` → its row (exact lookups).
BY_MODEL_TYPE: dict[str, HFFamily] = {f.model_type: f for f in FAMILIES}


def family_of(spec: ArchitectureSpec) -> HFFamily:
    """The family row of a Hub entry's spec (every `hf-*` registry entry has one); FoundryError otherwise."""
    if spec.family is None:
        raise FoundryError(f"{spec.name} is not a Hugging Face family.")
    return spec.family


def model_class(family: HFFamily, model_type: str | None, where: str) -> Any:
    """The transformers class of `family` (imports transformers); FoundryError when config.json's model_type
    belongs to another family (the folder's metadata.json names the wrong architecture)."""
    import transformers

    if model_type != family.model_type:
        raise FoundryError(
            f"{where}: model_type {model_type!r} is not handled by {family.name} ({family.model_type}).",
            "Re-import the model with `foundry import-model` so metadata.json names the right architecture.",
        )
    return getattr(transformers, family.model_class)


def supported_families() -> str:
    """ "qwen2 (Qwen1.5, Qwen2, …), qwen3 (Qwen3), …": the list errors and `import-model --help` show."""
    return ", ".join(f"{f.model_type} ({f.note})" for f in FAMILIES)


def source_repo(family: HFFamily) -> str:
    """The Hub repo id of the row's source URL: "Qwen/Qwen2.5-0.5B" for …/Qwen/Qwen2.5-0.5B/blob/main/…"""
    return family.source.removeprefix("https://huggingface.co/").split("/blob/", 1)[0]


def families_markdown() -> str:
    """The README's "Supported families" table, one line per row of FAMILIES (tests/core/test_docs.py checks
    that the README holds exactly this text). Ends with a newline."""
    lines = [
        "| `model_type` in config.json | checkpoints | registry architecture | transformers class "
        "| objective | values read from |",
        "|---|---|---|---|---|---|",
    ]
    for f in FAMILIES:
        lines.append(
            f"| `{f.model_type}` | {f.note} | `{f.name}` | `{f.model_class}` | {f.objective} "
            f"| [{source_repo(f)}]({f.source}) |"
        )
    return "\n".join(lines) + "\n"


@dataclass
class HFModelConfig:
    """What a catalog entry of an imported family may set; the architecture itself comes from config.json."""

    dtype: Literal["float32", "bfloat16", "float16", "auto"] = rule(
        "float32", doc="dtype the weights are loaded in for training/evaluation ('auto': as stored)"
    )
