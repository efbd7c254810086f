"""Disentanglement scores of a latent space against its generative factors.

Public names
------------
s_d
    Covariance-based disentanglement score S_D (paper Eq. 6).
kl_divergence
    Wang-Kulkarni-Verdu k-nearest-neighbour estimate of D(p || q) from
    samples (docs/scores.md §5a), fixed k or adaptive ("epsilon", the paper's choice).
s_kl, SKLResult, SKLOptions
    Shape-matching score S_KL (paper Eq. 7): D(p(theta) || q(a o (z - b)))
    minimised over scales, shifts and axis permutations, cross-fitted.
mig, sap, dci, DCIResult
    The literature's standard scores, from ``darcyvae.standard_metrics``:
mig
    Mutual information gap (Chen et al. 2018), histogram estimator.
sap
    Separated attribute predictability (Kumar et al. 2018), R^2 of 1-D
    linear fits.
dci, DCIResult
    Disentanglement, completeness and informativeness (Eastwood & Williams
    2018) from lasso importances.
KDTree
    Exact k-nearest-neighbour and radius queries (the C++ tree behind the
    estimators), Euclidean or per-axis weighted Euclidean; defined in
    :mod:`darcyvae.neighbors`.

Every score takes plain arrays, ``z`` of shape (n_samples, n_latent) and
``theta`` of shape (n_samples, n_factors) (1-D arrays are one column), so it
works for any sample source. The k-NN search and the estimators run in C++
(``darcyvae._core``) with the GIL released.

Scale. Every score is invariant under the rescalings it uses internally:
the k-NN estimators under a common rescaling of both samples, S_D under
rescaling each latent and all factors together, SAP, DCI and MIG under
rescaling each variable. The data are rescaled by powers of two (exact) so
that squares neither overflow nor underflow: any finite magnitude, from
subnormal to 1e308, gives the value of well-scaled data, never inf or NaN.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _core
from ._checks import (
    as_float_array,
    check_choice,
    check_int,
    check_real,
    core_threads,
    paired_samples,
)
from ._random import check_random_state
from ._skl import Search, SKLOptions
from .neighbors import KDTree, binary_exponent, rescale

__all__ = [
    "DCIResult",
    "KDTree",
    "SKLOptions",
    "SKLResult",
    "dci",
    "kl_divergence",
    "mig",
    "s_d",
    "s_kl",
    "sap",
]

_METHODS = ("adaptive", "fixed")
_CONCURRENT_BUILD = 16384  # m from which kl_divergence builds its two trees side by side


def _samples(value: ArrayLike, name: str, caller: str) -> np.ndarray:
    """C-contiguous float64 (n, d) samples, finite, n >= 2, d >= 1."""
    arr = as_float_array(value, name, caller, ndim=(1, 2))
    arr = arr.reshape(len(arr), -1) if arr.ndim == 1 else arr
    if arr.shape[1] < 1:
        msg = f"{caller}: {name} must have at least one coordinate; got shape {arr.shape}."
        raise ValueError(msg)
    if len(arr) < 2:
        msg = f"{caller}: {name} needs at least 2 samples; got {len(arr)}."
        raise ValueError(msg)
    return np.ascontiguousarray(arr)


def _same_dim(x: np.ndarray, y: np.ndarray, names: tuple[str, str], caller: str) -> None:
    if x.shape[1] != y.shape[1]:
        msg = (
            f"{caller}: {names[0]} and {names[1]} must have the same dimension; "
            f"got {x.shape[1]} and {y.shape[1]}."
        )
        raise ValueError(msg)


def _check_k(k: Any, n: int, m_eff: int, caller: str, names: tuple[str, str]) -> int:
    k = check_int(k, "k", caller, low=1)
    if k > n - 1:
        msg = (
            f"{caller}: k must be <= n - 1 = {n - 1} (the k-th neighbour of a sample of "
            f"{names[0]} among the other {n - 1}); got {k}."
        )
        raise ValueError(msg)
    if k > m_eff:
        msg = (
            f"{caller}: k must be <= the {m_eff} samples of {names[1]} a sample of "
            f"{names[0]} is compared with; got {k}."
        )
        raise ValueError(msg)
    return k


def _zero_distance_error(
    caller: str, names: tuple[str, str], zero_x: int, zero_y: int, n: int
) -> ValueError:
    if zero_x:
        msg = (
            f"{caller}: {names[0]} has repeated points: {zero_x} of its {n} samples are at "
            "distance 0 from their rho neighbours, and the k-NN estimator needs distinct "
            "samples; deduplicate, add jitter, or use k above the multiplicity."
        )
    else:
        msg = (
            f"{caller}: {zero_y} samples of {names[0]} coincide with samples of {names[1]} "
            "(nu = 0, log(nu/rho) = -inf); pass paired=True when y_i is derived from x_i, "
            "or min_ratio > 0 to clip the ratio."
        )
    return ValueError(msg)


def _singular_coordinates(x: np.ndarray, y: np.ndarray) -> list[int]:
    """Coordinates c on which every sample of y has one value v and some sample
    of x another: q then lies on the hyperplane {c = v}, which p does not
    (docs/scores.md §5a, ties), and D(p || q) = +inf."""
    same = np.flatnonzero(np.all(y == y[0], axis=0))
    return [int(c) for c in same if np.any(x[:, c] != y[0, c])]


# --------------------------------------------------------------------- S_D


def s_d(z: ArrayLike, theta: ArrayLike) -> float:
    """Disentanglement score S_D (Jacobsen & Duraisamy 2022, Eq. 6).

    .. math:: S_D = \\frac{1}{n} \\sum_i \\frac{\\max_j |C_{ij}|}{\\sum_j |C_{ij}|}

    with :math:`C_{ij}` the sample covariance of latent :math:`z_i` and factor
    :math:`\\theta_j`. It lies in ``[1/s, 1]``; 1 means every latent
    coordinate co-varies with one factor only.

    Parameters
    ----------
    z : array-like of shape (n_samples, n_latent)
        Latent codes (e.g. encoder means).
    theta : array-like of shape (n_samples, n_factors)
        Generative factors of the same samples.

    Returns
    -------
    float
        The score. A latent coordinate that co-varies with no factor at all
        (a row of zeros) contributes ``1/n_factors``, the value of a row
        spread evenly.

    Raises
    ------
    ValueError
        Mismatched sample counts, fewer than 2 samples, NaN or inf.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> theta = rng.standard_normal((500, 2))
    >>> round(s_d(3.0 * theta[:, ::-1], theta), 1)
    1.0
    """
    z, theta = paired_samples(z, theta, "s_d")
    # exact rescaling that leaves every ratio unchanged: each latent (a row of
    # C) on its own, the factors together
    z, theta = rescale(z, axis=0)[0], rescale(theta)[0]
    zc = z - z.mean(axis=0)
    tc = theta - theta.mean(axis=0)
    cov = np.abs(zc.T @ tc) / (len(z) - 1)
    row_sum = cov.sum(axis=1)
    n_factors = cov.shape[1]
    ratio = np.divide(
        cov.max(axis=1), row_sum, out=np.full(len(row_sum), 1.0 / n_factors), where=row_sum > 0
    )
    return float(ratio.mean())


# ----------------------------------------------------------- KL divergence


def kl_divergence(
    x: ArrayLike,
    y: ArrayLike,
    *,
    k: int = 1,
    method: str = "adaptive",
    paired: bool = False,
    min_ratio: float = 0.0,
    threads: int | None = None,
) -> float:
    """k-nearest-neighbour estimate of D(p || q) (Wang, Kulkarni & Verdu 2009).

    Parameters
    ----------
    x : array-like of shape (n, d) or (n,)
        Samples of p (n >= 2).
    y : array-like of shape (m, d) or (m,)
        Samples of q (m >= 2).
    k : int, default=1
        Neighbour order, ``1 <= k <= n - 1`` and ``k <= m`` (``m - 1`` when
        paired).
    method : {"adaptive", "fixed"}, default="adaptive"
        The estimator (see Notes); "adaptive" is the paper's "version eps1".
    paired : bool, default=False
        y_i is derived from x_i (n = m): y_i is left out of the neighbours of
        x_i, and m - 1 enters the estimator in place of m.
    min_ratio : float, default=0.0
        Floor on each per-sample distance ratio (nu / rho); 0 keeps the plain
        estimator. S_KL uses a small floor to keep its search well posed.
    threads : int, optional
        Worker threads (default: all cores). The value does not depend on it.

    Returns
    -------
    float
        The estimate, in nats: finite, or ``inf`` when every sample of y
        shares one value of a coordinate that some sample of x does not (q
        then lies on a hyperplane that p leaves, so D(p || q) = +inf).

    Raises
    ------
    ValueError
        NaN or inf, fewer than 2 samples, different dimensions, k out of
        range, and zero distances the estimator cannot take (see Notes).

    Notes
    -----
    docs/scores.md §5a. rho_k(i) is the distance from x_i to its k-th nearest
    neighbour among the other x (the query's own index is left out, so a
    duplicate of x_i is a neighbour at distance 0) and nu_k(i) that to its
    k-th nearest y. Fixed k:

    .. math:: \\hat D = \\frac{d}{n}\\sum_i \\log\\frac{\\nu_k(i)}{\\rho_k(i)} + \\log\\frac{m}{n-1}

    Adaptive (WKV eq. 17 with the "epsilon" choice of l_i, k_i):
    eps(i) = max(rho_k(i), nu_k(i)), l_i and k_i the numbers of other x and
    of y in the closed ball of radius eps(i) (both >= k), and

    .. math:: \\hat D = \\frac{d}{n}\\sum_i \\log\\frac{\\nu_{k_i}(i)}{\\rho_{l_i}(i)}
              + \\frac{1}{n}\\sum_i [\\psi(l_i) - \\psi(k_i)] + \\log\\frac{m}{n-1}

    Ties (docs/scores.md §5a). The estimator assumes densities, under which
    ties have probability 0; on tied samples it takes the value that
    vanishing jitter would give, the same way for both methods:

    - a zero k-th distance: rho_k(i) = 0 (x_i repeated more than k times)
      or nu_k(i) = 0 (x_i equal to a y) leaves log(nu/rho) undefined
      (+-inf), and this function raises ``ValueError`` saying which, for
      both methods. With ``min_ratio > 0`` a zero nu is clipped to
      ``min_ratio * rho`` instead;
    - repeated points and equal distances otherwise count by rank, as in
      the fixed estimator: in the adaptive one, the side whose k-th
      distance sets eps(i) counts exactly k points, not every point tied at
      eps(i) (a closed count would let a collapsed sample of q pass for a
      large density: ``kl_divergence(x, zeros)`` would be negative);
    - y constant in a coordinate in which x is not (e.g. a sample of q
      collapsed to a point): q is singular, ``inf`` (after the x checks).

    It never returns NaN or -inf.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> x = rng.standard_normal((4000, 1))
    >>> y = 1.0 + rng.standard_normal((4000, 1))  # true D = 0.5
    >>> round(kl_divergence(x, y), 1)
    0.5
    """
    caller = "kl_divergence"
    x = _samples(x, "x", caller)
    y = _samples(y, "y", caller)
    _same_dim(x, y, ("x", "y"), caller)
    method = check_choice(method, "method", caller, _METHODS)
    paired = bool(paired)
    n, m = len(x), len(y)
    if paired and m != n:
        msg = f"{caller}: paired samples need as many y as x; got {n} and {m}."
        raise ValueError(msg)
    k = _check_k(k, n, m - paired, caller, ("x", "y"))
    min_ratio = check_real(min_ratio, "min_ratio", caller, low=0.0)
    threads = core_threads(threads, caller)
    singular = _singular_coordinates(x, y)  # in the caller's numbers, before rescaling
    # one exact power-of-two rescaling of both samples (the estimate is
    # invariant): squared distances neither overflow nor underflow
    exp = binary_exponent(max(np.max(np.abs(x)), np.max(np.abs(y))))
    x, y = np.ldexp(x, -exp), np.ldexp(y, -exp)
    if threads > 1 and m >= _CONCURRENT_BUILD:
        # the two trees are independent: build the one over y beside the
        # estimator's (both release the GIL)
        with ThreadPoolExecutor(1) as pool:
            ytree = pool.submit(_core.KDTree, y)
            est = _core.KLEstimator(x, k=k, method=method, threads=threads)
            ytree = ytree.result()
    else:
        est = _core.KLEstimator(x, k=k, method=method, threads=threads)
        ytree = _core.KDTree(y)
    value, zero_x, zero_y = est.divergence(
        ytree, paired=paired, min_ratio=min_ratio, threads=threads
    )
    if zero_x:  # the samples of p themselves are unusable: whatever y is
        raise _zero_distance_error(caller, ("x", "y"), zero_x, 0, n)
    if singular:
        return math.inf
    if zero_y:
        raise _zero_distance_error(caller, ("x", "y"), 0, zero_y, n)
    return float(value)


# ------------------------------------------------------------------- S_KL


@dataclass(frozen=True)
class SKLResult:
    """Outcome of :func:`s_kl`.

    Attributes
    ----------
    score : float
        S_KL, cross-fitted (nats; lower is better): the mean of the two
        held-out divergences in ``fold_scores``. Not the minimised value.
        ``inf`` for a latent constant in a coordinate (on all samples or
        within a half: q is singular, see :func:`s_kl`).
    in_sample : float
        The minimum the search found on all samples (biased low); ``inf``
        when the latent is constant in a coordinate on all samples.
    fold_scores : tuple of float
        The divergence on each half of the samples at the transform fitted
        on the other half.
    scale, shift : ndarray of shape (d,)
        The all-sample minimiser a, b: ``y'_c = scale[c] * (z[:, permutation[c]] - shift[c])``
        is matched with ``theta[:, c]`` (NaN, with the identity
        ``permutation``, when no search ran: ``in_sample`` is ``inf``).
    permutation : ndarray of int of shape (d,)
        Latent axis matched with each factor (all-sample fit).
    assignment : {"exhaustive", "hungarian"}
        How the orientations were searched (see :func:`s_kl` Notes).
    n_evaluations : int
        Divergence evaluations, all fits and the held-out evaluations.
    converged : bool
        Whether the Nelder-Mead runs that gave the three fits met their
        tolerances (False when a singular latent skipped a fit).
    start_score : float
        The all-sample divergence of the best orientation at its
        moment-matched start.
    method, k, paired
        The estimator settings used.
    options : SKLOptions
        The optimiser settings used.
    """

    score: float
    in_sample: float
    fold_scores: tuple[float, float]
    scale: NDArray[np.float64] = field(repr=False)
    shift: NDArray[np.float64] = field(repr=False)
    permutation: NDArray[np.int64]
    assignment: str
    n_evaluations: int
    converged: bool
    start_score: float
    method: str
    k: int
    paired: bool
    options: SKLOptions = field(repr=False)

    @property
    def min_ratio(self) -> float:
        """The estimator's ratio floor (``options.min_ratio``)."""
        return self.options.min_ratio

    def transform(self, z: ArrayLike) -> NDArray[np.float64]:
        """The matched latents ``scale * (z[:, permutation] - shift)``."""
        z = as_float_array(z, "z", "SKLResult.transform", ndim=(1, 2))
        z = z.reshape(len(z), -1)
        if z.shape[1] != len(self.permutation):
            msg = (
                f"SKLResult.transform: z must have {len(self.permutation)} columns; "
                f"got shape {z.shape}."
            )
            raise ValueError(msg)
        return self.scale * (z[:, self.permutation] - self.shift)


def _halves(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    order = rng.permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2 :])


def _cross_fit_halves(
    n: int, m: int, k: int, paired: bool, rng: np.random.Generator, caller: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Random halves of the n theta (and, unpaired, the m z) samples for the cross-fit,
    each large enough for the k-th neighbour (docs/scores.md §5)."""
    ia, ib = _halves(n, rng)
    ja, jb = (ia, ib) if paired else _halves(m, rng)
    if k > len(ia) - 1 or k > len(ja) - paired:
        msg = (
            f"{caller}: too few samples for the cross-fit halves: each half of the "
            f"{n} theta and {m} z samples must allow k = {k} (at least {2 * k + 2} theta "
            f"and {2 * (k + paired)} z samples)."
        )
        raise ValueError(msg)
    return ia, ib, ja, jb


def _held_out_folds(half_a: Search, half_b: Search, rng: np.random.Generator):
    """Fit each half, score it on the other: ``((fold_a, fold_b), (fit_a, fit_b))``; a half
    whose latent is constant in a coordinate makes both folds +inf and the fits ``()``."""
    if len(half_a.singular) or len(half_b.singular):
        return (math.inf, math.inf), ()
    fit_a, fit_b = half_a.fit(rng), half_b.fit(rng)
    folds = (half_b.divergence(*fit_a.params()), half_a.divergence(*fit_b.params()))
    return folds, (fit_a, fit_b)


def _fitted_transform(fit, d: int, t_exp, z_exp, caller: str):
    """(scale, shift, permutation) of the all-sample minimiser in the caller's units;
    NaN scales and shifts with the identity when the latent was singular (``fit`` None)."""
    if fit is None:
        return np.full(d, np.nan), np.full(d, np.nan), np.arange(d)
    a, b, perm = fit.params()
    scale, shift = _in_caller_units(a, b, t_exp, z_exp[perm], caller)
    return scale, shift, perm


def s_kl(
    z: ArrayLike,
    theta: ArrayLike,
    *,
    method: str = "adaptive",
    k: int = 1,
    paired: bool | None = None,
    options: SKLOptions | None = None,
    seed: int | np.random.Generator | None = None,
    threads: int | None = None,
) -> SKLResult:
    """Shape-matching disentanglement score S_KL (paper Eq. 7, docs/scores.md §5), cross-fitted.

    .. math:: S_{KL} = \\min_{a, b, \\pi} D\\big(p(\\theta) \\,\\|\\, q(a \\circ (z_\\pi - b))\\big)

    estimated with :func:`kl_divergence` (X = theta samples of p, Y =
    transformed latents of q) and minimised with Nelder-Mead. The reported
    ``score`` is cross-fitted: the transform is fitted on one half of the
    samples and the divergence evaluated on the other half, both ways,
    averaged; the in-sample minimum is ``in_sample``.

    Parameters
    ----------
    z : array-like of shape (m, d)
        Latent samples (aggregated posterior).
    theta : array-like of shape (n, d)
        Samples of the generative factors, distinct points.
    method : {"adaptive", "fixed"}, default="adaptive"
        The estimator, as in :func:`kl_divergence`.
    k : int, default=1
        Neighbour order, as in :func:`kl_divergence`; each half of the
        samples must allow it (n >= 2k + 2).
    paired : bool, optional
        z_i encodes the sample theta_i: z_i is left out of the neighbours of
        theta_i, and the cross-fit halves keep pairs together. Default: True when z and
        theta have the same length.
    options : SKLOptions, optional
        Optimiser settings (restarts, bounds, tolerances, orientation
        search); default ``SKLOptions()``.
    seed : int or numpy.random.Generator, optional
        Randomness of the split into halves and of the restart simplices.
    threads : int, optional
        Worker threads (default: all cores). The result does not depend on it.

    Returns
    -------
    SKLResult
        ``score`` (cross-fitted), ``in_sample``, ``fold_scores``, the
        all-sample minimiser, ``assignment`` and the search statistics.
        Every number is finite, except for a singular (degenerate) latent:
        z constant in a coordinate, on all samples or within a cross-fit
        half, gives ``score = inf`` (and, on all samples, ``in_sample =
        start_score = inf``, ``scale`` and ``shift`` NaN) rather than an
        error, so that scoring many models never stops on a collapsed one.

    Raises
    ------
    ValueError
        Bad shapes or values, too few samples for the halves, duplicated
        theta samples, a coordinate of theta constant (in all samples or in
        a half), no finite evaluation of a non-singular latent (only with
        ``options.min_ratio = 0``), or a fitted scale beyond the float64
        range.
    TypeError
        ``options`` not an :class:`SKLOptions`, non-integer ``k``.

    Notes
    -----
    docs/scores.md §5 gives the details: why the score is cross-fitted (the
    in-sample minimum is biased low), the orientation search and Nelder-Mead,
    the guards that keep the minimum finite, the exact power-of-two
    rescaling, and how degenerate (tied or collapsed) latents score.

    Examples
    --------
    Factors with different marginals (uniform, normal), encoded swapped,
    scaled and shifted:

    >>> rng = np.random.default_rng(0)
    >>> theta = np.column_stack([rng.uniform(-1, 1, 300), rng.standard_normal(300)])
    >>> z = 3.0 * theta[:, ::-1] + 1.0 + 0.01 * rng.standard_normal((300, 2))
    >>> res = s_kl(z, theta, seed=0)
    >>> res.permutation.tolist(), res.assignment
    ([1, 0], 'exhaustive')
    >>> round(res.score, 2), round(res.in_sample, 2)  # held-out ~0; in-sample biased low
    (0.07, -0.29)
    """
    caller = "s_kl"
    z, theta, method, paired, k, options = _skl_arguments(z, theta, method, k, paired, options)
    n, m = len(theta), len(z)
    threads = core_threads(threads, caller)
    rng = check_random_state(seed)
    # exact power-of-two rescaling: theta as a whole, each latent on its own
    theta_s, t_exp = rescale(theta)
    z_s, z_exp = rescale(z, axis=0)

    ia, ib, ja, jb = _cross_fit_halves(n, m, k, paired, rng, caller)

    def search(rows_t, rows_z, where=""):
        return Search(
            theta_s[rows_t],
            z_s[rows_z],
            k=k,
            method=method,
            paired=paired,
            options=options,
            threads=threads,
            caller=caller,
            where=where,
        )

    everything = slice(None)
    full = search(everything, everything)
    half_a = search(ia, ja, " within each cross-fit half")
    half_b = search(ib, jb, " within each cross-fit half")
    # A latent constant in a coordinate (on all samples, or within a half) is
    # singular: every divergence is +inf, and so is the score (no search runs).
    fit = None if len(full.singular) else full.fit(rng)
    folds, half_fits = _held_out_folds(half_a, half_b, rng)
    values = [f.value for f in (fit, *half_fits) if f is not None] + (
        list(folds) if half_fits else []
    )
    if not all(math.isfinite(v) for v in values):
        msg = (
            f"{caller}: a latent fell exactly on a theta sample (nu = 0) at every "
            "evaluation or at the held-out one; use options.min_ratio > 0 or paired=True."
        )
        raise ValueError(msg)
    d = theta.shape[1]
    scale, shift, perm = _fitted_transform(fit, d, t_exp, z_exp, caller)
    return SKLResult(
        score=0.5 * (folds[0] + folds[1]),
        in_sample=math.inf if fit is None else fit.value,
        fold_scores=folds,
        scale=scale,
        shift=shift,
        permutation=perm.copy(),
        assignment=options.assignment(d),
        n_evaluations=full.n_evaluations + half_a.n_evaluations + half_b.n_evaluations,
        converged=fit is not None
        and bool(half_fits)
        and all(f.converged for f in (fit, *half_fits)),
        start_score=math.inf if fit is None else fit.start,
        method=method,
        k=k,
        paired=paired,
        options=options,
    )


def _skl_arguments(
    z: ArrayLike, theta: ArrayLike, method: str, k: int, paired: bool | None, options: Any
) -> tuple[np.ndarray, np.ndarray, str, bool, int, SKLOptions]:
    """``s_kl``'s checked inputs: (z, theta, method, paired, k, options)."""
    caller = "s_kl"
    z = _samples(z, "z", caller)
    theta = _samples(theta, "theta", caller)
    _same_dim(z, theta, ("z", "theta"), caller)
    method = check_choice(method, "method", caller, _METHODS)
    n, m = len(theta), len(z)
    paired = (m == n) if paired is None else bool(paired)
    if paired and m != n:
        msg = f"{caller}: paired samples need as many z as theta; got {m} and {n}."
        raise ValueError(msg)
    k = _check_k(k, n, m - paired, caller, ("theta", "z"))
    if options is None:
        options = SKLOptions()
    elif not isinstance(options, SKLOptions):
        msg = f"{caller}: options must be an SKLOptions; got {type(options).__name__}."
        raise TypeError(msg)
    return z, theta, method, paired, k, options


def _in_caller_units(
    a: np.ndarray, b: np.ndarray, t_exp: Any, z_e: np.ndarray, caller: str
) -> tuple[np.ndarray, np.ndarray]:
    """The fitted (a, b) of the rescaled samples as (scale, shift) in the caller's units."""
    with np.errstate(over="ignore", under="ignore"):
        scale, shift = np.ldexp(a, int(t_exp) - z_e), np.ldexp(b, z_e)
    if not (np.all(np.isfinite(scale)) and np.all(scale != 0)):
        msg = (
            f"{caller}: the fitted scale a ~ sd(theta) / sd(z) lies outside the float64 "
            f"range (2^{int(t_exp)} / 2^{z_e.tolist()}); rescale z or theta."
        )
        raise ValueError(msg)
    return scale, shift


# MIG, SAP and DCI live in their own module; re-exported here.
from .standard_metrics import DCIResult, dci, mig, sap
