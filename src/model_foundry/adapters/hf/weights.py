"""Does a checkpoint hold every weight its transformers class needs? Checked at import and at every load.

transformers fills a tensor the checkpoint lacks with random values, unseeded, and only logs it: a `BertModel`
(encoder without the MLM head) loaded as `BertForMaskedLM` gives different logits at every load. Here the
checkpoint's tensor names and shapes are read from the safetensors headers (no tensor data), turned into meta
tensors and handed to transformers' own loader on the `meta` device, so the answer follows transformers' own
rules exactly — key renames, the base-model prefix, tied weights (`lm_head.weight` when
`tie_word_embeddings`), non-persistent buffers and the class's `_keys_to_ignore_on_load_*` — without
allocating the model.

A checkpoint with missing tensors is refused, unless the user opts in to `init_missing`: the missing tensors
are then initialised once, seeded, and saved into the imported folder, so every later load is identical.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from model_foundry.errors import FoundryError
from model_foundry.model_folder import checks as model_check

SAFE_INDEX = "model.safetensors.index.json"
INIT_SEED = 0  # seed of the one-time initialisation of missing tensors (recorded in metadata.json)
SHOWN = 8  # key names shown in a message; the rest is counted


@dataclass
class WeightCheck:
    """What transformers' loader would do with a checkpoint, found without loading it."""

    model_class: str
    missing: list[str] = field(default_factory=list)  # would be initialised at random
    unexpected: list[str] = field(default_factory=list)  # in the checkpoint, unused by the class (dropped)
    mismatched: list[str] = field(default_factory=list)  # "name: checkpoint (a, b) vs model (c, d)"
    parameters: int = 0  # nn.Parameters of the built model, tied ones once (transformers' num_parameters)


def weight_files(folder: str | Path) -> list[Path]:
    """The safetensors files transformers reads from `folder`: the index's shards, else model.safetensors.

    The index is checked first (`model_check.read_index`): FoundryError when it is damaged.
    """
    return model_check.weight_files(folder)


def read_header(path: Path) -> dict[str, dict[str, Any]]:
    """{tensor name: {"dtype", "shape", "data_offsets"}} of a safetensors file, checked completely
    (`model_check.check_safetensors`); no tensor data read. FoundryError when the file is damaged."""
    return model_check.check_safetensors(path, str(path))[0]


def checkpoint_tensors(folder: str | Path) -> dict[str, dict[str, Any]]:
    """Every tensor name of the folder's weight files with its dtype and shape."""
    files = weight_files(folder)
    if not files:
        raise FoundryError(f"{folder} has no safetensors weights.")
    out: dict[str, dict[str, Any]] = {}
    for path in files:
        if not path.is_file():
            raise FoundryError(
                f"{path.name}, listed in {SAFE_INDEX}, is missing from {folder}.", "Re-import the model."
            )
        out.update(read_header(path))
    return out


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load report and progress bars for the duration (restored afterwards)."""
    from transformers.utils import logging

    verbosity, bars = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        logging.set_verbosity(verbosity)
        if bars:
            logging.enable_progress_bar()


def check_weights(folder: str | Path, model_cls: Any) -> WeightCheck:
    """Compare the folder's checkpoint with what `model_cls` (e.g. BertForMaskedLM) needs, on the meta device.

    Reads config.json and the safetensors headers only; takes well under a second for any model size.
    """
    import torch

    folder = Path(folder)
    tensors = checkpoint_tensors(folder)
    model_check.read_json_object(folder / model_check.CONFIG_NAME)
    try:
        config = model_cls.config_class.from_pretrained(str(folder), local_files_only=True)
        state = {}
        for name, t in tensors.items():
            dtype = getattr(torch, model_check.ST_DTYPES[t["dtype"]][1])
            state[name] = torch.empty(t["shape"], dtype=dtype, device="meta")
        with quiet_transformers():
            _, info = model_cls.from_pretrained(
                None, config=config, state_dict=state, device_map="meta", output_loading_info=True,
                ignore_mismatched_sizes=True,
            )  # fmt: skip
            with torch.device("meta"):  # as built for a load: tied weights are one Parameter
                model = model_cls(config)
    except Exception as e:  # noqa: BLE001 — transformers/huggingface_hub raise many types for a bad config
        raise config_error(folder, model_cls, e) from None
    mismatched = [
        f"{name}: checkpoint {tuple(saved)} vs model {tuple(wanted)}"
        for name, saved, wanted in sorted(info["mismatched_keys"])
    ]
    return WeightCheck(
        model_class=model_cls.__name__,
        missing=sorted(info["missing_keys"]),
        unexpected=sorted(info["unexpected_keys"]),
        mismatched=mismatched,
        parameters=model.num_parameters(),
    )


def config_error(folder: Path, model_cls: Any, e: BaseException) -> FoundryError:
    """config.json holds values transformers cannot build `model_cls` from (wrong types, impossible sizes).

    A FoundryError passes through unchanged.
    """
    if isinstance(e, FoundryError):
        return e
    text = " ".join(str(e).split())[:300]
    return FoundryError(
        f"{folder / model_check.CONFIG_NAME} does not describe a {model_cls.__name__} that can be built: "
        f"{e.__class__.__name__}: {text}",
        model_check.restore_hint(folder / model_check.CONFIG_NAME),
    )


def listing(keys: list[str]) -> str:
    """The first few names and how many more: `a, b, c (and 12 more)`."""
    shown = ", ".join(keys[:SHOWN])
    return shown + (f" (and {len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def require_shapes(check: WeightCheck, where: str, hint: str | None = None) -> None:
    """Tensors whose shape differs from the config's are never usable: a FoundryError naming them."""
    if check.mismatched:
        raise FoundryError(
            f"{where}: {len(check.mismatched)} tensors do not have the shape config.json gives "
            f"{check.model_class}: {listing(check.mismatched)}.",
            hint
            or "config.json and the weights are from different models: re-save them together with "
            "save_pretrained.",
        )


def missing_error(check: WeightCheck, where: str, hint: str) -> FoundryError:
    """The error for a checkpoint that lacks tensors the class needs (listing the first few, and a count)."""
    return FoundryError(
        f"{where}: the checkpoint lacks {len(check.missing)} tensors that {check.model_class} needs: "
        f"{listing(check.missing)}. transformers would fill them with random values, different at every "
        "load, so results would not be reproducible.",
        hint,
    )


def init_missing(folder: str | Path, model_cls: Any, seed: int = INIT_SEED) -> list[str]:
    """Initialise the tensors the checkpoint lacks once (seeded) and save them into `folder`.

    The model is loaded in its stored dtype with `torch.manual_seed(seed)`, so the initialisation
    is the same on every run, then written back with `save_pretrained`: the folder's weight files (and index)
    are replaced by complete ones in the class's own key names; tensors the class does not use are dropped.
    config.json and every other file stay as they are. Returns the file names of the new weights.
    Needs the RAM of one load of the model.
    """
    import torch

    folder = Path(folder)
    with quiet_transformers(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls.from_pretrained(str(folder), dtype="auto", local_files_only=True)
    with tempfile.TemporaryDirectory(dir=folder, prefix=".init-") as tmp:
        with quiet_transformers():
            model.save_pretrained(tmp)
        new = sorted(
            p.name for p in Path(tmp).iterdir() if p.suffix == ".safetensors" or p.name == SAFE_INDEX
        )
        # unlink, never write into the old files: they may be hard links (Hub cache, the user's folder)
        for old in [*weight_files(folder), folder / SAFE_INDEX]:
            old.unlink(missing_ok=True)
        for name in new:
            shutil.move(str(Path(tmp) / name), folder / name)
    return [n for n in new if n != SAFE_INDEX]
