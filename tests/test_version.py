from __future__ import annotations

import os

import darcyvae
from darcyvae import _core


def test_version_matches_core():
    assert darcyvae.__version__ == _core.__version__
    assert darcyvae.__version__.count(".") == 2


def _hardware_threads():
    """What std::thread::hardware_concurrency may report here: the online CPUs
    (libstdc++ asks get_nprocs) or, under an affinity mask, the CPUs allowed."""
    counts = {os.cpu_count() or 1}
    if hasattr(os, "sched_getaffinity"):
        counts.add(len(os.sched_getaffinity(0)))
    return counts


def test_resolve_threads():
    # cpp/parallel.hpp: max_threads() is 4 x the hardware threads, within [4, 256];
    # resolve_threads(t) is t for t > 0 and all hardware threads for t <= 0, both
    # capped at max_threads().
    cap = _core.max_threads()
    hardware = _hardware_threads()
    assert cap in {max(4, min(4 * hw, 256)) for hw in hardware}
    assert _core.resolve_threads(0) in {min(hw, cap) for hw in hardware}
    assert _core.resolve_threads(-1) == _core.resolve_threads(0)
    assert _core.resolve_threads(-(2**31)) == _core.resolve_threads(0)
    for threads in sorted({1, 2, 3, cap - 1, cap}):
        assert _core.resolve_threads(threads) == threads
    assert _core.resolve_threads(cap + 1) == cap
    assert _core.resolve_threads(2**31 - 1) == cap
