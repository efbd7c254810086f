"""Tests of darcyvae.distributions: closed forms, moments, modes, purity in (seed, index)."""

from __future__ import annotations

import hashlib
import pickle

import numpy as np
import pytest
from darcyvae.distributions import (
    BLOCK_SIZE,
    LHS_KEY,
    Gaussian,
    Mixture4,
    Normal,
    ThetaArray,
    Uniform,
    get_distribution,
    list_distributions,
)
from hypothesis import given
from hypothesis import strategies as st
from scipy import optimize, stats

N_MOMENTS = 40_000
"""Samples for the moment checks: standard errors of about 0.5% of sd."""


def _all(n_modes: int) -> list:
    return [
        Normal(n_modes),
        Gaussian(n_modes, mean=np.linspace(-1, 1, n_modes), sd=np.linspace(0.5, 2, n_modes)),
        Mixture4(n_modes),
        Uniform(n_modes, low=-2.0, high=np.linspace(-1, 3, n_modes)),
    ]


@pytest.fixture(params=["normal", "gaussian", "mixture4", "uniform"])
def dist3(request):
    return dict(zip(["normal", "gaussian", "mixture4", "uniform"], _all(3), strict=True))[
        request.param
    ]


# -- the registry --------------------------------------------------------------
def test_registry_lists_every_distribution():
    assert list_distributions() == ["array", "gaussian", "mixture4", "normal", "uniform"]
    for name in list_distributions():
        params = {"theta": np.zeros((4, 2))} if name == "array" else {}
        d = get_distribution(name, 2, **params)
        assert d.name == name
        assert d.n_modes == 2


def test_paper_defaults():
    """docs/data.md §3: the gaussian default is radially symmetric, mu = (1, 1), sd = (0.5, 0.5)."""
    g = get_distribution("gaussian", 2)
    np.testing.assert_array_equal(g.mean(), [1.0, 1.0])
    np.testing.assert_array_equal(g.cov(), np.diag([0.25, 0.25]))
    # any s: the authors' randn * 0.5 + 1 per coordinate
    np.testing.assert_array_equal(Gaussian(5).mean(), np.ones(5))
    z = Normal(3).sample(50, seed=2)
    np.testing.assert_allclose(Gaussian(3).sample(50, seed=2), 1.0 + 0.5 * z, rtol=1e-15)
    m = get_distribution("mixture4", 2)
    assert (m.loc, m.scale) == (1.0, 0.25)


# -- closed forms against scipy.stats --------------------------------------------
def test_log_prob_matches_scipy():
    rng = np.random.default_rng(0)
    theta = rng.normal(size=(50, 3)) * 1.5
    n, g, m, u = _all(3)
    np.testing.assert_allclose(
        n.log_prob(theta), stats.multivariate_normal(np.zeros(3), np.eye(3)).logpdf(theta)
    )
    np.testing.assert_allclose(
        g.log_prob(theta), stats.norm(g.mean(), np.sqrt(np.diag(g.cov()))).logpdf(theta).sum(1)
    )
    mix = 0.5 * stats.norm(1, 0.25).pdf(theta) + 0.5 * stats.norm(-1, 0.25).pdf(theta)
    np.testing.assert_allclose(m.log_prob(theta), np.log(mix).sum(1), rtol=1e-12)
    lo, hi = np.asarray(u.low), np.asarray(u.high)
    np.testing.assert_allclose(
        u.log_prob(theta), stats.uniform(lo, hi - lo).logpdf(theta).sum(1), rtol=1e-12
    )
    # a single theta gives a float
    assert isinstance(n.log_prob(theta[0]), float)
    assert n.log_prob(theta[0]) == pytest.approx(n.log_prob(theta)[0])


@pytest.mark.parametrize("dist", _all(1), ids=lambda d: d.name)
def test_density_integrates_to_one(dist):
    x = np.linspace(-12, 12, 240_001)[:, None]
    assert np.trapezoid(np.exp(dist.log_prob(x)), x[:, 0]) == pytest.approx(1.0, abs=1e-4)


def test_mixture4_moments_closed_form():
    m = Mixture4(2, loc=2.0, scale=0.5)
    np.testing.assert_array_equal(m.mean(), [0.0, 0.0])
    np.testing.assert_array_equal(m.cov(), 4.25 * np.eye(2))


# -- sampled moments and shapes ------------------------------------------------
def test_sample_moments(dist3):
    """Mean within 5 standard errors, covariance within 5 of its standard errors."""
    x = dist3.sample(N_MOMENTS, seed=11)
    assert x.shape == (N_MOMENTS, 3)
    assert x.dtype == np.float64
    mean, cov = dist3.mean(), dist3.cov()
    sd = np.sqrt(np.diag(cov))
    assert np.all(np.abs(x.mean(0) - mean) < 5 * sd / np.sqrt(N_MOMENTS))
    c = np.cov(x, rowvar=False)
    # se of a sample (co)variance: sqrt((E[(x-mu)^2 (y-nu)^2] - cov^2) / n), estimated
    xc = x - mean
    fourth = np.einsum("ni,nj->ij", xc**2, xc**2) / N_MOMENTS
    se = np.sqrt(np.abs(fourth - cov**2) / N_MOMENTS)
    assert np.all(np.abs(c - cov) < 5 * se + 1e-12)


def test_marginals_pass_ks(dist3):
    """Each coordinate follows its closed-form marginal (Kolmogorov-Smirnov, fixed seed)."""
    x = dist3.sample(5000, seed=3)
    for j in range(3):
        if isinstance(dist3, Mixture4):

            def cdf(t, loc=dist3.loc, sc=dist3.scale):
                return 0.5 * stats.norm.cdf(t, loc, sc) + 0.5 * stats.norm.cdf(t, -loc, sc)

        elif isinstance(dist3, Uniform):
            cdf = stats.uniform(dist3.low[j], dist3.high[j] - dist3.low[j]).cdf
        else:
            cdf = stats.norm(dist3.mean()[j], np.sqrt(dist3.cov()[j, j])).cdf
        assert stats.kstest(x[:, j], cdf).pvalue > 1e-3


def test_mixture4_four_modes():
    """2-D: four equally likely quadrants, samples within 5 sd of their mode."""
    n = 20_000
    x = Mixture4(2).sample(n, seed=5)
    signs = np.sign(x)
    _, counts = np.unique(signs, axis=0, return_counts=True)
    assert len(counts) == 4
    # binomial sd of a quadrant count: sqrt(n p (1-p)), p = 1/4
    assert np.all(np.abs(counts - n / 4) < 5 * np.sqrt(n * 0.25 * 0.75))
    assert np.abs(np.abs(x) - 1).max() < 5 * 0.25 + 0.3  # 5.x sd over 40k coordinates
    # the four lines of symmetry: coordinates independent, signs uncorrelated
    assert abs(np.mean(signs[:, 0] * signs[:, 1])) < 5 / np.sqrt(n)


def test_gaussian_is_affine_map_of_normal():
    z = Normal(2).sample(700, seed=9)
    g = Gaussian(2, mean=(1.0, -1.0), sd=(0.5, 2.0)).sample(700, seed=9)
    np.testing.assert_allclose(g, np.array([1.0, -1.0]) + np.array([0.5, 2.0]) * z, rtol=1e-15)


def test_uniform_in_box():
    u = Uniform(3, low=[0.0, -5.0, 1.0], high=[1.0, 5.0, 1.5]).sample(3000, seed=0)
    assert np.all(u >= [0.0, -5.0, 1.0])
    assert np.all(u < [1.0, 5.0, 1.5])
    assert np.isfinite(Uniform(1).log_prob(np.zeros((1, 1)))).all()
    assert Uniform(1).log_prob(np.array([[1.5]]))[0] == -np.inf


# -- purity in (seed, stream, index) -----------------------------------------------
@pytest.mark.parametrize("dist", _all(3), ids=lambda d: d.name)
def test_any_chunking_gives_the_same_thetas(dist):
    n = 3 * BLOCK_SIZE + 17
    full = dist.sample(n, seed=42)
    rng = np.random.default_rng(0)
    cuts = np.sort(rng.choice(np.arange(1, n), size=9, replace=False))
    pieces = [
        dist.sample_indices(np.arange(a, b), 42)
        for a, b in zip([0, *cuts], [*cuts, n], strict=True)
    ]
    np.testing.assert_array_equal(np.concatenate(pieces), full)
    perm = rng.permutation(n)[:300]
    np.testing.assert_array_equal(dist.sample_indices(perm, 42), full[perm])
    np.testing.assert_array_equal(dist.sample_indices([5, 5, 700], 42), full[[5, 5, 700]])
    assert dist.sample_indices([], 42).shape == (0, 3)


@pytest.mark.parametrize("dist", _all(3), ids=lambda d: d.name)
def test_seeds_and_streams_differ(dist):
    a = dist.sample(100, seed=1)
    assert not np.array_equal(a, dist.sample(100, seed=2))
    assert not np.array_equal(a, dist.sample(100, seed=1, stream=1))
    np.testing.assert_array_equal(a, dist.sample(100, seed=1, stream=0))


def test_stream_definition_is_stable():
    """Sample i is column i % B of PCG64(SeedSequence(seed, spawn_key=(stream, i // B)))."""
    i, seed, stream = 1000, 7, 1
    seq = np.random.SeedSequence(seed, spawn_key=(stream, i // BLOCK_SIZE))
    z = np.random.Generator(np.random.PCG64(seq)).standard_normal((4, BLOCK_SIZE))[
        :, i % BLOCK_SIZE
    ]
    np.testing.assert_array_equal(Normal(4).sample_indices([i], seed, stream=stream)[0], z)


@pytest.mark.parametrize("make", [Normal, Mixture4, lambda s: Uniform(s, 0.0, 2.0)])
def test_leading_coordinates_do_not_depend_on_s(make):
    """KLE2 thetas are the first two coordinates of KLE100 thetas of the same seed."""
    np.testing.assert_array_equal(make(2).sample(600, seed=4), make(100).sample(600, seed=4)[:, :2])


def test_generator_and_none_seeds():
    d = Normal(2)
    a = d.sample(10, seed=np.random.default_rng(3))
    b = d.sample(10, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(a, b)
    assert d.sample(10).shape == (10, 2)
    assert d.sample(0, seed=0).shape == (0, 2)


# -- the user-supplied array ---------------------------------------------------------
def test_theta_array():
    rows = np.arange(12.0).reshape(6, 2)
    d = get_distribution("array", 2, theta=rows)
    assert isinstance(d, ThetaArray)
    assert len(d) == 6
    np.testing.assert_array_equal(d.sample_indices([4, 0], seed=123), rows[[4, 0]])
    np.testing.assert_array_equal(d.sample(3, seed=0), rows[:3])
    np.testing.assert_array_equal(d.mean(), rows.mean(0))
    np.testing.assert_allclose(d.cov(), np.cov(rows, rowvar=False, bias=True))
    rows[0, 0] = 99.0  # the distribution holds a copy
    assert d.theta[0, 0] == 0.0
    assert not d.theta.flags.writeable
    assert d.params()["rows"] == 6
    with pytest.raises(NotImplementedError, match="no closed form"):
        d.log_prob(rows)


# -- objects ---------------------------------------------------------------------------
@pytest.mark.parametrize("dist", _all(2), ids=lambda d: d.name)
def test_frozen_picklable_and_equal(dist):
    clone = pickle.loads(pickle.dumps(dist))
    assert clone == dist
    np.testing.assert_array_equal(clone.sample(5, seed=0), dist.sample(5, seed=0))
    with pytest.raises(AttributeError):
        dist.n_modes = 5


# -- validation ------------------------------------------------------------------------
def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError, match="'array', 'gaussian', 'mixture4', 'normal', 'uniform'"):
        get_distribution("bimodal", 2)


@pytest.mark.parametrize(
    ("name", "params", "match"),
    [
        ("gaussian", {"mean": [0.0, 1.0, 2.0]}, "mean must be a scalar or have length n_modes = 2"),
        ("gaussian", {"sd": [1.0]}, "sd must be a scalar or have length n_modes = 2"),
        ("gaussian", {"sd": [1.0, 0.0]}, "sd must be > 0"),
        ("gaussian", {"sd": -1.0}, "sd must be > 0"),
        ("gaussian", {"mean": [0.0, np.nan]}, "mean must be finite"),
        ("uniform", {"low": 1.0, "high": 1.0}, "low must be < high"),
        ("uniform", {"high": [[1.0, 2.0]]}, "high must be a 1-D array"),
        ("mixture4", {"scale": 0.0}, r"scale must be a finite float in \(0"),
        ("mixture4", {"loc": -1.0}, r"loc must be a finite float in \(0"),
        ("array", {}, "needs theta"),
        ("array", {"theta": np.zeros((3, 4))}, "theta must have n_modes = 2 columns"),
        ("array", {"theta": np.zeros((0, 2))}, "at least one row"),
        ("array", {"theta": np.zeros(3)}, "theta must be a 2-D array"),
    ],
)
def test_bad_parameters(name, params, match):
    with pytest.raises(ValueError, match=match):
        get_distribution(name, 2, **params)


def test_unexpected_parameter():
    with pytest.raises(TypeError, match="'normal' takes no parameters; got unexpected mean"):
        get_distribution("normal", 2, mean=1.0)
    with pytest.raises(TypeError, match="'gaussian' takes mean, sd; got unexpected loc"):
        get_distribution("gaussian", 2, loc=1.0)


def test_bad_sampling_arguments():
    d = Normal(2)
    with pytest.raises(ValueError, match="n_modes must be an integer in"):
        Normal(0)
    with pytest.raises(ValueError, match="n_modes must be an integer in"):
        get_distribution("normal", 0)
    with pytest.raises(ValueError, match="seed must be an integer in"):
        d.sample_indices([0], seed=-1)
    with pytest.raises(ValueError, match="indices must be >= 0"):
        d.sample_indices([3, -1], seed=0)
    with pytest.raises(TypeError, match="indices must be an integer array"):
        d.sample_indices([0.5], seed=0)
    with pytest.raises(ValueError, match="stream must be an integer in"):
        d.sample_indices([0], seed=0, stream=-1)
    with pytest.raises(ValueError, match="n must be an integer in"):
        d.sample(-1, seed=0)
    with pytest.raises(ValueError, match="theta must have 2 coordinates"):
        d.log_prob(np.zeros((4, 3)))
    with pytest.raises(ValueError, match="indices must be < 2"):
        ThetaArray(np.zeros((2, 2))).sample_indices([2])


# -- Monte Carlo is unchanged, Latin hypercube sampling ------------------------------------
def test_monte_carlo_draws_are_unchanged_byte_for_byte():
    """SHA-256 of draws made by the code before LHS was added (seed 7, stream 1, n = 600)."""
    pinned = {
        "normal": "926188f3cf31f91b56616e105027160f4b0cc6ed180e316a564bf8856a953979",
        "mixture4": "7e94300b860a8dac6190c2f6a72d38829a591353c9ea3558c46d7f4171fbbeea",
        "gaussian": "2dddd3b697955c20310725d009142e1a75e026962640fa8d1b939bd3153225ae",
        "uniform": "0c200d1721a7bd52be53926eb318a21c58fa634bba590d1046e9996ab7627ffa",
    }
    dists = [Normal(3), Mixture4(3), Gaussian(2, mean=(1.0, -1.0), sd=(0.5, 2.0)), Uniform(2)]
    for d in dists:
        for x in (d.sample(600, seed=7, stream=1), d.sample(600, seed=7, stream=1, sampling="mc")):
            assert hashlib.sha256(x.tobytes()).hexdigest() == pinned[d.name], d.name


def _marginal_cdf(dist, j):
    """The closed-form marginal CDF of coordinate j, from scipy.stats (independent of darcyvae)."""
    if isinstance(dist, Mixture4):
        return lambda t: (
            0.5 * stats.norm.cdf(t, dist.loc, dist.scale)
            + 0.5 * stats.norm.cdf(t, -dist.loc, dist.scale)
        )
    if isinstance(dist, Uniform):
        return stats.uniform(dist.low[j], dist.high[j] - dist.low[j]).cdf
    return stats.norm(dist.mean()[j], np.sqrt(dist.cov()[j, j])).cdf


@pytest.mark.parametrize("n", [1, 7, 512])
def test_lhs_has_one_sample_per_stratum(dist3, n):
    """Each coordinate: exactly one sample in each stratum [j/n, (j+1)/n) of its CDF."""
    x = dist3.sample(n, seed=4, sampling="lhs")
    assert x.shape == (n, 3)
    assert np.all(np.isfinite(x))
    for j in range(3):
        u = _marginal_cdf(dist3, j)(x[:, j])
        np.testing.assert_array_equal(np.sort(np.floor(u * n)), np.arange(n))
        # darcyvae's own cdf agrees with scipy's
        np.testing.assert_allclose(dist3.cdf(x)[:, j], u, rtol=1e-12, atol=1e-15)


def test_lhs_matches_the_target_distribution(dist3):
    """KS test per coordinate; coordinates uncorrelated; the same seed, the same design."""
    n = 2000
    x = dist3.sample_lhs(n, seed=8)
    for j in range(3):
        assert stats.kstest(x[:, j], _marginal_cdf(dist3, j)).pvalue > 1e-3
    corr = np.corrcoef(x, rowvar=False)
    assert np.abs(corr[np.triu_indices(3, 1)]).max() < 5 / np.sqrt(n)
    np.testing.assert_array_equal(x, dist3.sample(n, seed=8, sampling="lhs"))
    assert not np.array_equal(x, dist3.sample_lhs(n, seed=9))
    assert not np.array_equal(x, dist3.sample_lhs(n, seed=8, stream=1))
    # a pure function of (seed, stream, n): coordinate k does not depend on s
    fewer = type(dist3)(2) if not isinstance(dist3, (Gaussian, Uniform)) else None
    if fewer is not None:
        np.testing.assert_array_equal(fewer.sample_lhs(n, seed=8), x[:, :2])


def test_lhs_design_definition_is_stable():
    """Coordinate k: ppf((perm + (m + 0.5) / 2**32) / n) from SeedSequence(seed, (stream, KEY, n, k))."""
    n, seed, stream = 10, 3, 1
    x = Normal(2).sample_lhs(n, seed, stream=stream)
    for k in range(2):
        seq = np.random.SeedSequence(seed, spawn_key=(stream, LHS_KEY, n, k))
        rng = np.random.Generator(np.random.PCG64(seq))
        perm = rng.permutation(n)
        m = rng.integers(0, 2**32, size=n, dtype=np.uint64)
        np.testing.assert_array_equal(x[:, k], stats.norm.ppf((perm + (m + 0.5) / 2**32) / n))


def test_mixture4_quantile_function_is_accurate():
    """ppf inverts the mixture CDF to rounding level, in both tails and at the centre."""
    m = Mixture4(1)
    u = np.array([1e-300, 1e-12, 1e-5, 0.1, 0.25, 0.4, 0.6, 0.9, 1 - 1e-5])
    x = m.ppf(u[:, None])[:, 0]
    f = _marginal_cdf(m, 0)
    for ui, xi in zip(u, x, strict=True):
        # scipy's brentq on the scipy CDF (accurate away from F ~ 1 and F ~ 1/2)
        if ui < 0.45:
            ref = optimize.brentq(lambda t, ui=ui: f(t) - ui, -40, 0, xtol=1e-300, rtol=1e-15)
            assert xi == pytest.approx(ref, rel=4e-15)
    dyadic = np.array([[2.0**-40], [0.125], [0.25], [0.375]])  # 1 - u exact: F(-x) = 1 - F(x)
    np.testing.assert_array_equal(m.ppf(1 - dyadic), -m.ppf(dyadic))
    assert m.ppf([[0.5]])[0, 0] == 0.0
    assert m.ppf([[0.0]])[0, 0] == -np.inf
    assert m.ppf([[1.0]])[0, 0] == np.inf
    rng = np.random.default_rng(0)
    for loc, scale in ((1.0, 0.25), (3.0, 0.1), (0.1, 2.0)):
        mix = Mixture4(1, loc=loc, scale=scale)
        u = rng.random((20_000, 1))
        back = mix.cdf(mix.ppf(u))
        assert np.abs(back - u).max() <= 1e-15 + 1e-13 * np.minimum(u, 1 - u).max()
        assert np.all(np.abs(back - u) <= 1e-13 * np.minimum(u, 1 - u) + 1e-16)


def test_ppf_inverts_cdf_for_every_distribution(dist3):
    u = np.random.default_rng(1).random((200, 3))
    np.testing.assert_allclose(dist3.cdf(dist3.ppf(u)), u, rtol=1e-12, atol=1e-15)


def test_lhs_bad_arguments():
    with pytest.raises(ValueError, match="sampling must be one of 'mc', 'lhs'"):
        Normal(2).sample(4, seed=0, sampling="sobol")
    with pytest.raises(NotImplementedError, match="no quantile function"):
        ThetaArray(np.zeros((4, 2))).sample(4, seed=0, sampling="lhs")
    with pytest.raises(ValueError, match="u must lie in"):
        Normal(2).ppf([[0.5, 1.5]])
    with pytest.raises(ValueError, match="u must have 2 coordinates"):
        Normal(2).ppf(np.zeros((3, 3)))
    with pytest.raises(ValueError, match="seed must be an integer in"):
        Normal(2).sample_lhs(4, seed=-1)
    assert Normal(2).sample_lhs(0, seed=0).shape == (0, 2)


# -- property-based: the Python boundary never crashes -----------------------------------
_ANY_FLOAT = st.floats(allow_nan=True, allow_infinity=True)
_VALUES = st.one_of(
    _ANY_FLOAT,
    st.integers(-3, 3),
    st.lists(_ANY_FLOAT, max_size=4),
    st.lists(st.lists(st.floats(-10, 10), min_size=1, max_size=3), min_size=1, max_size=4),
    st.text(max_size=2),
    st.none(),
    st.booleans(),
)


@given(
    name=st.sampled_from(["normal", "gaussian", "mixture4", "uniform", "array", "bimodal", 3]),
    n_modes=st.one_of(st.integers(-1, 4), st.floats(0, 3), st.text(max_size=1)),
    params=st.dictionaries(
        st.sampled_from(["mean", "sd", "loc", "scale", "low", "high", "theta", "bogus"]),
        _VALUES,
        max_size=3,
    ),
    sampling=st.sampled_from(["mc", "lhs"]),
    seed=st.one_of(st.integers(-2, 2**64), st.floats(0, 1), st.none()),
)
def test_get_distribution_and_sample_never_crash(name, n_modes, params, sampling, seed):
    """Random names, sizes, parameters and seeds: a ValueError/TypeError, or valid samples."""
    try:
        dist = get_distribution(name, n_modes, **params)
    except (ValueError, TypeError):
        return
    n = min(len(dist), 6) if isinstance(dist, ThetaArray) else 6
    try:
        x = dist.sample(n, seed, sampling=sampling)
    except (ValueError, TypeError):
        return
    except NotImplementedError:
        assert isinstance(dist, ThetaArray)
        assert sampling == "lhs"
        return
    assert x.shape == (n, dist.n_modes)
    assert x.dtype == np.float64
    assert not np.isnan(x).any()
    if sampling == "lhs":  # strata of every coordinate's CDF, whatever the parameters
        u = dist.cdf(x)
        assert np.all((u >= 0) & (u <= 1))


@given(
    u=st.one_of(
        st.lists(st.lists(_ANY_FLOAT, min_size=0, max_size=3), max_size=4),
        st.lists(_ANY_FLOAT, max_size=3),
        _ANY_FLOAT,
        st.text(max_size=2),
    ),
    index=st.integers(0, 3),
)
def test_ppf_and_cdf_never_crash(u, index):
    """Random probabilities and thetas: a ValueError/TypeError, or values of the right kind."""
    dist = _all(2)[index]
    try:
        x = dist.ppf(u)
    except (ValueError, TypeError):
        pass
    else:  # accepted: probabilities in [0, 1] of width 2, quantiles without NaN
        assert x.shape[1] == 2
        assert not np.isnan(x).any()
    try:
        c = dist.cdf(u)
    except (ValueError, TypeError):
        return
    given_nan = np.isnan(np.asarray(u, dtype=float).reshape(c.shape))
    assert np.all((c[~given_nan] >= 0) & (c[~given_nan] <= 1))


@given(
    indices=st.one_of(
        st.lists(st.integers(-(2**65), 2**65), max_size=5),
        st.lists(st.floats(allow_nan=True), max_size=3),
        st.lists(st.booleans(), max_size=3),
        st.text(max_size=2),
    ),
    stream=st.one_of(st.integers(-1, 2**40), st.floats(0, 2)),
)
def test_sample_indices_never_crashes(indices, stream):
    try:
        x = Mixture4(2).sample_indices(indices, 3, stream=stream)
    except (ValueError, TypeError):
        return
    assert x.shape == (len(indices), 2)
    assert np.isfinite(x).all()
