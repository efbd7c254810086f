"""The S_KL search's Nelder-Mead (cpp/nelder_mead.cpp, docs/scores.md §5): scipy's bounded
Nelder-Mead step for step, so the same function gives the same points, values, counts and
flags; and the search on the divergence in C++ gives what scipy's does on it."""

from __future__ import annotations

import functools
import math
import warnings
from unittest import mock

import numpy as np
import pytest
from darcyvae import _core
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize

_ARGSORT = np.argsort


def scipy_nelder_mead(f, simplex, lower, upper, xatol, fatol, maxfev):
    """scipy's Nelder-Mead, its vertices sorted stably: numpy's default argsort of a short
    array is not stable on every machine (numpy 2 on AVX-512 sorts ties in another
    order), so scipy's order of tied vertices depends on the machine; darcyvae keeps
    tied vertices in their order (a stable sort)."""
    options = {"xatol": xatol, "fatol": fatol, "initial_simplex": simplex}
    if maxfev:
        options["maxfev"] = maxfev
    stable = functools.partial(_ARGSORT, kind="stable")
    with warnings.catch_warnings(), mock.patch.object(np, "argsort", stable):
        warnings.simplefilter("ignore")  # "initial guess is not within the bounds"
        return minimize(
            f,
            simplex[0],
            method="Nelder-Mead",
            bounds=list(zip(lower, upper, strict=True)),
            options=options,
        )


def functions(n, rng):
    """Test functions: a scaled quadratic, Rosenbrock's valley, a staircase (ties between
    vertices: the sort must keep their order) and a quadratic that is +inf on one side."""
    c, w = rng.uniform(-2, 2, n), rng.uniform(0.1, 10, n)
    return {
        "quadratic": lambda x: float(np.sum(w * (x - c) ** 2)),
        "rosenbrock": lambda x: float(
            np.sum((1 - x[:-1]) ** 2) + 100 * np.sum((x[1:] - x[:-1] ** 2) ** 2)
        ),
        "staircase": lambda x: math.floor(4 * float(np.sum((x - c) ** 2))) / 4,
        "wall": lambda x: math.inf if x[0] > c[0] + 0.3 else float(np.sum((x - c) ** 2)),
    }


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 5),
    st.sampled_from(["quadratic", "rosenbrock", "staircase", "wall"]),
    st.sampled_from(["none", "box", "half"]),
    st.sampled_from([0, 7, 40]),
    st.integers(0, 2**32 - 1),
)
def test_nelder_mead_is_scipys_step_for_step(n, name, bounded, maxfev, seed):
    rng = np.random.default_rng(seed)
    f = functions(n, rng)[name]
    simplex = rng.uniform(-3, 3, (n + 1, n))
    lower, upper = np.full(n, -np.inf), np.full(n, np.inf)
    if bounded != "none":  # some simplex points start outside: reflected, then clipped
        lower[:] = rng.uniform(-2.5, -0.5, n)
        upper[:] = rng.uniform(0.5, 2.5, n)
        if bounded == "half":
            lower[::2], upper[1::2] = -np.inf, np.inf
    xatol, fatol = 10.0 ** rng.uniform(-6, -2), 10.0 ** rng.uniform(-6, -2)
    calls = []

    def counted(x):
        calls.append(np.array(x))
        return f(x)

    x, fun, nfev, nit, success = _core.nelder_mead(
        counted, simplex, lower, upper, xatol, fatol, maxfev
    )
    ref_calls = []

    def ref_counted(x):
        ref_calls.append(np.array(x))
        return f(x)

    ref = scipy_nelder_mead(ref_counted, simplex, lower, upper, xatol, fatol, maxfev)
    assert len(calls) == len(ref_calls) == nfev == ref.nfev
    for a, b in zip(calls, ref_calls, strict=True):  # the same trial points, in order
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, ref.x)
    assert fun == ref.fun or (math.isnan(fun) and math.isnan(ref.fun))
    assert nit == ref.nit
    assert success == ref.success
    assert np.all(x >= lower)
    assert np.all(x <= upper)


def test_nelder_mead_finds_a_minimum_inside_and_on_a_bound():
    """Closed forms: the centre of a quadratic inside the box, the nearest bound outside."""
    f = lambda x: float((x[0] - 0.3) ** 2 + (x[1] + 5.0) ** 2)
    simplex = np.array([[0.0, 0.0], [0.5, 0.0], [0.0, 0.5]])
    lower, upper = np.array([-1.0, -1.0]), np.array([1.0, 1.0])
    x, fun, _, _, success = _core.nelder_mead(f, simplex, lower, upper, 1e-8, 1e-12)
    assert success
    np.testing.assert_allclose(x, [0.3, -1.0], atol=1e-6)
    assert fun == pytest.approx(16.0, abs=1e-9)


def test_nelder_mead_bad_input_raises_value_error():
    f = lambda x: 0.0
    with pytest.raises(ValueError, match="simplex must have shape"):
        _core.nelder_mead(f, np.zeros((2, 2)), np.zeros(2), np.ones(2), 1e-4, 1e-4)
    with pytest.raises(ValueError, match="lower and upper must have length"):
        _core.nelder_mead(f, np.zeros((3, 2)), np.zeros(3), np.ones(2), 1e-4, 1e-4)
    with pytest.raises(ValueError, match="lower bound above upper"):
        _core.nelder_mead(f, np.zeros((3, 2)), np.ones(2), np.zeros(2), 1e-4, 1e-4)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 3), st.sampled_from(["adaptive", "fixed"]), st.integers(0, 2**32 - 1))
def test_the_divergence_search_in_cpp_is_scipys_on_the_divergence(d, method, seed):
    """``KLEstimator.minimize_divergence`` against scipy's Nelder-Mead on the same
    divergence evaluated from Python (a = a0 exp(p[:d]), b = b0 + p[d:] step)."""
    rng = np.random.default_rng(seed)
    n = 200
    theta = rng.standard_normal((n, d))
    z = theta @ rng.uniform(-1, 1, (d, d)) + 0.3 * rng.standard_normal((n, d))
    est, ztree = _core.KLEstimator(theta, k=1, method=method), _core.KDTree(z)
    perm = rng.permutation(d).astype(np.int64)
    a0 = rng.choice([-1.0, 1.0], d) * theta.std(axis=0) / z.std(axis=0)[perm]
    b0 = z.mean(axis=0)[perm] - theta.mean(axis=0) / a0
    step = z.std(axis=0)[perm]
    log_range = math.log(10.0)
    simplex = np.vstack([np.zeros(2 * d), 0.5 * np.eye(2 * d)])
    simplex[:, :d] = np.clip(simplex[:, :d], -log_range, log_range)

    def objective(p):
        value, _, zero_y = est.divergence(
            ztree, a0 * np.exp(p[:d]), b0 + p[d:] * step, perm, paired=True, min_ratio=0.01
        )
        return math.inf if zero_y else float(value)

    x, fun, nfev, ok = est.minimize_divergence(
        ztree, a0, b0, step, perm, simplex, log_range, 1e-3, 1e-4, paired=True, min_ratio=0.01
    )
    bounds_lo = np.r_[np.full(d, -log_range), np.full(d, -np.inf)]
    bounds_hi = np.r_[np.full(d, log_range), np.full(d, np.inf)]
    ref = scipy_nelder_mead(objective, simplex, bounds_lo, bounds_hi, 1e-3, 1e-4, 0)
    assert fun == pytest.approx(ref.fun, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(x, ref.x, rtol=1e-9, atol=1e-12)
    assert nfev == ref.nfev
    assert ok == ref.success


def test_minimize_divergence_checks_its_arguments():
    rng = np.random.default_rng(0)
    est, ztree = (
        _core.KLEstimator(rng.standard_normal((50, 2))),
        _core.KDTree(rng.standard_normal((50, 2))),
    )
    one, perm = np.ones(2), np.arange(2)
    with pytest.raises(ValueError, match="simplex must have shape"):
        est.minimize_divergence(ztree, one, one, one, perm, np.zeros((4, 4)), 1.0, 1e-3, 1e-4)
    with pytest.raises(ValueError, match="a0 must have length 2"):
        est.minimize_divergence(
            ztree, np.ones(3), one, one, perm, np.zeros((5, 4)), 1.0, 1e-3, 1e-4
        )
    with pytest.raises(ValueError, match="log_range must be > 0"):
        est.minimize_divergence(ztree, one, one, one, perm, np.zeros((5, 4)), 0.0, 1e-3, 1e-4)
