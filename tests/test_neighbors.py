"""darcyvae.neighbors.KDTree at any scale: regressions and Hypothesis properties.

The reference is a brute force in np.longdouble (x86-64: 80-bit extended,
exponent range about 1e+-4932), so squared distances of coordinates near
1e308 are exact there while float64 would overflow.
"""

from __future__ import annotations

import darcyvae.metrics
import numpy as np
import pytest
from darcyvae.neighbors import MAX_WEIGHT_RATIO, KDTree
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.spatial import cKDTree

WIDE = np.finfo(np.longdouble).max > np.longdouble("1e400")
needs_wide = pytest.mark.skipif(not WIDE, reason="needs an extended-range np.longdouble")
FMAX = np.finfo(np.float64).max


def wide_distances(q, p, w=None):
    """Exact-range (weighted) distances in long double, shape (len(q), len(p))."""
    q, p = q.astype(np.longdouble), p.astype(np.longdouble)
    w = np.ones(q.shape[1], dtype=np.longdouble) if w is None else np.abs(w).astype(np.longdouble)
    diff = (q[:, None, :] - p[None, :, :]) * w
    return np.sqrt(np.sum(diff * diff, axis=2))


def check_query(tree, data, queries, k, dist, idx, weights=None, exclude=None):
    """dist are the k smallest reference distances (within float64 rounding of the
    data's and weights' extent) and idx points at points at those distances."""
    ref = wide_distances(queries, data, weights)
    if exclude is not None:
        for r, e in enumerate(exclude):
            if 0 <= e < len(data):
                ref[r, e] = np.inf
    assert np.all(np.isfinite(dist))
    assert idx.min() >= 0
    assert idx.max() < len(data)
    # documented float64 limit: weighted offsets below ~1e-154 of the points'
    # largest |coordinate| (1 if all are 0) times the largest |weight| underflow
    unit = np.max(np.abs(data)) or 1.0
    unit = np.longdouble(unit) * (1.0 if weights is None else np.max(np.abs(weights)))
    tol = 1e-9 * np.sort(ref, axis=1)[:, :k] + 1e-140 * unit
    np.testing.assert_array_less(np.abs(dist - np.sort(ref, axis=1)[:, :k]), tol + 1e-300)
    got = ref[np.arange(len(queries))[:, None], idx]
    np.testing.assert_array_less(np.abs(dist - got), tol + 1e-300)


def attempt(fn, *args, **kwargs):
    """(result, None), or (None, message) when fn raises ValueError."""
    try:
        return fn(*args, **kwargs), None
    except ValueError as exc:
        return None, str(exc)


def test_kdtree_lives_in_neighbors_and_its_reexport_answers_as_ckdtree():
    assert darcyvae.metrics.KDTree is KDTree
    assert KDTree.__module__ == "darcyvae.neighbors"
    # the tree as the KL estimators reach it: k nearest points, self-queries with
    # an exclusion, weighted distances and closed balls, against scipy's cKDTree
    rng = np.random.default_rng(11)
    x = rng.standard_normal((300, 3))
    q = rng.standard_normal((40, 3))
    tree = darcyvae.metrics.KDTree(x, leaf_size=5)
    assert (tree.n, tree.d) == (300, 3)
    ref = cKDTree(x)
    dist, idx = tree.query(q, 6)
    ref_dist, ref_idx = ref.query(q, 6)
    np.testing.assert_array_equal(idx, ref_idx)  # continuous data: no ties
    np.testing.assert_allclose(dist, ref_dist, rtol=1e-13)
    np.testing.assert_allclose(dist, np.linalg.norm(q[:, None, :] - x[idx], axis=2), rtol=1e-13)
    dist1, idx1 = tree.query(x, 1, exclude=np.arange(300))
    ref_dist, ref_idx = ref.query(x, 2)  # the point itself first
    np.testing.assert_array_equal(idx1[:, 0], ref_idx[:, 1])
    np.testing.assert_allclose(dist1[:, 0], ref_dist[:, 1], rtol=1e-13)
    w = np.array([0.5, -2.0, 3.0])  # the sign of a weight does not matter
    wdist, widx = tree.query(q, 4, weights=w)
    ref_dist, ref_idx = cKDTree(x * np.abs(w)).query(q * np.abs(w), 4)
    np.testing.assert_array_equal(widx, ref_idx)
    np.testing.assert_allclose(wdist, ref_dist, rtol=1e-13)
    # a radius between the 4th and 5th distance holds exactly 4 points, the 4th
    # the farthest of them
    radius = 0.5 * (dist[:, 3] + dist[:, 4])
    count, max_dist = tree.count_within(q, radius)
    np.testing.assert_array_equal(count, 4)
    np.testing.assert_array_equal(count, [len(p) for p in ref.query_ball_point(q, radius)])
    np.testing.assert_allclose(max_dist, dist[:, 3], rtol=1e-13)


# --------------------------- regressions: any magnitude (darcyvae.neighbors docstring, Scale)


@needs_wide
def test_weights_spanning_1e90_give_finite_exact_distances():
    # before: weights [1e200, 1] gave inf distances and index -1
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 2))
    w = np.array([1e90, 1.0])
    tree = KDTree(x)
    dist, idx = tree.query(x[:20], 3, weights=w, exclude=np.arange(20))
    check_query(tree, x, x[:20], 3, dist, idx, w, np.arange(20))
    # the ordering follows the dominant axis, as cKDTree on the weighted points
    ref, _ = cKDTree(x * w).query(x[:20] * w, 4)
    np.testing.assert_allclose(dist, ref[:, 1:], rtol=1e-12)


def test_weights_beyond_the_documented_ratio_are_refused():
    tree = KDTree(np.random.default_rng(1).standard_normal((20, 2)))
    assert MAX_WEIGHT_RATIO == 1e100
    with pytest.raises(ValueError, match="weights must lie within a factor 1e\\+100"):
        tree.query(np.zeros((1, 2)), weights=[1e200, 1.0])
    with pytest.raises(ValueError, match="weights must lie within"):
        tree.count_within(np.zeros((1, 2)), 1.0, weights=[1.0, 1e-101])


@needs_wide
@pytest.mark.parametrize("scale", [1e-300, 1e-160, 2.0**-1070, 1e160, 1e300])
def test_points_of_any_magnitude(scale):
    rng = np.random.default_rng(2)
    base = rng.standard_normal((150, 3))
    x = base * scale
    tree = KDTree(x)
    dist, idx = tree.query(x, 4, exclude=np.arange(150))
    check_query(tree, x, x, 4, dist, idx, exclude=np.arange(150))
    if scale == 2.0**-1070:  # subnormal: only a few significant bits survive
        return
    unit, _ = KDTree(base).query(base, 4, exclude=np.arange(150))
    np.testing.assert_allclose(dist, unit * scale, rtol=1e-12)
    radius = dist[:, 2] * (1 + 1e-9)
    count, max_dist = tree.count_within(x, radius, exclude=np.arange(150))
    assert np.all(count >= 3)
    assert np.all((max_dist >= dist[:, 2]) & (max_dist <= radius))


@needs_wide
def test_queries_far_outside_the_points_tie_at_one_distance():
    # points ~1e-300, queries ~1: in the tree's units the queries are ~1e300
    rng = np.random.default_rng(3)
    x = 1e-300 * rng.standard_normal((50, 2))
    q = np.array([[1.0, 2.0], [0.0, -3e5], [1e-300, 0.0]])
    tree = KDTree(x)
    dist, idx = tree.query(q, 5)
    check_query(tree, x, q, 5, dist, idx)
    np.testing.assert_allclose(dist[:2], np.hypot(*q[:2].T)[:, None] * np.ones(5), rtol=1e-15)
    count, max_dist = tree.count_within(q, [2.0, 4e5, 1.0], exclude=[0, -1, 3])
    assert count.tolist() == [0, 50, 49]
    assert max_dist[0] == 0.0
    assert max_dist[1] == pytest.approx(3e5, rel=1e-15)
    # a query beyond the float64 range of distances: a clear error
    with pytest.raises(ValueError, match="distances exceed the largest float64"):
        KDTree([[-FMAX], [0.0]]).query([[FMAX]], 2)


def test_exclude_must_be_integers():
    tree = KDTree(np.eye(3))
    with pytest.raises(TypeError, match="exclude must hold integer indices"):
        tree.query(np.eye(3), 1, exclude=[0.0, 1.0, 2.0])
    # indices outside [0, n) exclude nothing; the last query leaves out itself
    for big in (np.array([2**63 - 1, -5, 2]), np.array([2**64 - 1, 7, 2], dtype=np.uint64)):
        dist, idx = tree.query(np.eye(3), 1, exclude=big)
        assert idx[:2, 0].tolist() == [0, 1]
        assert idx[2, 0] in (0, 1)
        np.testing.assert_array_equal(dist[:, 0], [0.0, 0.0, np.sqrt(2.0)])


# ------------------------------------------------------------------------- properties


def layouts(arr, how):
    """The same values as a C array, a Fortran array, a strided or reversed view."""
    if how == "F":
        return np.asfortranarray(arr)
    if how == "strided":
        big = np.zeros((2 * arr.shape[0], 2 * arr.shape[1]), dtype=arr.dtype)
        big[::2, ::2] = arr
        return big[::2, ::2]
    if how == "reversed":
        return arr[::-1, ::-1].copy()[::-1, ::-1]
    return arr


finite64 = st.floats(allow_nan=False, allow_infinity=False, width=64)
special = st.sampled_from([0.0, -0.0, 5e-324, -2.2e-308, 1e-300, 1e300, -FMAX, FMAX, 1.0])


@st.composite
def point_sets(draw, with_nonfinite=False):
    d = draw(st.integers(1, 4))
    n = draw(st.integers(1, 25))
    nq = draw(st.integers(1, 8))
    elements = st.one_of(finite64, special)
    if with_nonfinite:
        elements = st.one_of(elements, st.sampled_from([np.nan, np.inf, -np.inf]))
    data = draw(hnp.arrays(np.float64, (n, d), elements=elements))
    queries = draw(hnp.arrays(np.float64, (nq, d), elements=elements))
    return data, queries


@needs_wide
@given(
    sets=point_sets(),
    k_frac=st.floats(0.0, 1.0),
    how=st.sampled_from(["C", "F", "strided", "reversed"]),
    weighted=st.booleans(),
    wexp=st.lists(st.integers(-300, 300), min_size=4, max_size=4),
    use_exclude=st.booleans(),
)
def test_query_agrees_with_a_wide_brute_force(sets, k_frac, how, weighted, wexp, use_exclude):
    data, queries = sets
    n, d = data.shape
    w = None
    if weighted:
        e = np.array(wexp[:d])
        e = np.clip(e, e.max() - 330, None)  # within the documented ratio 1e100
        w = np.ldexp(1.0, e) * 1.5
    exclude = np.arange(len(queries)) % (n + 1) - 1 if use_exclude else None
    k = 1 + int(k_frac * (n - 1 - use_exclude)) if n - use_exclude >= 1 else None
    if k is None:
        return
    tree = KDTree(layouts(data, how))
    ref = wide_distances(queries, data, w)
    out, error = attempt(tree.query, layouts(queries, how), k, weights=w, exclude=exclude)
    if error is not None:  # documented: distances beyond float64
        assert "exceed the largest float64" in error
        if exclude is not None:
            for r, e in enumerate(exclude):
                if e >= 0:
                    ref[r, e] = np.inf
        assert np.max(np.sort(ref, axis=1)[:, k - 1]) > FMAX * (1 - 1e-9)
        return
    check_query(tree, data, queries, k, *out, w, exclude)


@given(sets=point_sets(with_nonfinite=True), dtype=st.sampled_from(["f8", "f4", "f2", "i8", "u1"]))
def test_tree_never_crashes_on_any_input(sets, dtype):
    data, queries = sets
    with np.errstate(over="ignore", invalid="ignore"):
        data, queries = data.astype(dtype), queries.astype(dtype)
    tree, error = attempt(KDTree, data)
    out = None if error else attempt(tree.query, queries, 1)
    if error is None and out[1] is not None:
        error = out[1]
    if error is not None:
        assert "finite" in error or "exceed the largest float64" in error
        return
    dist, idx = out[0]
    assert np.all(np.isfinite(dist))
    assert np.all((idx >= 0) & (idx < len(data)))
    with np.errstate(over="ignore"):
        radius = np.minimum(dist[:, 0] * (1 + 1e-9), FMAX)
    count, max_dist = tree.count_within(queries, radius)
    assert np.all(count[radius > 1e-300] >= 1)  # subnormal radii: sqrt rounding
    assert np.all(np.isfinite(max_dist))
