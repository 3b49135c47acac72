"""The one naming rule for models: catalog keys, folders under models/, `import-model --name`, registry ids.

A model's name ends up in five places, and each has its own rule; a name must satisfy all of them:

- DVC params paths: dvc.yaml lists `models.${model_name}`, and DVC reads every `.` in a params path as
  nesting, so an entry `gpt.v2` is looked up as `models → gpt → v2` and `dvc repro` fails with "Parameters
  'models.gpt.v2' are missing" (dvc/dependency/param.py; checked with dvc 3.67).
- DVC artifact names (the `artifacts:` section of dvc.yaml, read by GTO): GTO 1.10 (gto/constants.py) allows
  `[a-zA-Z0-9]([a-zA-Z0-9-/_]*[a-zA-Z0-9])?`; DVC 3.x before it vendored GTO's older, stricter rule
  `[a-z0-9]([a-z0-9-/]*[a-z0-9])?` (dvc/repo/artifacts.py). We take the stricter one, less the `/`.
- MLflow logged-model names: `/ : . % " '` are refused (mlflow/utils/validation.py,
  `_validate_logged_model_name`); registered-model names refuse `/` and `:`.
- Folders: no path separators, no control characters or whitespace, no leading `.` or `-` (hidden files,
  options), no `.`/`..`.
- A length cap, so that derived names (`<name>-trained`, `<name>-v12`) stay short paths and ids.

The rule that satisfies all of them: lower-case letters, digits and `-`, starting and ending with a letter
or digit, at most MAX_LENGTH characters. Torch-free and dependency-free: `foundry validate` and the importer
use it.
"""

from __future__ import annotations

import re
import unicodedata

from model_foundry.errors import FoundryError

NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")
MAX_LENGTH = 64
RULE = (
    f"names use lower-case letters, digits and '-', start and end with a letter or digit, "
    f"at most {MAX_LENGTH} characters"
)
MLFLOW_FORBIDDEN = ":%\"'"


def name_problem(name: object) -> str | None:
    """Why `name` breaks the naming rule (a clause naming the rule that failed), or None if it is valid."""
    if not isinstance(name, str):
        return f"it is a {type(name).__name__}, not a string"
    if not name:
        return "it is empty"
    if any(unicodedata.category(c).startswith("C") or c.isspace() for c in name):
        return "it contains a control character or whitespace (it would make an odd folder name)"
    if "/" in name or "\\" in name:
        return "it contains a path separator ('/' or '\\'): a name is one folder under models/"
    if "." in name:
        parts = name.split(".")
        nested = f" (models.{name} is read as {' → '.join(['models', *parts])})" if all(parts) else ""
        return (
            f"it contains '.': DVC reads '.' in params paths as nesting{nested}, and MLflow model names "
            "forbid it"
        )
    bad = sorted({c for c in name if c in MLFLOW_FORBIDDEN})
    if bad:
        return f"it contains {', '.join(map(repr, bad))}, which MLflow model names forbid"
    if name != name.lower():
        return "it has upper-case letters: names are lower-case only (DVC/GTO artifact names)"
    bad = sorted({c for c in name if not (c.isascii() and (c.isalnum() or c == "-"))})
    if bad:
        return f"it contains {', '.join(map(repr, bad))}: only a-z, 0-9 and '-' are allowed"
    if name[0] == "-" or name[-1] == "-":
        return "it starts or ends with '-': names start and end with a letter or digit"
    if len(name) > MAX_LENGTH:
        return f"it is {len(name)} characters long (at most {MAX_LENGTH})"
    assert NAME.match(name), name  # the checks above are the rule, spelled out one by one
    return None


def suggest_name(text: str, fallback: str = "model") -> str:
    """A valid name made from any text: `Qwen2.5-0.5B` → `qwen2-5-0-5b`, `my_model v2` → `my-model-v2`.

    Accents are dropped, every run of other characters becomes one '-', the result is cut to MAX_LENGTH;
    `fallback` when nothing is left. Always satisfies `name_problem(...) is None`.
    """
    ascii_text = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode()
    name = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    name = name[:MAX_LENGTH].rstrip("-")
    return name or fallback


def check_name(name: object, what: str = "Model name") -> str:
    """Return `name` if it satisfies the naming rule; raises FoundryError naming the failed rule and a fix.

    `what` starts the message, e.g. "Model name" or "Catalog entry models.<key>".
    """
    problem = name_problem(name)
    if problem is None:
        return name  # type: ignore[return-value]
    suggestion = suggest_name(str(name)) if isinstance(name, str) and name.strip() else ""
    use = f"Use e.g. {suggestion!r}: " if suggestion and suggestion != name else "Use a name that fits: "
    raise FoundryError(f"{what} {name!r} is not allowed: {problem}.", f"{use}{RULE}.")
