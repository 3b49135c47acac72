"""Faults of the machine, not the input: a full disk, a read-only or forbidden folder, a path that is a file.

`environment_error(exc, path)` turns such an exception (an OSError, or a library's wrapper of one:
safetensors' `SafetensorError`, torch's "file write failed") into one FoundryError naming the path and,
for a full disk, the free space and the space needed. `writing(path)` applies it to a block that writes
under `path`; the CLI's `main()` applies it to whatever escapes as a last resort.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

from model_foundry.errors import FoundryError
from model_foundry.resources import fmt_bytes

# errno → (what happened, how to fix it). `{path}` is the file or folder concerned.
FAULTS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: (
        "No space left on the device holding {path}",
        "Free space there (or write elsewhere) and run the command again; nothing earlier was changed.",
    ),
    errno.EDQUOT: (
        "Disk quota exceeded writing {path}",
        "Free space within your quota, then run the command again; nothing earlier was changed.",
    ),
    errno.EFBIG: (
        "{path} grew past the file size limit",
        "Raise the limit (ulimit -f) or write to another file system.",
    ),
    errno.EACCES: (
        "Permission denied for {path}",
        "Check the owner and permissions of that path (ls -ld), or choose a folder you can write to.",
    ),
    errno.EPERM: (
        "Operation not permitted on {path}",
        "Check the owner and permissions of that path (ls -ld), or choose a folder you can write to.",
    ),
    errno.EROFS: (
        "{path} is on a read-only file system",
        "Write to a writable folder, or remount it read-write.",
    ),
    errno.ENAMETOOLONG: (
        "The path {path} is too long for the file system",
        "Use a shorter name or a shorter folder.",
    ),
    errno.ENOTDIR: (
        "{path} (or a folder above it) is a file, not a folder",
        "Point the option at a folder, or move the file away.",
    ),
    errno.EEXIST: (
        "{path} exists and is not a folder",
        "Point the option at a folder, or move the file away.",
    ),
    errno.EISDIR: (
        "{path} is a folder where a file was expected",
        "Point the option at a file, or move the folder away.",
    ),
    errno.EMFILE: ("Too many open files while using {path}", "Raise the limit (ulimit -n) and run again."),
    errno.EIO: (
        "Input/output error on {path}",
        "The device may be failing or disconnected; check it (dmesg) and run again.",
    ),
    errno.ENOENT: (
        "{path} does not exist (or a folder above it was removed meanwhile)",
        "Check the path, and that nothing else removes it, then run the command again.",
    ),
    errno.ELOOP: ("Too many levels of symbolic links at {path}", "Fix the symlink loop."),
}
FULL = (errno.ENOSPC, errno.EDQUOT)

# How libraries that wrap OSError say it: Rust's io::Error (`code: 28`, `os error 28`), plain strerror text.
_CODE = re.compile(r"(?:code: |os error |errno )(\d+)", re.IGNORECASE)
_TEXT = {os.strerror(code).lower(): code for code in FAULTS}


def fault_errno(exc: BaseException | None) -> int | None:
    """The errno of an environment fault behind `exc` (following __cause__/__context__), or None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in FAULTS:
            return exc.errno
        if not isinstance(exc, OSError):  # a wrapper: SafetensorError, torch's RuntimeError, ...
            text = str(exc)
            match = _CODE.search(text)
            if match and int(match.group(1)) in FAULTS:
                return int(match.group(1))
            lowered = text.lower()
            for message, code in _TEXT.items():
                if message in lowered:
                    return code
            if "file write failed" in lowered:  # torch.save hides the errno; a full disk is the usual cause
                return errno.ENOSPC
        exc = exc.__cause__ or exc.__context__
    return None


def free_bytes(path: str | os.PathLike[str]) -> int | None:
    """Free bytes for an unprivileged user on the file system holding `path` (its nearest existing folder)."""
    folder = Path(os.path.abspath(path))
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    with contextlib.suppress(OSError):
        return shutil.disk_usage(folder).free
    return None


def folder_bytes(path: str | os.PathLike[str]) -> int:
    """Bytes in the files under `path` (a file's size for a file; 0 if it is gone)."""
    path = Path(path)
    with contextlib.suppress(OSError):
        if path.is_file():
            return path.stat().st_size
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return 0


def environment_error(
    exc: BaseException, path: str | os.PathLike[str] | None = None, needed: int | None = None
) -> FoundryError | None:
    """The FoundryError for an environment fault behind `exc`, or None when `exc` is something else.

    path: what was being written or read (defaults to the exception's own filename). needed: bytes the
    write needs (or at least needed, e.g. what was written before the disk filled), shown for a full disk.
    """
    code = fault_errno(exc)
    if code is None:
        return None
    own = getattr(exc, "filename", None)
    where = str(path if path is not None else own if own is not None else "the output")
    what, hint = FAULTS[code]
    message = what.format(path=where)
    if own is not None and path is not None and str(own) != str(path):
        message += f" ({own})"
    message += f" [{errno.errorcode.get(code, code)}]"
    if code in FULL:
        free = free_bytes(where)
        parts = []
        if needed:
            parts.append(f"needs at least {fmt_bytes(needed)}")
        if free is not None:
            parts.append(f"{fmt_bytes(free)} free")
        if parts:
            message += ": " + ", ".join(parts)
    return FoundryError(message + ".", hint)


FULL_MARGIN = 1 << 20  # a write that fails with less free space than this failed on a full disk


def failed_write(
    exc: BaseException, path: str | os.PathLike[str], tmp: str | os.PathLike[str]
) -> FoundryError | None:
    """The FoundryError for a write into the temp file or folder `tmp` (to become `path`) that raised `exc`.

    Besides the errno-based faults of `environment_error`: a library that hides the errno (torch's zip writer
    says "iostream error" or "unexpected pos") failing while the disk holds less than FULL_MARGIN free is
    reported as a full disk. The size of `tmp` is the space at least needed. None for other failures.
    """
    if isinstance(exc, FoundryError) or not isinstance(exc, Exception):
        return None
    written = folder_bytes(tmp)
    error = environment_error(exc, path, written)
    free = free_bytes(tmp)
    if error is None and free is not None and free < FULL_MARGIN:
        full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        error = environment_error(full, path, written)
    return error


@contextlib.contextmanager
def writing(
    path: str | os.PathLike[str], needed: int | None = None, measure: str | os.PathLike[str] | None = None
) -> Iterator[None]:
    """Re-raise an environment fault inside the block as one FoundryError naming `path`.

    needed: bytes the block writes, shown for a full disk; or measure: a temp file or folder whose size when
    the disk filled is shown as the space at least needed.
    """
    try:
        yield
    except FoundryError:
        raise
    except Exception as e:
        error = environment_error(e, path, folder_bytes(measure) if measure is not None else needed)
        if error is None:
            raise
        raise error from e


def check_output_folder(path: str | os.PathLike[str], option: str = "The output folder") -> Path:
    """`path` as a folder we can create and write into; raises FoundryError when it is a file, or a folder
    above it is, or it cannot be created or written (read-only, permissions)."""
    path = Path(path)
    for folder in (path, *path.parents):
        if folder.exists() or folder.is_symlink():
            if not folder.is_dir():
                what = "is" if folder == path else f"is inside {folder}, which is"
                raise FoundryError(
                    f"{option} {path} {what} a file, not a folder.",
                    "Point the option at a folder (it is created if missing), or move the file away.",
                )
            break
    with writing(path):
        path.mkdir(parents=True, exist_ok=True)
        if not os.access(path, os.W_OK | os.X_OK):
            code = errno.EROFS if os.statvfs(path).f_flag & os.ST_RDONLY else errno.EACCES
            raise OSError(code, os.strerror(code), str(path))
    return path
