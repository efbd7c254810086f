"""Typed stub of the compiled module darcyvae._core (keep in step with cpp/bindings.cpp)."""

from typing import Any

import numpy as np
from numpy.typing import NDArray

__version__: str

def resolve_threads(threads: int) -> int:
    """Number of worker threads used for `threads` (<= 0 means all cores; capped at
    max_threads())."""

def max_threads() -> int:
    """Largest number of worker threads any call uses: 4 x the hardware threads, in [4, 256]."""

# --- darcy (cpp/darcy.hpp; public API: darcyvae.darcy) ---

def darcy_source(grid: int, well_width: float, rate: float) -> NDArray[np.float64]:
    """docs/data.md §1 well source f, shape (N, N); see darcyvae.darcy.source_term."""

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
        residual_tolerance: float = 1e-6,
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
    @property
    def residual_tolerance(self) -> float:
        """Bordered relative residual above which a sample is re-solved."""
    @property
    def pooled_workspaces(self) -> int:
        """Per-thread workspaces kept for the next call (<= hardware threads)."""
    def solve_into(
        self,
        k: NDArray[np.float64],
        source: NDArray[np.float64],
        out: NDArray[np.floating],
        threads: int = 0,
        bordered_residual: NDArray[np.float64] | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Solve n samples into out (n, 3, N, N); returns (lambda, relative_residual) and fills
        bordered_residual (n,) with ||A p + lambda w - b|| / ||b|| when given."""
    def profile(
        self, k: NDArray[np.float64], source: NDArray[np.float64], repeats: int = 20
    ) -> dict[str, float]:
        """Median seconds per sample of each stage on this thread (one group of lanes samples)."""

# --- kle (cpp/kle.cpp) ---

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
    """Top KLE eigenpairs with the docs/data.md §2 basis rules (use darcyvae.kle.kle_basis).

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

# --- knn_kl (cpp/knn_kl.hpp); documented API: darcyvae.metrics

class KDTree:
    """Exact KD-tree over a (n, d) array (see darcyvae.neighbors.KDTree)."""

    def __init__(self, data: NDArray[np.float64], leaf_size: int = 8) -> None:
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
        x: NDArray[np.float64],
        k: int,
        exclude: NDArray[np.int64] | None = None,
        weights: NDArray[np.float64] | None = None,
        threads: int = 1,
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """(distances, indices) of the k nearest points of each row of x."""
    def count_within(
        self,
        x: NDArray[np.float64],
        radius: NDArray[np.float64],
        exclude: NDArray[np.int64] | None = None,
        weights: NDArray[np.float64] | None = None,
        threads: int = 1,
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """(counts, largest distances) of the points within radius (closed ball) of each row."""

class KLEstimator:
    """Wang-Kulkarni-Verdu k-NN KL estimator (see darcyvae.metrics)."""

    def __init__(
        self,
        x: NDArray[np.float64],
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
    def rho(self) -> NDArray[np.float64]:
        """rho_k of every sample of p, in input order."""
    @property
    def tree(self) -> KDTree:
        """The tree over x."""
    def divergence(
        self,
        y: KDTree,
        scale: NDArray[np.float64] | None = None,
        shift: NDArray[np.float64] | None = None,
        perm: NDArray[np.int64] | None = None,
        paired: bool = False,
        min_ratio: float = 0.0,
        threads: int = 1,
    ) -> tuple[float, int, int]:
        """(D, #samples with rho_k = 0, #samples with nu_k = 0 (unless min_ratio clips it); D is NaN when either is non-zero) against y, or y'_c = a_c (y_perm[c] - b_c)."""
    def minimize_divergence(
        self,
        y: KDTree,
        a0: NDArray[np.float64],
        b0: NDArray[np.float64],
        step: NDArray[np.float64],
        perm: NDArray[np.int64],
        simplex: NDArray[np.float64],
        log_range: float,
        xatol: float,
        fatol: float,
        maxfev: int = 0,
        paired: bool = False,
        min_ratio: float = 0.0,
        threads: int = 1,
    ) -> tuple[NDArray[np.float64], float, int, bool]:
        """(x, fun, nfev, success) of Nelder-Mead over p = (log-scales, shifts) of the
        divergence at a = a0 exp(p[:d]), b = b0 + p[d:] step (scipy's bounded Nelder-Mead,
        step for step)."""

def nelder_mead(
    fun: Any,
    simplex: NDArray[np.float64],
    lower: NDArray[np.float64],
    upper: NDArray[np.float64],
    xatol: float,
    fatol: float,
    maxfev: int = 0,
    maxiter: int = 0,
) -> tuple[NDArray[np.float64], float, int, int, bool]:
    """(x, fun, nfev, nit, success): scipy's bounded Nelder-Mead from an initial simplex,
    step for step, on a Python function."""

def digamma(x: float) -> float:
    """The digamma function for x > 0 (NaN otherwise)."""

# The member-batched kernels of darcyvae.ensemble (float32 arrays taken as they are,
# outputs written in place; ValueError for anything else).

def conv_forward(
    x: NDArray[np.float32],
    w: NDArray[np.float32],
    y: NDArray[np.float32],
    stride: int,
    pad: int,
    threads: int = 1,
    isa: str = "auto",
) -> None:
    """y (batch, ho, wo, co, K) = conv(x (batch, hi, wi, ci, K), w (kh, kw, ci, co, K)), in place."""

def conv_backward_data(
    dy: NDArray[np.float32],
    w: NDArray[np.float32],
    dx: NDArray[np.float32],
    stride: int,
    pad: int,
    threads: int = 1,
    isa: str = "auto",
) -> None:
    """dx (batch, hi, wi, ci, K) = the transposed convolution of dy (batch, ho, wo, co, K), in place."""

def conv_backward_weight(
    x: NDArray[np.float32],
    dy: NDArray[np.float32],
    dw: NDArray[np.float32],
    stride: int,
    pad: int,
    threads: int = 1,
    isa: str = "auto",
) -> None:
    """dw (kh, kw, ci, co, K) = the weight gradient of conv_forward, in place."""

def conv_isa(isa: str = "auto") -> str:
    """Instruction set the convolution kernels run with for `isa`."""

def batch_norm_relu_forward(
    x: NDArray[np.float32],
    gamma: NDArray[np.float32],
    beta: NDArray[np.float32],
    eps: float,
    y: NDArray[np.float32],
    mean: NDArray[np.float32],
    var: NDArray[np.float32],
    isa: str = "auto",
) -> None:
    """y = ReLU(BatchNorm(x)) in training mode over the rows of x (rows, channels); writes y, the batch mean and the biased batch variance of every channel in place."""

def batch_norm_relu_backward(
    x: NDArray[np.float32],
    y: NDArray[np.float32],
    dy: NDArray[np.float32],
    gamma: NDArray[np.float32],
    mean: NDArray[np.float32],
    var: NDArray[np.float32],
    eps: float,
    dx: NDArray[np.float32],
    dgamma: NDArray[np.float32],
    dbeta: NDArray[np.float32],
    isa: str = "auto",
) -> None:
    """Gradients of batch_norm_relu_forward for the output gradient dy: dx, dgamma and dbeta, in place (y: the forward output)."""

def batch_norm_isa(isa: str = "auto") -> str:
    """Instruction set the fused batch norm passes run with for `isa`."""

def reconstruction_nll_forward(
    y: NDArray[np.float32],
    mean: NDArray[np.float32],
    logvar: NDArray[np.float32],
    out: NDArray[np.float32],
) -> None:
    """out[k, b] = 1/2 sum_{c,i,j} (log 2pi + s + (y - mean)^2 e^-s), s = logvar[k, i, j], in place (y, mean: (K, B, C, H, W), any strides)."""

def reconstruction_nll_backward(
    y: NDArray[np.float32],
    mean: NDArray[np.float32],
    logvar: NDArray[np.float32],
    grad: NDArray[np.float32],
    dmean: NDArray[np.float32],
    dlogvar: NDArray[np.float32],
) -> None:
    """Gradients of reconstruction_nll_forward for grad (K, B): dmean (any strides) and dlogvar (K, H, W), in place."""
