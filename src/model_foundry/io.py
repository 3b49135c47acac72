"""Atomic writes: a model, a dataset or a metrics file is either complete or absent, never half-written."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from model_foundry.envfaults import check_output_folder, failed_write, writing
from model_foundry.leftovers import clean_stale, old_name, temp_prefix


def _umask() -> int:
    """The process umask (read by setting and restoring it: the os module has no getter)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _normal_mode(path: Path, *, directory: bool) -> None:
    """`tempfile` creates owner-only entries (0700/0600); give them the mode a plain mkdir/open would."""
    os.chmod(path, (0o777 if directory else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_dir(final: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp folder beside `final`; on success it replaces `final`, on error it is removed.

    Raises FoundryError when the parent is a file or cannot be written, and for a full disk (naming `final`
    and the bytes written before it filled). Stale temp folders of killed runs in the parent go first.
    """
    final = Path(final)
    check_output_folder(final.parent)
    clean_stale(final.parent)  # temp folders of killed runs (see model_foundry.leftovers)
    with writing(final):
        tmp = Path(tempfile.mkdtemp(prefix=temp_prefix(final.name), dir=final.parent))
    _normal_mode(tmp, directory=True)
    try:
        yield tmp
    except BaseException as e:
        error = failed_write(e, final, tmp) if isinstance(e, Exception) else None
        shutil.rmtree(tmp, ignore_errors=True)
        if error is not None:
            raise error from e
        raise
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(old_name(final.name))
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    tmp.rename(final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write a file through a temp file and a rename."""
    path = Path(path)
    check_output_folder(path.parent)
    with writing(path, needed=len(text.encode("utf-8"))):
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), dir=path.parent)
        try:
            _normal_mode(Path(tmp), directory=False)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(text)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise


def write_json(path: str | os.PathLike[str], data: Any, *, atomic: bool = True) -> None:
    """JSON with sorted keys and a final newline, so identical content hashes identically.

    Raises ValueError on NaN or ±Infinity: they are not JSON, and no result of ours may be non-finite.
    """
    text = json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False, allow_nan=False) + "\n"
    if atomic:
        atomic_write_text(path, text)
    else:
        Path(path).write_text(text, encoding="utf-8")


def read_json(path: str | os.PathLike[str]) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def sha256_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()
