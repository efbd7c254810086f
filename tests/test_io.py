from __future__ import annotations

import contextlib
import errno
import os
import resource
import signal
import stat

import pytest
from darcyvae._io import atomic_path, atomic_write_text, is_write_failure, write_error


def test_atomic_write_replaces_with_normal_permissions(tmp_path):
    path = atomic_write_text(tmp_path / "sub" / "a.txt", "one")
    assert path.read_text() == "one"
    mask = os.umask(0)
    os.umask(mask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~mask
    atomic_write_text(path, "two")
    assert path.read_text() == "two"
    assert sorted(p.name for p in path.parent.iterdir()) == ["a.txt"]


def test_failed_write_keeps_the_old_file(tmp_path):
    path = atomic_write_text(tmp_path / "a.txt", "old")

    def interrupted_write() -> None:
        with atomic_path(path) as tmp:
            tmp.write_text("half")
            msg = "boom"
            raise RuntimeError(msg)

    with pytest.raises(RuntimeError, match="boom"):
        interrupted_write()
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


@contextlib.contextmanager
def file_size_limit(limit: int):
    """Writes beyond ``limit`` bytes fail with EFBIG, as on a full disk (``ulimit -f``)."""
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def test_a_write_beyond_the_disk_names_the_file_and_keeps_the_old_one(tmp_path):
    """The OSError of a failed write names the file (not just "File too large")."""
    path = atomic_write_text(tmp_path / "a.txt", "old")
    with file_size_limit(1000), pytest.raises(OSError, match="File too large") as info:
        atomic_write_text(path, "x" * 100_000)
    assert info.value.errno == errno.EFBIG
    assert info.value.filename == str(path)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_write_error_says_what_is_kept_and_what_to_do():
    exc = OSError(errno.ENOSPC, "No space left on device")
    err = write_error("train", "run/x.pt", exc, "The last one is kept", "resume")
    assert err.errno == errno.ENOSPC
    assert str(err).endswith(
        "train: writing 'run/x.pt' failed: No space left on device. The last one is kept: "
        "free some space, then resume."
    )
    h5py_style = RuntimeError("Can't write data (file write failed: errno = 28, ...)")
    assert is_write_failure(h5py_style)
    assert not is_write_failure(RuntimeError("unrelated"))
    assert not is_write_failure(ValueError("x"))
