"""What `foundry generate` needs besides the engine: which model a NAME|PATH means, the prompts to read,
the sampling flags given, and fill-mask output. Torch-free: the CLI imports it before loading a model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from model_foundry.errors import FoundryError

MODELS_DIR = "models"


def resolve_model(name: str | None, model: Path | None, root: Path | None = None) -> Path:
    """The model folder meant by a positional NAME|PATH or the `--model PATH` option.

    A PATH is an existing folder (or anything with a path separator); a NAME is `<project root>/models/NAME`.
    Raises FoundryError: neither or both given; a name the project's registry does not know (naming the
    closest ones); a model recorded only in an experiment or the DVC cache (saying `foundry get NAME`).
    """
    from model_foundry.project import project_root

    if name is not None and model is not None and Path(name) != model:
        raise FoundryError(
            f"Two models given: {name} and --model {model}.", "Give the model once, as NAME|PATH."
        )
    if model is not None:
        return model
    if name is None:
        raise FoundryError(
            "Which model? Give a model name or folder.",
            "e.g. `foundry generate gpt-tiny-trained --prompt Hi`.",
        )
    from model_foundry.registry.resolve import model_folder

    return model_folder(name, project_root(root))


def read_prompts(prompt: str, prompts_file: Path | None) -> list[str]:
    """The prompts to run: each line of `prompts_file` (UTF-8, blank lines skipped, line endings
    normalised), or the single `prompt`. Raises FoundryError for both at once, an unreadable file, or a
    file without prompts."""
    if prompts_file is None:
        return [prompt]
    if prompt:
        raise FoundryError("Both --prompt and --prompts-file given.", "Use one of them.")
    if not prompts_file.exists():
        raise FoundryError(
            f"--prompts-file {prompts_file} does not exist.",
            "Check the path (relative to the current folder); the file holds one prompt per line.",
        )
    try:
        text = prompts_file.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        hint = "Give a UTF-8 text file, one prompt per line."
        raise FoundryError(f"Cannot read {prompts_file}: {e}", hint) from None
    prompts = [line for line in text.splitlines() if line.strip()]
    if not prompts:
        raise FoundryError(f"{prompts_file} has no prompts.", "Write one prompt per line.")
    return prompts


def sampling_overrides(
    temperature: float | None,
    top_k: int | None,
    top_p: float | None,
    min_p: float | None,
    repetition_penalty: float | None,
) -> dict[str, Any]:
    """The sampling flags as `Engine.resolve` overrides (None: the model's default)."""
    return {
        "temperature": temperature,
        "top_k": top_k,
        "top_p": top_p,
        "min_p": min_p,
        "repetition_penalty": repetition_penalty,
    }


def fill_mask_lines(predictions: list[list[tuple[str, float]]], as_json: bool = False) -> list[Any]:
    """`fill_mask`'s predictions as lines `mask 1: cat 0.312, dog 0.120` (or, `as_json`, as a list per mask
    of {"token", "score"})."""
    if as_json:
        return [[{"token": t, "score": round(p, 6)} for t, p in mask] for mask in predictions]
    return [
        f"mask {i}: " + ", ".join(f"{t} {p:.3f}" for t, p in mask) for i, mask in enumerate(predictions, 1)
    ]
