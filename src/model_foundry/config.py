"""params.yaml → typed, validated config objects. The one place errors about params are raised."""

from __future__ import annotations

import dataclasses
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from model_foundry.adapters import get_spec
from model_foundry.adapters.lora_targets import RNN_ARCHITECTURES, LoRASettings, default_targets
from model_foundry.adapters.spec import ArchitectureSpec
from model_foundry.credentials import redact, strip_credentials
from model_foundry.errors import FoundryError
from model_foundry.naming import check_name
from model_foundry.resources import check_fits
from model_foundry.schema import build, rule

if TYPE_CHECKING:
    from collections.abc import Iterable

    import yaml
    from _typeshed import DataclassInstance

BUILTIN_CORPUS = "builtin:pydoc_topics"


@dataclass
class DataConfig:
    source: str | list[str] = rule(
        BUILTIN_CORPUS, doc=f"'{BUILTIN_CORPUS}' (shipped with Python), or .txt/.jsonl files or folders"
    )
    text_field: str = rule("text", doc="the field holding the text in .jsonl records")
    val_fraction: float = rule(0.1, gt=0.0, lt=1.0, doc="share of documents held out for validation")
    seed: int = rule(1337, doc="seed of the document shuffle before the split")
    format: Literal["auto", "text", "chat", "prompt_completion"] = rule(
        "auto",
        doc="text (packed plain text), chat ({messages: [{role, content}]}) or prompt_completion ({prompt, "
        "completion}) JSONL; auto: detected from the records (.txt files are text)",
    )
    overlong: Literal["truncate", "drop"] = rule(
        "truncate", doc="chat/prompt_completion: an example longer than train.max_seq_len is cut or dropped"
    )

    def validate(self) -> None:
        sources = self.source if isinstance(self.source, list) else [self.source]
        if not sources:
            raise FoundryError(
                "data.source = [] names no corpus.", f"Name files or folders, or use {BUILTIN_CORPUS!r}."
            )
        for source in sources:
            if not source.strip():  # Path("") is the working directory: it would read the pipeline's outputs
                raise FoundryError(
                    f"data.source = {source!r} is an empty path.",
                    f"Point data.source at .txt/.jsonl files or a folder of them, or use {BUILTIN_CORPUS!r}.",
                )


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
    steps: int = rule(1000, ge=1, le=10**9, doc="optimizer steps")
    batch_size: int = rule(16, ge=1, doc="sequences per micro-batch")
    block_size: int = rule(128, ge=2, doc="tokens per training sequence")
    grad_accum: int = rule(1, ge=1, doc="micro-batches per optimizer step")
    lr: float = rule(1e-3, gt=0.0, doc="peak learning rate")
    min_lr_ratio: float = rule(0.1, ge=0.0, le=1.0, doc="cosine decay ends at lr * min_lr_ratio")
    warmup_steps: int = rule(100, ge=0, le=10**9, doc="linear warmup steps")
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
    method: Literal["full", "lora"] = rule(
        "full", doc="full: every weight trains; lora: low-rank adapters (peft) on a frozen model"
    )
    lora: LoRASettings = field(
        default_factory=LoRASettings,
        metadata={
            "doc": "method: lora only (r, alpha, dropout, target_modules, "
            "modules_to_save; see the LoRA table)"
        },
    )
    merge: bool = rule(
        True, doc="method: lora: also write the merged full model (evaluate, generate and serve load it)"
    )
    checkpoint_interval: int = rule(
        200, ge=1, doc="steps between resumable checkpoints in checkpoints/<output>/ (and on Ctrl-C/SIGTERM)"
    )
    keep_checkpoints: int = rule(2, ge=1, doc="checkpoints kept per output (the newest)")
    resume: Literal["auto", "never"] = rule(
        "auto", doc="auto: continue from a checkpoint saved with the same params, data and parent"
    )
    gradient_checkpointing: bool = rule(
        False, doc="recompute activations in the backward pass (less memory, ~30% slower; Hub models)"
    )
    max_seq_len: int = rule(
        0, ge=0, doc="chat/prompt_completion: most tokens per example (0 = block_size + 1, one window)"
    )
    output_name: str | None = rule(
        None, doc="`foundry train` without --out: the output folder name (default <parent>-<method>)"
    )
    nproc: int | Literal["auto"] = rule(
        1,
        ge=1,
        doc="training processes on this machine (torchrun); auto: one per CUDA GPU (1 without); "
        "batch_size stays the global batch",
    )
    strategy: Literal["ddp", "fsdp"] = rule(
        "ddp", doc="nproc > 1: ddp replicates the model; fsdp shards weights, gradients and optimizer state"
    )

    def validate(self) -> None:
        if self.output_name is not None:
            check_name(self.output_name, "train.output_name")
        if isinstance(self.nproc, int) and self.nproc > 1:
            if self.device == "mps":
                raise FoundryError(
                    f"train.nproc = {self.nproc} with train.device = 'mps': torch.distributed has no MPS "
                    "backend.",
                    "Set train.nproc: 1 on Apple MPS, or train.device: cpu to run the processes on the CPU.",
                )
            if self.batch_size % self.nproc:
                lower = self.batch_size - self.batch_size % self.nproc
                options = ", ".join(str(n) for n in (lower, lower + self.nproc) if n > 0)
                raise FoundryError(
                    f"train.batch_size = {self.batch_size} (the global batch) does not divide among "
                    f"train.nproc = {self.nproc} processes.",
                    f"Use a multiple of {self.nproc} (e.g. {options}), or another train.nproc.",
                )

    @property
    def example_tokens(self) -> int:
        """The most tokens one chat/prompt_completion example keeps: max_seq_len, or one whole window."""
        return self.max_seq_len or self.block_size + 1


@dataclass
class EvaluateConfig:
    batch_size: int = rule(16, ge=1, doc="sequences per evaluation batch")
    max_batches: int = rule(200, ge=1, doc="cap on validation batches (the whole split when smaller)")
    pseudo_ppl_sequences: int = rule(16, ge=1, doc="masked_lm: sequences scored for pseudo-perplexity")


# Catalog keys that describe where a model comes from; everything else in an entry is architecture config.
ENTRY_KEYS = (
    "architecture", "source", "revision", "license_accepted", "tokenizer_override", "description",
    "init_missing",  # imported checkpoint lacking tensors its class needs: initialise them once, seeded
)  # fmt: skip
# Sections an entry may override for itself (a masked-LM entry sets `train: {objective: masked_lm}`), so
# `dvc exp run -S model_name=<entry>` alone switches objective and tokenizer with the model.
OVERRIDABLE = ("tokenizer", "train", "evaluate")


@dataclass
class EntrySettings:
    """The keys of a catalog entry that say where the model comes from (typed like every other setting)."""

    source: str = rule("scratch", doc="'scratch', a Hub id (org/name) or a local folder")
    revision: str | None = rule(None, doc="Hub branch, tag or commit sha (quote an all-digit sha)")
    license_accepted: bool = rule(False, doc="true: the model's licence has been read and accepted")
    tokenizer_override: str | None = rule(None, doc="a folder with a saved fast tokenizer to use instead")
    description: str = rule("", doc="free text recorded with the model")
    init_missing: bool = rule(False, doc="initialise (seeded, once) the tensors an imported checkpoint lacks")

    def validate(self) -> None:
        if not self.source.strip():
            raise FoundryError(
                f"source = {self.source!r} must be 'scratch' or a model source string.",
                "Use `source: scratch`, a Hub id like org/name, or a local folder.",
            )


@dataclass
class ModelEntry:
    name: str
    architecture: str
    spec: ArchitectureSpec
    arch: DataclassInstance  # the architecture's config dataclass (spec.config_cls), validated
    source: str = "scratch"
    revision: str | None = None
    license_accepted: bool = False
    tokenizer_override: str | None = None
    description: str = ""
    # Hub/folder sources only: tensors the checkpoint lacks (e.g. the MLM head of an encoder-only BERT) are
    # initialised once with a fixed seed and saved into models/<name>/ instead of refusing the import.
    init_missing: bool = False

    @property
    def is_scratch(self) -> bool:
        return self.source == "scratch"

    @property
    def parent_model(self) -> str | None:
        """The name of the repo model this entry starts from (`source: model:<name>` or `models/<name>`)."""
        return repo_model_name(self.source)


def repo_model_name(source: str) -> str | None:
    """`<name>` when `source` names a model of this repo (`model:<name>` or `models/<name>`), else None.

    The model is the folder `models/<name>/` of the project (scratch, imported, trained, fine-tuned or
    merged: any architecture). Any other source is 'scratch', a Hub id/URL or a Hugging Face folder.
    """
    text = source.strip()
    if text.startswith("model:"):
        return text.removeprefix("model:").strip()
    parts = text.rstrip("/").split("/")
    if len(parts) == 2 and parts[0] == "models" and parts[1]:
        return parts[1]
    return None


@dataclass
class Params:
    model_name: str
    model: ModelEntry
    data: DataConfig
    tokenizer: TokenizerConfig
    train: TrainConfig
    evaluate: EvaluateConfig
    catalog: dict[str, Any]  # `models:` as written (parse_params validates the selected entry only)
    shadowed: list[Shadow] = field(default_factory=list)  # global settings the selected entry overrides

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
        raise FoundryError(
            f"{where} must be a mapping with at least `architecture:`.",
            "Write the entry as `key: value` lines under its name, e.g. `architecture: gpt`.",
        )
    try:
        spec = get_spec(raw.get("architecture"))
    except FoundryError as e:
        raise FoundryError(f"{where}: {e.message}", e.hint) from None
    arch_raw = {k: v for k, v in raw.items() if k not in ENTRY_KEYS + OVERRIDABLE}
    arch: DataclassInstance = build(spec.config_cls, arch_raw, where)
    keys = build(
        EntrySettings, {k: v for k, v in raw.items() if k in ENTRY_KEYS and k != "architecture"}, where
    )
    source = keys.source
    if strip_credentials(source)[1]:  # never echo it: the message would put the secret in logs
        raise FoundryError(
            f"{where}.source holds credentials ({' and '.join(strip_credentials(source)[1])}).",
            f"Write the source as {redact(source)} and set HF_TOKEN (or run `hf auth login`); params.yaml, "
            "dvc.lock and MLflow would record a token. Revoke the token if params.yaml was committed.",
        )
    parent = repo_model_name(source)
    if parent is not None:
        check_name(parent, f"{where}.source (model:<name>)")
        if parent == name:
            raise FoundryError(
                f"{where}.source = {source!r} names the entry itself.",
                "Name another model of this repo (e.g. `source: model:gpt-tiny-trained`).",
            )
        if arch_raw:
            raise FoundryError(
                f"{where}: {', '.join(sorted(arch_raw))} set(s) the architecture, but source {source!r} is a "
                "model of this repo, whose config.json defines it.",
                "Delete those keys from the entry (keep architecture:, source: and the train:/tokenizer:/"
                "evaluate: sections).",
            )
    elif source != "scratch" and not spec.pretrained:
        raise FoundryError(
            f"{where}.source = {source!r}, but architecture {spec.name!r} is built from scratch.",
            "Use `source: scratch`, `source: model:<name>` (a model of this repo), or an imported family "
            "(see README: importing models).",
        )
    return ModelEntry(
        name=name,
        architecture=spec.name,
        spec=spec,
        arch=arch,
        source=source,
        revision=keys.revision,
        license_accepted=keys.license_accepted,
        tokenizer_override=keys.tokenizer_override,
        description=keys.description,
        init_missing=keys.init_missing,
    )


SECTIONS = {
    "data": DataConfig,
    "tokenizer": TokenizerConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
}
TOP_KEYS = ("model_name", "models", *SECTIONS)


def parse_params(raw: Any) -> Params:
    """Validate a params mapping (params.yaml as YAML loads it); every error names the field, the bad
    value and what is allowed. Returns the `Params` of the entry `model_name` selects, its settings merged
    over the top-level sections (`shadowed` lists the top-level values it overrides).

    Checks the top-level sections as written (a bad global value is an error even where the selected entry
    overrides it, since another entry will use it), then the selected entry and its effective config.
    Raises FoundryError on the first problem (a config that would not fit in this machine's memory, or far
    more threads than cores, is one: `resources.check_fits`); `check_params` lists them all.
    """
    _check_top_level(raw)
    name = raw.get("model_name")
    _check_model_name(name, raw["models"])
    check_name(name, "Catalog key")
    for key, cls in SECTIONS.items():
        build(cls, raw.get(key), key)
    return _parse_selected(raw, name)


def _check_top_level(raw: Any) -> None:
    if not isinstance(raw, dict):
        raise FoundryError(
            "params.yaml must be a mapping at the top level.",
            "Write `model_name:`, `models:` and the sections as `key: value` lines (see README).",
        )
    unknown = sorted(set(raw) - set(TOP_KEYS), key=str)
    if unknown:
        raise FoundryError(
            f"params.yaml: unknown section(s) {', '.join(map(repr, unknown))}.",
            f"Valid top-level keys are: {', '.join(TOP_KEYS)}.",
        )
    catalog = raw.get("models")
    if not isinstance(catalog, dict) or not catalog:
        raise FoundryError("params.yaml has no `models:` catalog.", "Add at least one entry under `models:`.")


def _check_model_name(name: Any, catalog: dict[str, Any]) -> None:
    if not isinstance(name, str) or name not in catalog:
        raise FoundryError(
            f"model_name = {name!r} is not in the `models:` catalog.",
            f"Use one of: {', '.join(map(str, catalog))} (or add an entry under `models:`).",
        )


def _parse_selected(raw: dict[str, Any], name: str) -> Params:
    """The entry `name`, its override sections as written, and the effective (merged) sections."""
    catalog = raw["models"]
    entry = catalog[name]
    model = parse_entry(name, entry)
    for key in OVERRIDABLE:
        override = entry.get(key)
        if override is not None:
            build(SECTIONS[key], override, f"models.{name}.{key}")
    data = build(DataConfig, _merged(raw, entry, "data"), "data")
    tokenizer = build(TokenizerConfig, _merged(raw, entry, "tokenizer"), "tokenizer")
    train = build(TrainConfig, _merged(raw, entry, "train"), "train")
    evaluate = build(EvaluateConfig, _merged(raw, entry, "evaluate"), "evaluate")
    _check_compatibility(model, train)
    _check_vocab_size(model, tokenizer)
    # Before anything is allocated: memory for scratch models (the import estimates imported ones from their
    # config.json and weights) and threads for all.
    arch = model.arch if model.is_scratch else None  # a repo model's size is known from its folder only
    check_fits(f"models.{name}", arch, tokenizer.vocab_size, train, evaluate)
    return Params(
        model_name=name,
        model=model,
        data=data,
        tokenizer=tokenizer,
        train=train,
        evaluate=evaluate,
        catalog=catalog,
        shadowed=shadowed_settings(raw, name),
    )


def _merged(raw: dict[str, Any], entry: dict[str, Any], section: str) -> Any:
    """The top-level section with the selected entry's overrides applied on top."""
    base = raw.get(section)
    override = entry.get(section) if section in OVERRIDABLE else None
    if override is None:
        return base
    if not isinstance(override, dict):
        raise FoundryError(
            f"models.<entry>.{section} must be a mapping of {section} settings.",
            f"Write it as `{section}: {{key: value}}` (see the top-level `{section}:` section).",
        )
    return {**(base or {}), **override}


def check_params(raw: Any) -> list[FoundryError]:
    """Every problem in a params mapping, not only the first: what `foundry validate` reports.

    Checks, each once: the top level (a structural problem stops here), `model_name`, every catalog key
    against the naming rule (model_foundry.naming), every top-level section as written, and every catalog
    entry: its own settings, its `tokenizer:`/`train:`/`evaluate:` overrides as written and its effective
    config (the merged sections and the architecture × objective checks), as if it were selected.
    Returns the problems in that order; an empty list means valid.
    """
    try:
        _check_top_level(raw)
    except FoundryError as e:
        return [e]
    problems: list[FoundryError] = []
    seen: set[str] = set()

    def attempt(check: Callable[[], Any], context: str = "") -> None:
        try:
            check()
        except FoundryError as e:
            if e.message in seen:  # e.g. a bad global value, inherited by every entry
                return
            seen.add(e.message)
            named = not context or re.search(re.escape(context) + r"(?![\w-])", e.message)
            message = e.message if named else f"{context} (effective config): {e.message}"
            problems.append(FoundryError(message, e.hint))

    catalog = raw["models"]
    attempt(lambda: _check_model_name(raw.get("model_name"), catalog))
    for name in catalog:
        attempt(partial(check_name, name, "Catalog key"))
    for key, cls in SECTIONS.items():
        attempt(partial(build, cls, raw.get(key), key))
    for name in catalog:
        attempt(partial(_parse_selected, raw, name), f"models.{name}")
    return problems


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
    if train.max_seq_len > train.block_size + 1:  # the effective values: entry over global, key by key
        raise FoundryError(
            f"train.max_seq_len = {train.max_seq_len} is longer than a training window (train.block_size + 1 "
            f"= {train.block_size + 1}).",
            f"Lower train.max_seq_len to at most {train.block_size + 1} (0 = one window), or raise "
            "train.block_size.",
        )
    if train.method == "lora":
        try:
            default_targets(model.spec)  # refuses the recurrent models, with the reason
        except FoundryError as e:
            if train.lora.target_modules is None or model.spec.name in RNN_ARCHITECTURES:
                raise FoundryError(f"{where}: train.method = 'lora': {e.message}", e.hint) from None
    context = getattr(model.arch, "block_size", None) if model.parent_model is None else None
    if context and train.block_size > context:
        raise FoundryError(
            f"train.block_size = {train.block_size} is longer than {where}.block_size = {context}.",
            f"Lower train.block_size to at most {context}, or raise the model's block_size.",
        )


def _check_vocab_size(model: ModelEntry, tokenizer: TokenizerConfig) -> None:
    """A scratch model's non-zero vocab_size below the size its tokenizer is trained to would fail only at the
    train stage, after import and tokenize: refuse it when params load. (A `char` tokenizer's vocab_size is an
    upper bound, and an override's size is known only from its files: the train stage checks those.)"""
    size = getattr(model.arch, "vocab_size", 0) if model.is_scratch else 0
    if size and tokenizer.type != "char" and not model.tokenizer_override and size < tokenizer.vocab_size:
        raise FoundryError(
            f"models.{model.name}.vocab_size = {size} is smaller than tokenizer.vocab_size = "
            f"{tokenizer.vocab_size}, the size its {tokenizer.type} tokenizer is trained to.",
            f"Set vocab_size to 0 (the tokenizer's size) or to at least {tokenizer.vocab_size} (a larger "
            "value pads the embedding), or lower tokenizer.vocab_size.",
        )


# params.yaml is a few KiB: these bounds are far above any real one and far below what hurts.
MAX_PARAMS_BYTES = 1 << 20
MAX_PARAMS_DEPTH = 32  # nested mappings/lists (a real params.yaml nests 4 deep)
MAX_PARAMS_NODES = 100_000  # values after aliases are expanded (a "billion laughs" file expands to 10^9)


def read_params(path: str | os.PathLike[str] = "params.yaml") -> Any:
    """The raw mapping in params.yaml (not validated).

    Refuses, with FoundryError naming the file: a missing or unreadable file, one over MAX_PARAMS_BYTES, bytes
    that are not UTF-8 (with the offset and line), invalid YAML, and YAML nested deeper than MAX_PARAMS_DEPTH
    or expanding (through aliases) to more than MAX_PARAMS_NODES values. The structure is checked on the
    parser's event stream, which does not recurse, before the (recursive) loader builds anything.
    """
    path = Path(path)
    if not path.is_file():
        raise FoundryError(
            f"Params file {path} does not exist.", "Run from the repo root or pass --params PATH."
        )
    try:
        size = path.stat().st_size
        if size > MAX_PARAMS_BYTES:
            raise FoundryError(
                f"{path} is {size:,} bytes, more than a params file may hold ({MAX_PARAMS_BYTES:,}).",
                "Point --params at the project's params.yaml; keep data out of it.",
            )
        data = path.read_bytes()
    except OSError as e:
        raise FoundryError(f"Cannot read {path}: {e.strerror}.", "Check the file's permissions.") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise FoundryError(
            f"{path} is not UTF-8 text (invalid byte {data[e.start]:#04x} at offset {e.start}, line {line}).",
            f"Save it as UTF-8, e.g. `iconv -f latin1 -t UTF-8 {path} > fixed.yaml && mv fixed.yaml {path}`.",
        ) from None
    return _load_yaml(path, text)


def _load_yaml(path: Path, text: str) -> Any:
    import yaml

    try:
        _check_yaml_shape(path, yaml.parse(text, Loader=yaml.SafeLoader))
        return yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader subclass)
    except FoundryError as e:
        raise FoundryError(f"{path}: {e.message}", e.hint) from None
    except yaml.YAMLError as e:
        raise FoundryError(
            f"{path} is not valid YAML: {e}", "Fix the YAML syntax at the line shown."
        ) from None


def _unique_key_loader() -> Any:
    """A yaml.SafeLoader that refuses a key written twice in one mapping (YAML says keys are unique;
    PyYAML silently keeps the last, so a second `model_name:` further down would win unnoticed)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        def construct_mapping(self, node: Any, deep: bool = False) -> Any:
            seen: dict[Any, int] = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                line = key_node.start_mark.line + 1
                if key in seen:
                    raise FoundryError(
                        f"the key {key!r} is written twice in one section (lines {seen[key]} and "
                        f"{line}); YAML would silently keep the second.",
                        "Delete one of them.",
                    )
                seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _check_yaml_shape(path: Path, events: Iterable[yaml.Event]) -> None:
    """Bound the nesting depth and the expanded size (an alias counts as all it stands for)."""
    import yaml

    sizes: dict[str, int] = {}  # anchor → values it expands to
    stack: list[list[Any]] = [[None, 0]]  # open collections: [anchor, values so far]
    for event in events:
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            stack.append([event.anchor, 1])
            if len(stack) - 1 > MAX_PARAMS_DEPTH:
                line = f" (line {event.start_mark.line + 1})" if event.start_mark else ""
                raise FoundryError(
                    f"{path} nests more than {MAX_PARAMS_DEPTH} levels{line}.",
                    "A params file nests a few levels: models.<name>.<setting>, the sections and their keys.",
                )
            continue
        if isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            anchor, count = stack.pop()
        elif isinstance(event, yaml.ScalarEvent):
            anchor, count = event.anchor, 1
        elif isinstance(event, yaml.AliasEvent):
            anchor, count = None, sizes.get(event.anchor, 1) if event.anchor is not None else 1
        else:
            continue
        if anchor is not None:
            sizes[anchor] = count
        stack[-1][1] += count
        if stack[-1][1] > MAX_PARAMS_NODES:
            raise FoundryError(
                f"{path} expands to more than {MAX_PARAMS_NODES:,} values (through YAML aliases).",
                "Write the settings out; params files need no aliases that repeat large blocks.",
            )


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def load_params(
    path: str | os.PathLike[str] = "params.yaml", echo: Callable[[str], None] | None = _stderr
) -> Params:
    """Read and validate params.yaml for a stage (`read_params`, then `parse_params`).

    Raises FoundryError naming the first problem: a missing, unreadable or oversized file, bytes that are not
    UTF-8, invalid YAML, or a value that breaks a rule.

    Every global setting the selected entry shadows with a different value is reported through `echo`
    (stderr by default, one `note:` line per key; None to stay quiet), so a `-S train.steps=...` that
    the entry overrides is never lost silently.
    """
    params = parse_params(read_params(path))
    if echo is not None:
        for shadow in params.shadowed:
            echo(f"note: {shadow}")
    return params


@dataclass(frozen=True)
class Shadow:
    """A top-level setting that the selected catalog entry overrides with a different value."""

    entry: str  # catalog key
    section: str  # tokenizer | train | evaluate
    key: str
    value: Any  # the entry's value: the one used
    global_value: Any  # the top-level value: ignored for this entry

    def __str__(self) -> str:
        where = f"models.{self.entry}.{self.section}"
        return (
            f"{self.section}.{self.key} = {self.value!r} from {where} (global {self.section}.{self.key} = "
            f"{self.global_value!r} is shadowed; override with -S {where}.{self.key}={self.global_value})"
        )


def shadowed_settings(raw: dict[str, Any], name: str) -> list[Shadow]:
    """The top-level `tokenizer:`/`train:`/`evaluate:` keys that entry `name` sets to a different value.

    Pure: reads the raw params mapping only. Precedence is entry over global, key by key; a key the global
    section leaves out (the default applies) is not reported. Numbers compare by value (2e-5 == 0.00002).
    """
    entry = raw.get("models", {}).get(name)
    if not isinstance(entry, dict):
        return []
    out = []
    for section in OVERRIDABLE:
        base, override = raw.get(section), entry.get(section)
        if not isinstance(base, dict) or not isinstance(override, dict):
            continue
        for key, value in override.items():
            if key in base and not _same_value(value, base[key]):
                out.append(Shadow(name, section, key, value, base[key]))
    return out


def _same_value(a: Any, b: Any) -> bool:
    if a == b:
        return True
    if isinstance(a, bool) or isinstance(b, bool):
        return False
    try:
        return float(a) == float(b)  # YAML 1.1 reads 1e-3 as a string, 1.0e-3 as a float
    except (TypeError, ValueError):
        return False
