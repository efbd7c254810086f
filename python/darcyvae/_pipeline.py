"""Computing blocks of samples for ``generate``: the three stages and the two backends.

A block of thetas (float32) becomes a :class:`~darcyvae._hdf5_layout.Chunk`
in three stages: the KLE field and ``K = exp(G)`` (:func:`permeability`),
the Darcy solve on the C++ thread pool (:func:`solve`), and the float32
casts, CRC and optional gzip encoding (:func:`finish`).

Backends (context managers; leaving the ``with`` block shuts their threads
down or closes their client):

:class:`LocalPipeline`
    Three single-thread stages overlap (the KLE of block j+1, the solve of
    block j, the encoding of block j-1) while the caller writes block j-2;
    the gzip encoder threads belong to the pipeline.
:class:`DaskPipeline`
    The basis is broadcast once; a task computes a whole block on a worker,
    gzip-encoding it with a thread pool of its own.

:func:`computed_blocks` keeps a backend's window of blocks in flight and
yields them in index order, so the file bytes do not depend on the backend.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._hdf5_layout import Chunk, make_chunk
from .darcy import DarcyConfig, solve_batch
from .errors import MissingDependencyError
from .kle import KLEBasis

__all__ = ["DaskPipeline", "Encoding", "LocalPipeline", "computed_blocks", "require_distributed"]


@dataclass(frozen=True)
class Encoding:
    """How blocks are encoded for the file: filter, gzip level, rows of a theta HDF5 chunk."""

    compression: str | None
    level: int
    theta_rows: int

    def encode(
        self,
        theta: NDArray[np.float32],
        perm: NDArray[np.float32],
        out: NDArray[np.float32],
        pool: Executor | None,
    ) -> Chunk:
        """The :class:`Chunk` of float32 arrays (CRC, and gzip-encoded on ``pool``)."""
        return make_chunk(
            theta,
            perm,
            out,
            compression=self.compression,
            level=self.level,
            theta_rows=self.theta_rows,
            pool=pool,
        )


def permeability(basis: KLEBasis, theta: NDArray[np.float32]) -> NDArray[np.float64]:
    """Stage 1: ``K = exp(G)`` of float32 thetas (float64, shape (m, N, N))."""
    return basis.permeability(theta.astype(np.float64))


def solve(
    perm: NDArray[np.float64], darcy: DarcyConfig, theta: NDArray[np.float32], threads: int | None
) -> NDArray[np.float32]:
    """Stage 2: the float32 outputs (m, 3, N, N) of a block's permeability fields.

    Raises
    ------
    ValueError
        The solver refuses a field or returns a non-finite solution (the
        message names the theta and the range of K).
    """
    out = np.empty((len(perm), 3, *perm.shape[1:]), dtype=np.float32)
    try:
        solve_batch(perm, darcy, threads=threads, out=out)
    except RuntimeError as exc:
        msg = (
            f"generate: the Darcy solve of a block failed ({exc}); its permeability ranges "
            f"over [{perm.min():.3g}, {perm.max():.3g}], thetas {theta[:3].tolist()}..."
        )
        raise ValueError(msg) from exc
    bad = ~np.isfinite(out).all(axis=(1, 2, 3))
    if bad.any():
        msg = (
            f"generate: the solve of {int(bad.sum())} sample(s) is not finite "
            f"(theta {theta[np.argmax(bad)].tolist()})."
        )
        raise ValueError(msg)
    return out


def finish(
    theta: NDArray[np.float32],
    perm: NDArray[np.float64],
    out: NDArray[np.float32],
    encoding: Encoding,
    pool: Executor | None,
) -> Chunk:
    """Stage 3: float32 K (m, 1, N, N), the CRC and, for gzip, the encoded HDF5 chunks."""
    return encoding.encode(theta, perm.astype(np.float32)[:, None], out, pool)


class LocalPipeline:
    """A three-stage pipeline of single threads: KLE, solve (C++ pool), CRC/encode.

    While block j is solved, the KLE of block j+1 and the encoding of block
    j-1 run beside it and the caller writes block j-2, so no core waits for
    the single-threaded stages. Its threads (and the gzip encoder's) are
    shut down when the ``with`` block ends.
    """

    window = 4

    def __init__(
        self, basis: KLEBasis, darcy: DarcyConfig, threads: int | None, compression: str | None
    ) -> None:
        self.basis, self.darcy, self.threads = basis, darcy, threads
        self.stages = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"darcyvae-generate-{name}")
            for name in ("kle", "solve", "finish")
        ]
        self.encoder: ThreadPoolExecutor | None = None
        if compression == "gzip":
            self.encoder = ThreadPoolExecutor(
                max_workers=os.cpu_count() or 1, thread_name_prefix="darcyvae-gzip"
            )

    def submit(self, theta: NDArray[np.float32], encoding: Encoding) -> Any:
        """Start computing the block of ``theta``; returns a future of its Chunk."""
        kle, solver, finisher = self.stages
        perm = kle.submit(permeability, self.basis, theta)
        out = solver.submit(lambda: solve(perm.result(), self.darcy, theta, self.threads))
        return finisher.submit(
            lambda: finish(theta, perm.result(), out.result(), encoding, self.encoder)
        )

    def __enter__(self) -> LocalPipeline:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        for pool in [*self.stages, self.encoder]:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)


def require_distributed() -> None:
    """Raise ``MissingDependencyError`` (an ``ImportError``) naming the extra to install.

    Raises
    ------
    darcyvae.errors.MissingDependencyError
        The optional package ``distributed`` is not installed.
    """
    try:
        import distributed  # noqa: F401
    except ImportError as exc:
        msg = (
            "generate: dask_address (--dask) needs the optional package 'distributed', "
            "which is not installed; pip install 'darcyvae[dask]'."
        )
        raise MissingDependencyError(msg) from exc


def _dask_block(
    basis: KLEBasis,
    darcy: DarcyConfig,
    theta: NDArray[np.float32],
    threads: int | None,
    encoding: Encoding,
) -> Chunk:
    """A whole block on a Dask worker; ``threads=None`` shares the cores among its tasks."""
    if threads is None:
        from distributed import get_worker

        threads = max(1, (os.cpu_count() or 1) // max(1, get_worker().state.nthreads))
    perm = permeability(basis, theta)
    out = solve(perm, darcy, theta, threads)
    if encoding.compression != "gzip":
        return finish(theta, perm, out, encoding, None)
    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="darcyvae-gzip") as pool:
        return finish(theta, perm, out, encoding, pool)


class DaskPipeline:
    """Blocks computed on a Dask cluster; the basis is broadcast once.

    ``dask`` is a scheduler address (a client is made and closed with the
    pipeline) or a ``distributed.Client`` (left open).
    """

    def __init__(self, basis: KLEBasis, darcy: DarcyConfig, threads: int | None, dask: Any) -> None:
        require_distributed()
        from distributed import Client

        self.own = not isinstance(dask, Client)
        self.client = Client(dask) if self.own else dask
        self.darcy, self.threads = darcy, threads
        self.basis = self.client.scatter(basis, broadcast=True, hash=False)
        self.window = max(2, 2 * sum(self.client.nthreads().values()))

    def submit(self, theta: NDArray[np.float32], encoding: Encoding) -> Any:
        """Start computing the block of ``theta`` on the cluster; returns its future."""
        return self.client.submit(
            _dask_block, self.basis, self.darcy, theta, self.threads, encoding, pure=False
        )

    def __enter__(self) -> DaskPipeline:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        if self.own:
            self.client.close()


def computed_blocks(
    backend: LocalPipeline | DaskPipeline,
    bounds: list[tuple[int, int]],
    first: int,
    thetas: Callable[[int, int], NDArray[np.float32]],
    encoding: Encoding,
) -> Iterator[tuple[int, Chunk]]:
    """Yield ``(j, chunk)`` for blocks j >= first in order, computed a window ahead."""
    pending: dict[int, Any] = {}
    nxt = first
    for j in range(first, len(bounds)):
        while nxt < len(bounds) and nxt < j + backend.window:
            pending[nxt] = backend.submit(thetas(*bounds[nxt]), encoding)
            nxt += 1
        yield j, pending.pop(j).result()
