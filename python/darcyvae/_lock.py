"""An exclusive lock on an output folder, held for a whole run.

``folder_lock(folder, "generate")`` creates ``folder/.darcyvae.lock`` and takes
an ``fcntl.flock`` on it for the duration of the ``with`` block. A second
process asking for the same folder gets ``FolderLockedError`` at once, naming
the holder (pid, host, what it runs, since when). The kernel drops the lock
when the holder exits, even on ``kill -9``, so a stale lock file never blocks a
later run; the file itself is left in place (removing it would race with a
new holder).
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from .errors import FolderLockedError

__all__ = ["LOCK_NAME", "folder_lock"]

LOCK_NAME = ".darcyvae.lock"


def _holder(lock_file: Path) -> str:
    try:
        info = json.loads(lock_file.read_text() or "{}")
    except (OSError, ValueError):
        return "another process"
    parts = [f"pid {info.get('pid', '?')}"]
    if info.get("host"):
        parts.append(f"on {info['host']}")
    if info.get("what"):
        parts.append(f"running {info['what']!r}")
    if info.get("since"):
        parts.append(f"since {info['since']}")
    return " ".join(parts)


@contextlib.contextmanager
def folder_lock(folder: str | os.PathLike, what: str) -> Iterator[Path]:
    """Hold an exclusive lock on ``folder`` (created if needed) while the block runs.

    Parameters
    ----------
    folder : path-like
        The output folder of a run.
    what : str
        What the holder does (e.g. ``"darcyvae generate"``); shown to a
        second process that is refused.

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    FolderLockedError
        Another process (or another ``folder_lock`` in this process) holds it.
    """
    import fcntl

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock_file = folder / LOCK_NAME
    fd = os.open(lock_file, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            msg = (
                f"{what}: the folder {str(folder)!r} is in use by {_holder(lock_file)}; "
                "wait for it to finish or choose another output folder."
            )
            raise FolderLockedError(msg) from None
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "what": what,
            "since": datetime.datetime.now().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(info).encode(), 0)
        yield lock_file
    finally:
        os.close(fd)  # releases the flock
