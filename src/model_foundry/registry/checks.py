"""Is a registered model folder intact? The library side of `foundry validate-model`.

`validate_model_folder(folder, recorded_md5, recorded_where, cache_dir)` checks, in this order, collecting
every problem instead of stopping at the first:

  1. the folder exists, and its DVC hash (`registry.dvc.dvc_md5`) equals the one dvc.lock or its `.dvc` file
     records; when it differs and DVC's cache holds the recorded `.dir` listing, each added, removed or
     changed file is named;
  2. metadata.json parses and every file whose sha256 it records still has those bytes (read afresh, never
     from the hash cache: a disk that rots a byte leaves `stat` unchanged);
  3. every safetensors header is complete and its tensors tile the file exactly (a truncated shard is caught),
     the shard index names only shards that exist and hold the tensors it maps to them, and a LoRA run's
     `adapter/` holds a readable adapter_config.json and adapter_model.safetensors;
  4. the tensors match config.json: the model its architecture builds from config.json on torch's `meta`
     device (no weights allocated) expects exactly these names and shapes (tied copies may be absent);
  5. config.json parses and the tokenizer builds (`model_folder.load_tokenizer`, what every command uses).

A damaged folder never raises: each finding is a `Problem` naming the file (relative to the folder). Nothing
is written, so validating a folder does not change its DVC hash. Steps 4 and 5 import torch and transformers.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from model_foundry.errors import FoundryError
from model_foundry.model_folder import ADAPTER_DIR
from model_foundry.model_folder.checks import (
    SHA256,
    check_metadata,
    check_safetensors,
    read_index,
    read_json_object,
)
from model_foundry.model_folder.layout import CONFIG_NAME, METADATA_NAME, SAFE_INDEX, WEIGHTS_NAME

ADAPTER_CONFIG = f"{ADAPTER_DIR}/adapter_config.json"
ADAPTER_WEIGHTS = f"{ADAPTER_DIR}/adapter_model.safetensors"
TOKENIZER_JSON_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SHOWN = 20  # tensors named one by one per kind of mismatch; the rest are counted


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a model folder: `file` relative to the folder ("." for the folder itself)."""

    file: str
    message: str


def validate_model_folder(
    folder: Path,
    recorded_md5: str | None,
    recorded_where: str | None = None,
    cache_dir: Path | None = None,
) -> list[Problem]:
    """Every problem found in the model folder `folder`, in check order; [] when it is intact.

    recorded_md5:   DVC's hash of the folder (`<hex>.dir`) from dvc.lock or a `.dvc` file, or None (no record:
                    step 1 only checks that the folder exists).
    recorded_where: where that hash was read, for messages ("dvc.lock stage train", "models/x.dvc").
    cache_dir:      DVC's cache of md5 objects (`.dvc/cache/files/md5`); when it holds the recorded listing
                    (`<md5[:2]>/<md5[2:]>`) a changed folder hash is explained file by file.

    Never raises for a damaged folder: unreadable, missing, truncated or unparsable files are Problems.
    Reads every file of the folder (twice when a hash is recorded: md5 for DVC, sha256 for metadata.json).
    """
    folder = Path(folder)
    if not folder.is_dir():
        what = "it is a file, not a folder" if folder.exists() else "the folder does not exist"
        return [Problem(".", what)]
    problems = check_dvc_hash(folder, recorded_md5, recorded_where or "the DVC record", cache_dir)
    meta, meta_problems = check_recorded_hashes(folder)
    problems += meta_problems
    headers, weight_problems = check_weight_headers(folder)
    problems += weight_problems
    config, config_problems = _read_config(folder)
    if config is not None and headers is not None:
        config_problems = check_tensors(folder, config, meta, headers) + config_problems
    problems += config_problems
    has_weights = bool(headers) or (folder / ADAPTER_DIR).is_dir()
    config_ok = not any(p.file == CONFIG_NAME for p in config_problems)  # transformers' tokenizers read it
    problems += check_tokenizer(folder, has_weights, config_ok)
    return problems


# --- 1. the DVC hash ----------------------------------------------------------------------------------------
def check_dvc_hash(folder: Path, recorded: str | None, where: str, cache_dir: Path | None) -> list[Problem]:
    """Compare DVC's hash of `folder` with `recorded`; name the differing files when the listing is cached."""
    from model_foundry.registry.dvc import dvc_md5

    if not recorded:
        return []
    try:
        got = dvc_md5(folder)
    except OSError as e:
        return [Problem(".", f"cannot be hashed: {e.strerror or e} ({e.filename})")]
    if got == recorded:
        return []
    listing = read_dir_listing(cache_dir, recorded) if cache_dir is not None else None
    if listing is None:
        return [Problem(".", f"folder hash {got} differs from {recorded} recorded in {where}")]
    try:
        now = dir_listing(folder)
    except OSError as e:
        return [Problem(".", f"cannot be hashed: {e.strerror or e} ({e.filename})")]
    problems = []
    for rel in sorted(set(now) | set(listing)):
        if rel not in listing:
            problems.append(Problem(rel, f"added since {where} was recorded"))
        elif rel not in now:
            problems.append(Problem(rel, f"missing: {where} records it"))
        elif now[rel] != listing[rel]:
            problems.append(Problem(rel, f"changed: md5 {now[rel]} differs from {listing[rel]} in {where}"))
    # The same files with the same bytes but another hash: the record itself is not DVC's hash of the listing.
    return problems or [Problem(".", f"folder hash {got} differs from {recorded} recorded in {where}")]


def dir_listing(folder: Path) -> dict[str, str]:
    """{relpath (posix): md5} of every file below `folder`, as DVC lists a folder. Raises OSError."""
    from model_foundry.registry.dvc import dvc_md5

    return {p.relative_to(folder).as_posix(): dvc_md5(p) for p in sorted(folder.rglob("*")) if p.is_file()}


def read_dir_listing(cache_dir: Path, md5: str) -> dict[str, str] | None:
    """{relpath: md5} of the `.dir` object `md5` in DVC's cache (`registry.dvc.read_listing`), or None
    when it is not there or not a listing."""
    from model_foundry.registry.dvc import read_listing

    entries = read_listing(Path(cache_dir), md5)
    return None if entries is None else {e["relpath"]: e["md5"] for e in entries}


# --- 2. metadata.json and the sha256 it records ------------------------------------------------------------
def check_recorded_hashes(folder: Path) -> tuple[dict[str, Any], list[Problem]]:
    """(metadata.json or {}, problems): the file parses and has sane fields, and every file whose sha256 it
    records (`sha256` per weight file, `training.adapter_sha256` for `adapter/`) still has those bytes."""
    from model_foundry.io import sha256_file

    try:
        meta = read_json_object(folder / METADATA_NAME)
    except FoundryError as e:
        missing = not (folder / METADATA_NAME).exists()
        return {}, [Problem(METADATA_NAME, "missing") if missing else _problem(METADATA_NAME, e, folder)]
    problems = []
    try:
        check_metadata(meta, METADATA_NAME)
    except FoundryError as e:
        problems.append(_problem(METADATA_NAME, e, folder))
    sha256: dict[str, Any] = meta["sha256"] if isinstance(meta.get("sha256"), dict) else {}
    recorded = {
        n: d for n, d in sha256.items() if _plain_name(n) and isinstance(d, str) and SHA256.fullmatch(d)
    }
    training: dict[str, Any] = meta["training"] if isinstance(meta.get("training"), dict) else {}
    adapter_sha256 = training.get("adapter_sha256")
    # `foundry merge-lora` records the adapter's sha256 too but keeps no adapter/: a LoRA run's is checked
    if (
        (folder / ADAPTER_DIR).is_dir()
        and isinstance(adapter_sha256, str)
        and SHA256.fullmatch(adapter_sha256)
    ):
        recorded[ADAPTER_WEIGHTS] = adapter_sha256
    for name, want in sorted(recorded.items()):
        path = folder / name
        if not path.is_file():
            problems.append(Problem(name, "missing (metadata.json records its sha256)"))
            continue
        try:
            got = sha256_file(path)
        except OSError as e:
            problems.append(Problem(name, f"cannot be read: {e.strerror or e}"))
            continue
        if got != want:
            key = "training.adapter_sha256" if name == ADAPTER_WEIGHTS else "sha256"
            problems.append(
                Problem(
                    name, f"sha256 {got[:12]}… differs from the {want[:12]}… metadata.json records ({key})"
                )
            )
    for path in sorted(folder.glob("*.safetensors")):
        if path.name not in sha256:
            problems.append(Problem(path.name, "a weight file metadata.json records no sha256 for"))
    return meta, problems


# --- 3. safetensors headers, the shard index, the LoRA adapter ---------------------------------------------
def check_weight_headers(folder: Path) -> tuple[dict[str, dict[str, Any]] | None, list[Problem]]:
    """({tensor: {"file", "dtype", "shape"}} of the top-level weights, or None when a header or the index is
    damaged; problems). Every `*.safetensors` at the top level and in `adapter/` is checked completely
    (`check_safetensors`: a truncated file or trailing bytes are caught); the index names existing shards
    that hold the tensors it maps to them, and every shard is in the index."""
    problems = []
    tensors: dict[str, dict[str, Any]] = {}
    damaged = False
    for path in sorted(folder.glob("*.safetensors")):
        try:
            header, _ = check_safetensors(path, path.name)
        except FoundryError as e:
            problems.append(_problem(path.name, e, folder))
            damaged = True
            continue
        for name, t in header.items():
            tensors[name] = {"file": path.name, "dtype": t["dtype"], "shape": list(t["shape"])}
    if (folder / SAFE_INDEX).is_file():
        index_problems = check_index(folder, tensors, damaged)
        damaged = damaged or bool(index_problems)
        problems += index_problems
    if (folder / ADAPTER_DIR).is_dir():
        problems += check_lora_adapter(folder)
    return (None if damaged else tensors), problems


def check_index(folder: Path, tensors: dict[str, dict[str, Any]], headers_damaged: bool) -> list[Problem]:
    """The shard index parses, its shards exist, and (when every header parsed) each tensor it maps is in the
    shard it names; every top-level safetensors file is one of its shards."""
    try:
        weight_map = read_index(folder)
    except FoundryError as e:
        return [_problem(SAFE_INDEX, e, folder)]
    problems = []
    shards = sorted(set(weight_map.values()))
    for shard in shards:
        if not (folder / shard).is_file():
            problems.append(Problem(shard, f"missing: {SAFE_INDEX} lists it"))
    for path in sorted(folder.glob("*.safetensors")):
        if path.name not in shards:
            problems.append(Problem(path.name, f"not a shard {SAFE_INDEX} lists"))
    if not headers_damaged and not problems:
        wrong = sorted(t for t, shard in weight_map.items() if tensors.get(t, {}).get("file") != shard)
        for tensor in wrong[:SHOWN]:
            problems.append(
                Problem(SAFE_INDEX, f"maps tensor {tensor} to {weight_map[tensor]}, which does not hold it")
            )
        if len(wrong) > SHOWN:
            problems.append(Problem(SAFE_INDEX, f"and {len(wrong) - SHOWN} more tensors mapped wrongly"))
    return problems


def check_lora_adapter(folder: Path) -> list[Problem]:
    """A LoRA run's `adapter/` (PEFT format): adapter_config.json is a JSON object, the weights' header is
    complete (their bytes are compared with metadata.json's `training.adapter_sha256` in step 2)."""
    problems = []
    try:
        read_json_object(folder / ADAPTER_CONFIG)
    except FoundryError as e:
        missing = not (folder / ADAPTER_CONFIG).exists()
        problems.append(
            Problem(ADAPTER_CONFIG, "missing") if missing else _problem(ADAPTER_CONFIG, e, folder)
        )
    if not (folder / ADAPTER_WEIGHTS).is_file():
        problems.append(Problem(ADAPTER_WEIGHTS, "missing"))
    else:
        try:
            check_safetensors(folder / ADAPTER_WEIGHTS, ADAPTER_WEIGHTS)
        except FoundryError as e:
            problems.append(_problem(ADAPTER_WEIGHTS, e, folder))
    return problems


# --- 4. the tensors against config.json --------------------------------------------------------------------
def check_tensors(
    folder: Path, config: dict[str, Any], meta: dict[str, Any], tensors: dict[str, dict[str, Any]]
) -> list[Problem]:
    """Compare the weights' tensor names and shapes with what config.json's architecture expects.

    Builds the model on torch's meta device (no memory for weights): a scratch architecture through its
    adapter (saved names and layout: `export_state_dict`, tied copies left out), a Hub family through
    transformers' own loader, as `adapters.hf.weights.check_weights` does at load (renames, tied keys,
    ignored buffers), from the headers step 3 read.
    Skipped for a folder without top-level weights (before training, or a LoRA run's adapter-only folder).
    A missing tensor names the weight file (or the index), an unexpected or misshapen one the file holding it.
    """
    from model_foundry.adapters import get_spec

    if not tensors:
        return []
    architecture = meta.get("architecture") or config.get("architecture")
    try:
        spec = get_spec(architecture if isinstance(architecture, str) else None)
    except FoundryError as e:
        return [_problem(METADATA_NAME if meta.get("architecture") else CONFIG_NAME, e, folder)]
    try:
        if spec.pretrained:
            missing, unexpected, mismatched = _hub_expectations(folder, config, spec, tensors)
        else:
            missing, unexpected, mismatched = _scratch_expectations(config, spec, tensors)
    except FoundryError as e:
        return [_problem(CONFIG_NAME, e, folder)]
    where = SAFE_INDEX if (folder / SAFE_INDEX).is_file() else WEIGHTS_NAME
    problems = [Problem(where, f"lacks tensor {name}, which {CONFIG_NAME} needs") for name in missing[:SHOWN]]
    problems += [
        Problem(
            tensors.get(name, {}).get("file", where),
            f"holds tensor {name}, which {CONFIG_NAME} has no use for",
        )
        for name in unexpected[:SHOWN]
    ]
    problems += [
        Problem(
            tensors.get(name, {}).get("file", where),
            f"tensor {name} has shape {list(saved)}, {CONFIG_NAME} gives {list(wanted)}",
        )
        for name, saved, wanted in mismatched[:SHOWN]
    ]
    for kind, names in (("missing", missing), ("unexpected", unexpected), ("misshapen", mismatched)):
        if len(names) > SHOWN:
            problems.append(Problem(where, f"and {len(names) - SHOWN} more {kind} tensors"))
    return problems


def _scratch_expectations(
    config: dict[str, Any], spec: Any, tensors: dict[str, dict[str, Any]]
) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    """(missing, unexpected, [(name, saved shape, expected shape)]) against a scratch model built from
    config.json on the meta device, in its saved names and layout (`export_state_dict`: tied copies left out).
    Tensors its loader drops (`from_saved`: GPT-2's saved causal masks) are not unexpected.

    Raises FoundryError when config.json breaks the architecture's rules or the model cannot be built.
    """
    import torch

    from model_foundry.schema import build

    names = {f.name for f in fields(spec.config_cls)}
    model_config = build(spec.config_cls, {k: v for k, v in config.items() if k in names}, CONFIG_NAME)
    try:
        with torch.device("meta"):
            adapter = spec.adapter_cls().build(model_config, spec)
            expected = {name: tuple(t.shape) for name, t in adapter.export_state_dict().items()}
    except FoundryError:
        raise
    except Exception as e:  # noqa: BLE001 — torch raises many types for impossible sizes
        raise FoundryError(f"{CONFIG_NAME} does not describe a {spec.name} that can be built: {e}") from None
    unexpected = sorted(set(tensors) - set(expected))
    try:
        extra = {k: torch.empty(tensors[k]["shape"], device="meta") for k in unexpected}
        kept = adapter.from_saved(extra)
        unexpected = [k for k in unexpected if k in kept]
    except Exception:  # noqa: BLE001, S110 — a loader that cannot take them: they stay unexpected
        pass
    missing = sorted(set(expected) - set(tensors))
    mismatched = sorted(
        (name, tuple(tensors[name]["shape"]), shape)
        for name, shape in expected.items()
        if name in tensors and tuple(tensors[name]["shape"]) != shape
    )
    return missing, unexpected, mismatched


def _hub_expectations(
    folder: Path, config: dict[str, Any], spec: Any, tensors: dict[str, dict[str, Any]]
) -> tuple[list[str], list[str], list[tuple[str, tuple[int, ...], tuple[int, ...]]]]:
    """(missing, unexpected, [(name, saved shape, expected shape)]) from transformers' loader on the meta
    device. Legacy buffers the family ignores are not unexpected. Raises FoundryError for a config.json that
    transformers cannot build the family's class from."""
    import torch

    from model_foundry.adapters.hf.families import model_class
    from model_foundry.adapters.hf.weights import config_error, quiet_transformers

    family = spec.family
    model_cls = model_class(family, config.get("model_type"), CONFIG_NAME)
    try:
        hf_config = model_cls.config_class.from_pretrained(str(folder), local_files_only=True)
        state = {
            name: torch.empty(t["shape"], dtype=_torch_dtype(t["dtype"]), device="meta")
            for name, t in tensors.items()
        }
        with quiet_transformers():
            _, info = model_cls.from_pretrained(
                None, config=hf_config, state_dict=state, device_map="meta", output_loading_info=True,
                ignore_mismatched_sizes=True,
            )  # fmt: skip
    except Exception as e:  # noqa: BLE001 — transformers raises many types for a bad config
        raise config_error(Path("."), model_cls, e) from None
    unexpected = [k for k in info["unexpected_keys"] if not k.endswith(family.ignored_keys)]
    mismatched = [(name, tuple(saved), tuple(wanted)) for name, saved, wanted in info["mismatched_keys"]]
    return sorted(info["missing_keys"]), sorted(unexpected), sorted(mismatched)


def _torch_dtype(name: str) -> Any:
    import torch

    from model_foundry.model_folder.checks import ST_DTYPES

    return getattr(torch, ST_DTYPES[name][1])


# --- 5. config.json and the tokenizer ---------------------------------------------------------------------
def _read_config(folder: Path) -> tuple[dict[str, Any] | None, list[Problem]]:
    try:
        return read_json_object(folder / CONFIG_NAME), []
    except FoundryError as e:
        missing = not (folder / CONFIG_NAME).exists()
        return None, [Problem(CONFIG_NAME, "missing") if missing else _problem(CONFIG_NAME, e, folder)]


def check_tokenizer(folder: Path, has_weights: bool, config_ok: bool = True) -> list[Problem]:
    """The tokenizer's JSON files parse and the tokenizer builds as every command loads it.

    A folder without weights (a scratch model before training) needs no tokenizer; one with weights does.
    transformers reads config.json to build a tokenizer: when that is damaged (already a problem), only
    tokenizer.json is built, with the tokenizers library.
    """
    from model_foundry.model_folder import has_tokenizer, load_tokenizer

    problems = []
    for name in TOKENIZER_JSON_FILES:
        if (folder / name).exists():
            try:
                read_json_object(folder / name)
            except FoundryError as e:
                problems.append(_problem(name, e, folder))
    if problems:
        return problems
    if not has_tokenizer(folder):
        return [Problem("tokenizer.json", "missing: the folder has no tokenizer")] if has_weights else []
    if not config_ok:
        return _check_tokenizer_json(folder)
    try:
        load_tokenizer(folder)
    except FoundryError as e:
        present = [n for n in TOKENIZER_JSON_FILES if (folder / n).is_file()]
        problem = _problem(present[0] if present else ".", e, folder)
        _, built, why = problem.message.partition("cannot be built: ")  # model_folder.tokenizer_error
        return [Problem(problem.file, f"the tokenizer cannot be built: {why}") if built else problem]
    return []


def _check_tokenizer_json(folder: Path) -> list[Problem]:
    from tokenizers import Tokenizer

    if not (folder / "tokenizer.json").is_file():
        return []
    try:
        Tokenizer.from_file(str(folder / "tokenizer.json"))
    except Exception as e:  # noqa: BLE001 — tokenizers raises plain Exceptions for a bad file
        return [Problem("tokenizer.json", f"cannot be built: {' '.join(str(e).split())[:300]}")]
    return []


def _plain_name(name: Any) -> bool:
    """A file name directly in the folder (metadata.json's sha256 keys; check_metadata names other keys)."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name


def _problem(file: str, e: FoundryError, folder: Path) -> Problem:
    """The Problem for a FoundryError about `file`: the folder's path taken out of the message, and the file
    name it starts with dropped (the Problem names the file)."""
    message = e.message.replace(f"{folder}/", "").replace(str(folder), ".")
    for prefix in (f"{file}: ", f"{file} ", f"{file}."):  # "config.json.n_layer = …" (schema.build)
        message = message.removeprefix(prefix)
    return Problem(file, message)
