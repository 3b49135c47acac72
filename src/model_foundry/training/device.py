"""Device, precision and thread choice: CUDA, then Apple MPS, then CPU; bf16 only where it is fast."""

from __future__ import annotations

import contextlib
import ctypes
import functools
import sys
from dataclasses import dataclass, field

import torch

from model_foundry.errors import FoundryError
from model_foundry.training.distributed import Dist


def resolve_device(name: str = "auto") -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise FoundryError("train.device = 'cuda' but no CUDA GPU is visible.", "Use device: auto or cpu.")
    if name == "mps" and not torch.backends.mps.is_available():
        raise FoundryError("train.device = 'mps' but Apple MPS is not available.", "Use device: auto or cpu.")
    return torch.device(name)


def cpu_has_fast_bf16() -> bool:
    """AVX-512 BF16 or AMX: without them CPU bf16 matmuls are emulated and far slower than fp32."""
    cpu = torch.cpu
    return bool(
        getattr(cpu, "_is_avx512_bf16_supported", lambda: False)()
        or getattr(cpu, "_is_amx_tile_supported", lambda: False)()
    )


def resolve_precision(name: str, device: torch.device) -> torch.dtype:
    """The autocast dtype: bf16 where the hardware runs it fast (or when asked), else fp32."""
    if name == "fp32":
        return torch.float32
    if name == "bf16":
        return torch.bfloat16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float32
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    return torch.float32


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager[None]:
    """Mixed precision for the forward pass; weights, optimizer state and the loss stay fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(threads: int, warn: bool = True) -> None:
    """Use `threads` CPU threads (0 = torch's default, all cores); warns (when `warn`) when they outnumber
    the cores."""
    import os
    import sys

    if threads > 0:
        cores = os.cpu_count() or 1
        if threads > cores and warn:
            print(
                f"warning: train.threads = {threads} on {cores} CPU core(s): slower than {cores}, kept for "
                "reproducible results (the thread count changes float sums).",
                file=sys.stderr,
            )
        torch.set_num_threads(threads)


@functools.cache
def keep_freed_memory() -> bool:
    """Let glibc keep freed activation buffers for reuse instead of handing them back to the OS every step.

    By default glibc serves allocations above 128 KiB-32 MiB with fresh mmaps and trims the heap on free, so
    each training step on CPU page-faults its activations in anew: ~1,000-3,000 faults per step for the
    benchmark's 4-layer GPT, 5% of its step time on 2 threads and 7% on 1 (benchmarks/README.md). Raising
    both thresholds keeps the buffers in the heap; the process's peak memory is unchanged. Process-wide,
    Linux/glibc only (a no-op elsewhere), and without effect on the numbers computed.
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
        return bool(libc.mallopt(m_mmap_threshold, 32 << 20) and libc.mallopt(m_trim_threshold, 1 << 30))
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False


@dataclass(frozen=True)
class Runtime:
    """Where and how this process trains: `device` (cuda:LOCAL_RANK under torchrun on GPUs), the autocast
    `dtype`, and `dist`, this process's rank and the world size (1 outside torchrun)."""

    device: torch.device
    dtype: torch.dtype
    dist: Dist = field(default_factory=Dist)

    @classmethod
    def create(cls, device: str = "auto", precision: str = "auto", threads: int = 0) -> Runtime:
        """Resolve device and precision, set the thread count; under torchrun (WORLD_SIZE > 1) also open
        the process group (`Dist.init`: FoundryError for MPS, a port in use, peers that do not come).

        `threads` is the whole run's CPU threads: on a CPU each of N processes takes `max(1, threads // N)`
        (torchrun's own default is 1), so `train.threads: 2, nproc: 2` is one thread per process, not four
        threads fighting for two cores."""
        dist = Dist.from_env()
        dev = resolve_device(device)
        if dist.enabled and dev.type == "cpu" and threads > 0:
            threads = max(1, threads // dist.world_size)
        set_threads(threads, warn=dist.is_main)  # one warning, from process 0
        if dist.enabled:
            dist.init(dev)
            dev = dist.device(dev)
        if dev.type == "cpu":
            keep_freed_memory()
        return cls(dev, resolve_precision(precision, dev), dist)

    def autocast(self) -> contextlib.AbstractContextManager[None]:
        return autocast(self.device, self.dtype)

    def describe(self) -> str:
        dtype = str(self.dtype).removeprefix("torch.")
        procs = f" processes={self.dist.world_size}" if self.dist.enabled else ""
        return f"{self.device.type} {dtype} threads={torch.get_num_threads()}{procs}"
