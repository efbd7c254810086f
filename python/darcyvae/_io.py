"""Atomic file writes: a temporary file in the target folder, then ``os.replace``.

A reader sees the old file or the complete new one, never a half-written
file, even if the writer is interrupted. The new file gets the usual
permissions (0o666 minus the umask), not ``mkstemp``'s private 0o600.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = [
    "SPACE_ERRNOS",
    "atomic_path",
    "atomic_write_text",
    "is_write_failure",
    "write_errno",
    "write_error",
]

SPACE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EFBIG)
"""A full disk, an exhausted quota, a file size limit (``ulimit -f``)."""

_WRITE_ERRNOS = (*SPACE_ERRNOS, errno.EIO, errno.EROFS)


@functools.lru_cache(maxsize=1)
def _file_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path``.

    The folder is created if needed. On any exception the temporary file is
    removed and ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _file_mode())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically; returns the path.

    A failed write leaves ``path`` as it was and raises its ``OSError`` naming
    ``path`` (``filename``).
    """
    try:
        with atomic_path(path) as tmp:
            tmp.write_text(text, encoding="utf-8")
    except OSError as exc:
        if exc.errno is None or exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    return Path(path)


def write_errno(exc: BaseException) -> int | None:
    """The errno of a failed write: an ``OSError``'s, or the one h5py folds into the
    message of its ``RuntimeError`` ("errno = 28"); None if ``exc`` is neither."""
    if isinstance(exc, OSError):
        return exc.errno
    if isinstance(exc, RuntimeError):
        match = re.search(r"errno = (\d+)", str(exc))
        return int(match.group(1)) if match else None
    return None


def is_write_failure(exc: BaseException) -> bool:
    """Whether ``exc`` is a write that failed for want of space or of a working disk."""
    return write_errno(exc) in _WRITE_ERRNOS


def write_error(
    caller: str, path: str | os.PathLike, exc: BaseException, kept: str, then: str
) -> OSError:
    """A clear one-line ``OSError`` for a failed write (disk full, quota, file size limit,
    I/O error) of ``path``: "<caller>: writing <path> failed: <reason>. <kept>: [free some
    space, then ]<then>." Its errno is the failed write's."""
    code = write_errno(exc)
    reason = os.strerror(code) if code else str(exc)
    hint = "free some space, then " if code in SPACE_ERRNOS else ""
    msg = f"{caller}: writing {str(path)!r} failed: {reason}. {kept}: {hint}{then}."
    return OSError(code, msg) if code else OSError(msg)
