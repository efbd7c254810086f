from __future__ import annotations

import itertools

import numpy as np
import pytest
from darcyvae import _core
from darcyvae.metrics import (
    KDTree,
    SKLOptions,
    SKLResult,
    dci,
    kl_divergence,
    mig,
    s_d,
    s_kl,
    sap,
)
from scipy.optimize import minimize
from scipy.special import digamma

ROT45 = np.array([[1.0, -1.0], [1.0, 1.0]]) / np.sqrt(2.0)


@pytest.fixture
def theta():
    return np.random.default_rng(1234).standard_normal((20000, 2))


def mixture4(n, rng):
    """docs/data.md §3 `mixture4`: each coordinate +-1 w.p. 1/2 plus N(0, 0.25^2)."""
    return rng.choice([-1.0, 1.0], size=(n, 2)) + 0.25 * rng.standard_normal((n, 2))


# ------------------------------------------------------------------- S_D


def test_s_d_identity_is_one(theta):
    assert s_d(theta, theta) == pytest.approx(1.0, abs=0.01)


def test_s_d_rotation_45_degrees_is_half(theta):
    c = np.sqrt(0.5)
    rot = np.array([[c, -c], [c, c]])
    assert s_d(theta @ rot.T, theta) == pytest.approx(0.5, abs=0.02)


def test_s_d_matches_covariance_formula_and_closed_form(theta):
    mix = np.array([[1.0, 0.3], [0.2, 1.0]])
    mixed = theta @ mix.T
    ref = s_d(mixed, theta)
    assert s_d(mixed[:, ::-1] * np.array([5.0, -0.1]), theta) == pytest.approx(ref, rel=1e-12)
    # Eq. 6 from numpy's covariance matrix
    c = np.abs(np.cov(mixed.T, theta.T)[:2, 2:])
    assert ref == pytest.approx(np.mean(c.max(axis=1) / c.sum(axis=1)), rel=1e-12)
    # population value: Cov(z, theta) = mix for theta ~ N(0, I): (1/1.3 + 1/1.2) / 2
    assert ref == pytest.approx(0.5 * (1 / 1.3 + 1 / 1.2), abs=0.01)
    # scaling a factor changes S_D (it is not invariant per factor)
    assert abs(s_d(mixed, theta * np.array([1.0, 3.0])) - ref) > 0.05


def test_s_d_bad_input():
    with pytest.raises(ValueError, match="same number of samples"):
        s_d(np.zeros((5, 2)), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="finite"):
        s_d(np.full((5, 2), np.nan), np.zeros((5, 2)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        s_d(np.zeros((1, 2)), np.zeros((1, 2)))
    for fn in (s_d, mig, sap, dci):  # before: s_d and mig crashed on zero columns
        with pytest.raises(ValueError, match="theta must have at least"):
            fn(np.ones((5, 2)), np.zeros((5, 0)))
        with pytest.raises(ValueError, match="z must have at least"):
            fn(np.zeros((5, 0)), np.ones((5, 2)))


# ------------------------------------------------------ brute-force references


def sq_dist(q, p, w=None):
    """Squared (weighted) distances, summed over axes in order like the C++."""
    out = np.zeros((len(q), len(p)))
    for c in range(q.shape[1]):
        t = q[:, None, c] - p[None, :, c]
        out += t * t if w is None else w[c] ** 2 * (t * t)
    return out


def wkv_reference(x, y, k, method, paired=False, min_ratio=0.0):
    """Wang-Kulkarni-Verdu estimators from full distance matrices."""
    n, d = x.shape
    m_eff = len(y) - paired
    dxx = sq_dist(x, x)
    np.fill_diagonal(dxx, np.inf)
    dxy = sq_dist(x, y)
    if paired:
        np.fill_diagonal(dxy, np.inf)
    sx, sy = np.sort(dxx, axis=1), np.sort(dxy, axis=1)
    rho2, nu2 = sx[:, k - 1], sy[:, k - 1]
    if method == "fixed":
        num, den, corr = nu2, rho2, 0.0
    else:
        eps2 = np.maximum(rho2, nu2)
        # closed balls, but the side whose k-th distance is eps counts k (ties
        # by rank, docs/scores.md §5a)
        li = np.where(rho2 == eps2, k, np.sum(dxx <= eps2[:, None], axis=1))
        ki = np.where(nu2 == eps2, k, np.sum(dxy <= eps2[:, None], axis=1))
        rows = np.arange(n)
        den, num = sx[rows, li - 1], sy[rows, ki - 1]
        corr = digamma(li) - digamma(ki)
    ratio = np.maximum(num / den, min_ratio**2)
    return np.mean(0.5 * d * np.log(ratio) + corr) + np.log(m_eff / (n - 1))


def kl_gauss(m1, s1, m2, s2):
    """Closed-form D(N(m1, s1) || N(m2, s2))."""
    inv = np.linalg.inv(s2)
    dm = m2 - m1
    logdet = np.linalg.slogdet(s2)[1] - np.linalg.slogdet(s1)[1]
    return 0.5 * (np.trace(inv @ s1) + dm @ inv @ dm - len(m1) + logdet)


# ------------------------------------------------------------------ KDTree


@pytest.mark.parametrize("d", [1, 2, 3, 5])
@pytest.mark.parametrize("leaf_size", [1, 8])
def test_tree_knn_matches_brute_force(d, leaf_size):
    rng = np.random.default_rng(d)
    pts = rng.standard_normal((300, d))
    pts[50:60] = pts[0]  # repeated points
    pts[:, 0] = np.round(pts[:, 0], 1)  # many equal coordinates
    queries = np.vstack([rng.standard_normal((40, d)), pts[:20]])
    tree = KDTree(pts, leaf_size=leaf_size)
    ref = np.sqrt(np.sort(sq_dist(queries, pts), axis=1))
    for k in (1, 4, 17):
        dist, idx = tree.query(queries, k)
        np.testing.assert_array_equal(dist, ref[:, :k])
        got = np.sqrt(sq_dist(queries, pts)[np.arange(len(queries))[:, None], idx])
        np.testing.assert_array_equal(got, dist)


def test_tree_exclusion_is_by_index_not_by_distance():
    pts = np.array([[0.0, 0.0], [0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    tree = KDTree(pts)
    dist, idx = tree.query(pts, 3, exclude=np.arange(4))
    # points 0, 1, 3 coincide: each still sees the other two at distance 0
    np.testing.assert_array_equal(dist[[0, 1, 3]], [[0.0, 0.0, 5.0]] * 3)
    assert set(idx[0, :2]) == {1, 3}
    assert set(idx[3, :2]) == {0, 1}
    np.testing.assert_array_equal(dist[2], [5.0, 5.0, 5.0])
    assert 2 not in idx[2]


def test_tree_weighted_distance_equals_transformed_points():
    rng = np.random.default_rng(7)
    z = rng.standard_normal((400, 3))
    x = rng.standard_normal((50, 3))
    a, b = np.array([2.0, -0.5, 1.5]), np.array([0.3, -1.0, 0.0])
    tree = KDTree(z)
    dist, idx = tree.query(x / a + b, 5, weights=np.abs(a))
    ref = np.sort(np.sqrt(sq_dist(x, a * (z - b))), axis=1)[:, :5]
    np.testing.assert_allclose(dist, ref, rtol=1e-12)
    np.testing.assert_allclose(
        np.sqrt(sq_dist(x, a * (z - b)))[np.arange(50)[:, None], idx], dist, rtol=1e-12
    )


def test_tree_count_within_matches_brute_force():
    rng = np.random.default_rng(3)
    pts = rng.standard_normal((500, 2))
    q = rng.standard_normal((60, 2))
    d2 = sq_dist(q, pts)
    srt = np.sort(d2, axis=1)
    r = np.sqrt(0.5 * (srt[:, 6] + srt[:, 7]))  # between the 7th and 8th points
    count, max_dist = KDTree(pts).count_within(q, r)
    np.testing.assert_array_equal(count, 7)
    np.testing.assert_array_equal(max_dist, np.sqrt(srt[:, 6]))
    # closed ball: a radius equal to a point's distance counts that point
    one = KDTree(np.array([[0.0, 0.0], [3.0, 4.0]]))
    assert one.count_within([[0.0, 0.0]], 5.0)[0].tolist() == [2]
    assert one.count_within([[0.0, 0.0]], 5.0, exclude=[0])[0].tolist() == [1]
    assert one.count_within([[0.0, 0.0]], 0.0)[0].tolist() == [1]


@pytest.mark.parametrize("leaf_size", [1, 8])
def test_tree_many_repeated_points_match_brute_force(leaf_size):
    rng = np.random.default_rng(12)
    pts = np.vstack([np.zeros((40, 2)), rng.standard_normal((60, 2)), np.ones((25, 2))])
    tree = KDTree(pts, leaf_size=leaf_size)
    own = np.arange(len(pts))
    d2 = sq_dist(pts, pts)
    np.fill_diagonal(d2, np.inf)
    srt = np.sort(d2, axis=1)
    dist, idx = tree.query(pts, 5, exclude=own)
    np.testing.assert_array_equal(dist, np.sqrt(srt[:, :5]))
    assert np.all(idx != own[:, None])
    r = np.sqrt(0.5 * (srt[:, 44] + srt[:, 45]))
    count, max_dist = tree.count_within(pts, r, exclude=own)
    np.testing.assert_array_equal(count, np.sum(d2 <= r[:, None] ** 2, axis=1))
    np.testing.assert_array_equal(max_dist, np.sqrt(srt[np.arange(len(pts)), count - 1]))
    # an out-of-range exclusion index excludes nothing
    assert tree.count_within(pts[:1], 0.0, exclude=[10**9])[0].tolist() == [40]


def test_tree_threads_give_identical_results():
    rng = np.random.default_rng(5)
    pts = rng.standard_normal((3000, 2))
    tree = KDTree(pts)
    a = tree.query(pts, 3, exclude=np.arange(3000), threads=1)
    b = tree.query(pts, 3, exclude=np.arange(3000), threads=2)
    np.testing.assert_array_equal(a[0], b[0])


def test_tree_bad_input():
    with pytest.raises(ValueError, match="finite"):
        KDTree([[0.0, np.inf]])
    with pytest.raises(ValueError, match="2 columns"):
        KDTree(np.zeros((5, 2))).query(np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 5\]"):
        KDTree(np.zeros((5, 2))).query(np.zeros((3, 2)), k=6)
    with pytest.raises(ValueError, match=r"k must be an integer in \[1, 4\]"):
        KDTree(np.zeros((5, 2))).query(np.zeros((3, 2)), k=5, exclude=[0, 1, 2])
    with pytest.raises(ValueError, match="one index per query"):
        KDTree(np.zeros((5, 2))).query(np.zeros((3, 2)), exclude=[0])
    with pytest.raises(ValueError, match="non-zero"):
        KDTree(np.zeros((5, 2))).query(np.zeros((3, 2)), weights=[1.0, 0.0])
    with pytest.raises(ValueError, match="radius must be >= 0"):
        KDTree(np.zeros((5, 2))).count_within(np.zeros((3, 2)), -1.0)
    with pytest.raises(TypeError, match="integer"):
        KDTree(np.zeros((5, 2)), leaf_size=2.5)
    with pytest.raises(ValueError, match="leaf_size"):  # the C++ layer checks too
        _core.KDTree(np.zeros((5, 2)), leaf_size=0)


def test_digamma_matches_scipy():
    xs = np.r_[np.arange(1, 300), np.geomspace(1e-3, 1e6, 200)]
    got = np.array([_core.digamma(float(v)) for v in xs])
    np.testing.assert_allclose(got, digamma(xs), rtol=1e-14, atol=1e-14)
    assert np.isnan(_core.digamma(0.0))


# ------------------------------------------------------------ KL estimator


@pytest.mark.parametrize("method", ["fixed", "adaptive"])
@pytest.mark.parametrize(
    ("n", "m", "d", "k"), [(40, 55, 1, 1), (200, 150, 2, 1), (120, 120, 3, 3), (90, 60, 5, 2)]
)
def test_kl_matches_brute_force(method, n, m, d, k):
    rng = np.random.default_rng(n + d)
    x = rng.standard_normal((n, d))
    y = 0.5 + 1.3 * rng.standard_normal((m, d))
    if d == 1:
        x = np.round(x, 1)  # ties in the ball counts of the adaptive estimator
        x += 1e-3 * np.arange(n)[:, None]
    ref = wkv_reference(x, y, k, method)
    assert kl_divergence(x, y, k=k, method=method) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("method", ["fixed", "adaptive"])
def test_kl_matches_brute_force_paired_and_floor(method):
    rng = np.random.default_rng(11)
    x = rng.standard_normal((150, 2))
    y = x + 0.01 * rng.standard_normal((150, 2))
    ref = wkv_reference(x, y, 2, method, paired=True)
    assert kl_divergence(x, y, k=2, method=method, paired=True) == pytest.approx(ref, abs=1e-12)
    ref = wkv_reference(x, y, 1, method, min_ratio=0.3)
    assert kl_divergence(x, y, method=method, min_ratio=0.3) == pytest.approx(ref, abs=1e-12)


def test_adaptive_counts_ties_by_rank_as_vanishing_jitter_would():
    # x on a grid: each x_i has up to 4 neighbours at exactly rho_1 = eps(i) (its
    # 4 nearest y lie closer, at 0.707): the x side sets eps(i) and counts l_i = 1,
    # as after any tiny jitter of x, while the 4 y inside the ball all count
    g = np.arange(8.0)
    x = np.array(list(itertools.product(g, g)))
    y = x + np.array([0.5, 0.5])
    ref = wkv_reference(x, y, 1, "adaptive")
    got = kl_divergence(x, y, method="adaptive")
    assert got == pytest.approx(ref, abs=1e-12)
    jitter = 1e-9 * np.random.default_rng(0).standard_normal(x.shape)
    assert got == pytest.approx(kl_divergence(x + jitter, y, method="adaptive"), abs=1e-6)


def gaussian_case(d):
    m2 = np.full(d, 0.5)
    s2 = np.array([[2.0, 0.6], [0.6, 1.0]]) if d == 2 else np.diag(np.linspace(1.2, 2.0, d) ** 2)
    return np.zeros(d), np.eye(d), m2, s2


# Absolute tolerance per sample size: about three standard deviations plus the
# bias of the estimators, measured over 10 seeds for these three cases.
GAUSS_TOL = {500: 0.5, 4000: 0.2, 32000: 0.1}


@pytest.mark.parametrize("method", ["fixed", "adaptive"])
@pytest.mark.parametrize("d", [1, 2, 5])
def test_kl_approaches_gaussian_closed_form(method, d):
    m1, s1, m2, s2 = gaussian_case(d)
    truth = kl_gauss(m1, s1, m2, s2)
    rng = np.random.default_rng(2024 + d)
    errors = {}
    for n, tol in GAUSS_TOL.items():
        x = rng.multivariate_normal(m1, s1, n)
        y = rng.multivariate_normal(m2, s2, n)
        errors[n] = abs(kl_divergence(x, y, method=method) - truth)
        assert errors[n] < tol, (n, errors[n])
    assert errors[32000] < errors[500] + 0.02


def test_kl_is_zero_for_the_same_law_and_threads_do_not_change_it():
    rng = np.random.default_rng(9)
    x, y = rng.standard_normal((5000, 2)), rng.standard_normal((5000, 2))
    for method in ("fixed", "adaptive"):
        one = kl_divergence(x, y, method=method, threads=1)
        assert one == kl_divergence(x, y, method=method, threads=2)
        assert abs(one) < 0.05


def test_kl_one_dimensional_input_is_a_column():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal(300), rng.standard_normal(200)
    assert kl_divergence(x, y) == kl_divergence(x[:, None], y[:, None])


def test_kl_edge_cases():
    rng = np.random.default_rng(4)
    x, y = rng.standard_normal((20, 2)), rng.standard_normal((30, 2))
    with pytest.raises(ValueError, match=r"k must be <= n - 1 = 19"):
        kl_divergence(x, y, k=20)
    with pytest.raises(ValueError, match=r"k must be <= the 30 samples of y"):
        kl_divergence(np.vstack([x, x + 5.0]), y, k=31)
    with pytest.raises(ValueError, match="same dimension"):
        kl_divergence(x, rng.standard_normal((30, 3)))
    with pytest.raises(ValueError, match="at least 2 samples"):
        kl_divergence(x[:1], y)
    with pytest.raises(ValueError, match="at least 2 samples"):
        kl_divergence(x, y[:1])
    with pytest.raises(ValueError, match="finite"):
        kl_divergence(np.where(np.eye(20, 2) > 0, np.nan, x), y)
    with pytest.raises(ValueError, match="finite"):
        kl_divergence(x, np.where(np.eye(30, 2) > 0, np.inf, y))
    with pytest.raises(ValueError, match="method must be one of"):
        kl_divergence(x, y, method="eps2")
    with pytest.raises(ValueError, match="paired samples need as many y as x"):
        kl_divergence(x, y, paired=True)
    with pytest.raises(ValueError, match="min_ratio"):
        kl_divergence(x, y, min_ratio=-1.0)
    with pytest.raises(TypeError, match="k must be an integer"):
        kl_divergence(x, y, k=1.5)


def test_kl_k_equal_to_m_is_allowed():
    rng = np.random.default_rng(8)
    x, y = rng.standard_normal((40, 2)), rng.standard_normal((5, 2))
    for method in ("fixed", "adaptive"):
        ref = wkv_reference(x, y, 5, method)
        assert kl_divergence(x, y, k=5, method=method) == pytest.approx(ref, abs=1e-12)


@pytest.mark.parametrize("method", ["fixed", "adaptive"])
def test_kl_duplicate_points(method):
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((50, 2)), rng.standard_normal((60, 2))
    dup = np.vstack([x, x[:3]])  # three points of x appear twice
    # k=1: rho_1 = 0 for the six copies -> clear error, never inf, for both
    # methods (before: the adaptive one returned a number when other points
    # shared the ball)
    with pytest.raises(ValueError, match="x has repeated points: 6 of its 53 samples"):
        kl_divergence(dup, y, method=method)
    # k above the multiplicity: the k-th neighbour is a distinct point
    ref = wkv_reference(dup, y, 2, method)
    assert np.isfinite(ref)
    assert kl_divergence(dup, y, k=2, method=method) == pytest.approx(ref, abs=1e-12)
    # a y equal to an x gives nu_1 = 0: error for both methods, or clipped with min_ratio
    shared = np.vstack([y, x[:2]])
    with pytest.raises(ValueError, match="2 samples of x coincide with samples of y"):
        kl_divergence(x, shared, method=method)
    assert np.isfinite(kl_divergence(x, shared, method=method, min_ratio=0.1))
    # repeated points of y count by rank (each copy is a neighbour of its own)
    ref = wkv_reference(x, np.vstack([y, y]), 1, method)
    assert kl_divergence(x, np.vstack([y, y]), method=method) == pytest.approx(ref, abs=1e-12)


# ---------------------------- ties and degenerate latents (docs/scores.md §5 and §5a, Ties)


def tied_latent_samples():
    """theta, a latent that tracks it, pure noise rounded to integers and a
    latent on two points, 400 samples in 2-D (the table of docs/scores.md §5)."""
    r = np.random.default_rng(1)
    theta = r.normal(size=(400, 2))
    good = theta + 0.05 * r.normal(size=(400, 2))
    noise = np.round(r.normal(size=(400, 2)))
    two = np.where(r.random((400, 1)) < 0.5, 0.0, 1.0) * np.ones((1, 2))  # (0, 0) or (1, 1)
    return theta, good, noise, two


@pytest.mark.parametrize("method", ["adaptive", "fixed"])
def test_quantised_or_two_point_latents_never_score_better_than_a_tracking_one(method):
    # before (adaptive): tracking 0.009, rounded noise -0.80, two points -1.16
    theta, good, noise, two = tied_latent_samples()
    reference = s_kl(good, theta, method=method, seed=0).score
    assert abs(reference) < 0.2
    for degenerate in (noise, two):
        res = s_kl(degenerate, theta, method=method, seed=0)
        assert res.score > reference + 1.0
        assert res.in_sample > 0.5


@pytest.mark.parametrize("method", ["adaptive", "fixed"])
def test_kl_divergence_of_a_sample_of_q_on_a_hyperplane_is_inf(method):
    # before: adaptive -1.46 (fixed 5.04) for kl_divergence(theta, zeros), truly +inf
    theta, good, _, _ = tied_latent_samples()
    assert kl_divergence(theta, np.zeros((400, 2)), method=method) == np.inf
    assert kl_divergence(theta, np.zeros((400, 2)), method=method, paired=True) == np.inf
    on_a_line = np.column_stack([good[:, 0], np.full(400, 0.3)])
    assert kl_divergence(theta, on_a_line, method=method) == np.inf
    # x on the same hyperplane: not singular against it, the estimate is finite
    flat = np.column_stack([theta[:, 0], np.full(400, 0.3)])
    assert np.isfinite(kl_divergence(flat, on_a_line, method=method))
    # the samples of p are checked first: repeated x is still an error
    with pytest.raises(ValueError, match="x has repeated points"):
        kl_divergence(np.vstack([theta, theta[:1]]), np.zeros((400, 2)), method=method)


@pytest.mark.parametrize("method", ["adaptive", "fixed"])
def test_ties_in_the_sample_of_q_count_as_vanishing_jitter_would_break_them(method):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((300, 2))
    base = x + 0.3 * rng.standard_normal((300, 2))
    collapsed = base.copy()
    collapsed[rng.random(300) < 0.4] = base[0]  # 40% of q on one point
    duplicated = np.vstack([base[:150], base[:150]])  # every point twice
    for y in (np.round(base), np.round(base, 1), collapsed, duplicated):
        jittered = y + 1e-10 * rng.standard_normal(y.shape)
        tied = kl_divergence(x, y, method=method)
        # before (adaptive): a group tied at eps(i) counted whole: 3.25 nats lower for
        # np.round(base), 0.62 for the duplicated sample
        assert tied == pytest.approx(kl_divergence(x, jittered, method=method), abs=1e-6)
        assert tied == pytest.approx(wkv_reference(x, y, 1, method), abs=1e-12)


def test_s_kl_of_a_latent_constant_in_a_coordinate_is_inf_not_an_error():
    # before: ValueError ("z must vary in every coordinate"), which stopped
    # experiments scoring many models at the first collapsed one
    rng = np.random.default_rng(5)
    theta, z = mixture4(120, rng), mixture4(120, rng)
    for degenerate in (np.zeros((120, 2)), np.column_stack([z[:, 0], np.ones(120)])):
        res = s_kl(degenerate, theta, seed=0)
        assert res.score == np.inf
        assert res.fold_scores == (np.inf, np.inf)
        assert res.in_sample == np.inf
        assert res.start_score == np.inf
        assert np.all(np.isnan(res.scale))
        assert np.all(np.isnan(res.shift))
        assert res.permutation.tolist() == [0, 1]
        assert not res.converged
    # constant within one cross-fit half only (one of 40 values differs): the
    # held-out score is inf, the in-sample minimum a number
    res = s_kl(np.column_stack([z[:40, 0], np.r_[np.ones(39), 2.0]]), theta[:40], seed=0)
    assert res.score == np.inf
    assert np.isfinite(res.in_sample)
    assert np.all(np.isfinite(res.scale))
    # unpaired as well
    res = s_kl(np.zeros((90, 2)), theta, seed=0)
    assert res.score == np.inf
    assert not res.paired


# -------------------------------------------------------------------- S_KL


def test_s_kl_recovers_a_scaled_shifted_permuted_copy():
    rng = np.random.default_rng(0)
    theta = np.column_stack([rng.uniform(-1.0, 1.0, 512), mixture4(512, rng)[:, 0]])
    z = (theta * np.array([2.0, -0.5]) + np.array([1.0, 3.0]))[:, ::-1]
    res = s_kl(z, theta, seed=0)
    assert isinstance(res, SKLResult)
    assert res.paired  # same length: z_i encodes theta_i
    assert res.assignment == "exhaustive"
    assert res.score == pytest.approx(np.mean(res.fold_scores), abs=1e-15)
    assert abs(res.score) < 0.15
    assert res.in_sample < res.score
    assert res.permutation.tolist() == [1, 0]
    np.testing.assert_allclose(np.abs(res.scale), [0.5, 2.0], rtol=0.1)
    np.testing.assert_allclose(res.transform(z).std(axis=0), theta.std(axis=0), rtol=0.1)
    with pytest.raises(ValueError, match="z must have 2 columns"):
        res.transform(np.zeros((5, 3)))


@pytest.mark.slow
def test_s_kl_cross_fitted_score_of_aligned_latents_is_not_below_zero():
    # docs/scores.md §5: the in-sample minimum of the noisy estimate is biased low (about
    # -0.2 at n = 512); the held-out divergences are not. Measured over 10
    # seeds (n = 512, this setup): score +0.04 +- 0.08 per seed, in_sample
    # -0.21 +- 0.07. Over 6 seeds the mean score has sd ~0.035: -0.05 is
    # ~2.5 sd below its mean and ~4 sd above the in-sample mean.
    scores, in_sample = [], []
    for seed in range(6):
        rng = np.random.default_rng(100 + seed)
        theta = mixture4(512, rng)
        z = 3.0 * theta[:, ::-1] + 1.0 + 0.1 * rng.standard_normal((512, 2))
        res = s_kl(z, theta, seed=seed)
        scores.append(res.score)
        in_sample.append(res.in_sample)
    assert np.mean(scores) > -0.05
    assert np.mean(in_sample) < -0.1
    assert np.mean(in_sample) < np.mean(scores) - 0.1


@pytest.mark.parametrize("method", ["adaptive", "fixed"])
def test_s_kl_separates_a_45_degree_rotation_of_mixture4(method):
    rng = np.random.default_rng(1)
    theta = mixture4(512, rng)
    aligned = s_kl(3.0 * mixture4(512, rng) - 1.0, theta, method=method, seed=0)
    rotated = s_kl(theta @ ROT45.T, theta, method=method, seed=0)
    assert abs(aligned.score) < 0.15
    assert rotated.score > 0.8
    assert rotated.score > aligned.score + 0.8
    assert rotated.in_sample > aligned.in_sample + 0.8


def test_s_kl_in_sample_equals_a_search_rebuilding_points_per_evaluation():
    # An independent search (one orientation, as docs/scores.md §5 describes it):
    # Nelder-Mead over log-scales and standardised shifts from the
    # moment-matched start, each evaluation a fresh kl_divergence on the
    # transformed latents. s_kl's tree reuse must give the same minimum.
    rng = np.random.default_rng(2)
    theta = mixture4(256, rng)
    z = 2.0 * mixture4(256, rng) @ np.array([[1.0, 0.3], [0.0, 1.0]]).T
    opts = SKLOptions(permutations=False, flips=False, restarts=0)
    a0 = theta.std(axis=0) / z.std(axis=0)
    b0 = z.mean(axis=0) - theta.mean(axis=0) / a0
    lr = np.log(opts.scale_range)
    for method in ("adaptive", "fixed"):

        def objective(p, method=method):
            y = a0 * np.exp(p[:2]) * (z - (b0 + p[2:] * z.std(axis=0)))
            return kl_divergence(theta, y, method=method, paired=True, min_ratio=0.01)

        ref = minimize(
            objective,
            np.zeros(4),
            method="Nelder-Mead",
            bounds=[(-lr, lr)] * 2 + [(-np.inf, np.inf)] * 2,
            options={
                "xatol": 1e-3,
                "fatol": 1e-4,
                "initial_simplex": np.vstack([np.zeros(4), 0.5 * np.eye(4)]),
            },
        )
        res = s_kl(z, theta, method=method, options=opts, seed=3)
        assert res.in_sample == pytest.approx(ref.fun, abs=1e-10)
        np.testing.assert_allclose(res.scale, a0 * np.exp(ref.x[:2]), rtol=1e-8)
        # the in-sample value is the estimator at the returned minimiser
        again = kl_divergence(
            theta, res.transform(z), method=method, paired=True, min_ratio=res.min_ratio
        )
        assert again == pytest.approx(res.in_sample, abs=1e-10)


@pytest.mark.parametrize("method", ["adaptive", "fixed"])
def test_weighted_divergence_equals_a_tree_over_the_transformed_latents(method):
    # one evaluation of the S_KL objective: the tree over z queried with
    # theta / a + b and weights |a| == a fresh tree over a o (z_perm - b)
    rng = np.random.default_rng(13)
    theta, z = rng.standard_normal((700, 3)), rng.standard_normal((700, 3))
    est = _core.KLEstimator(theta, k=2, method=method)
    ztree = _core.KDTree(z)
    for _ in range(5):
        a = rng.uniform(0.3, 3.0, 3) * rng.choice([-1.0, 1.0], 3)
        b = rng.standard_normal(3)
        perm = rng.permutation(3)
        for paired in (False, True):
            reuse = est.divergence(ztree, a, b, perm, paired=paired, min_ratio=0.05)
            fresh = est.divergence(
                _core.KDTree(np.ascontiguousarray(a * (z[:, perm] - b))),
                paired=paired,
                min_ratio=0.05,
            )
            assert reuse[0] == pytest.approx(fresh[0], abs=1e-12)
            assert reuse[0] == pytest.approx(
                wkv_reference(theta, a * (z[:, perm] - b), 2, method, paired, 0.05), abs=1e-12
            )


def test_s_kl_guards_keep_the_search_finite_and_bounded():
    # Unguarded, fixed k = 1 Nelder-Mead on mixture4 (n = 512) runs to -inf.
    rng = np.random.default_rng(3)
    theta = mixture4(512, rng)
    z = mixture4(512, rng)
    res = s_kl(z, theta, method="fixed", paired=False, options=SKLOptions(min_ratio=0.0), seed=0)
    assert np.isfinite(res.score)
    assert res.in_sample > -1.0
    start = theta.std(axis=0) / z[:, res.permutation].std(axis=0)
    assert np.all(np.abs(res.scale) <= 10.0 * start * (1 + 1e-12))
    assert np.all(np.abs(res.scale) >= start / 10.0 * (1 - 1e-12))
    # an exact copy with unpaired samples: every nu = 0 at the start, still finite
    copy = s_kl(theta.copy(), theta, paired=False, seed=0)
    assert np.isfinite(copy.score)
    assert np.isfinite(copy.in_sample)


def test_s_kl_reproducible_and_thread_independent():
    rng = np.random.default_rng(4)
    theta, z = mixture4(1500, rng), 1.5 * mixture4(1500, rng)
    opts = SKLOptions(refine=1)
    a = s_kl(z, theta, options=opts, seed=5, threads=1)
    b = s_kl(z, theta, options=opts, seed=5, threads=2)
    assert (a.score, a.in_sample, a.fold_scores) == (b.score, b.in_sample, b.fold_scores)
    assert a.n_evaluations == b.n_evaluations
    c = s_kl(z, theta, options=opts, seed=6, threads=1)
    assert c.fold_scores != a.fold_scores  # another split into halves


def test_s_kl_large_d_uses_a_hungarian_assignment_and_finds_the_permutation():
    # d = 9: 9! 2^9 = 1.9e8 orientations (the exhaustive search of old ran out
    # of memory); the Hungarian assignment on |correlation| takes seconds.
    d, n = 9, 300
    rng = np.random.default_rng(9)
    theta = rng.uniform(-1.0, 1.0, (n, d))
    perm = rng.permutation(d)
    scale = rng.uniform(0.5, 3.0, d) * rng.choice([-1.0, 1.0], d)
    z = np.empty_like(theta)
    z[:, perm] = theta * scale + 1.0
    z += 0.02 * rng.standard_normal(z.shape)
    res = s_kl(z, theta, options=SKLOptions(restarts=0), seed=0)
    assert res.assignment == "hungarian"
    assert res.permutation.tolist() == perm.tolist()
    np.testing.assert_array_equal(np.sign(res.scale), np.sign(1.0 / scale))
    assert np.isfinite(res.score)
    assert res.n_evaluations < 3 * 3 * 200 * 2 * d  # three searches, one orientation each
    # the bound is an option: d = 3 has 48 orientations
    small = s_kl(z[:, perm[:3]], theta[:, :3], options=SKLOptions(max_orientations=47), seed=0)
    assert small.assignment == "hungarian"
    assert small.permutation.tolist() == [0, 1, 2]
    assert SKLOptions().assignment(5) == "exhaustive"
    assert SKLOptions().assignment(6) == "hungarian"


def test_s_kl_hungarian_on_marginals_for_unpaired_samples():
    # unpaired samples carry no correlation: axes are matched by the shape of
    # their marginals (skewed ones also give the sign)
    rng = np.random.default_rng(10)

    def draw(n):
        return np.column_stack(
            [rng.uniform(-1, 1, n), rng.exponential(1.0, n), rng.gamma(2.0, 1.0, n) ** 2]
        )

    theta, raw = draw(400), draw(500)
    perm, sign = np.array([2, 0, 1]), np.array([1.0, -1.0, -1.0])
    z = np.empty_like(raw)
    z[:, perm] = raw * sign * 2.0 + 0.5
    res = s_kl(z, theta, options=SKLOptions(max_orientations=1, restarts=0), seed=0)
    assert not res.paired
    assert res.assignment == "hungarian"
    assert res.permutation.tolist() == perm.tolist()
    np.testing.assert_array_equal(np.sign(res.scale)[1:], sign[1:])  # the skewed ones


def test_s_kl_is_exactly_invariant_to_power_of_two_scales():
    # internal rescaling is exact: the same search at any magnitude
    rng = np.random.default_rng(11)
    theta, z = mixture4(200, rng), mixture4(200, rng) @ np.array([[1.0, 0.2], [0.0, 1.0]])
    opts = SKLOptions(refine=2, restarts=0)
    ref = s_kl(z, theta, options=opts, seed=0)
    for tz, tt in ((2.0**-600, 2.0**-400), (2.0**900, 2.0**600), (2.0**-1000, 2.0**-1000)):
        got = s_kl(z * np.array([tz, 1.0]), theta * tt, options=opts, seed=0)
        assert (got.score, got.in_sample) == (ref.score, ref.in_sample)
        np.testing.assert_allclose(got.transform(z * np.array([tz, 1.0])), ref.transform(z) * tt)
    # a fitted scale beyond float64 (2^1300) is refused, not returned as inf
    with pytest.raises(ValueError, match=r"fitted scale .* outside the float64 range"):
        s_kl(z * 2.0**-600, theta * 2.0**700, options=opts, seed=0)


def test_s_kl_options_and_errors():
    rng = np.random.default_rng(5)
    theta, z = mixture4(100, rng), mixture4(120, rng)
    res = s_kl(z, theta, options=SKLOptions(permutations=False, flips=False, restarts=0), seed=0)
    assert not res.paired
    assert res.permutation.tolist() == [0, 1]
    assert np.all(res.scale > 0)
    with pytest.raises(ValueError, match="same dimension"):
        s_kl(rng.standard_normal((100, 3)), theta)
    with pytest.raises(ValueError, match="paired samples need as many z as theta"):
        s_kl(z, theta, paired=True)
    with pytest.raises(ValueError, match="theta must hold distinct samples"):
        s_kl(z, np.vstack([theta, theta[:1]]))
    with pytest.raises(
        ValueError, match=r"theta must vary in every coordinate; constant coordinates \[1\]"
    ):
        s_kl(z, np.column_stack([theta[:, 0], np.ones(100)]))
    with pytest.raises(ValueError, match="k must be <= n - 1"):
        s_kl(z, theta, k=100)
    with pytest.raises(ValueError, match="too few samples for the cross-fit halves"):
        s_kl(z, theta, k=60)
    with pytest.raises(ValueError, match="too few samples for the cross-fit halves"):
        s_kl(z[:3], theta[:3])
    with pytest.raises(ValueError, match="theta must vary in every coordinate within each"):
        # constant on one half: one of 40 values differs
        s_kl(z[:40], np.column_stack([theta[:40, 0], np.r_[np.ones(39), 2.0]]), seed=0)
    with pytest.raises(ValueError, match="scale_range"):
        SKLOptions(scale_range=1.0)
    with pytest.raises(ValueError, match="refine"):
        SKLOptions(refine=0)
    with pytest.raises(TypeError, match="flips must be a bool"):
        SKLOptions(flips="yes")
    with pytest.raises(TypeError, match="options must be an SKLOptions"):
        s_kl(z, theta, options={"refine": 1})
    with pytest.raises(TypeError):
        s_kl(z, theta, rebuild=True)  # no test-only switches
    with pytest.raises(ValueError, match="finite"):
        s_kl(np.full((120, 2), np.nan), theta)
    with pytest.raises(ValueError, match="at least 2 samples"):
        s_kl(z[:1], theta)


# ------------------------------------------------------- MIG / SAP / DCI


def factorial(levels):
    """Full factorial design: every pair of levels once (empirically
    independent, equal-variance, uncorrelated factors)."""
    return np.array(list(itertools.product(levels, levels)), dtype=float)


def mig_reference(z, theta, n_bins):
    """MIG with np.histogram2d / np.histogram (independent of the package)."""
    gaps = []
    for k in range(theta.shape[1]):
        counts, _ = np.histogram(theta[:, k], bins=n_bins)
        p = counts[counts > 0] / len(theta)
        h = -np.sum(p * np.log(p))
        mi = []
        for j in range(z.shape[1]):
            joint, _, _ = np.histogram2d(z[:, j], theta[:, k], bins=n_bins)
            pj = joint / len(theta)
            px, py = pj.sum(1, keepdims=True), pj.sum(0, keepdims=True)
            nz = pj > 0
            mi.append(np.sum(pj[nz] * np.log(pj[nz] / (px @ py)[nz])))
        mi = np.sort(mi)
        gaps.append((mi[-1] - mi[-2]) / h)
    return np.mean(gaps)


def test_mig_known_values_on_a_factorial_design():
    theta = factorial(np.arange(5.0))
    assert mig(theta, theta, n_bins=5) == pytest.approx(1.0, abs=1e-12)
    assert mig(3.0 * theta[:, ::-1] - 2.0, theta, n_bins=5) == pytest.approx(1.0, abs=1e-12)
    # both latents copy factor 0: its gap is 0, factor 1 has no information
    assert mig(np.column_stack([theta[:, 0], theta[:, 0]]), theta, n_bins=5) == pytest.approx(
        0.0, abs=1e-12
    )


def test_mig_matches_histogram_reference_and_orders_codes():
    rng = np.random.default_rng(6)
    theta = rng.uniform(size=(4000, 2))
    noise = rng.uniform(size=(4000, 2))
    for z in (theta, theta @ ROT45.T, theta + 0.3 * noise, noise):
        assert mig(z, theta) == pytest.approx(mig_reference(z, theta, 20), abs=1e-12)
    ident, rotated, pure_noise = mig(theta, theta), mig(theta @ ROT45.T, theta), mig(noise, theta)
    assert ident > 0.95
    assert rotated < 0.5 * ident
    assert pure_noise < 0.02


def test_sap_known_values():
    theta = factorial(np.arange(6.0))
    assert sap(theta, theta) == pytest.approx(1.0, abs=1e-12)
    assert sap(-2.0 * theta[:, ::-1], theta) == pytest.approx(1.0, abs=1e-12)
    # 45 degrees: R^2 = 1/2 for every pair, no gap
    assert sap(theta @ ROT45.T, theta) == pytest.approx(0.0, abs=1e-12)
    rng = np.random.default_rng(7)
    t = rng.standard_normal((20000, 2))
    assert sap(rng.standard_normal((20000, 2)), t) < 0.01
    # one latent with correlation r to factor 0: gap r^2
    r = 0.6
    z = np.column_stack([r * t[:, 0] + np.sqrt(1 - r * r) * rng.standard_normal(20000), t[:, 1]])
    assert sap(z, t) == pytest.approx(0.5 * (r * r + 1.0), abs=0.02)


def test_dci_known_values_on_a_factorial_design():
    theta = factorial(np.arange(6.0))
    ident = dci(theta, theta)
    assert ident.disentanglement == pytest.approx(1.0, abs=1e-12)
    assert ident.completeness == pytest.approx(1.0, abs=1e-12)
    # orthonormal design: the lasso is soft-thresholding of the correlations
    np.testing.assert_allclose(ident.importance, np.diag([0.98, 0.98]), atol=1e-12)
    assert ident.informativeness == pytest.approx(1.0 - 0.02**2, abs=1e-12)
    rot = dci(theta @ ROT45.T, theta)
    assert rot.disentanglement == pytest.approx(0.0, abs=1e-12)
    assert rot.completeness == pytest.approx(0.0, abs=1e-12)
    np.testing.assert_allclose(rot.importance, np.full((2, 2), np.sqrt(0.5) - 0.02), atol=1e-12)


def test_dci_partial_mixing_and_noise():
    rng = np.random.default_rng(8)
    t = rng.standard_normal((5000, 3))
    mixed = dci(t @ np.array([[1.0, 0.4, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]).T, t)
    assert 0.3 < mixed.disentanglement < 0.99
    assert 0.3 < mixed.completeness < 0.99
    # noise: nothing is predicted; the few importances left are spurious and
    # tiny, so D and C carry no meaning there (documented) but I is ~0
    noise = dci(rng.standard_normal((5000, 3)), t)
    assert abs(noise.informativeness) < 1e-3
    assert noise.importance.sum() < 0.05
    # past the largest sample correlation the lasso keeps nothing: D = C = 0
    none = dci(rng.standard_normal((5000, 3)), t, alpha=0.2)
    assert none.disentanglement == 0.0
    assert none.completeness == 0.0
    assert np.all(none.importance == 0.0)


def test_standard_metrics_bad_input():
    theta = np.random.default_rng(9).standard_normal((50, 2))
    for fn in (mig, sap, dci):
        with pytest.raises(ValueError, match="at least 2 latent coordinates"):
            fn(theta[:, :1], theta)
        with pytest.raises(ValueError, match=r"constant factors \[1\]"):
            fn(theta, np.column_stack([theta[:, 0], np.zeros(50)]))
        with pytest.raises(ValueError, match="same number of samples"):
            fn(theta[:40], theta)
        with pytest.raises(ValueError, match="finite"):
            fn(np.full((50, 2), np.inf), theta)
    with pytest.raises(ValueError, match=r"n_bins must be an integer in \[2, 1000\]"):
        mig(theta, theta, n_bins=1)
    with pytest.raises(ValueError, match="at least 2 factors"):
        dci(theta, theta[:, :1])
    with pytest.raises(ValueError, match="alpha"):
        dci(theta, theta, alpha=0.0)


# ------------------------------- scale (docs/safety.md, Bounded work; docs/scores.md §5, Scale)


@pytest.mark.parametrize("scale", [1e160, 1e-160, 1e300, 1e-300])
def test_kl_divergence_is_scale_free(scale):
    # before: 1e160 gave NaN, 1e-160 (or smaller) "repeated points"
    rng = np.random.default_rng(20)
    x, y = rng.standard_normal((300, 2)), 0.5 + rng.standard_normal((250, 2))
    for method in ("fixed", "adaptive"):
        ref = kl_divergence(x, y, method=method)
        got = kl_divergence(scale * x, scale * y, method=method)
        assert got == pytest.approx(ref, abs=1e-12)
        # powers of two rescale exactly: the very same number
        assert kl_divergence(2.0**900 * x, 2.0**900 * y, method=method) == ref


@pytest.mark.parametrize("scale", [1e200, 1e-200])
def test_s_d_sap_dci_mig_are_scale_free(scale):
    # before: dci/sap on data scaled by 1e200 returned 0 and NaN
    rng = np.random.default_rng(21)
    theta = rng.standard_normal((2000, 2))
    z = theta @ np.array([[1.0, 0.4], [0.1, 1.0]]).T + 0.3 * rng.standard_normal((2000, 2))
    per_var = np.array([scale, 1.0])  # one variable huge or tiny, one not
    assert s_d(z * per_var, scale * theta) == pytest.approx(s_d(z, theta), rel=1e-12)
    assert sap(z * per_var, theta * per_var) == pytest.approx(sap(z, theta), rel=1e-12)
    assert mig(z * per_var, theta * per_var) == pytest.approx(mig(z, theta), abs=1e-12)
    got, ref = dci(z * per_var, theta * per_var), dci(z, theta)
    for name in ("disentanglement", "completeness", "informativeness"):
        assert getattr(got, name) == pytest.approx(getattr(ref, name), rel=1e-9)
    assert 0.3 < ref.disentanglement < 0.9


def test_mig_bounds_n_bins():
    # before: n_bins = 10**6 tried to allocate n_bins^2 counts (terabytes)
    theta = np.random.default_rng(22).standard_normal((50, 2))
    with pytest.raises(ValueError, match=r"n_bins must be an integer in \[2, 1000\]; got 1000000"):
        mig(theta, theta, n_bins=10**6)
    # at the bound it still works (and with 50 samples each one has its own
    # bin for either latent: no gap)
    got = mig(theta, theta, n_bins=1000)
    assert got == pytest.approx(mig_reference(theta, theta, 1000), abs=1e-12)
    assert got < 0.05
