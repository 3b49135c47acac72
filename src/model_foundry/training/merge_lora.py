"""`foundry merge-lora`: fold a LoRA adapter into its base model and save the result as a canonical folder.

    merge_lora_folder(adapter_dir, out, base=None, force=False)

    adapter_dir   a PEFT-format adapter (adapter_config.json + adapter_model.safetensors; ours or plain
                  peft's), or a LoRA run's folder models/<run>/ with it in adapter/
    base          the model folder it was trained on; default models/<base_model_name_or_path> of the project
    out           the merged model: config.json, model.safetensors, tokenizer, metadata.json — what plain
                  transformers (Hugging Face families) and `model_folder.load_adapter` load

The base is loaded with `model_folder.load_adapter` (integrity checked), the adapter applied frozen
(`lora.load_lora_adapter`), merged (`lora.merge`: W += (alpha / r) · B·A, tied embeddings stay tied) and the
model saved with its adapter's own `save_checkpoint` (atomic), with provenance: fine_tuned_from and parent
= the base, training.method "lora" with the adapter's settings, the base's licence inherited.

Importing this module is cheap (torch, peft and transformers are imported by the functions).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_foundry.errors import FoundryError

MERGED_BY = "foundry merge-lora"
# adapter_config.json keys recorded in metadata.json training.lora (ours: r, alpha, dropout, …)
LORA_RECORD = {"r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "target_modules": "target_modules",
               "modules_to_save": "modules_to_save", "bias": "bias", "use_rslora": "use_rslora",
               "use_dora": "use_dora"}  # fmt: skip


def find_adapter_folder(adapter_dir: str | Path) -> tuple[Path, Path]:
    """(the folder holding adapter_config.json, the folder the user named).

    `adapter_dir` itself when it holds adapter_config.json, else its `adapter/` subfolder (a LoRA run's
    output folder). Raises FoundryError when neither has adapter_config.json.
    """
    from model_foundry.adapters.lora import ADAPTER_CONFIG_NAME
    from model_foundry.model_folder import ADAPTER_DIR

    adapter_dir = Path(adapter_dir)
    if not adapter_dir.is_dir():
        raise FoundryError(
            f"{adapter_dir} is not a folder.",
            "Point to a LoRA adapter folder (adapter_config.json + adapter_model.safetensors) or to a LoRA "
            "run's output folder models/<name>.",
        )
    for folder in (adapter_dir, adapter_dir / ADAPTER_DIR):
        if (folder / ADAPTER_CONFIG_NAME).is_file():
            return folder, adapter_dir
    raise FoundryError(
        f"{adapter_dir} holds no LoRA adapter: neither {ADAPTER_CONFIG_NAME} nor "
        f"{ADAPTER_DIR}/{ADAPTER_CONFIG_NAME}.",
        "Point to a folder written by a LoRA run (train.method: lora) or by peft's save_pretrained; a full "
        "fine-tune's folder has nothing to merge.",
    )


def resolve_base(config: dict[str, Any], base: str | Path | None, where: Path) -> tuple[Path, str]:
    """(base model folder, base model name) for an adapter whose adapter_config.json is `config`.

    `base` when given (its name: metadata.json model_name, else the folder name); else
    `project_root()/models/<base_model_name_or_path>`. Raises FoundryError when the config names no base,
    names a Hub id or a path (not resolvable offline), or names a model the project does not hold.
    """
    from model_foundry.model_folder import METADATA_NAME, is_adapter_only, read_model_info
    from model_foundry.model_folder.checks import read_json_object
    from model_foundry.project import project_root

    if base is not None:
        base = Path(base)
        if is_adapter_only(base):  # a LoRA run without merged weights (may lack config.json)
            meta = read_json_object(base / METADATA_NAME) if (base / METADATA_NAME).is_file() else {}
        else:
            _, meta = read_model_info(base)  # FoundryError when it is not a model folder
        return base, str(meta.get("model_name") or base.resolve().name)
    name = config.get("base_model_name_or_path")
    hint = "Pass the model folder the adapter was trained on: --base models/<name>."
    if not name:
        raise FoundryError(f"{where} names no base model (base_model_name_or_path).", hint)
    if "/" in name or "\\" in name or "@" in name or name in (".", ".."):
        raise FoundryError(
            f"{where} names its base model {name!r}: a Hub id or a path, which cannot be resolved offline.",
            hint + " Import a Hub model first: foundry import-model <id> --name <name>.",
        )
    folder = project_root() / "models" / name
    if not folder.is_dir():
        raise FoundryError(f"The adapter's base model {name!r} is not in this project ({folder}).", hint)
    return folder, name


def lora_record(config: dict[str, Any]) -> dict[str, Any]:
    """metadata.json training.lora from an adapter_config.json: r, alpha, dropout, target_modules,
    modules_to_save (lists sorted) and bias / use_rslora / use_dora where the config has them."""
    record: dict[str, Any] = {}
    for key, ours in LORA_RECORD.items():
        if key in config:
            value = config[key]
            record[ours] = sorted(value) if isinstance(value, list) else value
    record["modules_to_save"] = record.get("modules_to_save") or []
    return record


def merge_lora_folder(
    adapter_dir: str | Path, out: str | Path, base: str | Path | None = None, force: bool = False
) -> dict[str, Any]:
    """Merge the LoRA adapter in `adapter_dir` into its base model and write the canonical folder `out`.

    Returns the metadata.json written (parameters: elements, tied weights once; dtype; sha256 per weight
    file; training: {"method": "lora", "lora": {r, alpha, dropout, target_modules, …}, "adapter_sha256",
    "merged_by"}). The tokenizer is the LoRA run's (when `adapter_dir` holds one), else the base's.

    Raises FoundryError: no adapter_config.json (in `adapter_dir` or its adapter/), not LoRA, a base that
    cannot be found (a Hub id or unknown name: pass `base`), `out` existing without `force`, `out` being the
    base or the adapter's folder, a damaged base (sha256 check) or an adapter that does not fit it.
    """
    from model_foundry.adapters.lora import (
        ADAPTER_CONFIG_NAME,
        ADAPTER_WEIGHTS_NAME,
        load_lora_adapter,
        lora_info,
        merge,
        read_adapter_config,
    )
    from model_foundry.io import sha256_file
    from model_foundry.model_folder import (
        check_parent_checksum,
        has_tokenizer,
        inherit,
        load_adapter,
        load_tokenizer,
        model_metadata,
        parent_record,
        read_model_info,
    )
    from model_foundry.model_folder.checks import read_json_object
    from model_foundry.model_folder.layout import CONFIG_NAME, METADATA_NAME

    folder, named = find_adapter_folder(adapter_dir)
    config = read_adapter_config(folder)
    base_dir, base_name = resolve_base(config, base, folder / ADAPTER_CONFIG_NAME)
    out = Path(out)
    _check_out(out, [base_dir, folder, named], force)

    run_meta = named / METADATA_NAME  # a LoRA run's folder records the checksum of the model it trained on
    same_bytes = named != folder and run_meta.is_file()
    same_bytes = same_bytes and check_parent_checksum(base_dir, read_json_object(run_meta), named)
    adapter = load_adapter(base_dir, verify=not same_bytes)  # the md5 just read every byte of it
    if lora_info(adapter) is not None:  # an adapter-only base (train.merge: false): fold its adapter first
        merge(adapter)
    load_lora_adapter(adapter, folder, trainable=False)
    merge(adapter)
    for where in (named, folder):
        if has_tokenizer(where):
            adapter.tokenizer = load_tokenizer(where)
            break

    if (base_dir / CONFIG_NAME).is_file():
        base_meta = read_model_info(base_dir)[1]
        parent = parent_record(base_dir, base_name)
    else:  # an adapter-only base (train.merge: false) may have no config.json: parent_record needs one
        from model_foundry.registry.dvc import dvc_md5

        base_meta = read_json_object(base_dir / METADATA_NAME)
        parent = {"name": base_name, "sha256": dvc_md5(base_dir)}
    metadata = model_metadata(
        out.name,
        adapter.spec.name,
        base_meta.get("source") or base_name,
        fine_tuned_from=base_name,
        model_id=None,
        base_model=base_name,
        parent=parent,
        training={
            "method": "lora",
            "lora": lora_record(config),
            "adapter_sha256": sha256_file(folder / ADAPTER_WEIGHTS_NAME),
            "merged_by": MERGED_BY,
        },
    )
    metadata = inherit(base_meta, None, metadata, out)  # licence fields (HF saves copy the licence files)
    saved: dict[str, Any] = adapter.to("cpu").save_checkpoint(out, metadata)
    return saved


def _check_out(out: Path, inputs: list[Path], force: bool) -> None:
    """FoundryError when `out` is one of the inputs (or holds one), or exists and `force` is False."""
    target = out.resolve()
    for path in inputs:
        p = path.resolve()
        if target == p or target in p.parents:
            raise FoundryError(
                f"--out {out} would replace {path}, which the merge reads.",
                "Choose a new folder for the merged model, e.g. --out models/<name>-merged.",
            )
    if out.exists() and not force:
        raise FoundryError(
            f"{out} already exists.", "Pass --force to replace it, or choose another --out folder."
        )
