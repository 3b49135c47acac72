"""Is a model folder intact? Checked before a command loads it: damage is one clear error, not a traceback.

- every JSON file we read (config.json, metadata.json, the shard index, tokenizer settings) is decoded with
  one guard and its structure checked before use (`read_json_object`);
- every safetensors header is checked completely (`check_safetensors`): known dtypes, integer shapes and
  offsets that tile the data exactly — what passes here also loads with safetensors;
- the weights are compared with the sha256 metadata.json records (`verify_hashes`), hashed once per file per
  stat (cached in `.foundry-cache/`), so a flipped byte deep in the tensor data is noticed, not evaluated.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from model_foundry.errors import FoundryError
from model_foundry.model_folder.layout import (
    CONFIG_NAME,
    METADATA_FORMAT,
    METADATA_NAME,
    SAFE_INDEX,
    WEIGHTS_NAME,
)

MAX_JSON = 64 << 20  # config/metadata/index files are kilobytes; a tokenizer.json a few MB
MAX_HEADER = 100 << 20  # safetensors' own limit on the JSON header
HASH_CACHE_NAME = "model_hashes.json"
SHA256 = re.compile(r"[0-9a-f]{64}")
# safetensors dtype → (bytes per element, torch dtype name)
ST_DTYPES = {
    "F64": (8, "float64"), "F32": (4, "float32"), "F16": (2, "float16"), "BF16": (2, "bfloat16"),
    "I64": (8, "int64"), "I32": (4, "int32"), "I16": (2, "int16"), "I8": (1, "int8"), "U8": (1, "uint8"),
    "U16": (2, "uint16"), "U32": (4, "uint32"), "U64": (8, "uint64"), "BOOL": (1, "bool"),
    "F8_E4M3": (1, "float8_e4m3fn"), "F8_E5M2": (1, "float8_e5m2"),
}  # fmt: skip


def restore_hint(path: str | os.PathLike[str]) -> str:
    """What to do about a damaged file of a model folder."""
    return (
        f"Restore it with `dvc checkout --force {Path(path).parent}` if DVC tracks the folder (--force "
        "replaces the damaged copy; or `dvc repro` the stage that writes it), or re-import / re-train the "
        "model."
    )


# --- JSON -------------------------------------------------------------------------------------------------
def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    keys = [k for k, _ in pairs]
    if len(keys) != len(set(keys)):
        dup = next(k for k in keys if keys.count(k) > 1)
        raise ValueError(f"duplicate key {dup!r}")
    return dict(pairs)


def read_json_file(path: str | os.PathLike[str], hint: str | None = None, max_bytes: int = MAX_JSON) -> Any:
    """Parse a JSON file; FoundryError naming the file when it is unreadable, too big, not UTF-8 or not JSON.

    Duplicate keys are refused (which one would win differs between readers). `hint` defaults to
    `restore_hint(path)`.
    """
    path = Path(path)
    hint = hint or restore_hint(path)
    try:
        size = path.stat().st_size
        if size > max_bytes:
            raise FoundryError(f"{path} is {size:,} bytes: too big to be a JSON settings file.", hint)
        text = path.read_bytes().decode("utf-8")
        return json.loads(text, object_pairs_hook=_no_duplicates)
    except UnicodeDecodeError:
        raise FoundryError(f"{path} is damaged: it is not UTF-8 text.", hint) from None
    except (ValueError, RecursionError) as e:  # JSONDecodeError is a ValueError
        why = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise FoundryError(f"{path} is damaged: it is not valid JSON ({why}).", hint) from None
    except OSError as e:
        raise FoundryError(f"{path} cannot be read: {e.strerror or e}.", hint) from None


def read_json_object(path: str | os.PathLike[str], hint: str | None = None) -> dict[str, Any]:
    """`read_json_file` for files that must hold a JSON object (`{...}`)."""
    data = read_json_file(path, hint)
    if not isinstance(data, dict):
        raise FoundryError(
            f"{path} is damaged: it holds a JSON {type(data).__name__}, not an object.",
            hint or restore_hint(path),
        )
    return data


def require_types(data: dict[str, Any], types: dict[str, type | tuple[type, ...]], where: str) -> None:
    """FoundryError naming the first key of `data` whose value is present and not of its type.

    bool is not accepted for int/float (JSON `true` is not a number here).
    """
    for key, want in types.items():
        if key not in data or data[key] is None:
            continue
        value = data[key]
        wanted = want if isinstance(want, tuple) else (want,)
        if isinstance(value, bool) and bool not in wanted or not isinstance(value, wanted):
            names = " or ".join(t.__name__ for t in wanted)
            raise FoundryError(
                f"{where}: {key} = {value!r} must be {names} (found {type(value).__name__}).",
                restore_hint(where),
            )


def check_metadata(meta: dict[str, Any], where: str) -> None:
    """The metadata.json fields commands rely on have the right types; sha256 maps file names to digests."""
    require_types(meta, {"architecture": str, "model_name": str, "parameters": int, "dtype": str,
                         "sha256": dict, "training": dict, "load": dict, "format": int,
                         "parent": dict}, where)  # fmt: skip
    if meta.get("format", METADATA_FORMAT) != METADATA_FORMAT:
        raise FoundryError(
            f"{where}: format = {meta['format']!r}; this Model Foundry reads metadata format "
            f"{METADATA_FORMAT}.",
            "The folder was written by another version of Model Foundry: use that version, or re-train / "
            "re-import the model with this one.",
        )
    parent = meta.get("parent")
    if parent is not None and (
        not isinstance(parent.get("name"), str) or not isinstance(parent.get("sha256"), (str, type(None)))
    ):
        raise FoundryError(
            f'{where}: parent = {parent!r} must be {{"name": <model name>, "sha256": <checksum or null>}}.',
            restore_hint(where),
        )
    for name, digest in (meta.get("sha256") or {}).items():
        if not _plain_name(name) or not isinstance(digest, str) or not SHA256.fullmatch(digest):
            raise FoundryError(
                f"{where}: sha256 entry {name!r}: {digest!r} is not a file name with a sha256 digest.",
                restore_hint(where),
            )


def _plain_name(name: Any) -> bool:
    """A file name inside the folder: no path separators, not `.`/`..`, no control characters."""
    return (
        isinstance(name, str)
        and name not in ("", ".", "..")
        and not any(c in name for c in "/\\")
        and name.isprintable()
    )


# --- safetensors ------------------------------------------------------------------------------------------
@dataclass
class WeightsInfo:
    """Parameter counts of safetensors files, by safetensors dtype."""

    parameters: int = 0
    by_dtype: Counter[str] = field(default_factory=Counter)

    @property
    def dtype(self) -> str | None:
        """The torch name of the dtype most parameters have (None: no tensors)."""
        if not self.by_dtype:
            return None
        return ST_DTYPES[self.by_dtype.most_common(1)[0][0]][1]

    def add(self, other: WeightsInfo) -> None:
        self.parameters += other.parameters
        self.by_dtype.update(other.by_dtype)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_safetensors_header(path: Path, name: str, hint: str) -> tuple[dict[str, Any], int]:
    """(header JSON object, size of the data section in bytes) of a safetensors file; no tensor data read."""

    def bad(why: str) -> FoundryError:
        return FoundryError(f"{name} is not a valid safetensors file: {why}.", hint)

    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            raw = f.read(8)
            if len(raw) < 8:
                raise bad(f"only {size} bytes (empty or truncated)")
            n = int.from_bytes(raw, "little")
            if n > min(size - 8, MAX_HEADER):
                raise bad(f"header length {n:,} exceeds the file ({size:,} bytes)")
            header = json.loads(f.read(n).decode("utf-8"), object_pairs_hook=_no_duplicates)
    except OSError as e:
        raise FoundryError(f"{name} cannot be read: {e.strerror or e}.", hint) from None
    except UnicodeDecodeError:
        raise bad("the header is not UTF-8") from None
    except (ValueError, RecursionError) as e:
        raise bad(f"the header is not JSON ({e.__class__.__name__})") from None
    if not isinstance(header, dict):
        raise bad("the header is not a JSON object")
    return header, size - 8 - n


def check_safetensors(path: Path, name: str, hint: str | None = None) -> tuple[dict[str, Any], WeightsInfo]:
    """Check a safetensors header completely (what safetensors checks when it loads) and return
    ({tensor: {"dtype", "shape", "data_offsets"}}, WeightsInfo).

    Every entry has a known dtype, a shape of non-negative integers and integer offsets whose span is exactly
    the tensor's bytes; together the tensors tile the data section with no gap, overlap or trailing bytes.
    `__metadata__`, when present, maps strings to strings. Raises FoundryError naming `name`.
    """
    hint = hint or restore_hint(path)
    header, data_size = read_safetensors_header(path, name, hint)

    def bad(why: str) -> FoundryError:
        return FoundryError(f"{name} is not a valid safetensors file: {why}.", hint)

    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(isinstance(v, str) for v in meta.values()):
        raise bad("__metadata__ must map strings to strings")
    spans, info = [], WeightsInfo()
    for key, t in header.items():
        if not isinstance(t, dict) or set(t) != {"dtype", "shape", "data_offsets"}:
            raise bad(f"the entry for {key!r} must have exactly dtype, shape and data_offsets")
        dtype, shape, offsets = t["dtype"], t["shape"], t["data_offsets"]
        if dtype not in ST_DTYPES:
            raise bad(f"tensor {key!r} has unknown dtype {dtype!r} (known: {', '.join(ST_DTYPES)})")
        if not isinstance(shape, list) or not all(_is_int(d) and d >= 0 for d in shape):
            raise bad(f"tensor {key!r} has shape {shape!r}, not a list of non-negative integers")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_int(o) for o in offsets)):
            raise bad(f"tensor {key!r} has data_offsets {offsets!r}, not two integers")
        begin, end = offsets
        numel = math.prod(shape)
        if not 0 <= begin <= end or end - begin != numel * ST_DTYPES[dtype][0]:
            raise bad(f"tensor {key!r} has offsets {offsets} that do not fit its shape {shape} and {dtype}")
        spans.append((begin, end, key))
        info.parameters += numel
        info.by_dtype[dtype] += numel
    position = 0
    for begin, end, key in sorted(spans):
        if begin != position:
            what = "overlaps the previous tensor" if begin < position else "leaves a gap before it"
            raise bad(f"tensor {key!r} {what} (offset {begin}, expected {position})")
        position = end
    if position > data_size:
        raise bad(f"truncated: {position - data_size:,} bytes of tensor data are missing")
    if position < data_size:
        raise bad(f"{data_size - position:,} unexpected bytes after the tensor data")
    return header, info


def read_index(folder: Path, hint: str | None = None) -> dict[str, str]:
    """The weight_map of `folder`'s model.safetensors.index.json: {tensor: shard file name}, checked."""
    path = folder / SAFE_INDEX
    hint = hint or restore_hint(path)
    index = read_json_object(path, hint)
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise FoundryError(f"{path} has no weight_map (a non-empty object of tensor → shard file).", hint)
    for tensor, shard in weight_map.items():
        if not _plain_name(shard) or not shard.endswith(".safetensors"):
            raise FoundryError(
                f"{path}: weight_map[{tensor!r}] = {shard!r} is not a .safetensors file name in the folder.",
                hint,
            )
    return weight_map


def weight_files(folder: str | os.PathLike[str], hint: str | None = None) -> list[Path]:
    """The safetensors files of a model folder: the index's shards, else model.safetensors (else [])."""
    folder = Path(folder)
    if (folder / SAFE_INDEX).is_file():
        return [folder / name for name in sorted(set(read_index(folder, hint).values()))]
    single = folder / WEIGHTS_NAME
    return [single] if single.is_file() else []


# --- sha256 -----------------------------------------------------------------------------------------------
def verify_hashes(folder: Path, meta: dict[str, Any]) -> int:
    """Compare every file metadata.json's `sha256` names with its bytes; returns how many were checked.

    Digests are cached per file by path, size, mtime, ctime and inode in the project's `.foundry-cache/`,
    so an unchanged folder costs one `stat` per file. Raises FoundryError naming a missing or changed file.
    """
    from model_foundry.hashcache import HashCache, project_cache

    recorded = meta.get("sha256") or {}
    cache = HashCache(project_cache(folder, HASH_CACHE_NAME), keep_others=True)
    for name, want in sorted(recorded.items()):
        path = folder / name
        if not path.is_file():
            raise FoundryError(f"{path} is missing (metadata.json records its sha256).", restore_hint(path))
        try:
            got = cache.sha256(path)
        except OSError as e:
            raise FoundryError(f"{path} cannot be read: {e.strerror or e}.", restore_hint(path)) from None
        if got != want:
            raise FoundryError(
                f"{path} is damaged: its sha256 {got[:12]}… differs from the {want[:12]}… recorded in "
                "metadata.json when the model was written.",
                restore_hint(path) + " (--no-verify skips this check.)",
            )
    cache.save()
    return len(recorded)


# --- the folder -------------------------------------------------------------------------------------------
def read_model_files(path: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(config.json, metadata.json or {}) of a model folder, both checked to be JSON objects of sane types."""
    path = Path(path)
    if not path.is_dir():
        what = "it does not exist" if not path.exists() else "it is a file"
        raise FoundryError(
            f"{path} is not a model folder: {what}.",
            "Point to a folder written by `foundry convert`, `foundry train` or `foundry import-model`.",
        )
    if not (path / CONFIG_NAME).is_file():
        raise FoundryError(
            f"{path} is not a model folder (no {CONFIG_NAME}).",
            "Point to a folder written by `foundry convert`, `foundry train` or `foundry import-model`.",
        )
    config = read_json_object(path / CONFIG_NAME)
    require_types(config, {"architecture": str, "model_type": str}, str(path / CONFIG_NAME))
    meta = read_json_object(path / METADATA_NAME) if (path / METADATA_NAME).is_file() else {}
    check_metadata(meta, str(path / METADATA_NAME))
    named = (config.get("architecture"), meta.get("architecture"))
    if None not in named and named[0] != named[1]:
        raise FoundryError(
            f"{path}: config.json says architecture {named[0]!r} but metadata.json says {named[1]!r}.",
            restore_hint(path / CONFIG_NAME),
        )
    return config, meta


def check_scratch_config(path: Path, config: dict[str, Any], meta: dict[str, Any]) -> None:
    """A model defined in this repo: its config.json passes the architecture's own rules (types, ranges).

    (An imported model's config.json is checked by transformers when its class is built, before loading.)
    """
    from model_foundry.adapters import get_spec
    from model_foundry.schema import build

    spec = get_spec(meta.get("architecture") or config.get("architecture"))
    if spec.pretrained:
        return
    names = {f.name for f in fields(spec.config_cls)}
    try:
        build(spec.config_cls, {k: v for k, v in config.items() if k in names}, str(path / CONFIG_NAME))
    except FoundryError as e:  # the rule's hint is for params.yaml; this file was written by us
        raise FoundryError(e.message, restore_hint(path / CONFIG_NAME)) from None


def check_weight_files(path: str | os.PathLike[str]) -> WeightsInfo:
    """Check the header of every weight file of the folder (no tensor data read); their parameter counts."""
    info = WeightsInfo()
    for file in weight_files(path):
        if not file.is_file():
            raise FoundryError(f"{file}, listed in {SAFE_INDEX}, is missing.", restore_hint(file))
        info.add(check_safetensors(file, str(file))[1])
    return info


def check_model_folder(
    path: str | os.PathLike[str], verify: bool = True
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Everything cheap that must hold before a model folder is loaded; returns (config, metadata).

    config.json and metadata.json parse and have the right types, the shard index is sane, every safetensors
    header is complete and consistent, and (unless `verify` is False) the weights match the sha256 recorded
    in metadata.json. Raises FoundryError naming the damaged file, with a hint to restore it.
    """
    path = Path(path)
    config, meta = read_model_files(path)
    check_scratch_config(path, config, meta)
    check_weight_files(path)
    if verify:
        verify_hashes(path, meta)
    return config, meta
