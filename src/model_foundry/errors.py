"""One exception type for user errors: the CLI prints it without a traceback and exits 2."""

from __future__ import annotations


class FoundryError(Exception):
    """A problem the user can fix: says what is wrong and, in `hint`, how to fix it."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message if not self.hint else f"{self.message}\n  hint: {self.hint}"
