"""Before any weight is downloaded: is this a supported family, which files are needed, will it fit in memory?

Everything here works on config.json and the repo's file list/sizes, so a bad import fails in a second.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from model_foundry.adapters.hf.families import BY_MODEL_TYPE, supported_families
from model_foundry.errors import FoundryError
from model_foundry.hub.report import Reporter
from model_foundry.model_folder.layout import CONFIG_NAME, SAFE_INDEX, WEIGHTS_NAME
from model_foundry.resources import fmt_bytes, parse_bytes

# Hub-side names (files of the source repo); those the canonical folder keeps come from model_folder.layout.
PICKLE_INDEX = "pytorch_model.bin.index.json"
PICKLE_SINGLE = "pytorch_model.bin"
GENERATION = ("generation_config.json",)
TOKENIZER = (
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json",
    "chat_template.jinja", "chat_template.json", "vocab.json", "merges.txt", "vocab.txt", "tokenizer.model",
)  # fmt: skip
README = "README.md"
# Licence texts and use policies, at the top of the repo.
LICENSE_FILE = re.compile(
    r"^(LICEN[CS]E|COPYING|NOTICE|USE_POLICY)([._-][\w.-]*)?(\.(md|txt))?$", re.IGNORECASE
)
OTHER_WEIGHTS = re.compile(r"\.(h5|msgpack|gguf|ckpt|pt|pth|onnx|safetensors|bin)$")

# model_type → why it is refused (data, shown as is).
REFUSED_MODEL_TYPES = {
    "qwen": (
        "Qwen (v1) checkpoints (model_type 'qwen') only load with the repository's own Python code "
        "(trust_remote_code), which Model Foundry never runs: importing a model must not run its code.",
        "Use a Qwen1.5 / Qwen2 / Qwen2.5 / Qwen3 checkpoint instead (model_type qwen2 or qwen3), e.g. "
        "Qwen/Qwen1.5-0.5B or Qwen/Qwen2.5-0.5B.",
    ),
}


def family_for(config: dict[str, Any] | None, where: str) -> str:
    """The registry architecture (e.g. `hf-qwen2`) for a config.json, or a FoundryError saying why not."""
    if config is None:
        raise FoundryError(
            f"{where} has no {CONFIG_NAME}: it is not a model in Hugging Face Transformers format.",
            "Point to a Transformers model (a repo or folder with config.json and *.safetensors weights).",
        )
    if not isinstance(config, dict):
        raise FoundryError(f"{where}/{CONFIG_NAME} is not a JSON object.")
    model_type = config.get("model_type")
    if model_type is not None and not isinstance(model_type, str):
        raise FoundryError(
            f"{where}/{CONFIG_NAME}: model_type = {model_type!r} must be a string.",
            f"Supported families: {supported_families()}.",
        )
    if not model_type:
        raise FoundryError(
            f"{where}/{CONFIG_NAME} has no model_type, so its architecture is unknown.",
            f"Supported families: {supported_families()}.",
        )
    if model_type in REFUSED_MODEL_TYPES:
        message, hint = REFUSED_MODEL_TYPES[model_type]
        raise FoundryError(f"{where}: {message}", hint)
    family = BY_MODEL_TYPE.get(model_type)
    if family is None:
        code = (
            " It also needs the repository's own code (auto_map), which is never run."
            if config.get("auto_map")
            else ""
        )
        raise FoundryError(
            f"{where}: model_type {model_type!r} is not a supported family.{code}",
            f"Supported families: {supported_families()}.",
        )
    return family.name


def remote_code_note(config: dict[str, Any]) -> str | None:
    """A supported model that also ships `auto_map` code: say that the built-in class is used instead."""
    if config.get("auto_map"):
        return (
            f"config.json has auto_map (repository code); it is ignored: the model loads with transformers' "
            f"built-in {config.get('model_type')} class (trust_remote_code is never enabled)."
        )
    return None


@dataclass
class FileSelection:
    """The files an import copies: nothing else in the repo is downloaded."""

    weights: list[str]
    index: str | None = None
    pickle: bool = False
    tokenizer: list[str] = field(default_factory=list)
    generation: list[str] = field(default_factory=list)
    docs: list[str] = field(default_factory=list)  # README + licence files

    @property
    def metadata_files(self) -> list[str]:
        """Small files fetched before the weights (validation, licence)."""
        return [CONFIG_NAME, *([self.index] if self.index else []), *self.docs]

    @property
    def all(self) -> list[str]:
        """Every file the import fetches, small ones first."""
        return [*self.metadata_files, *self.tokenizer, *self.generation, *self.weights]


def select_files(
    names: Iterable[str], read_json: Callable[[str], Any], allow_pickle: bool, where: str
) -> FileSelection:
    """Pick config, weights (+ index), tokenizer, generation config and licence/README from a file list."""
    top = {n for n in names if "/" not in n}
    docs = sorted(n for n in top if n == README or LICENSE_FILE.match(n))
    tokenizer = [n for n in TOKENIZER if n in top]
    generation = [n for n in GENERATION if n in top]
    if SAFE_INDEX in top:
        sel = FileSelection(_shards(read_json(SAFE_INDEX), SAFE_INDEX, top, where), SAFE_INDEX)
    elif WEIGHTS_NAME in top:
        sel = FileSelection([WEIGHTS_NAME])
    elif PICKLE_INDEX in top or PICKLE_SINGLE in top:
        if not allow_pickle:
            found = PICKLE_INDEX if PICKLE_INDEX in top else PICKLE_SINGLE
            raise FoundryError(
                f"{where} has only pickle weights ({found}): loading a pickle can run arbitrary code.",
                "Pass --allow-pickle to convert it to safetensors (read with torch.load(weights_only=True)), "
                "or use a repo/revision that has *.safetensors weights.",
            )
        if PICKLE_INDEX in top:
            sel = FileSelection(
                _shards(read_json(PICKLE_INDEX), PICKLE_INDEX, top, where), PICKLE_INDEX, True
            )
        else:
            sel = FileSelection([PICKLE_SINGLE], pickle=True)
    else:
        other = sorted(n for n in top if OTHER_WEIGHTS.search(n))
        raise FoundryError(
            f"{where} has no Transformers weights ({WEIGHTS_NAME}, sharded safetensors or {PICKLE_SINGLE})"
            + (f"; found {', '.join(other)}." if other else "."),
            "Model Foundry imports PyTorch checkpoints in Hugging Face format (not GGUF, TF, Flax or ONNX).",
        )
    sel.tokenizer, sel.generation, sel.docs = tokenizer, generation, docs
    return sel


def _shards(index: Any, name: str, present: set[str], where: str) -> list[str]:
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not weight_map:
        raise FoundryError(f"{where}/{name} has no weight_map.", "The shard index is corrupt; re-upload it.")
    bad = next(((k, v) for k, v in weight_map.items() if not isinstance(v, str)), None)
    if bad is not None:
        raise FoundryError(
            f"{where}/{name}: weight_map[{bad[0]!r}] = {bad[1]!r} is not a shard file name.",
            "The shard index is corrupt; re-upload it (every value names a weight file).",
        )
    shards = sorted(set(weight_map.values()))
    missing = [s for s in shards if s not in present or "/" in s]
    if missing:
        raise FoundryError(f"{where}/{name} lists shards that are missing: {', '.join(missing)}.")
    return shards


# --- memory ---------------------------------------------------------------------------------------------
GIB = 1 << 30
RUNTIME_OVERHEAD = 512 << 20  # Python, torch, tokenizer, activations of a short sequence
LOAD_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
STORED_BYTES = {"float32": 4, "float64": 8, "bfloat16": 2, "float16": 2, "int8": 1, "float8_e4m3fn": 1}


@dataclass
class MemoryEstimate:
    """RAM an imported model needs, in bytes, against what this machine has (None where unknown)."""

    weight_bytes: int  # on disk
    parameters: int
    inference_bytes: int  # weights in the load dtype + runtime
    finetune_bytes: int  # full fine-tune with AdamW in fp32: weights, grads, two moments, activations
    available_bytes: int | None
    total_bytes: int | None
    limit_bytes: int | None  # refuse above this unless --force

    def describe(self) -> str:
        """One line for the user: parameters, weight size, RAM to run and to fine-tune, RAM available."""
        return (
            f"{self.parameters / 1e6:,.1f}M parameters, {fmt_bytes(self.weight_bytes)} of weights; "
            f"RAM needed ≈ {fmt_bytes(self.inference_bytes)} to run, ≈ {fmt_bytes(self.finetune_bytes)} to "
            f"fine-tune (available: {fmt_bytes(self.available_bytes)})"
        )


def system_memory() -> tuple[int | None, int | None]:
    """(available, total) bytes of RAM: /proc/meminfo on Linux, sysconf elsewhere."""
    try:
        info = {}
        with open("/proc/meminfo") as f:
            for line in f:
                key, _, rest = line.partition(":")
                info[key] = int(rest.split()[0]) * 1024
        return info.get("MemAvailable"), info.get("MemTotal")
    except (OSError, ValueError, IndexError):
        try:
            page = os.sysconf("SC_PAGE_SIZE")
            return os.sysconf("SC_AVPHYS_PAGES") * page, os.sysconf("SC_PHYS_PAGES") * page
        except (ValueError, OSError, AttributeError):
            return None, None


def estimate_memory(
    weight_bytes: int, parameters: int | None, stored_dtype: str | None, load_dtype: str = "float32"
) -> MemoryEstimate:
    """RAM to run and to fine-tune, from sizes alone (the parameter count is estimated when unknown)."""
    if not parameters:
        parameters = int(weight_bytes / STORED_BYTES.get(stored_dtype or "float32", 4))
    per = LOAD_BYTES.get(load_dtype) or STORED_BYTES.get(stored_dtype or "float32", 4)
    inference = int(parameters * per * 1.1) + RUNTIME_OVERHEAD
    finetune = int(parameters * 16 * 1.2) + RUNTIME_OVERHEAD
    available, total = system_memory()
    override = os.environ.get("FOUNDRY_IMPORT_MAX_RAM")
    limit = parse_bytes(override, "FOUNDRY_IMPORT_MAX_RAM") if override else total
    return MemoryEstimate(weight_bytes, parameters, inference, finetune, available, total, limit)


def check_memory(est: MemoryEstimate, force: bool, reporter: Reporter) -> None:
    """Warn (`reporter.warn`) when the model may not fit this machine's free memory; above the hard limit
    (`est.limit_bytes`: FOUNDRY_IMPORT_MAX_RAM, else the machine's RAM) raise FoundryError unless `force`."""
    if est.limit_bytes is not None and est.inference_bytes > est.limit_bytes:
        if not force:
            source = (
                "FOUNDRY_IMPORT_MAX_RAM" if os.environ.get("FOUNDRY_IMPORT_MAX_RAM") else "this machine's RAM"
            )
            raise FoundryError(
                f"The model needs ≈ {fmt_bytes(est.inference_bytes)} of RAM just to run, more than "
                f"{source} ({fmt_bytes(est.limit_bytes)}). {est.describe()}.",
                "Pick a smaller model, or pass --force to import it anyway (e.g. for a bigger machine).",
            )
        reporter.warn(
            f"importing anyway (--force): the model needs more RAM than {fmt_bytes(est.limit_bytes)}"
        )
    if est.available_bytes is not None and est.finetune_bytes > est.available_bytes:
        what = "run" if est.inference_bytes > est.available_bytes else "fine-tune"
        reporter.warn(f"this machine may not have enough free memory to {what} it: {est.describe()}")
