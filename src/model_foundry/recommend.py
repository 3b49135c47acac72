"""Which Qwen2.5 size fits this machine: memory estimates for inference, LoRA and full fine-tuning.

    need = estimate(QWEN25[2], "lora")          # Estimate(parts={"weights": ..., ...}, total=...)
    rec = recommend(8 * GIB, "inference")       # the largest size whose estimate fits in 8 GiB
    advise(recommend(GIB, "lora"))              # nothing fits: what would (a shorter context, another --for)

All sizes are bytes; GiB = 2**30 bytes. The formulas (P = parameters, L = layers, h = hidden size,
kv = key/value heads, d = head dim = h / attention heads, s = context length, V = vocabulary, I = MLP size):

    inference  weights  P · b                       b = bytes per parameter of the dtype (bf16 2, fp32 4)
               kv cache 2 · L · kv · d · b  per token (a key and a value per layer and kv head), × s
    lora       weights  P · 2                       frozen, bf16
               adapter  16 · r · L · (9h + 2·kv·d + 3I)
                        r · (in + out) parameters per adapted projection (q, k, v, o, gate, up, down: the
                        family's default targets, rank r = 8 as `train.lora.r`), each with an fp32 value,
                        gradient and two AdamW moments: 4 + 4 + 8 = 16 bytes
               activations  34 · s · h · L + 4 · s · V  (batch 1)
    full       weights + gradients + AdamW  16 · P      mixed precision: bf16 weights (2) and gradients (2),
                        fp32 master weights (4) and two fp32 AdamW moments (8) — the "16Ψ" of the ZeRO paper
                        (Rajbhandari et al. 2020, https://arxiv.org/abs/1910.02054, section 3.1)
               activations  as for lora
    all        overhead 0.5 GiB (Python, torch, the tokenizer; a CUDA context on a GPU) + 10 % of the rest
               (allocator fragmentation, temporaries)

Activations: 34 · s · b · h bytes per layer is the 16-bit activation memory of a transformer layer without
recomputation (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large Transformer Models",
https://arxiv.org/abs/2205.05198, section 4.1: s·b·h·(34 + 5·a·s/h)), less the a·s² attention-score term that
PyTorch's fused attention (SDPA) never materialises; 4 · s · V are the fp32 logits the loss reads. Gradient
checkpointing (`train.gradient_checkpointing`) needs far less: the estimate is the safe side.

Tied embeddings are counted once: the model cards' parameter counts already do. Torch-free: importing this
module costs nothing; `available_memory` imports torch only when an NVIDIA driver is present.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from model_foundry.errors import FoundryError

GIB = 1 << 30
Purpose = Literal["inference", "lora", "full"]
PURPOSES: tuple[Purpose, ...] = ("inference", "lora", "full")
DTYPE_BYTES = {"bf16": 2, "fp16": 2, "fp32": 4}
DEFAULT_CONTEXT = 4096
LORA_RANK = 8  # train.lora.r's default (adapters/lora_targets.py)
OVERHEAD_FIXED = GIB // 2
OVERHEAD_FRACTION = 0.10
ACTIVATION_BYTES_PER_TOKEN_HIDDEN_LAYER = 34  # Korthikanti et al. 2022, 16-bit, no recomputation
OPTIMIZER_BYTES_PER_PARAM = 16  # fp32 value + gradient + 2 AdamW moments (lora); ZeRO's 16Ψ (full)


@dataclass(frozen=True)
class QwenSize:
    """One Qwen2.5 base checkpoint, as its model card and config.json publish it.

    parameters: total, as the card states ("Number of Parameters"; tied embeddings counted once).
    layers, heads, kv_heads: the card's "Number of Layers" and "Number of Attention Heads (GQA)".
    hidden, intermediate, vocab, tied: config.json's hidden_size, intermediate_size, vocab_size,
    tie_word_embeddings. license: the card's licence (3B is under the Qwen Research licence).
    max_context: the longest context (tokens) the model reads as transformers loads it, and context_source:
    where that figure comes from. `recommend` refuses a longer --context.
    """

    size: str
    parameters: float
    layers: int
    heads: int
    kv_heads: int
    hidden: int
    intermediate: int
    vocab: int
    tied: bool
    license: str
    max_context: int
    context_source: str

    @property
    def repo_id(self) -> str:
        return f"Qwen/Qwen2.5-{self.size}"

    @property
    def url(self) -> str:
        """The model card (config.json is beside it, under /blob/main/config.json)."""
        return f"https://huggingface.co/{self.repo_id}"

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads


# Each row: https://huggingface.co/Qwen/Qwen2.5-<size> (model card: parameters, layers, heads for Q and KV,
# "tied word embeddings" in its architecture line, licence) and .../blob/main/config.json (hidden_size,
# intermediate_size, vocab_size, tie_word_embeddings). Card figures checked against the card text
# (a mirror of the Hugging Face READMEs) while writing this table. max_context: Qwen2.5 is pre-trained at
# 32,768 tokens; the 7B and 14B cards describe 131,072 tokens with YaRN rope scaling, which transformers
# does not enable by default (config.json has no `rope_scaling`), so 32,768 is what `foundry` can use.
_CARD_32K = "model card: 'Context Length: Full 32,768 tokens'"
_CARD_128K = (
    "model card: 131,072 tokens with YaRN rope scaling, not enabled by default (no rope_scaling in "
    "config.json); pre-trained at 32,768 tokens (Qwen2.5 technical report, https://arxiv.org/abs/2412.15115)"
)
QWEN25: tuple[QwenSize, ...] = (
    QwenSize("0.5B", 0.49e9, 24, 14, 2, 896, 4864, 151936, True, "apache-2.0", 32768, _CARD_32K),
    QwenSize("1.5B", 1.54e9, 28, 12, 2, 1536, 8960, 151936, True, "apache-2.0", 32768, _CARD_32K),
    QwenSize("3B", 3.09e9, 36, 16, 2, 2048, 11008, 151936, True, "qwen-research", 32768, _CARD_32K),
    QwenSize("7B", 7.61e9, 28, 28, 4, 3584, 18944, 152064, False, "apache-2.0", 32768, _CARD_128K),
    QwenSize("14B", 14.7e9, 48, 40, 8, 5120, 13824, 152064, False, "apache-2.0", 32768, _CARD_128K),
)


@dataclass(frozen=True)
class Estimate:
    """The memory one size needs for one purpose: named parts (bytes) that add up to `total`, and for each
    part the formula with its numbers (`arithmetic`)."""

    model: QwenSize
    purpose: Purpose
    parts: dict[str, int]
    arithmetic: dict[str, str]

    @property
    def total(self) -> int:
        return sum(self.parts.values())


def kv_bytes_per_token(model: QwenSize, dtype_bytes: int = 2) -> int:
    """KV-cache bytes per token: 2 (key and value) · layers · kv heads · head dim · bytes per value."""
    return 2 * model.layers * model.kv_heads * model.head_dim * dtype_bytes


def lora_parameters(model: QwenSize, rank: int = LORA_RANK) -> int:
    """LoRA parameters on q, k, v, o, gate, up and down of every layer: r · (in + out) per projection.

    q and o: h → h; k and v: h → kv·d; gate and up: h → I; down: I → h. Sum: 9h + 2·kv·d + 3I per rank.
    """
    h, kvd, i = model.hidden, model.kv_heads * model.head_dim, model.intermediate
    return rank * model.layers * (9 * h + 2 * kvd + 3 * i)


def activation_bytes(model: QwenSize, context: int) -> int:
    """Training activations of one sequence of `context` tokens: 34 · s · h · L (16-bit, no recomputation)
    + 4 · s · V (the fp32 logits)."""
    per_layer = ACTIVATION_BYTES_PER_TOKEN_HIDDEN_LAYER * context * model.hidden
    return per_layer * model.layers + 4 * context * model.vocab


def estimate(
    model: QwenSize, purpose: Purpose, dtype: str = "bf16", context: int = DEFAULT_CONTEXT
) -> Estimate:
    """What `model` needs for `purpose` (module docstring). `dtype` sets inference weights and KV cache
    (training keeps bf16 weights); `context` is the KV cache's length and the training sequence length.

    Raises FoundryError for an unknown purpose or dtype, or context < 1.
    """
    if purpose not in PURPOSES:
        raise FoundryError(f"Unknown purpose {purpose!r}.", f"Use one of: {', '.join(PURPOSES)}.")
    if dtype not in DTYPE_BYTES:
        raise FoundryError(f"Unknown dtype {dtype!r}.", f"Use one of: {', '.join(DTYPE_BYTES)}.")
    if context < 1:
        raise FoundryError(f"context = {context} must be 1 or more tokens.", "E.g. --context 4096.")
    p = round(model.parameters)
    parts: dict[str, int] = {}
    how: dict[str, str] = {}
    if purpose == "inference":
        b = DTYPE_BYTES[dtype]
        parts["weights"] = p * b
        how["weights"] = f"{p:,} params × {b} bytes ({dtype})"
        per_token = kv_bytes_per_token(model, b)
        parts["kv_cache"] = per_token * context
        how["kv_cache"] = (
            f"2 · {model.layers} layers · {model.kv_heads} kv heads · {model.head_dim} head dim · {b} bytes"
            f" = {per_token:,} bytes/token × {context:,} tokens"
        )
    else:
        if purpose == "lora":
            parts["weights"] = p * 2
            how["weights"] = f"{p:,} params × 2 bytes (bf16, frozen)"
            n = lora_parameters(model)
            parts["adapter"] = n * OPTIMIZER_BYTES_PER_PARAM
            how["adapter"] = (
                f"{LORA_RANK} · {model.layers} layers · (9·{model.hidden} + 2·{model.kv_heads}·"
                f"{model.head_dim} + 3·{model.intermediate}) = {n:,} params × 16 bytes (fp32 + grad + AdamW)"
            )
        else:
            parts["weights_grads_adamw"] = p * OPTIMIZER_BYTES_PER_PARAM
            how["weights_grads_adamw"] = (
                f"{p:,} params × 16 bytes (bf16 weights + grads, fp32 master + AdamW)"
            )
        parts["activations"] = activation_bytes(model, context)
        how["activations"] = (
            f"34 · {context:,} tokens · {model.hidden} hidden · {model.layers} layers"
            f" + 4 · {context:,} · {model.vocab:,} vocab (fp32 logits)"
        )
    rest = sum(parts.values())
    parts["overhead"] = OVERHEAD_FIXED + math.ceil(OVERHEAD_FRACTION * rest)
    how["overhead"] = f"0.5 GiB runtime + 10% of {rest / GIB:.2f} GiB"
    return Estimate(model, purpose, parts, how)


@dataclass(frozen=True)
class Memory:
    """Memory to fit a model in: `available` bytes and where the figure comes from (`source`)."""

    available: int
    source: str
    device: str  # "cpu" or "cuda"


def parse_ram(value: float) -> Memory:
    """`--ram GB` (GiB) as a Memory; FoundryError for 0, a negative or a non-finite number."""
    if not (math.isfinite(value) and value > 0):
        raise FoundryError(
            f"--ram {value} is not a memory size: it must be a positive number of GiB.",
            "E.g. --ram 16 for a machine with 16 GiB free, or leave --ram out to measure this machine.",
        )
    return Memory(round(value * GIB), "--ram", "cpu")


def available_memory(meminfo: str | Path = "/proc/meminfo") -> Memory:
    """This machine's memory for a model: the free memory of its largest CUDA GPU when torch sees one (torch
    is imported only when an NVIDIA driver is installed), else MemAvailable of `meminfo` (psutil's figure
    where /proc is missing). Raises FoundryError when neither can be read."""
    if os.path.exists("/proc/driver/nvidia/version") or os.path.exists("/dev/nvidia0"):
        gpu = _cuda_memory()
        if gpu is not None:
            return gpu
    try:
        for line in Path(meminfo).read_text(encoding="ascii").splitlines():
            key, _, value = line.partition(":")
            if key == "MemAvailable":
                return Memory(int(value.split()[0]) * 1024, f"{meminfo} MemAvailable", "cpu")  # kB
    except (OSError, ValueError, IndexError):
        pass
    try:
        import psutil  # type: ignore[import-untyped]

        return Memory(int(psutil.virtual_memory().available), "psutil available memory", "cpu")
    except ImportError:
        raise FoundryError(
            "Cannot tell how much memory this machine has (no /proc/meminfo MemAvailable, no psutil).",
            "Give it with --ram GB.",
        ) from None


def _cuda_memory() -> Memory | None:
    """The free memory of the CUDA device with the most of it, or None without CUDA."""
    try:
        import torch
    except ImportError:
        return None
    if not torch.cuda.is_available():
        return None
    free = [(torch.cuda.mem_get_info(i)[0], i) for i in range(torch.cuda.device_count())]
    best, index = max(free)
    name = torch.cuda.get_device_name(index)
    return Memory(int(best), f"cuda:{index} ({name}) free memory", "cuda")


@dataclass(frozen=True)
class Recommendation:
    """The largest size that fits (`model` None: none does) and every size's estimate, smallest first."""

    memory: Memory
    purpose: Purpose
    dtype: str
    context: int
    estimates: tuple[Estimate, ...]
    model: QwenSize | None

    def to_json(self) -> dict[str, Any]:
        """The `foundry recommend --json` document (README, "Which model fits this machine?")."""
        m = self.model
        return {
            "memory": {
                "available_bytes": self.memory.available,
                "available_gib": round(self.memory.available / GIB, 2),
                "source": self.memory.source,
                "device": self.memory.device,
            },
            "for": self.purpose,
            "dtype": self.dtype,
            "context": self.context,
            "recommended": None if m is None else m.size,
            "repo_id": None if m is None else m.repo_id,
            "import_command": None if m is None else import_command(m),
            "catalog_entry": None if m is None else catalog_entry(m),
            "sizes": [
                {
                    "size": e.model.size,
                    "repo_id": e.model.repo_id,
                    "source_url": e.model.url,
                    "parameters": round(e.model.parameters),
                    "max_context": e.model.max_context,
                    "needed_bytes": e.total,
                    "needed_gib": round(e.total / GIB, 2),
                    "fits": e.total <= self.memory.available,
                    "parts": dict(e.parts),
                    "arithmetic": dict(e.arithmetic),
                }
                for e in self.estimates
            ],
        }


def recommend(
    memory: Memory | int, purpose: Purpose, dtype: str = "bf16", context: int = DEFAULT_CONTEXT
) -> Recommendation:
    """The largest Qwen2.5 size whose `estimate` for `purpose` is at most the available memory (bytes) and
    that reads `context` tokens (its `max_context`).

    Raises FoundryError when `context` is longer than every size reads (the table's largest max_context).
    """
    if isinstance(memory, int):
        memory = Memory(memory, "given", "cpu")
    longest = max(QWEN25, key=lambda m: m.max_context)
    if context > longest.max_context:
        raise FoundryError(
            f"--context {context:,} is longer than any Qwen2.5 size reads: at most {longest.max_context:,} "
            "tokens (the model cards; the 7B and 14B cards' 131,072 tokens need YaRN rope scaling, which "
            "transformers does not enable by default).",
            f"Use --context {longest.max_context} or less.",
        )
    estimates = tuple(estimate(m, purpose, dtype, context) for m in QWEN25)
    fitting = [e.model for e in estimates if e.total <= memory.available and context <= e.model.max_context]
    return Recommendation(memory, purpose, dtype, context, estimates, fitting[-1] if fitting else None)


@dataclass(frozen=True)
class Advice:
    """What to try when nothing fits, each part true of the smallest size (`model`) by `estimate`:

    needed: bytes it needs at the asked context; least: bytes it needs at any context (1 token: its
    weights, adapter or optimizer state, and overhead); context: the longest context below the asked one
    that fits, None when even 1 token does not (then the weights are what overflows, not the KV cache or
    the activations); purposes: the other `--for` values it fits for at the asked context (lightest
    first); dtype: "bf16" when inference in fp32 does not fit but bf16 does, else None.
    """

    model: QwenSize
    needed: int
    least: int
    context: int | None
    purposes: tuple[Purpose, ...]
    dtype: str | None


def advise(rec: Recommendation) -> Advice | None:
    """What to try when `rec` found nothing (None when it recommends a size)."""
    if rec.model is not None:
        return None
    smallest, available = rec.estimates[0], rec.memory.available
    model, purpose = smallest.model, rec.purpose

    def fits(context: int, purpose: Purpose = purpose, dtype: str = rec.dtype) -> bool:
        return estimate(model, purpose, dtype, context).total <= available

    least = estimate(model, purpose, rec.dtype, 1).total
    context = None
    if least <= available:  # the weights fit: the longest context that does too (the need grows with it)
        low, high = 1, rec.context - 1
        while low < high:
            mid = (low + high + 1) // 2
            low, high = (mid, high) if fits(mid) else (low, mid - 1)
        context = low
    others = tuple(p for p in PURPOSES if p != purpose and fits(rec.context, p))
    bf16 = purpose == "inference" and rec.dtype == "fp32" and fits(rec.context, dtype="bf16")
    return Advice(model, smallest.total, least, context, others, "bf16" if bf16 else None)


def format_advice(rec: Recommendation) -> list[str]:
    """The "Nothing fits" lines: the smallest size's need, then only what would make it fit ([] when a
    size fits)."""
    advice = advise(rec)
    if advice is None:
        return []
    name, gib = f"Qwen2.5-{advice.model.size}", rec.memory.available / GIB
    lines = [
        f"Nothing fits: even {name} needs {advice.needed / GIB:.2f} GiB for {rec.purpose}, "
        f"{gib:.2f} GiB is available."
    ]
    overflow = "KV cache" if rec.purpose == "inference" else "activations"
    if advice.context is not None:
        lines.append(
            f"Its weights fit; its {overflow} at {rec.context:,} tokens do not: --context {advice.context:,} "
            "or shorter fits."
        )
    else:
        floor = estimate(advice.model, rec.purpose, rec.dtype, 1).parts
        words = {"weights_grads_adamw": "weights, gradients and AdamW state"}
        fixed = " + ".join(
            f"{words.get(part, part)} {size / GIB:.2f}"
            for part, size in floor.items()
            if part not in ("kv_cache", "activations")
        )
        lines.append(
            f"A shorter --context cannot help: even at 1 token it needs {advice.least / GIB:.2f} GiB "
            f"({fixed} GiB). {name} needs {advice.needed / GIB:.2f} GiB of memory at --context "
            f"{rec.context:,}."
        )
    for purpose in advice.purposes:
        need = estimate(advice.model, purpose, rec.dtype, rec.context).total
        lines.append(f"--for {purpose} fits: {name} needs {need / GIB:.2f} GiB for it.")
    if advice.dtype is not None:
        need = estimate(advice.model, rec.purpose, advice.dtype, rec.context).total
        lines.append(f"--dtype {advice.dtype} fits: {name} needs {need / GIB:.2f} GiB in it.")
    return lines


def model_name(model: QwenSize) -> str:
    """The folder name `foundry import-model` gives it: Qwen/Qwen2.5-1.5B → qwen2-5-1-5b."""
    from model_foundry.naming import suggest_name

    return suggest_name(model.repo_id.split("/")[-1])


def import_command(model: QwenSize) -> str:
    return f"foundry import-model {model.repo_id}"


def catalog_entry(model: QwenSize) -> dict[str, Any]:
    """A params.yaml `models:` entry for the size (the format of the catalog's `qwen-0-5b-base`)."""
    return {
        model_name(model): {
            "architecture": "hf-qwen2",
            "source": model.repo_id,
            "license_accepted": True,
            "description": f"Qwen2.5-{model.size} base from the Hub ({model.license})",
        }
    }


def format_report(rec: Recommendation) -> str:
    """The human-readable answer: what was measured, each size's arithmetic, the pick and how to get it."""
    mem = rec.memory
    lines = [
        f"memory: {mem.available / GIB:.2f} GiB ({mem.source})",
        f"for: {rec.purpose}, {rec.dtype if rec.purpose == 'inference' else 'bf16'}, "
        f"context {rec.context:,} tokens",
        "",
    ]
    for e in rec.estimates:
        mark = "fits" if e.total <= mem.available else "too big"
        lines.append(f"Qwen2.5-{e.model.size}: {e.total / GIB:.2f} GiB  [{mark}]   ({e.model.url})")
        for part, size in e.parts.items():
            lines.append(f"    {part:<20} {size / GIB:8.2f} GiB  = {e.arithmetic[part]}")
    lines.append("")
    m = rec.model
    if m is None:
        return "\n".join(lines + format_advice(rec))
    import yaml

    lines += [
        f"recommended: Qwen2.5-{m.size} ({m.repo_id}, licence {m.license})",
        "",
        "import it:",
        f"    {import_command(m)}",
        "",
        f"or add it to params.yaml under `models:` (`license_accepted: true` records that you read and accept"
        f" {m.license}: {m.url}/blob/main/LICENSE):",
    ]
    entry = yaml.safe_dump(catalog_entry(m), sort_keys=False).rstrip("\n")
    lines += [f"  {line}" for line in entry.splitlines()]
    return "\n".join(lines)
