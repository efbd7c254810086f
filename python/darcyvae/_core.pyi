"""Typed stub of the compiled module darcyvae._core (keep in step with cpp/bindings.cpp)."""

__version__: str

def resolve_threads(threads: int) -> int:
    """Number of worker threads used for `threads` (<= 0 means all cores)."""

# --- darcy (cpp/darcy.hpp; public API: darcyvae.darcy) ---
import numpy as np
from numpy.typing import NDArray

def darcy_source(grid: int, well_width: float, rate: float) -> NDArray[np.float64]:
    """SPEC 1 well source f, shape (N, N); see darcyvae.darcy.source_term."""

def darcy_gauge_weights(grid: int) -> NDArray[np.float64]:
    """Trapezoid weights of the zero-mean gauge, shape (N, N)."""

class DarcySolver:
    """Darcy solver for one (grid, scheme); use darcyvae.darcy.solve/solve_batch."""

    def __init__(
        self,
        grid: int,
        scheme: str = "fd",
        leaf_size: int = 0,
        block: int = 0,
        isa: str = "auto",
        check_tolerance: float = 1e-10,
    ) -> None: ...
    @property
    def grid(self) -> int:
        """Nodes per side N."""
    @property
    def scheme(self) -> str:
        """'fd' or 'fv'."""
    @property
    def isa(self) -> str:
        """Kernel instruction set in use."""
    @property
    def lanes(self) -> int:
        """Samples factorised together."""
    @property
    def leaf_size(self) -> int:
        """Largest dense leaf region."""
    @property
    def block(self) -> int:
        """Panel width of the front factorisation."""
    @property
    def fronts(self) -> int:
        """Fronts in the separator tree."""
    @property
    def factor_flops(self) -> float:
        """Dense flops of one sample's factorisation (model)."""
    @property
    def fallbacks(self) -> int:
        """Samples re-solved with partial pivoting so far."""
    def solve_into(
        self,
        k: NDArray[np.float64],
        source: NDArray[np.float64],
        out: NDArray[np.floating],
        threads: int = 0,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Solve n samples into out (n, 3, N, N); returns (lambda, relative_residual)."""
    def profile(
        self, k: NDArray[np.float64], source: NDArray[np.float64], repeats: int = 20
    ) -> dict[str, float]:
        """Median seconds per sample of each stage on this thread (one group of lanes samples)."""
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
