"""Keep freed memory in the process: ``keep_freed_memory()`` (glibc's ``mallopt``).

A training step allocates and frees the same few-megabyte activations again
and again. glibc serves such blocks with fresh ``mmap`` pages (or trims them
off the heap when they are freed), so each step pays for page faults and for
zeroing new pages: measured, an ensemble epoch of 25 tiny members ran
2-6% slower than with the freed memory kept (docs/benchmarks.md, "Training").
Raising the mmap and trim thresholds makes freed blocks stay in the heap for
the next step; the process then keeps its peak memory until it exits.

darcyvae sets this only in processes it owns: the ``darcyvae`` command and the
worker processes it spawns (``_pool``). A program that calls the Python API
keeps its own allocator settings (``MALLOC_MMAP_THRESHOLD_`` and
``MALLOC_TRIM_THRESHOLD_`` in the environment do the same from outside).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import platform

__all__ = ["keep_freed_memory"]

log = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 1 << 30
"""Blocks below 1 GiB come from the heap (measured: 32 MiB kept the step's page faults)."""
FALLBACK_MMAP_THRESHOLD = 32 << 20
"""The largest threshold every 64-bit glibc accepts, tried when it refuses ``MMAP_THRESHOLD``."""
TRIM_THRESHOLD = 1 << 30
"""Up to 1 GiB of free memory at the top of the heap stays in the process."""

_ENVIRONMENT = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds (``MMAP_THRESHOLD``, ``TRIM_THRESHOLD``).

    Call it before the work starts (blocks already mapped stay as they are).

    Returns True when they were set; False elsewhere than glibc, when the
    environment already sets either threshold (that choice stands), or when
    glibc refuses a value.
    """
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    if any(name in os.environ for name in _ENVIRONMENT):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        ok = ok or libc.mallopt(_M_MMAP_THRESHOLD, FALLBACK_MMAP_THRESHOLD) == 1
        ok = ok and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    except (OSError, AttributeError):
        return False
    if not ok:
        log.debug("glibc refused the allocator thresholds; left as they were")
    return ok
