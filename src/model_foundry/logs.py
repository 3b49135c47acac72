"""Quiet by default: third-party warnings and log lines (MLflow, transformers, DVC, ...) hidden unless `-v`.

`configure(verbose)` runs once per `foundry` process, before any command (the CLI root callback; dvc.yaml's
stages are `foundry <stage>` subprocesses, so each stage gets it too). By default it hides:

- Python warnings (`warnings.warn`: torch UserWarnings, transformers/huggingface_hub FutureWarnings, ...)
  raised outside model_foundry; our own messages are printed lines (`note:`/`warning:`), not warnings;
- third-party log records below ERROR: MLflow's "INFO mlflow.store.db.utils: Creating initial MLflow database
  tables...", alembic's migration lines, transformers' and huggingface_hub's warnings, urllib3 retries, ...

Third-party ERROR records stay visible. `-v`/`--verbose` (or FOUNDRY_VERBOSE=1) changes nothing: every
library speaks as it would on its own. Explicit user settings win in both modes: Python's `-W`/PYTHONWARNINGS,
and the MLFLOW_LOGGING_LEVEL, TRANSFORMERS_VERBOSITY, HF_HUB_VERBOSITY environment variables.

MLflow, transformers and huggingface_hub set their loggers' levels when they are imported, which the CLI does
lazily (inside commands), so they are quietened through their own environment variables, read at import.
The variables are inherited by subprocesses (a `dvc` a command runs, and the stages it runs).
"""

from __future__ import annotations

import logging
import os
import sys
import warnings

# Loggers of libraries that log at import or on use, set to ERROR unless verbose (children follow: "dvc"
# covers "dvc.repo.reproduce").
QUIET_LOGGERS = (
    "alembic",
    "mlflow",
    "transformers",
    "huggingface_hub",
    "dvc",
    "dvc_objects",
    "dvc_data",
    "scmrepo",
    "urllib3",
    "httpx",
    "filelock",
    "sqlalchemy",
    "torch",
    "peft",
    "accelerate",
    "git",
    "asyncio",
)

# Environment variables the libraries read at import: their level for the quiet mode.
QUIET_ENV = {
    "MLFLOW_LOGGING_LEVEL": "ERROR",
    "TRANSFORMERS_VERBOSITY": "error",
    "HF_HUB_VERBOSITY": "error",
}


# The QUIET_ENV variables this process (or a quiet foundry it runs under) set, not the user.
SET_BY_US = "FOUNDRY_QUIET_ENV"


def configure(verbose: bool) -> None:
    """Set up logging and warnings for one `foundry` process: quiet third-party output unless `verbose`.

    Quiet (the default): Python warnings raised outside model_foundry are ignored (unless `-W` or
    PYTHONWARNINGS says otherwise), third-party loggers in `QUIET_LOGGERS` drop records below ERROR, and
    the `QUIET_ENV` variables are set where the user has not set them (and listed in FOUNDRY_QUIET_ENV).
    Verbose: nothing is changed, except that QUIET_ENV variables a quiet parent `foundry` set (listed in
    FOUNDRY_QUIET_ENV) are removed.
    Idempotent; never raises.
    """
    if verbose:
        for name in os.environ.pop(SET_BY_US, "").split(","):  # set by a quiet foundry this one runs under
            if name in QUIET_ENV and os.environ.get(name) == QUIET_ENV[name]:
                del os.environ[name]
        return
    if not sys.warnoptions:  # `python -W ...` or PYTHONWARNINGS: the user's choice
        warnings.simplefilter("ignore")
        warnings.filterwarnings("default", module=r"model_foundry(\.|$)")  # inserted first: matched first
    ours = [name for name in QUIET_ENV if name not in os.environ]
    for name in ours:
        os.environ[name] = QUIET_ENV[name]
    if ours:  # so that a `foundry -v` started from here (inheriting them) can tell them from the user's
        os.environ[SET_BY_US] = ",".join(sorted({*ours, *os.environ.get(SET_BY_US, "").split(",")} - {""}))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers = sys.modules.get("transformers")  # imported already: it has read its variable
    if transformers is not None and os.environ["TRANSFORMERS_VERBOSITY"] == "error":
        transformers.logging.set_verbosity_error()
