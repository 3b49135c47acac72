"""Fast loading: build a model with its parameters on the `meta` device, then assign the file's tensors.

A normal construction allocates every parameter and fills it with random values (`reset_parameters`, the
model's own init) that loading then overwrites, and loading copies the file into them.
Here, inside `empty_parameters()`, every `nn.Parameter` a module registers is moved to the meta device the
moment it is registered (shape and dtype, no memory), so the init functions that follow run on meta tensors
and cost nothing — and draw nothing from torch's random generator. Everything else the constructor makes is
made as usual, on the CPU: the buffers that are not in the weight file (GPT's causal mask, rotary `inv_freq`,
BERT's `position_ids`) come out exactly as a normal construction makes them, because one makes them.
This is accelerate's `init_empty_weights(include_buffers=False)`, made thread-safe: the patch of
`nn.Module.register_parameter` only acts in the thread that entered the context (the server loads a model in a
background thread while the main thread serves requests).

`assign` then puts the file's tensors in place of the meta parameters (`load_state_dict(assign=True)`: the
same strict key and shape checks, the same error messages as a copying load) and re-ties shared weights.

safetensors 0.8's `load_file`/`safe_open(framework="pt")` (default `backend="mmap"`) return CPU tensors that
are views of a private memory map of the file (MAP_PRIVATE: `rw-p` in /proc/self/maps), so "loading" reads
no bytes up front: pages are read from the page cache on first touch, and a write (an optimizer step) copies
the touched page into the process — copy-on-write, the file is never written. The mapping lives as long as
the tensors; files are replaced by rename (`io.atomic_dir`), never rewritten in place, so a loaded model never
sees its file change under it. A tensor that must change dtype or layout (a transposed weight, float32 →
bfloat16) is copied, as any load would.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import torch
from torch import nn

_state = threading.local()  # depth: how many empty_parameters() contexts this thread is inside
_lock = threading.Lock()
_active = 0  # threads inside the context, all together: the patch is installed while > 0
_original_register = nn.Module.register_parameter


def _register_parameter(self: nn.Module, name: str, param: nn.Parameter | None) -> None:
    """`nn.Module.register_parameter`, with the parameter moved to meta in a thread inside the context."""
    if (
        param is not None
        and getattr(_state, "depth", 0) > 0
        and type(param) is nn.Parameter  # subclasses (lazy, quantized) are left as their class makes them
        and param.device.type != "meta"  # already meta: keep the object (a tied weight stays one Parameter)
    ):
        meta = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        meta.__dict__.update(param.__dict__)  # flags libraries set on it (transformers' init marks)
        meta.__dict__.update(_state.marks)
        param = meta
    _original_register(self, name, param)


@contextmanager
def empty_parameters(marks: Mapping[str, object] | None = None) -> Iterator[None]:
    """Within: parameters registered by modules built in this thread are meta tensors; buffers are real.

    Building costs no memory for parameters and no random init; other threads build as usual. `marks`:
    attributes set on each meta parameter (transformers skips its init of a tensor marked
    `_is_hf_initialized`, which spares running it on meta tensors; nested contexts keep the outer marks).
    """
    global _active
    with _lock:
        if _active == 0:
            nn.Module.register_parameter = _register_parameter  # type: ignore[method-assign]
        _active += 1
    depth, outer = getattr(_state, "depth", 0), getattr(_state, "marks", {})
    _state.depth, _state.marks = depth + 1, {**outer, **(marks or {})}
    try:
        yield
    finally:
        _state.depth, _state.marks = depth, outer
        with _lock:
            _active -= 1
            if _active == 0:
                nn.Module.register_parameter = _original_register  # type: ignore[method-assign]


def tied_parameters(model: nn.Module) -> dict[str, str]:
    """{parameter name: the name it shares its Parameter object with}, as the constructor tied them.

    The first name in `named_parameters` order is the source: GPT's `lm_head.weight` →
    `transformer.wte.weight`.
    """
    first: dict[int, str] = {}
    tied: dict[str, str] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        if id(p) in first:
            tied[name] = first[id(p)]
        else:
            first[id(p)] = name
    return tied


def meta_tensors(model: nn.Module) -> list[str]:
    """Names of the parameters and buffers still on the meta device (none after a complete load)."""
    tensors = [*model.named_parameters(remove_duplicate=False), *model.named_buffers(remove_duplicate=False)]
    return [name for name, t in tensors if t.device.type == "meta"]


def assign(model: nn.Module, tensors: Mapping[str, torch.Tensor], tied: Mapping[str, str]) -> None:
    """Put `tensors` (a full state dict, tied copies included) in place of the model's meta tensors.

    Each tensor is used as it is (an mmap view: no copy) when it already has the dtype and layout of the
    parameter it replaces; otherwise it is converted to them (`.to(dtype)`, `.contiguous()`: a copy), so the
    model is the one a copying `load_state_dict` gives, bit for bit, with the same strides. `requires_grad` is
    the constructed parameter's. Then every name in `tied` is pointed at its source's Parameter (one object,
    one storage: an optimizer updates it once).

    Raises RuntimeError (from `load_state_dict(strict=True)`) naming missing or unexpected keys and shape
    mismatches; the model is then left partly assigned.
    """
    expected = model.state_dict(keep_vars=True)
    converted: dict[int, torch.Tensor] = {}  # one conversion for a tensor given under several names
    state: dict[str, torch.Tensor] = {}
    for name, value in tensors.items():
        want = expected.get(name)
        if want is not None and want.shape == value.shape:
            if id(value) not in converted:
                converted[id(value)] = _like(value, want)
            value = converted[id(value)]
        state[name] = value
    model.load_state_dict(state, strict=True, assign=True)
    for alias, source in tied.items():
        owner, _, attr = alias.rpartition(".")
        setattr(model.get_submodule(owner), attr, model.get_parameter(source))


def _like(value: torch.Tensor, want: torch.Tensor) -> torch.Tensor:
    """`value` with `want`'s dtype (floating point only) and contiguity; itself when it has both already."""
    if value.dtype != want.dtype and want.dtype.is_floating_point:
        value = value.to(want.dtype)
    if want.is_contiguous() and not value.is_contiguous():
        value = value.contiguous()
    return value


def first_float_dtype(tensors: Mapping[str, torch.Tensor]) -> torch.dtype | None:
    """The dtype of the first floating-point tensor (transformers' `dtype="auto"` without a config dtype)."""
    return next((t.dtype for t in tensors.values() if t.dtype.is_floating_point), None)
