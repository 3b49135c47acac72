"""Will a config fit this machine? Parameters, activations and memory estimated from the config alone.

Checked when params are validated, before anything is allocated: a `block_size: 10**9`, `n_embd: 10**6`,
`batch_size: 10**7` or `n_layer: 10**30` is refused with the estimate and the machine's memory instead of an
allocation error or a hang while layers are built. Torch-free and integer arithmetic only (a config may hold
integers too large for a float).

The estimate is deliberately rough (within a factor of about two for the built-in architectures):
  training   = 16 bytes per parameter (fp32 weights, gradients, AdamW's two moments)
             + activations kept for the backward pass: batch × block × (layers × per-layer width + logits)
  evaluation = 4 bytes per parameter + the activations of one evaluation batch
both plus a fixed runtime overhead (Python, torch, the tokenizer). The limit is the memory available now
(MemAvailable), or `FOUNDRY_MAX_RAM` (e.g. `64GiB`) where the run happens elsewhere or on a GPU larger
than RAM.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from model_foundry.errors import FoundryError

if TYPE_CHECKING:
    from model_foundry.config import EvaluateConfig, TrainConfig

RUNTIME_OVERHEAD = 512 << 20  # Python, torch, the tokenizer, allocator slack
FLOAT_BYTES = 4  # parameters and activations are estimated in fp32 (autocast only lowers them)
# A trained vocabulary seldom exceeds this, whatever tokenizer.vocab_size asks for (the corpus bounds it):
# counting the asked-for size would refuse a harmless `vocab_size: 1000000` on a small corpus.
VOCAB_CAP = 1 << 16
MAX_RAM_ENV = "FOUNDRY_MAX_RAM"


@dataclass(frozen=True)
class Estimate:
    """What a config needs, in bytes (parameters as a count)."""

    parameters: int
    train_bytes: int
    evaluate_bytes: int

    def describe(self) -> str:
        return (
            f"{fmt_count(self.parameters)} parameters; ≈ {fmt_bytes(self.train_bytes)} to train, "
            f"≈ {fmt_bytes(self.evaluate_bytes)} to evaluate"
        )


def fmt_count(n: int) -> str:
    """A parameter count for people: 1.2M, 3.4B, or a power of ten when it is absurd."""
    if n >= 10**15:
        return f"~10^{len(str(n)) - 1}"
    for div, unit in ((10**12, "T"), (10**9, "B"), (10**6, "M"), (10**3, "k")):
        if n >= div:
            return f"{n / div:,.1f}{unit}"
    return str(n)


def fmt_bytes(n: int | None) -> str:
    """Bytes for people (KiB … TiB), safe for integers beyond float range."""
    if n is None:
        return "unknown"
    if n >= 1 << 60:
        return f"~10^{len(str(n)) - 1} B"
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{n} B"


def parse_bytes(text: str, setting: str = "FOUNDRY_MAX_RAM") -> int:
    """'8GiB', '8G' (binary), '8GB' (decimal), '8000000000' → bytes. Raises FoundryError naming `setting`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*", text, re.IGNORECASE)
    if not match:
        raise FoundryError(
            f"{setting} = {text!r} is not a size.", "Write it like 64GiB, 64GB or 68719476736."
        )
    base = 1000 if (match[3] or "").lower() == "b" else 1024
    return int(float(match[1]) * base ** " kmgt".index(match[2].lower() or " "))


def available_memory() -> tuple[int | None, str]:
    """(bytes, where from): FOUNDRY_MAX_RAM if set, else MemAvailable (Linux) or free pages (sysconf)."""
    override = os.environ.get(MAX_RAM_ENV)
    if override:
        return parse_bytes(override), MAX_RAM_ENV
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024, "available memory"
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available memory"
    except (ValueError, OSError, AttributeError):
        return None, "available memory"


# --- per architecture: (parameters, activation values per token of one layer) ---------------------------
# The estimate reads a config's shape, not its name: these are the fields it needs (isinstance checks them).
@runtime_checkable
class TransformerShape(Protocol):
    """A decoder (gpt): learned positions, tied embeddings, a 4 × width MLP."""

    n_layer: int
    n_embd: int
    block_size: int
    vocab_size: int


@runtime_checkable
class EncoderShape(TransformerShape, Protocol):
    """An encoder (bert): its own feed-forward width, token types and an MLM head."""

    intermediate_size: int
    token_types: int


@runtime_checkable
class RecurrentShape(Protocol):
    """A recurrent stack (rnn, lstm, gru)."""

    cell: str
    n_layer: int
    hidden_size: int
    embedding_size: int
    bidirectional: bool
    tie_embeddings: bool
    vocab_size: int

    @property
    def output_size(self) -> int: ...


def _transformer(arch: TransformerShape, vocab: int) -> tuple[int, int]:
    d, layers = arch.n_embd, arch.n_layer
    if isinstance(arch, EncoderShape):
        inner = arch.intermediate_size
        embeddings = (vocab + arch.block_size + arch.token_types) * d + 2 * d
        layer = 4 * (d * d + d) + 2 * (d * inner) + inner + d + 4 * d
        head = d * d + 3 * d + vocab  # transform, its LayerNorm, the (tied) decoder's bias
        return embeddings + layers * layer + head, 12 * d + 2 * inner
    # gpt: tied embeddings, a 4 × d MLP
    return (vocab + arch.block_size) * d + layers * (12 * d * d + 13 * d) + 2 * d, 20 * d


def _recurrent(arch: RecurrentShape, vocab: int) -> tuple[int, int]:
    gates = {"lstm": 4, "gru": 3, "rnn": 1}[arch.cell]
    dirs = 2 if arch.bidirectional else 1
    h, e, out = arch.hidden_size, arch.embedding_size, arch.output_size
    first = dirs * gates * h * (e + h + 2)
    rest = (arch.n_layer - 1) * dirs * gates * h * (out + h + 2)
    projection = out * e + e if out != e else 0  # tied: a projection when sizes differ
    head = (projection if arch.tie_embeddings else out * vocab) + vocab  # + the output bias
    return vocab * e + first + rest + head, dirs * (gates + 2) * h


def estimate(arch: object, vocab_size: int, train: TrainConfig, evaluate: EvaluateConfig) -> Estimate | None:
    """Memory to train and to evaluate a scratch model; None for imported families (the import estimates)
    and any config of another shape than TransformerShape, EncoderShape or RecurrentShape.

    `vocab_size`: the tokenizer's target size (used when the config leaves vocab_size at 0), capped at
    VOCAB_CAP. `train`/`evaluate`: the TrainConfig and EvaluateConfig (batch sizes; train.block_size is the
    sequence length of both).
    """
    if isinstance(arch, TransformerShape):
        vocab = arch.vocab_size or min(vocab_size, VOCAB_CAP)
        params, per_layer = _transformer(arch, vocab)
        width = arch.n_embd
    elif isinstance(arch, RecurrentShape):
        vocab = arch.vocab_size or min(vocab_size, VOCAB_CAP)
        params, per_layer = _recurrent(arch, vocab)
        width = arch.embedding_size
    else:
        return None
    logits = 2 * vocab + 2 * width  # embeddings in, logits and their softmax out
    train_act = train.batch_size * train.block_size * (arch.n_layer * per_layer + 2 * logits)  # + gradients
    eval_act = evaluate.batch_size * train.block_size * (per_layer + logits)  # one layer alive at a time
    return Estimate(
        parameters=params,
        train_bytes=(4 * params + train_act) * FLOAT_BYTES + RUNTIME_OVERHEAD,
        evaluate_bytes=(params + eval_act) * FLOAT_BYTES + RUNTIME_OVERHEAD,
    )


THREADS_PER_CORE = 8  # above this, train.threads is refused


def check_fits(
    where: str, arch: object, vocab_size: int, train: TrainConfig, evaluate: EvaluateConfig
) -> None:
    """Refuse (FoundryError) a config whose estimated memory exceeds what this machine has, or more than
    THREADS_PER_CORE threads per CPU core. `where` names the catalog entry in the message."""
    cores = os.cpu_count() or 1
    # More threads than cores only costs speed (and a committed `threads: 2` keeps results reproducible on a
    # 1-core machine: the runtime warns); far more is a typo that would exhaust memory creating threads.
    if train.threads > THREADS_PER_CORE * cores:
        raise FoundryError(
            f"train.threads = {train.threads} is far more than this machine's {cores} CPU core(s) "
            f"(at most {THREADS_PER_CORE} per core).",
            f"Set train.threads to at most {cores}, or 0 to use all cores.",
        )
    est = estimate(arch, vocab_size, train, evaluate)
    if est is None:
        return
    limit, source = available_memory()
    if limit is None:
        return
    need, what = max((est.train_bytes, "train"), (est.evaluate_bytes, "evaluate"))
    if need > limit:
        raise FoundryError(
            f"{where} needs ≈ {fmt_bytes(need)} of memory to {what}, more than this machine's {source} "
            f"({fmt_bytes(limit)}): {est.describe()} (batch {train.batch_size} × block {train.block_size}).",
            "Lower n_layer / n_embd / block_size / vocab_size or train.batch_size / evaluate.batch_size, "
            f"or set {MAX_RAM_ENV} (e.g. 64GiB) when the run happens on a bigger machine.",
        )
