"""Property-based tests of the C++ entry points of the solver and the KLE (docs/safety.md).

Random shapes, dtypes, memory layouts (non-contiguous views) and values,
including NaN, inf, 0, negative numbers, subnormals and extreme magnitudes,
go through the public functions (``darcyvae.darcy``, ``darcyvae.kle``). The
property: a documented exception (``ValueError`` / ``TypeError``) or a
finite answer that an independent NumPy/SciPy computation confirms; never a
crash. ``pytest --hypothesis-profile=long`` runs many more examples.
"""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest
import scipy_reference as ref
from darcyvae import _core
from darcyvae.darcy import RESIDUAL_TOLERANCE, DarcyConfig, gauge_weights, solve, solve_batch
from darcyvae.kle import KLEConfig, covariance_matvec, kle_basis
from hypothesis import given
from hypothesis import strategies as st

SPECIAL = [
    0.0,
    -0.0,
    -1.0,
    np.nan,
    np.inf,
    -np.inf,
    5e-324,  # the smallest subnormal
    2.2e-308,
    1e-300,
    1e-150,
    1e-50,
    1e-20,
    1e-8,
    1e8,
    1e20,
    1e50,
    1e150,
    1e300,
    1.7e308,
]
DTYPES = ["float64", "float32", "float16", "int64", "int16", "uint8", "bool", "complex128"]


@st.composite
def fields(draw, ndim: int = 3):
    """A permeability batch (n, N, N) (or one field) of any dtype and layout, often extreme."""
    n_side = draw(st.integers(3, 11))
    n = draw(st.integers(0, 5)) if ndim == 3 else 1
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    sigma = draw(st.sampled_from([0.0, 0.5, 1.0, 3.0, 8.0]))
    k = np.exp(sigma * rng.standard_normal((n, n_side, n_side)))
    k *= draw(st.sampled_from([1.0, 1e-30, 1e-3, 1e3, 1e30, 1e200]))
    for _ in range(draw(st.integers(0, 3))):  # a few special entries
        if n:
            idx = (rng.integers(n), rng.integers(n_side), rng.integers(n_side))
            k[idx] = draw(st.sampled_from(SPECIAL))
    dtype = draw(st.sampled_from(DTYPES))
    with np.errstate(over="ignore", invalid="ignore"):
        k = k.astype(dtype) if dtype != "bool" else k > 1.0
    layout = draw(st.sampled_from(["c", "f", "transposed", "strided", "reversed"]))
    if layout == "f":
        k = np.asfortranarray(k)
    elif layout == "transposed":
        k = np.ascontiguousarray(k.transpose(0, 2, 1)).transpose(0, 2, 1)
    elif layout == "strided":
        big = np.zeros((n, 2 * n_side, 2 * n_side), dtype=k.dtype)
        big[:, ::2, ::2] = k
        k = big[:, ::2, ::2]
    elif layout == "reversed":
        k = np.ascontiguousarray(k[:, ::-1, ::-1])[:, ::-1, ::-1]
    return k if ndim == 3 else k[0]


def _is_valid_permeability(k: np.ndarray) -> bool:
    if k.dtype.kind not in "iuf":
        return False
    with np.errstate(invalid="ignore"):
        kf = k.astype(np.float64)
    return bool(np.all(np.isfinite(kf)) and np.all(kf > 0))


def _check_solution(k: np.ndarray, scheme: str, out: np.ndarray, lam: float, bordered: float):
    """The answer solves the bordered system (checked by SciPy) and has zero trapezoid mean."""
    n_side = k.shape[0]
    assert np.all(np.isfinite(out))
    assert bordered <= RESIDUAL_TOLERANCE
    p = out[0].ravel()
    with np.errstate(over="ignore", invalid="ignore"):
        a, b, w = ref.scheme_system(k, scheme, ref.source(n_side))
    # The reference evaluates 2 K_a K_b / (K_a + K_b) literally; where that
    # overflows (K near 1e308) only the core's own residual is available.
    if np.all(np.isfinite(a.data)):
        bnorm = np.linalg.norm(b)
        residual = np.linalg.norm(a @ p + lam * w - b) / bnorm
        # The core's and SciPy's residuals differ by rounding of the products.
        rounding = 1e-13 * abs(a).sum(axis=1).max() * np.abs(p).max() / bnorm
        assert residual <= 10 * RESIDUAL_TOLERANCE + rounding, (residual, bordered)
    weights = gauge_weights(n_side).ravel()
    assert abs(weights @ p) <= 1e-12 * (weights @ np.abs(p)) + 1e-300
    ux, uy = ref.velocities(k, out[0])
    scale = max(np.abs(out[1:]).max(), 1e-300)
    assert np.abs(out[1] - ux).max() <= 1e-12 * scale
    assert np.abs(out[2] - uy).max() <= 1e-12 * scale


@given(
    k=fields(),
    scheme=st.sampled_from(["fd", "fv"]),
    threads=st.sampled_from([None, 0, 1, 2, 300]),
    dtype=st.sampled_from([np.float64, np.float32]),
)
def test_solve_batch_is_refused_or_accurate(k, scheme, threads, dtype):
    config = DarcyConfig(scheme=scheme)
    error = None
    try:
        out, diag = solve_batch(k, config, threads=threads, dtype=dtype, return_diagnostics=True)
    except (TypeError, ValueError) as exc:
        error = exc
    if isinstance(error, TypeError):  # documented: complex or bool input
        assert k.dtype.kind in "bc", error
        return
    if isinstance(error, ValueError):  # documented: bad values, or beyond double precision
        if _is_valid_permeability(k):
            assert "could not be solved accurately" in str(error), error
        return
    assert _is_valid_permeability(k)
    assert out.shape == (k.shape[0], 3, *k.shape[1:])
    assert out.dtype == dtype
    kf = np.ascontiguousarray(k, dtype=np.float64)
    out64 = out if dtype == np.float64 else solve_batch(kf, config, threads=1)
    if dtype == np.float32:
        assert np.array_equal(out, out64.astype(np.float32))
    else:  # bitwise the same whatever the thread count
        assert np.array_equal(out, solve_batch(kf, config, threads=1))
    for i in range(len(kf)):
        _check_solution(
            kf[i],
            scheme,
            out64[i],
            diag.lagrange_multiplier[i],
            diag.bordered_residual[i],
        )


@given(
    shape=st.lists(st.integers(0, 4), min_size=0, max_size=4).map(tuple),
    dtype=st.sampled_from(DTYPES),
)
def test_solve_of_any_shape_is_refused_or_accurate(shape, dtype):
    k = np.ones(shape, dtype=dtype)
    error = None
    try:
        out, diag = solve(k, return_diagnostics=True)
    except (TypeError, ValueError) as exc:
        error = exc
    if isinstance(error, TypeError):
        assert dtype in ("bool", "complex128"), error
        assert f"dtype {dtype}" in str(error)
        return
    if isinstance(error, ValueError):
        assert f"got shape {shape}" in str(error), error  # the real shape, also for 0-d input
        return
    assert len(shape) == 2
    assert shape[0] == shape[1] >= 3
    _check_solution(np.ones(shape), "fd", out, diag.lagrange_multiplier, diag.bordered_residual)


# ---------------------------------------------------------------------------
# KLE


LENGTHS = [0.0, -0.1, np.nan, np.inf, 5e-324, 1e-300, 1e-3, 0.05, 0.1, 0.3, 2.0, 1e8, 1e300]
VARIANCES = [0.0, -1.0, np.nan, np.inf, 5e-324, 1e-300, 1e-8, 1.0, 2.5, 1e8, 1e300, 1.7e308]


def _dense_covariance(config: KLEConfig) -> np.ndarray:
    """C[a, b] = sigma^2 k(r_ab) over the N^2 grid nodes, straight from docs/data.md §2."""
    n = config.grid
    x = np.linspace(0.0, 1.0, n)
    xx, yy = np.meshgrid(x, x)
    lx, ly = config.length_xy
    with np.errstate(over="ignore", invalid="ignore"):
        dx = (xx.ravel()[:, None] - xx.ravel()[None, :]) / lx
        dy = (yy.ravel()[:, None] - yy.ravel()[None, :]) / ly
        r2 = dx * dx + dy * dy
    kern = np.exp(-np.sqrt(r2)) if config.kernel == "exponential" else np.exp(-0.5 * r2)
    return config.variance * kern


@given(
    grid=st.integers(2, 10),
    n_modes=st.integers(-1, 120),
    kernel=st.sampled_from(["exponential", "squared_exponential", "matern"]),
    length=st.one_of(
        st.sampled_from(LENGTHS), st.tuples(st.sampled_from(LENGTHS), st.sampled_from(LENGTHS))
    ),
    variance=st.sampled_from(VARIANCES),
)
def test_kle_basis_is_refused_or_an_eigenbasis(grid, n_modes, kernel, length, variance):
    try:
        config = KLEConfig(
            grid=grid, n_modes=n_modes, kernel=kernel, length_scale=length, variance=variance
        )
        basis = kle_basis(config, cache=False, threads=2)
    except (ValueError, TypeError):
        return
    s, n = config.n_modes, grid * grid
    lam = np.asarray(basis.eigenvalues)
    phi = np.asarray(basis.modes).reshape(s, n)
    assert lam.shape == (s,)
    assert np.all(np.isfinite(lam))
    assert np.all(np.isfinite(phi))
    lam1 = lam.max()
    assert lam1 > 0
    assert np.all(np.diff(lam) <= 1e-8 * lam1)  # descending up to the cluster tolerance
    assert np.all(lam >= -1e-10 * lam1)  # C is positive semidefinite
    np.testing.assert_allclose(phi @ phi.T, np.eye(s), atol=1e-8)
    # Eigenvectors of the unit-variance covariance (they do not depend on
    # sigma^2), with eigenvalues lam / sigma^2: checked on that matrix so that
    # huge and tiny variances do not overflow the check itself.
    c = _dense_covariance(dataclasses.replace(config, variance=1.0))
    mu = np.einsum("ij,jk,ik->i", phi, c, phi)  # Rayleigh quotients
    mu1 = mu.max()
    resid = np.linalg.norm(phi @ c - mu[:, None] * phi, axis=1)
    assert np.all(resid <= 1e-7 * mu1), resid.max() / mu1
    ref_mu = np.linalg.eigvalsh(c)[::-1][:s]  # a dense eigensolver of the same matrix
    np.testing.assert_allclose(mu, ref_mu, atol=1e-8 * mu1, rtol=0)
    np.testing.assert_allclose(lam, variance * mu, rtol=1e-8, atol=1e-8 * lam1 + 1e-320)
    assert lam.sum() <= n * variance * (1 + 1e-10) + s * 5e-324  # at most trace(C)
    # Sign rule (docs/data.md §2): r . phi > 0, r the fixed hash vector (ties decided elsewhere).
    j = np.arange(n, dtype=np.uint64)
    r = ((j + 1) * np.uint64(2654435761) % np.uint64(2**32)).astype(np.float64) / 2**32 - 0.5
    proj = phi @ r
    assert np.all(proj > -1e-10 * np.linalg.norm(r)), proj.min()


@given(
    grid=st.integers(2, 9),
    batch=st.sampled_from([None, 0, 1, 3]),
    seed=st.integers(0, 2**32 - 1),
    special=st.lists(st.sampled_from(SPECIAL), max_size=2),
    dtype=st.sampled_from(["float64", "float32", "int32", "bool", "complex128"]),
    layout=st.sampled_from(["c", "f", "strided"]),
    length=st.sampled_from([1e-300, 0.05, 0.1, 2.0, 1e300]),
    threads=st.sampled_from([0, 1, 300]),
)
def test_covariance_matvec_is_refused_or_exact(
    grid, batch, seed, special, dtype, layout, length, threads
):
    rng = np.random.default_rng(seed)
    shape = (grid, grid) if batch is None else (batch, grid, grid)
    v = rng.standard_normal(shape)
    flat = v.reshape(-1)
    for value in special:
        if flat.size:
            flat[rng.integers(flat.size)] = value
    with np.errstate(over="ignore", invalid="ignore"):
        v = v.astype(dtype) if dtype != "bool" else v > 0
    if layout == "f":
        v = np.asfortranarray(v)
    elif layout == "strided":
        big = np.zeros((*shape[:-2], grid, 2 * grid), dtype=v.dtype)
        big[..., ::2] = v
        v = big[..., ::2]
    config = KLEConfig(grid=grid, n_modes=1, length_scale=length)
    error = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", np.exceptions.ComplexWarning)
            cv = covariance_matvec(v, config, threads=threads)
    except (TypeError, ValueError) as exc:
        error = exc
    if isinstance(error, TypeError):
        assert dtype == "complex128", error
        return
    with np.errstate(invalid="ignore", over="ignore"):
        vf = np.asarray(v, dtype=np.float64).reshape(-1, grid * grid)
    if not np.all(np.isfinite(vf)):
        assert isinstance(error, ValueError), "non-finite v must be refused"
        return
    # The exact product, computed on v scaled by a power of two (no overflow).
    amax = np.abs(vf).max() if vf.size else 0.0
    unit = 2.0 ** np.floor(np.log2(amax)) if amax > 0 else 1.0
    expected_unit = (vf / unit) @ _dense_covariance(config)
    with np.errstate(over="ignore"):
        fits = bool(np.all(np.isfinite(expected_unit * unit)))
    if isinstance(error, ValueError):  # documented only for a product beyond double range
        assert not fits, error
        assert "overflows double precision" in str(error)
        return
    assert fits
    assert cv.shape == v.shape
    assert np.all(np.isfinite(cv))
    scale = np.abs(vf / unit).sum(axis=1, keepdims=True) + 1e-300
    got_unit = cv.reshape(-1, grid * grid) / unit
    assert np.all(np.abs(got_unit - expected_unit) <= 1e-12 * scale)


def test_core_kle_scales_eigenvalues_by_the_variance_exactly():
    # The eigenvectors do not depend on sigma^2, so the core solves
    # the unit covariance and scales; tiny and huge variances keep accuracy.
    unit = _core.kle_solve(9, "exponential", 0.1, 0.1, 1.0, 6)
    for variance in (2.5, 1e-310, 1e200):
        got = _core.kle_solve(9, "exponential", 0.1, 0.1, variance, 6)
        assert np.array_equal(got["modes"], unit["modes"])
        np.testing.assert_array_equal(got["eigenvalues"], unit["eigenvalues"] * variance)
        assert got["trace"] == 81 * variance
    with pytest.raises(ValueError, match=r"variance \* grid\^2 .* must be finite"):
        _core.kle_solve(9, "exponential", 0.1, 0.1, 1e307, 6)
