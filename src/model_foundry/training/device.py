"""Device, precision and thread choice: CUDA, then Apple MPS, then CPU; bf16 only where it is fast."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from model_foundry.errors import FoundryError


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


def autocast(device: torch.device, dtype: torch.dtype) -> contextlib.AbstractContextManager:
    """Mixed precision for the forward pass; weights, optimizer state and the loss stay fp32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def set_threads(threads: int) -> None:
    if threads > 0:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    dtype: torch.dtype

    @classmethod
    def create(cls, device: str = "auto", precision: str = "auto", threads: int = 0) -> Runtime:
        set_threads(threads)
        dev = resolve_device(device)
        return cls(dev, resolve_precision(precision, dev))

    def autocast(self) -> contextlib.AbstractContextManager:
        return autocast(self.device, self.dtype)

    def describe(self) -> str:
        return f"{self.device.type} {str(self.dtype).removeprefix('torch.')} threads={torch.get_num_threads()}"
