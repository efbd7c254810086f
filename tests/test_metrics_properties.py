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
from darcyvae.metrics import SKLOptions, dci, kl_divergence, mig, s_d, s_kl, sap
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
    (exact); None where a distance the estimator divides by is 0."""
    x, y = x.astype(np.float64), y.astype(np.float64)
    n, d = x.shape
    dxx = np.sum((x[:, None] - x[None]) ** 2, axis=2)
    np.fill_diagonal(dxx, np.inf)
    dxy = np.sum((x[:, None] - y[None]) ** 2, axis=2)
    sx, sy = np.sort(dxx, axis=1), np.sort(dxy, axis=1)
    rho2, nu2 = sx[:, k - 1], sy[:, k - 1]
    corr = 0.0
    if method == "adaptive":
        eps2 = np.maximum(rho2, nu2)
        li = np.sum(dxx <= eps2[:, None], axis=1)
        ki = np.sum(dxy <= eps2[:, None], axis=1)
        rows = np.arange(n)
        rho2, nu2 = sx[rows, li - 1], sy[rows, ki - 1]
        corr = np.mean(digamma(li) - digamma(ki))
    if np.any(rho2 == 0) or np.any(nu2 == 0):
        return None
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
    if ref is None:
        assert error is not None
        assert "repeated points" in error or "coincide" in error
        return
    assert error is None, error
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
    if error is None:
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
    event("a score")
    assert np.isfinite(ref.score)
    assert np.isfinite(ref.in_sample)
    assert (got.score, got.in_sample, got.fold_scores) == (
        ref.score,
        ref.in_sample,
        ref.fold_scores,
    )
    assert got.permutation.tolist() == ref.permutation.tolist()
    np.testing.assert_allclose(
        got.scale, np.ldexp(ref.scale, e_t - e_z[got.permutation]), rtol=1e-12
    )
