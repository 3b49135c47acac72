"""params.yaml → typed, validated config objects. The one place errors about params are raised."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from model_foundry.adapters import get_spec
from model_foundry.adapters.spec import ArchitectureSpec
from model_foundry.errors import FoundryError
from model_foundry.schema import build, rule

BUILTIN_CORPUS = "builtin:pydoc_topics"


@dataclass
class DataConfig:
    source: str | list[str] = rule(
        BUILTIN_CORPUS, doc=f"'{BUILTIN_CORPUS}' (shipped with Python), or .txt/.jsonl files or folders"
    )
    text_field: str = rule("text", doc="the field holding the text in .jsonl records")
    val_fraction: float = rule(0.1, gt=0.0, lt=1.0, doc="share of documents held out for validation")
    seed: int = rule(1337, doc="seed of the document shuffle before the split")


@dataclass
class TokenizerConfig:
    type: Literal["bpe", "wordpiece", "unigram", "char"] = rule(
        "bpe", doc="tokenizer trained for scratch models (imported models keep their own)"
    )
    vocab_size: int = rule(4096, ge=1, doc="target vocabulary size (char: an upper bound)")
    min_frequency: int = rule(2, ge=1, doc="merges/pieces seen fewer times are dropped")


@dataclass
class TrainConfig:
    objective: Literal["causal_lm", "masked_lm"] = rule(
        "causal_lm", doc="next-token or masked-token prediction"
    )
    mlm_probability: float = rule(0.15, gt=0.0, lt=1.0, doc="masked_lm: share of tokens masked (80/10/10)")
    steps: int = rule(1000, ge=1, doc="optimizer steps")
    batch_size: int = rule(16, ge=1, doc="sequences per micro-batch")
    block_size: int = rule(128, ge=2, doc="tokens per training sequence")
    grad_accum: int = rule(1, ge=1, doc="micro-batches per optimizer step")
    lr: float = rule(1e-3, gt=0.0, doc="peak learning rate")
    min_lr_ratio: float = rule(0.1, ge=0.0, le=1.0, doc="cosine decay ends at lr * min_lr_ratio")
    warmup_steps: int = rule(100, ge=0, doc="linear warmup steps")
    weight_decay: float = rule(0.1, ge=0.0, doc="AdamW decay on matrices (not biases, norms)")
    beta1: float = rule(0.9, ge=0.0, lt=1.0)
    beta2: float = rule(0.99, ge=0.0, lt=1.0)
    grad_clip: float = rule(1.0, ge=0.0, doc="max gradient norm; 0 disables clipping")
    eval_interval: int = rule(250, ge=1, doc="steps between validation passes")
    eval_batches: int = rule(20, ge=1, doc="batches per periodic validation pass")
    log_interval: int = rule(10, ge=1, doc="steps between loss/lr/tokens-per-s logs")
    seed: int = rule(1337, doc="seeds init, batches and masking")
    threads: int = rule(0, ge=0, doc="torch CPU threads; 0 = all cores")
    device: Literal["auto", "cpu", "cuda", "mps"] = rule("auto", doc="auto: CUDA, then MPS, then CPU")
    precision: Literal["auto", "fp32", "bf16"] = rule(
        "auto", doc="auto: bf16 autocast where the hardware is fast"
    )
    compile: bool = rule(False, doc="torch.compile the model (pays off on long runs)")


@dataclass
class EvaluateConfig:
    batch_size: int = rule(16, ge=1, doc="sequences per evaluation batch")
    max_batches: int = rule(200, ge=1, doc="cap on validation batches (the whole split when smaller)")
    pseudo_ppl_sequences: int = rule(16, ge=1, doc="masked_lm: sequences scored for pseudo-perplexity")


# Catalog keys that describe where a model comes from; everything else in an entry is architecture config.
ENTRY_KEYS = ("architecture", "source", "revision", "license_accepted", "tokenizer_override", "description")
# Sections an entry may override for itself (a masked-LM entry sets `train: {objective: masked_lm}`), so
# `dvc exp run -S model_name=<entry>` alone switches objective and tokenizer with the model.
OVERRIDABLE = ("tokenizer", "train", "evaluate")


@dataclass
class ModelEntry:
    name: str
    architecture: str
    spec: ArchitectureSpec
    arch: Any  # the architecture's config dataclass, validated
    source: str = "scratch"
    revision: str | None = None
    license_accepted: bool = False
    tokenizer_override: str | None = None
    description: str = ""

    @property
    def is_scratch(self) -> bool:
        return self.source == "scratch"


@dataclass
class Params:
    model_name: str
    model: ModelEntry
    data: DataConfig
    tokenizer: TokenizerConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    catalog: dict[str, dict]

    def flat(self) -> dict[str, Any]:
        """Flattened sections for MLflow (`train.lr`, `model.n_layer`, ...)."""
        out: dict[str, Any] = {"model_name": self.model_name, "architecture": self.model.architecture}
        out["source"] = self.model.source
        for section in ("data", "tokenizer", "train", "evaluate"):
            for k, v in dataclasses.asdict(getattr(self, section)).items():
                out[f"{section}.{k}"] = v
        for k, v in dataclasses.asdict(self.model.arch).items():
            out[f"model.{k}"] = v
        return out


def parse_entry(name: str, raw: Any) -> ModelEntry:
    where = f"models.{name}"
    if not isinstance(raw, dict):
        raise FoundryError(f"{where} must be a mapping with at least `architecture:`.")
    try:
        spec = get_spec(raw.get("architecture"))
    except FoundryError as e:
        raise FoundryError(f"{where}: {e.message}", e.hint) from None
    arch_raw = {k: v for k, v in raw.items() if k not in ENTRY_KEYS + OVERRIDABLE}
    arch = build(spec.config_cls, arch_raw, where)
    source = raw.get("source", "scratch")
    if not isinstance(source, str) or not source:
        raise FoundryError(f"{where}.source = {source!r} must be 'scratch' or a model source string.")
    if source != "scratch" and not spec.pretrained:
        raise FoundryError(
            f"{where}.source = {source!r}, but architecture {spec.name!r} is built from scratch.",
            "Use `source: scratch`, or an imported family (see README: importing models).",
        )
    return ModelEntry(
        name=name,
        architecture=spec.name,
        spec=spec,
        arch=arch,
        source=source,
        revision=raw.get("revision"),
        license_accepted=bool(raw.get("license_accepted", False)),
        tokenizer_override=raw.get("tokenizer_override"),
        description=str(raw.get("description", "")),
    )


SECTIONS = {
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
}
TOP_KEYS = ("model_name", "models", *SECTIONS)


def parse_params(raw: Any) -> Params:
    """Validate a params mapping; every error names the field, the bad value and what is allowed."""
    if not isinstance(raw, dict):
        raise FoundryError("params.yaml must be a mapping at the top level.")
    unknown = sorted(set(raw) - set(TOP_KEYS))
    if unknown:
        raise FoundryError(
            f"params.yaml: unknown section(s) {', '.join(map(repr, unknown))}.",
            f"Valid top-level keys are: {', '.join(TOP_KEYS)}.",
        )
    catalog = raw.get("models")
    if not isinstance(catalog, dict) or not catalog:
        raise FoundryError("params.yaml has no `models:` catalog.", "Add at least one entry under `models:`.")
    name = raw.get("model_name")
    if not isinstance(name, str) or name not in catalog:
        raise FoundryError(
            f"model_name = {name!r} is not in the `models:` catalog.",
            f"Use one of: {', '.join(catalog)} (or add an entry under `models:`).",
        )
    model = parse_entry(name, catalog[name])
    sections = {key: build(cls, _merged(raw, catalog[name], key), key) for key, cls in SECTIONS.items()}
    train: TrainConfig = sections["train"]
    _check_compatibility(model, train)
    return Params(model_name=name, model=model, catalog=catalog, **sections)


def _merged(raw: dict, entry: dict, section: str) -> Any:
    """The top-level section with the selected entry's overrides applied on top."""
    base = raw.get(section)
    override = entry.get(section) if section in OVERRIDABLE else None
    if override is None:
        return base
    if not isinstance(override, dict):
        raise FoundryError(f"models.<entry>.{section} must be a mapping of {section} settings.")
    return {**(base or {}), **override}


def _check_compatibility(model: ModelEntry, train: TrainConfig) -> None:
    where = f"models.{model.name}"
    if train.objective not in model.spec.objectives:
        raise FoundryError(
            f"train.objective = {train.objective!r}, but architecture {model.architecture!r} "
            f"supports only {', '.join(model.spec.objectives)}.",
            "Change train.objective or pick another model_name.",
        )
    check = getattr(model.arch, "check_objective", None)
    if callable(check):
        try:
            check(train.objective)
        except FoundryError as e:
            raise FoundryError(f"{where}: {e.message}", e.hint) from None
    context = getattr(model.arch, "block_size", None)
    if context and train.block_size > context:
        raise FoundryError(
            f"train.block_size = {train.block_size} is longer than {where}.block_size = {context}.",
            f"Lower train.block_size to at most {context}, or raise the model's block_size.",
        )


def load_params(path: str | os.PathLike = "params.yaml") -> Params:
    import yaml

    path = Path(path)
    if not path.is_file():
        raise FoundryError(
            f"Params file {path} does not exist.", "Run from the repo root or pass --params PATH."
        )
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise FoundryError(
            f"{path} is not valid YAML: {e}", "Fix the YAML syntax at the line shown."
        ) from None
    return parse_params(raw)
