"""darcyvae._allocator: darcyvae's own processes keep freed memory for the next step."""

from __future__ import annotations

import ctypes
import ctypes.util
import platform
import subprocess
import sys

import pytest
from darcyvae import _allocator

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def _has_mallinfo2() -> bool:
    if not GLIBC:
        return False
    return hasattr(ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6"), "mallinfo2")


# Frees a 64 MiB block and reports the free bytes glibc keeps in its heap (mallinfo2's
# fordblks): by default the block is mmapped and unmapped on free (nothing kept);
# with the thresholds raised it comes from the heap and stays there.
PROBE = """
import ctypes, ctypes.util, sys
from darcyvae._allocator import keep_freed_memory
class MallInfo2(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks",
        "uordblks", "fordblks", "keepcost")]
libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
libc.mallinfo2.restype = MallInfo2
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
kept = keep_freed_memory() if sys.argv[1] == "keep" else False
p = libc.malloc(64 << 20)
ctypes.memset(p, 1, 64 << 20)
libc.free(p)
print(int(kept), libc.mallinfo2().fordblks)
"""


@pytest.mark.skipif(not _has_mallinfo2(), reason="glibc >= 2.33 only")
def test_freed_blocks_stay_in_the_heap():
    def probe(mode: str) -> tuple[int, int]:
        out = subprocess.run(
            [sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True
        )
        kept, free_bytes = out.stdout.split()
        return int(kept), int(free_bytes)

    kept, default_free = probe("default")
    assert kept == 0
    assert default_free < 64 << 20  # unmapped when freed
    kept, tuned_free = probe("keep")
    assert kept == 1
    assert tuned_free >= 64 << 20  # kept for the next allocation


def test_an_environment_choice_stands(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    assert _allocator.keep_freed_memory() is False


def test_not_glibc_is_left_alone(monkeypatch):
    monkeypatch.setattr(_allocator.platform, "libc_ver", lambda: ("musl", ""))
    assert _allocator.keep_freed_memory() is False
