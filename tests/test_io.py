from __future__ import annotations

import os
import stat

import pytest
from darcyvae._io import atomic_path, atomic_write_text


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
