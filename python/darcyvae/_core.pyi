"""Typed stub of the compiled module darcyvae._core (keep in step with cpp/bindings.cpp)."""

__version__: str

def resolve_threads(threads: int) -> int:
    """Number of worker threads used for `threads` (<= 0 means all cores)."""

# --- kle (cpp/kle.cpp) ---
from typing import Any

import numpy as np
from numpy.typing import NDArray

def kle_solve(
    grid: int,
    kernel: str,
    length_x: float,
    length_y: float,
    variance: float,
    n_modes: int,
    method: str = "auto",
    matvec: str = "auto",
    tol: float = 1e-12,
    basis_size: int = 0,
    threads: int = 0,
) -> dict[str, Any]:
    """Top KLE eigenpairs with the SPEC 2 basis rules (use darcyvae.kle.kle_basis).

    Returns a dict: eigenvalues (s,), modes (s, grid**2), residuals (s,), trace,
    matvecs, restarts, rounds, blocks, dense_blocks, clusters, matvec.
    """

def kle_matvec(
    grid: int,
    kernel: str,
    length_x: float,
    length_y: float,
    variance: float,
    x: NDArray[np.float64],
    threads: int = 0,
) -> NDArray[np.float64]:
    """Covariance product C x by FFT circulant embedding (use darcyvae.kle.covariance_matvec)."""
