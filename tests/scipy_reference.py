"""Independent SciPy reference for the Darcy solver (docs/data.md §1a,§1b), shared by tests and benchmarks.

Vectorised ``scipy.sparse`` assembly of both schemes straight from docs/data.md §1's
stencils, the bordered system ``[[A, w], [w^T, 0]] [p; lambda] = [b; 0]``
solved by SuperLU (``splu``, COLAMD), and the velocities. It shares no code
with the C++ core, so agreement with it checks the core; the benchmarks time
it as "what one would write in Python".

Tests import it as a sibling module (pytest puts ``tests/`` on ``sys.path``);
benchmark scripts add ``tests/`` to ``sys.path`` themselves.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as spla

__all__ = [
    "bordered_system",
    "fd_matrix",
    "fv_matrix",
    "lognormal_fields",
    "scheme_system",
    "solve",
    "source",
    "velocities",
    "weights",
]


def weights(n_side: int) -> np.ndarray:
    """Trapezoid weights (1 at corners, 2 on edges, 4 inside, times h^2/4), [iy, ix]."""
    h = 1.0 / (n_side - 1)
    w1 = np.full(n_side, 2.0)
    w1[[0, -1]] = 1.0
    return np.outer(w1, w1) * h * h / 4


def source(n_side: int, width: float = 0.125, rate: float = 10.0) -> np.ndarray:
    """The two-well source f of docs/data.md §1 (+rate at (0, 0), -rate at (1, 1)), [iy, ix]."""
    x = np.linspace(0.0, 1.0, n_side)
    xx, yy = np.meshgrid(x, x)
    tol = 1e-12
    f = np.zeros((n_side, n_side))
    half = width / 2
    f[(np.abs(xx - half) <= half + tol) & (np.abs(yy - half) <= half + tol)] += rate
    lo = 1 - half
    f[(np.abs(xx - lo) <= half + tol) & (np.abs(yy - lo) <= half + tol)] -= rate
    return f


def fd_matrix(k: np.ndarray) -> sp.csr_matrix:
    """The paper's finite-difference matrix A (docs/data.md §1a) of K[iy, ix], row iy * N + ix."""
    n_side = k.shape[0]
    h = 1.0 / (n_side - 1)
    idx = np.arange(n_side * n_side).reshape(n_side, n_side)
    rows, cols, vals = [idx.ravel()], [idx.ravel()], [(4 * k / h**2).ravel()]
    kx = np.zeros_like(k)
    kx[:, 1:-1] = (k[:, 2:] - k[:, :-2]) / (2 * h)
    east, west = -k / h**2 - kx / (2 * h), -k / h**2 + kx / (2 * h)
    east[:, 0] = -2 * k[:, 0] / h**2  # left edge: the inward neighbour gets -2K/h^2
    west[:, -1] = -2 * k[:, -1] / h**2  # right edge
    ky = np.zeros_like(k)
    ky[1:-1, :] = (k[2:, :] - k[:-2, :]) / (2 * h)
    north, south = -k / h**2 - ky / (2 * h), -k / h**2 + ky / (2 * h)
    north[0, :] = -2 * k[0, :] / h**2  # bottom edge
    south[-1, :] = -2 * k[-1, :] / h**2  # top edge
    for r, c, v in [
        (idx[:, :-1], idx[:, 1:], east[:, :-1]),
        (idx[:, 1:], idx[:, :-1], west[:, 1:]),
        (idx[:-1, :], idx[1:, :], north[:-1, :]),
        (idx[1:, :], idx[:-1, :], south[1:, :]),
    ]:
        rows.append(r.ravel())
        cols.append(c.ravel())
        vals.append(v.ravel())
    n = n_side * n_side
    return sp.csr_matrix(
        (np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)
    )


def fv_matrix(k: np.ndarray) -> sp.csr_matrix:
    """The finite-volume matrix A (docs/data.md §1b): harmonic-mean transmissibilities, half/quarter cells."""
    n_side = k.shape[0]
    idx = np.arange(n_side * n_side).reshape(n_side, n_side)
    tx = 2 * k[:, 1:] * k[:, :-1] / (k[:, 1:] + k[:, :-1])
    tx[[0, -1], :] *= 0.5  # faces of half control volumes on the bottom/top walls
    ty = 2 * k[1:, :] * k[:-1, :] / (k[1:, :] + k[:-1, :])
    ty[:, [0, -1]] *= 0.5
    a = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
    b = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
    t = np.concatenate([tx.ravel(), ty.ravel()])
    n = n_side * n_side
    return sp.csr_matrix(
        (
            np.concatenate([-t, -t, t, t]),
            (np.concatenate([a, b, a, b]), np.concatenate([b, a, a, b])),
        ),
        shape=(n, n),
    )


def scheme_system(
    k: np.ndarray, scheme: str, f: np.ndarray
) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """``(A, b, w)`` of a scheme: b = f (fd) or f * w (fv), w the flat trapezoid weights."""
    w = weights(k.shape[0])
    if scheme == "fd":
        return fd_matrix(k), f.ravel(), w.ravel()
    if scheme == "fv":
        return fv_matrix(k), (f * w).ravel(), w.ravel()
    msg = f"scheme must be 'fd' or 'fv'; got {scheme!r}"
    raise ValueError(msg)


def bordered_system(k: np.ndarray, scheme: str, f: np.ndarray) -> tuple[sp.csc_matrix, np.ndarray]:
    """The bordered matrix ``[[A, w], [w^T, 0]]`` (CSC) and right-hand side ``[b; 0]``."""
    a, b, w = scheme_system(k, scheme, f)
    wc = sp.csr_matrix(w.reshape(-1, 1))
    border = sp.bmat([[a, wc], [wc.T, None]], format="csc")
    return border, np.append(b, 0.0)


def velocities(k: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``u = -K grad p`` by central differences, the wall-normal component zero on walls."""
    h = 1.0 / (k.shape[0] - 1)
    ux = np.zeros_like(p)
    uy = np.zeros_like(p)
    ux[:, 1:-1] = -k[:, 1:-1] * (p[:, 2:] - p[:, :-2]) / (2 * h)
    uy[1:-1, :] = -k[1:-1, :] * (p[2:, :] - p[:-2, :]) / (2 * h)
    return ux, uy


def solve(
    k: np.ndarray, scheme: str = "fd", f: np.ndarray | None = None
) -> tuple[np.ndarray, float]:
    """``(output (3, N, N) = (p, u_x, u_y), lambda)`` of one field, by SuperLU of the bordered system."""
    n_side = k.shape[0]
    f = source(n_side) if f is None else f
    border, rhs = bordered_system(k, scheme, f)
    z = spla.splu(border).solve(rhs)
    p = z[:-1].reshape(n_side, n_side)
    return np.stack([p, *velocities(k, p)]), float(z[-1])


def lognormal_fields(
    n: int,
    n_side: int,
    seed: int | np.random.Generator,
    length: float = 0.1,
    sigma: float = 1.0,
) -> np.ndarray:
    """``exp`` of smooth Gaussian fields (spectral filter of white noise, exponential-like).

    Unit-variance log-fields scaled by ``sigma``; ``seed`` is an int or a Generator.
    """
    rng = np.random.default_rng(seed)
    freq = np.fft.fftfreq(2 * n_side) * 2 * n_side
    kk = freq[:, None] ** 2 + freq[None, :] ** 2
    spectrum = (1.0 / length**2 + (np.pi**2) * kk) ** -0.75
    noise = rng.standard_normal((n, 2 * n_side, 2 * n_side))
    g = np.fft.ifft2(np.fft.fft2(noise) * spectrum).real[:, :n_side, :n_side]
    g /= g.std(axis=(1, 2), keepdims=True)
    return np.exp(sigma * g)
