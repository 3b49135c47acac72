"""Where an import's messages, warnings, progress bars and its one question (the licence) go.

One `Reporter` travels through every step of an import (`importer`, `download`, `validate`, `license`,
`convert`) instead of separate echo/warn/confirm/progress arguments:

- `info(message)`: shown as is (the licence text, the memory estimate);
- `warn(message)`: shown with a `warning: ` prefix (unless it has one) and kept in `warnings`, which
  `import_model` returns in `ImportResult.warnings`;
- `confirm(question)`: the answer of the person at the terminal, or None when there is nobody to ask
  (then an unaccepted licence is refused with the "no terminal to ask" error);
- `progress`: whether progress bars are drawn (they always go to stderr).

`Reporter()` prints to stderr and never asks (what the pipeline stages use); `foundry import-model` gives it
a prompt when stdin is a terminal. `QuietReporter()` prints nothing and keeps what would have been shown in
`messages` (tests). `import_summary(result)` is what `foundry import-model` prints when it is done.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from model_foundry.hub.importer import ImportResult

__all__ = ["QuietReporter", "Reporter", "import_summary"]


@dataclass
class Reporter:
    """Shows an import's messages on `stream` (stderr when None) and asks with `ask` (None: never asks)."""

    progress: bool = True
    ask: Callable[[str], bool] | None = None  # a yes/no prompt; None where there is no terminal
    stream: TextIO | None = None  # None: sys.stderr at the time of writing (tests replace it)
    warnings: list[str] = field(default_factory=list)  # every warn() message, without the prefix

    def show(self, text: str) -> None:
        """Write one line (or block) of text for the user."""
        print(text, file=self.stream or sys.stderr)

    def info(self, message: str) -> None:
        """Show `message` as it is."""
        self.show(message)

    def warn(self, message: str) -> None:
        """Keep `message` in `warnings` and show it as `warning: <message>` (one prefix only)."""
        self.warnings.append(message)
        self.show(message if message.startswith("warning:") else f"warning: {message}")

    def confirm(self, question: str) -> bool | None:
        """The user's yes/no answer to `question`; None when there is nobody to ask (no `ask`)."""
        return None if self.ask is None else bool(self.ask(question))


@dataclass
class QuietReporter(Reporter):
    """Prints nothing and draws no progress bar; what would have been shown is kept in `messages`."""

    progress: bool = False
    messages: list[str] = field(default_factory=list)

    def show(self, text: str) -> None:
        self.messages.append(text)


def import_summary(result: ImportResult, link: bool = False) -> str:
    """What an import did, in words, for stdout (three lines; the first is wrapped here):

        imported localhub/tiny-qwen2 @ 1cc7c2298916 → models/tiny-qwen2 (hf-qwen2, 107,072 parameters,
        float32, 7.7 s)
          licence: apache-2.0
          weights: 1 file hard-linked from the Hub cache (no extra disk space)

    A missing licence reads "not stated by the source"; weights say how many files were hard-linked and why
    the others were copied: a Hub source whose cache cannot be linked to (another filesystem, or links not
    allowed), or a local folder imported without `--link` (`link` is that flag).
    """
    revision = f" @ {result.revision[:12]}" if result.revision else ""
    head = (
        f"imported {result.model_id or result.source}{revision} → {result.path} ({result.architecture}, "
        f"{result.parameters:,} parameters, {result.dtype or 'dtype unknown'}, {result.seconds:.1f} s)"
    )
    licence = (
        result.license or "not stated by the source (read its model card before you share what you make)"
    )
    return f"{head}\n  licence: {licence}\n  weights: {_weights_text(result, link)}"


def _weights_text(result: ImportResult, link: bool) -> str:
    n, linked = len(result.sha256), result.linked_files
    copied = n - linked

    def files(k: int) -> str:
        return f"{k} file" if k == 1 else f"{k} files"

    from_hub = result.revision is not None  # a Hub download has a resolved commit; a local folder has none
    where = "from the Hub cache" if from_hub else "from the source folder"
    if copied == 0:
        return f"{files(n)} hard-linked {where} (no extra disk space)"
    not_possible = "was not possible: it is on another filesystem, or links are not allowed"
    if from_hub:
        why = f"a hard link to the Hub cache {not_possible}"
    elif link:
        why = f"a hard link to the folder {not_possible}"
    else:
        why = "the folder stays independent; --link hard-links instead"
    done = f"{files(copied)} copied ({why})"
    return f"{files(linked)} hard-linked {where}, {done}" if linked else done
