"""Hypothesis properties of the score entry points (through the public functions,
which call the C++ core): a documented exception, or a finite answer that
agrees with an independent NumPy computation, at any magnitude and layout.

Data are drawn as small integer grids (exact in float64, with ties and
repeated points) times a random power of two from the subnormal range to
near overflow, in float64/float32/int dtypes and C, Fortran or strided
layouts. Powers of two rescale exactly, so the scores must equal those of
the integer grid itself, which the references compute.
"""

from __future__ import annotations

import numpy as np
import pytest
from darcyvae.metrics import (  # _halves: s_kl's cross-fit split, to tell singular halves
    SKLOptions,
    _halves,
    dci,
    kl_divergence,
    mig,
    s_d,
    s_kl,
    sap,
)
from hypothesis import event, given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.special import digamma

# integer grids up to 2^10: times 2^e exact for e in [-1064, 1013]
EXPONENTS = st.integers(-1064, 1013)


def attempt(fn, *args, **kwargs):
    """(result, None), or (None, message) when fn raises ValueError."""
    try:
        return fn(*args, **kwargs), None
    except ValueError as exc:
        return None, str(exc)


def grids(n, d, low=-1024, high=1024):
    # every element drawn (no fill value): distinct points are the common case
    return hnp.arrays(np.int64, (n, d), elements=st.integers(low, high), fill=st.nothing())


def layout(arr, how):
    if how == "F":
        return np.asfortranarray(arr)
    if how == "strided":
        big = np.zeros((arr.shape[0], 3 * arr.shape[1]), dtype=arr.dtype)
        big[:, ::3] = arr
        return big[:, ::3]
    return arr


@st.composite
def scaled(draw, grid, per_column=False):
    """grid * 2^e (one e, or one per column) as float64 in some layout, or the
    grid itself as an integer dtype (e = 0)."""
    kind = draw(st.sampled_from(["f8", "f8", "f4", "int"]))
    if kind == "int":
        return layout(grid.astype(draw(st.sampled_from([np.int32, np.int64]))), "C")
    lo, hi = (-130, 110) if kind == "f4" else (-1064, 1013)  # float32: exact there
    e = draw(hnp.arrays(np.int64, grid.shape[1] if per_column else 1, elements=st.integers(lo, hi)))
    values = np.ldexp(grid.astype(np.float64), e).astype(kind)
    return layout(values, draw(st.sampled_from(["C", "F", "strided"])))


# ------------------------------------------------------------------- k-NN KL


def brute_kl(x, y, k, method):
    """WKV estimators from full squared-distance matrices of integer grids
    (exact); "x" or "y" where a k-th distance is 0 (rho: repeated x; nu: an x
    equal to a y), inf where y is constant in a coordinate that x leaves."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    n, d = x.shape
    dxx = np.sum((x[:, None] - x[None]) ** 2, axis=2)
    np.fill_diagonal(dxx, np.inf)
    dxy = np.sum((x[:, None] - y[None]) ** 2, axis=2)
    sx, sy = np.sort(dxx, axis=1), np.sort(dxy, axis=1)
    rho2, nu2 = sx[:, k - 1], sy[:, k - 1]
    if np.any(rho2 == 0):
        return "x"
    if any(np.all(y[:, c] == y[0, c]) and np.any(x[:, c] != y[0, c]) for c in range(d)):
        return np.inf
    if np.any(nu2 == 0):
        return "y"
    corr = 0.0
    if method == "adaptive":
        eps2 = np.maximum(rho2, nu2)
        # closed balls; the side whose k-th distance is eps counts k (ties by rank)
        li = np.where(rho2 == eps2, k, np.sum(dxx <= eps2[:, None], axis=1))
        ki = np.where(nu2 == eps2, k, np.sum(dxy <= eps2[:, None], axis=1))
        rows = np.arange(n)
        rho2, nu2 = sx[rows, li - 1], sy[rows, ki - 1]
        corr = np.mean(digamma(li) - digamma(ki))
    return 0.5 * d * np.mean(np.log(nu2 / rho2)) + corr + np.log(len(y) / (n - 1))


@given(data=st.data(), method=st.sampled_from(["fixed", "adaptive"]))
def test_kl_divergence_equals_a_numpy_brute_force_at_any_scale(data, method):
    d = data.draw(st.integers(1, 3))
    n, m = data.draw(st.integers(3, 30)), data.draw(st.integers(1, 30))
    spread = data.draw(st.sampled_from([3, 40, 1024, 1024]))  # 3: many ties
    x = data.draw(grids(n, d, -spread, spread))
    y = data.draw(grids(m, d, -spread, spread))
    k = data.draw(st.sampled_from([1, 1, 2, 3]))
    e = data.draw(EXPONENTS)
    # the same power of two on both (a common rescaling: D unchanged)
    xs, ys = np.ldexp(x.astype(float), e), np.ldexp(y.astype(float), e)
    got, error = attempt(kl_divergence, xs, ys, k=k, method=method)
    if k > n - 1 or k > m or m < 2:
        assert error is not None
        assert "k must be" in error or "at least 2 samples" in error
        return
    ref = brute_kl(x, y, k, method)
    if isinstance(ref, str):
        assert error is not None
        assert ("repeated points" if ref == "x" else "coincide") in error, error
        return
    assert error is None, error
    if ref == np.inf:
        event("y singular")
        assert got == np.inf
        return
    event("compared with the brute force")
    assert np.isfinite(got)
    assert got == pytest.approx(ref, abs=1e-9)


finite_or_not = st.one_of(
    st.floats(width=64),
    st.sampled_from([0.0, 5e-324, 1e-310, 1e308, -1.7976931348623157e308]),
)


@given(
    x=hnp.arrays(
        np.float64, st.tuples(st.integers(1, 12), st.integers(1, 3)), elements=finite_or_not
    ),
    y=hnp.arrays(
        np.float64, st.tuples(st.integers(1, 12), st.integers(1, 3)), elements=finite_or_not
    ),
    method=st.sampled_from(["fixed", "adaptive"]),
)
def test_kl_divergence_on_arbitrary_floats_is_finite_or_a_clear_error(x, y, method):
    got, error = attempt(kl_divergence, x, y, method=method)
    if error is None and got == np.inf:  # only for a y singular against x
        assert any(
            np.all(y[:, c] == y[0, c]) and np.any(x[:, c] != y[0, c]) for c in range(x.shape[1])
        )
    elif error is None:
        assert np.isfinite(got)
    else:
        assert any(
            s in error
            for s in (
                "finite",
                "at least 2 samples",
                "same dimension",
                "k must be",
                "repeated",
                "coincide",
            )
        ), error


# ---------------------------------------------------------- S_D, SAP, DCI, MIG


def pair_grids(data, min_n=2):
    n = data.draw(st.integers(min_n, 40))
    dz, dt = data.draw(st.sampled_from([1, 2, 2, 3])), data.draw(st.sampled_from([1, 2, 2, 3]))
    spread = data.draw(st.sampled_from([2, 50, 1000]))
    return data.draw(grids(n, dz, -spread, spread)), data.draw(grids(n, dt, -spread, spread))


def s_d_reference(z, t):
    c = np.abs(np.cov(z.T.astype(float), t.T.astype(float))[: z.shape[1], z.shape[1] :])
    rows = c.sum(axis=1)
    return np.mean(np.where(rows > 0, c.max(axis=1) / np.where(rows > 0, rows, 1), 1 / t.shape[1]))


@given(data=st.data())
def test_s_d_equals_numpy_covariance_formula_at_any_scale(data):
    z, t = pair_grids(data)
    # S_D: invariant per latent and under one common factor scale
    zs = data.draw(scaled(z, per_column=True))
    ts = data.draw(scaled(t, per_column=False))
    got = s_d(zs, ts)
    assert np.isfinite(got)
    assert 1 / t.shape[1] - 1e-12 <= got <= 1 + 1e-12
    assert got == pytest.approx(s_d_reference(z, t), abs=1e-9)


def sap_reference(z, t):
    z, t = z.astype(float), t.astype(float)
    s = np.zeros((z.shape[1], t.shape[1]))
    for i in range(z.shape[1]):
        for j in range(t.shape[1]):
            if np.ptp(z[:, i]) > 0:
                s[i, j] = np.corrcoef(z[:, i], t[:, j])[0, 1] ** 2
    top = np.sort(s, axis=0)
    return np.mean(top[-1] - top[-2])


@given(data=st.data(), score=st.sampled_from(["sap", "mig", "dci"]))
def test_sap_mig_dci_at_any_scale(data, score):
    z, t = pair_grids(data, min_n=5)
    zs = data.draw(scaled(z, per_column=True))
    ts = data.draw(scaled(t, per_column=True))
    fn = {"sap": sap, "mig": mig, "dci": dci}[score]
    got, error = attempt(fn, zs, ts)
    ref, ref_error = attempt(fn, z.astype(float), t.astype(float))
    if z.shape[1] < 2 or np.any(np.ptp(t, axis=0) == 0) or (score == "dci" and t.shape[1] < 2):
        assert error is not None
        assert "at least 2" in error or "constant factors" in error
        return
    assert error is None, error
    assert ref_error is None, ref_error
    event(f"{score} compared")
    if score == "dci":  # invariant per variable: the same numbers as the grid's
        values = np.array([got.disentanglement, got.completeness, got.informativeness])
        expect = np.array([ref.disentanglement, ref.completeness, ref.informativeness])
        assert np.all(np.isfinite(values))
        assert np.all((values[:2] >= -1e-12) & (values[:2] <= 1 + 1e-12))
        np.testing.assert_allclose(values, expect, rtol=1e-9, atol=1e-12)
        return
    assert np.isfinite(got)
    assert got == pytest.approx(ref, abs=1e-12)
    if score == "sap":
        assert got == pytest.approx(sap_reference(z, t), abs=1e-9)
    assert -1e-12 <= got <= 1 + 1e-12


# --------------------------------------------------------------------------- S_KL

FAST = SKLOptions(refine=1, restarts=0, maxfev=40)


@given(data=st.data())
def test_s_kl_is_finite_or_a_clear_error_and_exactly_scale_invariant(data):
    d = data.draw(st.integers(1, 2))
    n = data.draw(st.integers(2, 24))
    m = data.draw(st.sampled_from([n, n, data.draw(st.integers(2, 24))]))
    theta = data.draw(grids(n, d, -1000, 1000))
    z = data.draw(grids(m, d, -50, 50))
    ref, ref_error = attempt(s_kl, z.astype(float), theta.astype(float), options=FAST, seed=0)
    e_t = data.draw(st.integers(-500, 500))
    e_z = data.draw(hnp.arrays(np.int64, d, elements=st.integers(-500, 500)))
    got, error = attempt(
        s_kl,
        np.ldexp(z.astype(float), e_z),
        np.ldexp(theta.astype(float), e_t),
        options=FAST,
        seed=0,
    )
    if ref_error is not None:
        assert error == ref_error
        assert any(
            s in ref_error
            for s in ("too few samples", "must vary", "distinct samples", "k must be", "at least 2")
        ), ref_error
        return
    assert error is None, error
    # a latent constant in a coordinate, on all samples or within a cross-fit
    # half (the halves of seed 0, as s_kl draws them), scores inf: never an error
    rng = np.random.default_rng(0)
    ia, ib = _halves(n, rng)
    ja, jb = (ia, ib) if m == n else _halves(m, rng)
    whole = bool(np.any(np.ptp(z, axis=0) == 0))
    part = whole or any(np.any(np.ptp(z[rows], axis=0) == 0) for rows in (ja, jb))
    assert (ref.score == np.inf) == part
    assert (ref.in_sample == np.inf) == whole
    if part:
        event("a singular latent: inf")
    else:
        event("a score")
        assert np.isfinite(ref.score)
    assert whole or np.isfinite(ref.in_sample)
    assert (got.score, got.in_sample, got.fold_scores) == (
        ref.score,
        ref.in_sample,
        ref.fold_scores,
    )
    assert got.permutation.tolist() == ref.permutation.tolist()
    np.testing.assert_allclose(
        got.scale, np.ldexp(ref.scale, e_t - e_z[got.permutation]), rtol=1e-12
    )


# ------------------------------------------ ties against jitter (docs/scores.md §5a, Ties)


@st.composite
def tied_latents(draw):
    """(theta, z): theta continuous (distinct, as s_kl requires) and a latent
    with ties: a tracking, independent or rotated latent, rounded to a grid,
    with rows copied onto others, or partly collapsed onto one point."""
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, d = draw(st.integers(20, 100)), draw(st.integers(1, 2))
    theta = rng.standard_normal((n, d))
    base = draw(st.sampled_from(["tracking", "independent", "rotated"]))
    if base == "tracking":
        z = theta + draw(st.sampled_from([0.01, 0.1, 0.5])) * rng.standard_normal((n, d))
    elif base == "independent":
        z = rng.standard_normal((n, d))
    else:
        z = theta @ np.array([[1.0, -1.0], [1.0, 1.0]])[:d, :d] / np.sqrt(2.0)
    ties = draw(st.sampled_from(["round", "copy", "collapse"]))
    if ties == "round":
        step = draw(st.sampled_from([0.01, 0.1, 0.5, 1.0, 2.0]))
        z = np.round(z / step) * step
    elif ties == "copy":
        rows = rng.integers(0, n, size=(2, draw(st.integers(1, n))))
        z[rows[0]] = z[rows[1]]
    else:
        z[rng.random(n) < draw(st.floats(0.05, 0.95))] = z[draw(st.integers(0, n - 1))]
    event(f"ties: {ties}")
    return theta, z, rng


def jitter(z, rng):
    """z with every tie broken: each coordinate moved by about 1e-9 of its range."""
    spread = np.where(np.ptp(z, axis=0) > 0, np.ptp(z, axis=0), 1.0)
    return z + 1e-9 * spread * rng.standard_normal(z.shape)


@given(sample=tied_latents(), method=st.sampled_from(["fixed", "adaptive"]))
def test_kl_divergence_on_tied_samples_of_q_is_the_limit_of_vanishing_jitter(sample, method):
    theta, z, rng = sample
    z_jit = jitter(z, rng)
    tied = kl_divergence(theta, z, method=method)
    broken = kl_divergence(theta, z_jit, method=method)
    # Tolerance: the jitter moves each distance nu by at most |jitter|, so each
    # term d log(nu / rho) by at most d |jitter| / min nu (the ball counts do
    # not change: ties count by rank, as the jitter orders them); 4x margin.
    # Nothing else separates the two (theta is continuous: no cross ties).
    min_nu = np.sqrt(np.min(np.sum((theta[:, None] - z[None]) ** 2, axis=2)))
    tol = 4 * theta.shape[1] * np.max(np.linalg.norm(z_jit - z, axis=1)) / min_nu + 1e-12
    assert tied >= broken - tol
    if np.isfinite(tied):
        assert abs(tied - broken) <= tol
    else:  # q on a hyperplane: z constant in a coordinate (theta is not)
        assert tied == np.inf
        assert np.any(np.ptp(z, axis=0) == 0)


@given(sample=tied_latents(), method=st.sampled_from(["fixed", "adaptive"]))
def test_s_kl_of_a_tied_latent_is_never_better_than_with_the_ties_jittered(sample, method):
    theta, z, rng = sample
    tied = s_kl(z, theta, method=method, options=FAST, seed=0).score
    broken = s_kl(jitter(z, rng), theta, method=method, options=FAST, seed=0).score
    # Tolerance: the tied and the jittered latent give the same divergence at
    # every (a, b) to about 1e-7 (the property above), so the searches differ
    # only where a coarsely quantised latent makes the start scores of two
    # orientations tie exactly: the tie is then ordered by index for one and by
    # the jitter for the other, and the two searches end at different local
    # minima, whose held-out scores differ by the estimator's sampling noise.
    # The score averages about n per-sample terms d log(nu / rho) (+ digamma
    # terms), each of standard deviation about 1.8 for k = 1 (d log nu and
    # d log rho are logs of nearly exponential volumes, variance pi^2/6 each),
    # so it has a standard deviation of about 1.8 / sqrt(n): tolerance two of
    # them. Measured over 1100 such pairs (n = 20 to 120): equal to 1e-6 in all
    # but 4, the worst 1.27 / sqrt(n) below. Before the fix, ties lowered the adaptive score by
    # up to 2.3 nats at n = 400 (tolerance there: 0.18).
    tol = 2 * 1.8 / np.sqrt(len(z))
    assert tied >= broken - tol
