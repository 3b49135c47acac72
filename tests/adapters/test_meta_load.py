"""Fast loading (`adapters/meta_load.py`): the model built on the meta device with the file's tensors assigned
is the model the copying load gives, bit for bit, for EVERY registry entry; no random init; copy-on-write.

The reference ("old") loads, kept here as the definition of the right answer:
- scratch entries: `build` (random init) then `load_state_dict` copying the file's tensors;
- Hub families: transformers' `from_pretrained` (`hf.adapter.load_pretrained`), under each `load.dtype`.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from model_foundry.adapters import ARCHITECTURES, meta_load
from model_foundry.adapters.base import BaseAdapter
from model_foundry.adapters.hf.adapter import load_fast, load_pretrained
from model_foundry.adapters.hf.families import family_of, model_class
from model_foundry.adapters.meta_load import empty_parameters, meta_tensors, tied_parameters
from model_foundry.adapters.spec import ArchitectureSpec
from model_foundry.errors import FoundryError
from model_foundry.io import sha256_file
from model_foundry.model_folder import load_adapter
from model_foundry.schema import build

VOCAB = 64
SCRATCH = sorted(name for name, spec in ARCHITECTURES.items() if not spec.pretrained)
HUB = sorted(name for name, spec in ARCHITECTURES.items() if spec.pretrained)
DTYPES = ("float32", "bfloat16", "float16", "auto")
# Scratch variants beyond TINY: untied recurrent head, tied head through a projection, bidirectional.
VARIANTS = {
    "lstm-untied": ("lstm", {"tie_embeddings": False}),
    "gru-proj": ("gru", {"tie_embeddings": True, "hidden_size": 48, "n_layer": 2}),
    "rnn-bidirectional": ("rnn", {"bidirectional": True}),
}
# every Hub family in fp32 and bf16; every load.dtype (float16, auto too) on one family of each objective
ALL_DTYPES = ("hf-qwen2", "hf-bert")
CASES = [(name, "float32") for name in SCRATCH] + [
    (name, d) for name in HUB for d in (DTYPES if name in ALL_DTYPES else DTYPES[:2])
]
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def scratch_folder(name: str, where: Path, extra: dict[str, Any] | None = None, seed: int = 0) -> Path:
    """A scratch model of the registry entry `name`, initialised (seeded) and saved by the project."""
    spec = ARCHITECTURES[name]
    values = {**getattr(spec.config_cls, "TINY", {}), **(extra or {}), "vocab_size": VOCAB}
    torch.manual_seed(seed)
    adapter = spec.adapter_cls().build(build(spec.config_cls, values, name), spec)
    adapter.save_checkpoint(where, {"model_name": where.name})
    return where


def folder_for(name: str, dtype: str, imported_family: Callable[[str], Path], tmp_path: Path) -> Path:
    """A folder of the registry entry `name` whose metadata.json asks for `dtype` (Hub families)."""
    if not ARCHITECTURES[name].pretrained:
        return scratch_folder(name, tmp_path / name)
    folder = tmp_path / name
    shutil.copytree(imported_family(name), folder)
    meta_path = folder / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["load"] = {**(meta.get("load") or {}), "dtype": dtype}
    meta_path.write_text(json.dumps(meta))
    return folder


def copying_load(folder: Path, spec: ArchitectureSpec, dtype: str) -> BaseAdapter:
    """The reference: what loading did before meta loading (random init + copy, or from_pretrained)."""
    cls: Any = spec.adapter_cls()
    if not spec.pretrained:
        adapter = cls.build(cls.config_from_folder(folder, spec), spec)
        adapter.model.load_state_dict(adapter.import_state_dict(load_file(folder / "model.safetensors")))
        return adapter  # type: ignore[no-any-return]
    config = json.loads((folder / "config.json").read_text())
    model_cls = model_class(family_of(spec), config["model_type"], str(folder))
    model = load_pretrained(folder, model_cls, dtype if dtype == "auto" else getattr(torch, dtype))
    return cls(model, model.config, spec)  # type: ignore[no-any-return]


def ids_for(adapter: BaseAdapter) -> torch.Tensor:
    """(2, 8) token ids past the special tokens, the same at every call."""
    return torch.randint(5, adapter.config.vocab_size, (2, 8), generator=torch.Generator().manual_seed(0))


def same_logits(new: BaseAdapter, old: BaseAdapter) -> bool:
    """torch.equal of the two models' logits on the same ids, both in eval mode."""
    ids = ids_for(old)
    new.model.eval()
    old.model.eval()
    with torch.no_grad():
        return torch.equal(new.logits(ids.to(next(new.model.parameters()).device)).cpu(), old.logits(ids))


def assert_same_model(new: nn.Module, old: nn.Module, device: str) -> None:
    """Bit for bit: state dict, buffers (persistent or not), ties, dtypes, requires_grad, mode, device."""
    assert not meta_tensors(new)
    new_sd, old_sd = new.state_dict(), old.state_dict()
    assert list(new_sd) == list(old_sd)
    for key in old_sd:
        assert new_sd[key].dtype == old_sd[key].dtype, key
        assert torch.equal(new_sd[key].cpu(), old_sd[key]), key
    new_buffers, old_buffers = dict(new.named_buffers()), dict(old.named_buffers())
    assert list(new_buffers) == list(old_buffers)
    for key, buf in old_buffers.items():
        assert new_buffers[key].dtype == buf.dtype and torch.equal(new_buffers[key].cpu(), buf), key
    assert tied_parameters(new) == tied_parameters(old)
    for alias, source in tied_parameters(new).items():
        assert new.get_parameter(alias) is new.get_parameter(source)
    new_params, old_params = dict(new.named_parameters()), dict(old.named_parameters())
    for key, p in old_params.items():
        q = new_params[key]
        assert (q.requires_grad, q.dtype, q.is_contiguous()) == (
            p.requires_grad,
            p.dtype,
            p.is_contiguous(),
        ), key
        assert q.device.type == device, key
    assert new.training == old.training


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize(("name", "dtype"), CASES, ids=[f"{n}-{d}" for n, d in CASES])
def test_same_model_as_the_copying_load(
    name: str, dtype: str, device: str, imported_family: Callable[[str], Path], tmp_path: Path
) -> None:
    spec = ARCHITECTURES[name]
    folder = folder_for(name, dtype, imported_family, tmp_path)
    old = copying_load(folder, spec, dtype)
    adapter = load_adapter(folder, device=device)
    if spec.pretrained:
        wanted = dtype if dtype == "auto" else getattr(torch, dtype)
        assert load_fast(folder, type(old.model), wanted) is not None, "fell back to from_pretrained"
        if hasattr(old.model, "generation_config"):  # causal families
            assert adapter.model.generation_config.to_dict() == old.model.generation_config.to_dict()
    assert_same_model(adapter.model, old.model, device)
    assert same_logits(adapter, old)


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_scratch_variants(variant: str, tmp_path: Path) -> None:
    name, extra = VARIANTS[variant]
    folder = scratch_folder(name, tmp_path / variant, extra)
    old = copying_load(folder, ARCHITECTURES[name], "float32")
    adapter = load_adapter(folder)
    assert_same_model(adapter.model, old.model, "cpu")
    assert same_logits(adapter, old)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_load_draws_no_random_numbers(
    name: str, imported_family: Callable[[str], Path], tmp_path: Path
) -> None:
    """Nothing is initialised at random: the global generator is untouched and the seed changes nothing."""
    folder = folder_for(name, "float32", imported_family, tmp_path)
    loads = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        before = torch.get_rng_state()
        loads.append(load_adapter(folder, verify=False))
        assert torch.equal(torch.get_rng_state(), before), "the load drew random numbers"
    first, second = (a.model.state_dict() for a in loads)
    assert all(torch.equal(first[k], second[k]) for k in first)
    if not ARCHITECTURES[name].pretrained:  # building, by contrast, draws (so the check above can fail)
        before = torch.get_rng_state()
        copying_load(folder, ARCHITECTURES[name], "float32")
        assert not torch.equal(torch.get_rng_state(), before)


def train_step(adapter: BaseAdapter) -> None:
    adapter.model.train()
    ids = ids_for(adapter)
    opt = torch.optim.SGD([p for p in adapter.model.parameters() if p.requires_grad], lr=1.0)
    out = adapter(ids[:, :-1], ids[:, 1:])
    assert out.loss is not None
    out.loss.backward()
    opt.step()


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_training_never_writes_the_file(
    name: str, imported_family: Callable[[str], Path], tmp_path: Path
) -> None:
    """An optimizer step changes the loaded (memory-mapped) weights, never the file behind them."""
    folder = folder_for(name, "float32", imported_family, tmp_path)
    files = sorted(folder.glob("*.safetensors"))
    digests = [sha256_file(f) for f in files]
    saved = {k: v.clone() for f in files for k, v in load_file(f).items()}
    adapter = load_adapter(folder)
    train_step(adapter)
    state = adapter.model.state_dict()
    assert any(k in state and not torch.equal(state[k], v) for k, v in saved.items()), "nothing trained"
    assert [sha256_file(f) for f in files] == digests
    assert all(torch.equal(v, saved[k]) for f in files for k, v in load_file(f).items())


def mapped_ranges(path: Path) -> list[tuple[int, int]]:
    """Address ranges of this process's memory maps of `path` (Linux /proc/self/maps)."""
    ranges = []
    for line in Path("/proc/self/maps").read_text().splitlines():
        if line.endswith(str(path)):
            start, end = (int(x, 16) for x in line.split()[0].split("-"))
            ranges.append((start, end))
    return ranges


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs Linux /proc")
@pytest.mark.parametrize("name", ["bert", "lstm", "hf-qwen2"])
def test_weights_are_views_of_the_file(
    name: str, imported_family: Callable[[str], Path], tmp_path: Path
) -> None:
    """float32 weights in the file's layout are not copied: they point into a memory map of the file."""
    folder = folder_for(name, "float32", imported_family, tmp_path)
    adapter = load_adapter(folder)
    ranges = mapped_ranges((folder / "model.safetensors").resolve())
    assert ranges
    params = list(adapter.model.parameters())
    inside = [p for p in params if any(a <= p.data_ptr() < b for a, b in ranges)]
    assert len(inside) == len(params)


def test_empty_parameters_acts_in_its_thread_only() -> None:
    built: dict[str, nn.Linear] = {}
    with empty_parameters():
        inner = nn.Linear(4, 4)
        thread = threading.Thread(target=lambda: built.update(other=nn.Linear(4, 4)))
        thread.start()
        thread.join()
        with empty_parameters():  # nested: still meta inside, still meta after the inner exit
            nested = nn.Linear(4, 4)
        after_nested = nn.Linear(4, 4)
    outside = nn.Linear(4, 4)
    assert inner.weight.device.type == nested.weight.device.type == after_nested.weight.device.type == "meta"
    assert built["other"].weight.device.type == outside.weight.device.type == "cpu"
    assert nn.Module.register_parameter is meta_load._original_register  # the patch is gone


@pytest.mark.parametrize("damage", ["missing", "unexpected", "shape"])
def test_scratch_file_that_does_not_fit_is_refused(damage: str, tmp_path: Path) -> None:
    folder = scratch_folder("gpt", tmp_path / "gpt")
    weights = folder / "model.safetensors"
    tensors = {k: v.clone() for k, v in load_file(weights).items()}
    if damage == "missing":
        del tensors["transformer.ln_f.weight"]
    elif damage == "unexpected":
        tensors["extra.weight"] = torch.zeros(2)
    else:
        tensors["transformer.ln_f.weight"] = torch.zeros(7)
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(FoundryError, match="does not match"):
        load_adapter(folder, verify=False)


def test_hub_folder_with_other_key_names_loads_through_from_pretrained(
    imported_family: Callable[[str], Path], tmp_path: Path
) -> None:
    """GPT-2's Hub checkpoints name tensors without the `transformer.` prefix: transformers renames them,
    the fast path does not try (load_fast → None), and the load gives from_pretrained's model."""
    folder = folder_for("hf-gpt2", "float32", imported_family, tmp_path)
    weights = folder / "model.safetensors"
    tensors = {k.removeprefix("transformer."): v.clone() for k, v in load_file(weights).items()}
    save_file(tensors, weights, metadata={"format": "pt"})
    old = copying_load(folder, ARCHITECTURES["hf-gpt2"], "float32")
    assert load_fast(folder, type(old.model), torch.float32) is None
    adapter = load_adapter(folder, verify=False)
    assert_same_model(adapter.model, old.model, "cpu")
    assert same_logits(adapter, old)


@pytest.mark.parametrize(
    ("damage", "message"), [("missing", "lacks 1 tensors"), ("shape", "do not have the shape")]
)
def test_hub_file_that_does_not_fit_is_refused(
    damage: str, message: str, imported_family: Callable[[str], Path], tmp_path: Path
) -> None:
    """The fast path refuses to guess (load_fast → None); require_complete then names what is wrong."""
    folder = folder_for("hf-qwen2", "float32", imported_family, tmp_path)
    weights = folder / "model.safetensors"
    tensors = {k: v.clone() for k, v in load_file(weights).items()}
    name = "model.norm.weight"
    if damage == "missing":
        del tensors[name]
    else:
        tensors[name] = torch.ones(tensors[name].numel() + 1)
    save_file(tensors, weights, metadata={"format": "pt"})
    with pytest.raises(FoundryError, match=message):
        load_adapter(folder, verify=False)
