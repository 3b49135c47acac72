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
`messages` (tests).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

__all__ = ["QuietReporter", "Reporter"]


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
