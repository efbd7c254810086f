"""Typed stub of the compiled module darcyvae._core (keep in step with cpp/bindings.cpp)."""

__version__: str

def resolve_threads(threads: int) -> int:
    """Number of worker threads used for `threads` (<= 0 means all cores)."""

# --- knn_kl (cpp/knn_kl.hpp); documented API: darcyvae.metrics
import numpy as _np
from numpy.typing import NDArray as _NDArray

class KDTree:
    """Exact KD-tree over a (n, d) array (see darcyvae.metrics.KDTree)."""

    def __init__(self, data: _NDArray[_np.float64], leaf_size: int = 8) -> None:
        """Build the tree (copies the data)."""
    @property
    def n(self) -> int:
        """Number of points."""
    @property
    def d(self) -> int:
        """Dimension."""
    @property
    def leaf_size(self) -> int:
        """Largest number of points in a leaf."""
    @property
    def depth(self) -> int:
        """Depth of the deepest leaf."""
    @property
    def node_count(self) -> int:
        """Number of nodes."""
    def query(
        self,
        x: _NDArray[_np.float64],
        k: int,
        exclude: _NDArray[_np.int64] | None = None,
        weights: _NDArray[_np.float64] | None = None,
        threads: int = 1,
    ) -> tuple[_NDArray[_np.float64], _NDArray[_np.int64]]:
        """(distances, indices) of the k nearest points of each row of x."""
    def count_within(
        self,
        x: _NDArray[_np.float64],
        radius: _NDArray[_np.float64],
        exclude: _NDArray[_np.int64] | None = None,
        weights: _NDArray[_np.float64] | None = None,
        threads: int = 1,
    ) -> tuple[_NDArray[_np.int64], _NDArray[_np.float64]]:
        """(counts, largest distances) of the points within radius (closed ball) of each row."""

class KLEstimator:
    """Wang-Kulkarni-Verdu k-NN KL estimator (see darcyvae.metrics)."""

    def __init__(
        self,
        x: _NDArray[_np.float64],
        k: int = 1,
        method: str = "adaptive",
        leaf_size: int = 8,
        threads: int = 1,
    ) -> None:
        """Tree over the samples x of p and their rho_k."""
    @property
    def k(self) -> int:
        """Neighbour order k."""
    @property
    def method(self) -> str:
        """'fixed' or 'adaptive'."""
    @property
    def rho(self) -> _NDArray[_np.float64]:
        """rho_k of every sample of p, in input order."""
    @property
    def tree(self) -> KDTree:
        """The tree over x."""
    def divergence(
        self,
        y: KDTree,
        scale: _NDArray[_np.float64] | None = None,
        shift: _NDArray[_np.float64] | None = None,
        perm: _NDArray[_np.int64] | None = None,
        paired: bool = False,
        min_ratio: float = 0.0,
        threads: int = 1,
    ) -> tuple[float, int, int]:
        """(D, #zero x-side, #zero y-side distances) against y, or y'_c = a_c (y_perm[c] - b_c)."""

def digamma(x: float) -> float:
    """The digamma function for x > 0 (NaN otherwise)."""
