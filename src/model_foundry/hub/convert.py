"""Fetched files → the canonical folder `models/<name>/`, written to a temp dir and renamed at the end.

Weights are never loaded to be copied: safetensors files are hard-linked from the Hub cache (copied where the
filesystem refuses) and hashed in one streaming pass, which also verifies them against the Hub's sha256. A
folder import clones or copies (the user's folder stays independent; `--link` hard-links it). Pickle
checkpoints (`--allow-pickle`) are read with `torch.load(weights_only=True, mmap=True)` and streamed out
tensor by tensor.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from model_foundry.errors import FoundryError
from model_foundry.hub.download import LocalFile, evict
from model_foundry.hub.report import Reporter
from model_foundry.hub.validate import FileSelection
from model_foundry.io import atomic_dir, write_json
from model_foundry.model_folder.checks import ST_DTYPES, WeightsInfo, check_safetensors
from model_foundry.model_folder.layout import (
    CONFIG_NAME,
    METADATA_NAME,
    SAFE_INDEX,
    TOKENIZER_FILES,
    WEIGHTS_NAME,
)

CHUNK = 8 << 20
WINDOW = 64 << 20  # mmap window of _hash (a multiple of mmap.ALLOCATIONGRANULARITY)


@dataclass
class Converted:
    """What building a model folder found out about it (for metadata.json)."""

    files: list[str]
    sha256: dict[str, str]  # weight files of the canonical folder
    weights: WeightsInfo
    linked: int = 0  # weight files hard-linked from the Hub cache
    parameters: int = 0  # as transformers counts them: nn.Parameters only, tied ones once
    init_missing: dict[str, Any] | None = None  # {keys, seed, model_class, replaced}: see complete_weights


def git_blob_sha1(data: bytes) -> str:
    """The git blob id (sha1 hex digest of `blob <size>\\0<data>`) the Hub gives for files not in LFS."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


IMPORT_HINT = (
    "The file is damaged or truncated: download it again (a corrupt Hub download leaves the cache) "
    "or re-save the model with save_pretrained."
)


def inspect_safetensors(path: Path, name: str) -> WeightsInfo:
    """The complete safetensors header check (`model_check.check_safetensors`): what imports also loads.

    Returns the parameter count per dtype; FoundryError names the file and what is wrong with it.
    """
    return check_safetensors(path, name, IMPORT_HINT)[1]


def _hash(path: Path, bar: Any) -> str:
    """sha256 of a file, hashed straight from the page cache through memory-mapped windows.

    mmap saves the copy into a Python buffer that read() makes (about 25% faster here); one window at a time
    keeps the resident memory of a multi-GB shard at WINDOW.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        for offset in range(0, size, WINDOW):
            length = min(WINDOW, size - offset)
            with (
                mmap.mmap(f.fileno(), length, access=mmap.ACCESS_READ, offset=offset) as m,
                memoryview(m) as view,
            ):
                for start in range(0, length, CHUNK):
                    h.update(view[start : start + CHUNK])
                    bar.update(min(CHUNK, length - start))
    return h.hexdigest()


def _try_link(src: Path, dst: Path) -> bool:
    """Hard link when the filesystem allows it (same filesystem, links permitted)."""
    try:
        os.link(src, dst)
        return True
    except OSError:
        return False


FICLONE = 0x40049409  # Linux ioctl: copy-on-write clone (btrfs, XFS, bcachefs); ext4 refuses it


def _try_reflink(src: Path, dst: Path) -> bool:
    """A copy-on-write clone: instant and as independent as a copy, where the filesystem supports it."""
    try:
        import fcntl

        with open(src, "rb") as fin, open(dst, "wb") as fout:
            fcntl.ioctl(fout.fileno(), FICLONE, fin.fileno())
        return True
    except (ImportError, OSError):
        return False


def _copy_and_hash(src: Path, dst: Path, bar: Any) -> str:
    """Copy in the kernel (another thread) while this one hashes the source: max() of both with 2+ cores."""
    with ThreadPoolExecutor(1) as pool:
        job = pool.submit(shutil.copyfile, src, dst)
        digest = _hash(src, bar)
        job.result()
    return digest


def place(name: str, local: LocalFile, dst: Path, link: bool, bar: Any) -> tuple[str, bool]:
    """Put one file into the new folder and return (sha256, linked), verifying the expected hash.

    `link`: hard-link (Hub cache blobs, which huggingface_hub never rewrites in place; a user's folder only
    with --link). Otherwise a copy-on-write clone where the filesystem has them, else a copy made in the
    kernel while this thread hashes the source.
    """
    if link and _try_link(local.path, dst):
        digest, linked = _hash(local.path, bar), True
    elif _try_reflink(local.path, dst):
        digest, linked = _hash(local.path, bar), False
    else:
        digest, linked = _copy_and_hash(local.path, dst, bar), False
    if local.expected_sha256 and digest != local.expected_sha256:
        evict(local)
        raise FoundryError(
            f"sha256 mismatch for {name}: expected {local.expected_sha256}, got {digest}.",
            "The download is corrupt (it was removed from the Hub cache): run the import again."
            if local.in_hub_cache
            else "The source file changed or is damaged since it was recorded: re-run the import stage.",
        )
    return digest, linked


def hash_files(local: dict[str, LocalFile], progress: bool = True) -> dict[str, str]:
    """{name: sha256 hex digest} of every fetched file, verified against what the Hub (or a record) says it
    must be (a progress bar on stderr when `progress`). A mismatch evicts the file from the Hub cache and
    raises FoundryError."""
    out = {}
    with _bar(sum(f.path.stat().st_size for f in local.values()), progress, "verify") as bar:
        for name, f in local.items():
            out[name] = _hash(f.path, bar)
            mismatch = f.expected_sha256 and out[name] != f.expected_sha256
            if not mismatch and f.expected_blob_id:
                mismatch = git_blob_sha1(f.path.read_bytes()) != f.expected_blob_id
            if mismatch:
                evict(f)
                raise FoundryError(
                    f"{name} does not match the hash the Hub publishes for it.",
                    "The download is corrupt (it was removed from the Hub cache): run the import again."
                    if f.in_hub_cache
                    else "The source changed since it was recorded: re-run the import stage.",
                )
    return out


def _verify_small(name: str, local: LocalFile, dst: Path) -> None:
    data = dst.read_bytes()
    if local.expected_sha256 and hashlib.sha256(data).hexdigest() != local.expected_sha256:
        evict(local)
        raise FoundryError(f"sha256 mismatch for {name}.", "The download is corrupt: run the import again.")
    if local.expected_blob_id and git_blob_sha1(data) != local.expected_blob_id:
        evict(local)
        raise FoundryError(
            f"{name} does not match the Hub's git blob id {local.expected_blob_id}.",
            "The download is corrupt (it was removed from the Hub cache): run the import again.",
        )


def _bar(total: int, progress: bool, desc: str) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, file=sys.stderr, disable=not progress,
                dynamic_ncols=True, mininterval=0.5)  # fmt: skip


def write_model_folder(
    out: Path,
    selection: FileSelection,
    local: dict[str, LocalFile],
    architecture: str,
    provenance: Callable[[Converted], dict[str, Any]],
    *,
    link: bool,
    link_local: bool = False,
    reporter: Reporter,
    init_missing: bool = False,
    opt_in: str = "--init-missing",
    where: str | None = None,
) -> dict[str, Any]:
    """Build `out` atomically: config, tokenizer, generation config, licence, README, weights, metadata.json;
    returns the metadata written.

    metadata.json is `provenance(converted)` (see `model_folder.model_metadata`) written by
    `model_folder.write_metadata` with the weights as found while copying them: {"parameters" (transformers'
    count), "dtype", "sha256" per weight file}. The weights are checked against what the family's
    transformers class needs (`complete_weights`): a checkpoint that lacks tensors raises FoundryError unless
    `init_missing` (`opt_in` names that option in the hint); `where` names the source in messages. Damaged
    or corrupt files raise FoundryError; on any error `out` is not created.
    """
    from model_foundry.model_folder import write_metadata

    weights = selection.weights
    total = sum(local[w].path.stat().st_size for w in weights)
    result = Converted(files=[], sha256={}, weights=WeightsInfo())
    with atomic_dir(out) as tmp:
        for name in [CONFIG_NAME, *selection.docs, *selection.tokenizer, *selection.generation]:
            shutil.copyfile(local[name].path, tmp / name)
            _verify_small(name, local[name], tmp / name)
        with _bar(total, reporter.progress, f"convert {out.name}") as bar:
            if selection.pickle:
                _convert_pickle(selection, local, tmp, architecture, result, bar)
            else:
                if selection.index:
                    shutil.copyfile(local[selection.index].path, tmp / selection.index)
                    _verify_small(selection.index, local[selection.index], tmp / selection.index)
                for w in weights:
                    result.weights.add(inspect_safetensors(local[w].path, w))
                    digest, linked = place(
                        w, local[w], tmp / w, link and (local[w].in_hub_cache or link_local), bar
                    )
                    result.sha256[w] = digest
                    result.linked += linked
                    # checked again on the copy: a file can change between the first look and the copy
                    if not linked:
                        inspect_safetensors(tmp / w, w)
        complete_weights(tmp, architecture, result, init_missing=init_missing, opt_in=opt_in,
                         where=where or out.name, reporter=reporter)  # fmt: skip
        _ensure_fast_tokenizer(tmp, reporter)
        result.files = sorted(p.name for p in tmp.iterdir()) + [METADATA_NAME]
        described = {"parameters": result.parameters, "dtype": result.weights.dtype, "sha256": result.sha256}
        return write_metadata(tmp, provenance(result), described)


def complete_weights(
    folder: Path,
    architecture: str,
    result: Converted,
    *,
    init_missing: bool,
    opt_in: str,
    where: str,
    reporter: Reporter,
) -> None:
    """Check the weights in `folder` against the family's transformers class; fill `result.parameters`.

    Missing tensors (transformers would initialise them at random at every load) raise FoundryError, unless
    `init_missing`: then they are initialised once (seeded), saved into `folder` and recorded in
    `result.init_missing`, and the user is warned. Tensors of the wrong shape always raise. Tensors the class
    does not use (e.g. a pre-training head, the pooler of a masked LM) are dropped by transformers at load:
    a warning names them. Raises FoundryError for an architecture that is not a Hugging Face family.
    """
    from model_foundry.adapters import get_spec
    from model_foundry.adapters.hf import weights as hf_weights
    from model_foundry.adapters.hf.families import family_of, model_class

    config = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8"))
    model_cls = model_class(family_of(get_spec(architecture)), config.get("model_type"), where)
    check = hf_weights.check_weights(folder, model_cls)
    hf_weights.require_shapes(check, where)
    if check.unexpected:
        reporter.warn(
            f"{where}: {len(check.unexpected)} tensors of the checkpoint are not used by {check.model_class} "
            f"and are ignored when it loads: {hf_weights.listing(check.unexpected)}"
        )
    result.parameters = check.parameters
    if not check.missing:
        return
    if not init_missing:
        raise hf_weights.missing_error(
            check,
            where,
            "Import a checkpoint that has them (a masked LM needs its MLM head, a causal LM with untied "
            f"embeddings its lm_head.weight), or opt in with {opt_in}: the missing tensors are then "
            f"initialised once (seed {hf_weights.INIT_SEED}), saved into the model folder and recorded in "
            "metadata.json, so every load gives the same model.",
        )
    replaced = dict(result.sha256)
    files = hf_weights.init_missing(folder, model_cls, hf_weights.INIT_SEED)
    after = hf_weights.check_weights(folder, model_cls)
    if after.missing or after.mismatched:  # save_pretrained must have written every tensor the class needs
        raise FoundryError(f"{where}: initialising the missing tensors failed: {after}.")
    result.sha256, result.weights, result.linked = {}, WeightsInfo(), 0
    for name in files:
        result.weights.add(inspect_safetensors(folder / name, name))
        result.sha256[name] = _hash(folder / name, _NullBar())
    result.init_missing = {
        "keys": check.missing,
        "seed": hf_weights.INIT_SEED,
        "model_class": check.model_class,
        "replaced": replaced,  # sha256 of the source's weight files, before the missing tensors were added
    }
    reporter.warn(
        f"{where}: {len(check.missing)} tensors {check.model_class} needs were missing from the checkpoint "
        f"({hf_weights.listing(check.missing)}); as asked ({opt_in}) they were initialised once with seed "
        f"{hf_weights.INIT_SEED} and saved into the model folder"
        + (f" (the {len(check.unexpected)} unused tensors were left out)" if check.unexpected else "")
        + ". They are random, not trained: fine-tune the model before trusting its outputs."
    )


FAST_TOKENIZER = TOKENIZER_FILES[0]  # tokenizer.json
TOKENIZER_HINT = (
    "Import a revision whose tokenizer loads (a tokenizer.json, or slow files that tokenizer_config.json "
    "names the class of), or fix the tokenizer files of the source folder."
)


def _ensure_fast_tokenizer(folder: Path, reporter: Reporter) -> None:
    """Give the folder a tokenizer.json (the tokenize stage and every load read it) when the source has only
    slow tokenizer files, then load it as every later command will; FoundryError, with the reason, when that
    fails (an import that succeeded would otherwise fail at `generate` or `tokenize`)."""
    from model_foundry.model_folder import has_tokenizer

    if not has_tokenizer(folder):
        reporter.warn(
            "warning: the model has no tokenizer files; set tokenizer_override to use it in the pipeline"
        )
        return
    slow = [n for n in TOKENIZER_FILES if n != FAST_TOKENIZER and (folder / n).is_file()]
    try:
        _build_fast_tokenizer(folder, slow)
    except FoundryError as e:  # name the model, not the temp folder, and say what to do at import time
        raise FoundryError(e.message.replace(str(folder), "the model"), TOKENIZER_HINT) from None


def _build_fast_tokenizer(folder: Path, slow: list[str]) -> None:
    from model_foundry.model_folder import check_tokenizer_files, load_tokenizer

    check_tokenizer_files(folder)
    if not (folder / FAST_TOKENIZER).is_file():
        tok: Any = None
        try:
            from transformers import AutoTokenizer

            tok = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=False, local_files_only=True)
            fast = getattr(tok, "is_fast", False)
            why = f"transformers built a slow {type(tok).__name__} only"
        except Exception as e:  # noqa: BLE001 — conversion raises many types (ValueError, ImportError, ...)
            fast, why = False, f"{e.__class__.__name__}: {' '.join(str(e).split())[:300]}"
        if not fast:
            raise FoundryError(
                f"The model's tokenizer files ({', '.join(slow)}) cannot be converted to a fast tokenizer "
                f"(tokenizer.json): {why}."
            )
        tok.save_pretrained(str(folder))
    load_tokenizer(folder)


# --- pickle → safetensors -------------------------------------------------------------------------------
def _convert_pickle(
    selection: FileSelection,
    local: dict[str, LocalFile],
    tmp: Path,
    architecture: str,
    result: Converted,
    bar: Any,
) -> None:
    from model_foundry.adapters import get_spec
    from model_foundry.adapters.hf.families import family_of

    family = family_of(get_spec(architecture))
    config = json.loads((tmp / CONFIG_NAME).read_text())
    tie = bool(config.get("tie_word_embeddings", True))
    weight_map: dict[str, str] = {}
    total_size = 0
    for src in selection.weights:
        dst = (
            WEIGHTS_NAME
            if not selection.index
            else src.replace("pytorch_model", "model").replace(".bin", ".safetensors")
        )
        # the pickle itself is verified against the Hub before it is ever unpickled
        digest = _hash(local[src].path, _NullBar())
        if local[src].expected_sha256 and digest != local[src].expected_sha256:
            evict(local[src])
            raise FoundryError(
                f"sha256 mismatch for {src}.", "The download is corrupt: run the import again."
            )
        tensors = _load_pickle(local[src].path, src)
        tensors = _drop_aliases(tensors, family.tied_keys if tie else (), family.ignored_keys)
        result.sha256[dst], size, info = write_safetensors(tensors, tmp / dst, {"format": "pt"}, bar)
        result.weights.add(info)
        total_size += size
        weight_map.update(dict.fromkeys(tensors, dst))
        del tensors
    if selection.index:
        write_json(
            tmp / SAFE_INDEX, {"metadata": {"total_size": total_size}, "weight_map": weight_map}, atomic=False
        )


class _NullBar:
    def update(self, n: int) -> None:
        pass


def _load_pickle(path: Path, name: str) -> dict[str, Any]:
    import pickle

    import torch

    try:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError:  # legacy (pre-zip) format cannot be memory-mapped
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # torch's own message ends by suggesting weights_only=False: not ours
        import re

        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        what = f"it references {found[1]}, which is not a tensor type" if found else "it is not tensors alone"
        raise FoundryError(
            f"{name} is refused: {what}, and unpickling it could run arbitrary code on this machine.",
            "Only checkpoints that hold nothing but tensors are converted (read with torch's weights-only "
            "loader). Import the model's safetensors weights instead, or ask its publisher for them.",
        ) from None
    except (RuntimeError, EOFError, OSError) as e:
        raise FoundryError(
            f"{name} cannot be read as a PyTorch checkpoint: {e}", "The file may be truncated."
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise FoundryError(
            f"{name} is not a state dict of tensors.", "Only plain state-dict checkpoints are converted."
        )
    return obj


def _drop_aliases(
    tensors: dict[str, Any], tied_keys: tuple[str, ...], ignored: tuple[str, ...]
) -> dict[str, Any]:
    """Drop legacy buffers and tied copies (same storage as another tensor) that transformers re-ties."""
    out = {k: v for k, v in tensors.items() if not k.endswith(ignored)} if ignored else dict(tensors)
    seen: dict[tuple[int, int, tuple[int, ...], tuple[int, ...]], str] = {}
    for name in sorted(out, key=lambda k: (k in tied_keys, k)):  # keep the untied name of a pair
        t = out[name]
        key = (t.untyped_storage().data_ptr(), t.storage_offset(), tuple(t.shape), tuple(t.stride()))
        if key in seen and name in tied_keys:
            del out[name]
        else:
            seen.setdefault(key, name)
    return out


TORCH_TO_ST = {v[1]: k for k, v in ST_DTYPES.items()}


def write_safetensors(
    tensors: dict[str, Any], path: Path, metadata: dict[str, str], bar: Any
) -> tuple[str, int, WeightsInfo]:
    """Stream tensors into a safetensors file one at a time (never the whole shard as bytes in memory).

    Returns (sha256, size, weights info). Aliased tensors are written as independent copies.
    """
    import torch

    header: dict[str, Any] = {}
    offset, info = 0, WeightsInfo()
    names = sorted(tensors)
    for name in names:
        t = tensors[name]
        dtype = TORCH_TO_ST.get(str(t.dtype).removeprefix("torch."))
        if dtype is None:
            raise FoundryError(f"Tensor {name} has dtype {t.dtype}, which safetensors cannot store.")
        nbytes = t.numel() * t.element_size()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
        info.parameters += t.numel()
        info.by_dtype[dtype] += t.numel()
    header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    h = hashlib.sha256()
    with open(path, "wb") as f:
        for block in (len(raw).to_bytes(8, "little"), raw):
            f.write(block)
            h.update(block)
        for name in names:
            t = tensors[name].detach().contiguous().reshape(-1)
            data = t.view(torch.uint8).numpy() if t.numel() else b""
            f.write(data)
            h.update(data)
            bar.update(len(memoryview(data).cast("B")) if t.numel() else 0)
    return h.hexdigest(), 8 + len(raw) + offset, info
