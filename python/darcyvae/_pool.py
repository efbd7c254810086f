"""Local worker processes that share the CPU's threads: ``process_pool(n)``.

On a machine with few cores, n processes at 1/n of the threads each get more
out of the cores than one process at all of them (PyTorch's intra-op threads
scale badly on small tensors: docs/benchmarks.md, "Training"). ``reproduce all
--jobs`` runs whole experiments this way and ``train_ensemble(workers=...)``
its blocks of seeds.

The workers are started with ``spawn`` (a fork of a process that holds
PyTorch's thread pool can hang), keep freed memory for the next training step
(``_allocator``), run torch at ``threads`` threads and log at
the parent's levels (the root's and the package's) with their process name.
When the parent is interrupted (Ctrl-C, SIGTERM) the workers are terminated
too rather than waited for: what they wrote is atomic, and every run resumes.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor

__all__ = ["process_pool", "share_threads"]


def share_threads(workers: int) -> int:
    """torch's current CPU threads shared out among ``workers`` processes (at least 1)."""
    import torch

    return max(1, torch.get_num_threads() // workers)


def _start(threads: int, level: int, package_level: int) -> None:
    import torch

    from ._allocator import keep_freed_memory

    keep_freed_memory()
    torch.set_num_threads(threads)
    logging.basicConfig(
        level=level,
        format="%(asctime)s [%(processName)s] %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    logging.getLogger("darcyvae").setLevel(package_level)


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """A ``ProcessPoolExecutor`` of ``workers`` spawned processes, each at
    ``share_threads(workers)`` torch threads; its workers are terminated, not waited
    for, when the ``with`` body is left by an exception."""
    levels = (logging.getLogger().getEffectiveLevel(), logging.getLogger("darcyvae").level)
    pool = ProcessPoolExecutor(
        workers,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start,
        initargs=(share_threads(workers), *levels),
    )
    try:
        yield pool
    except BaseException:
        # ProcessPoolExecutor.terminate_workers is public only from Python 3.14
        for process in list((getattr(pool, "_processes", None) or {}).values()):
            process.terminate()
        raise
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
