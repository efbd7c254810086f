"""The standard disentanglement scores of the literature: MIG, SAP and DCI.

Beside the paper's S_D and S_KL (``darcyvae.metrics``, docs/scores.md §5),
for comparison with other work; ``darcyvae.metrics`` re-exports them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike, NDArray

from ._checks import check_int, check_real, paired_samples
from .neighbors import rescale

__all__ = ["DCIResult", "dci", "mig", "sap"]

MAX_BINS = 1000  # mig: largest n_bins (its joint histograms hold n_bins^2 counts)


def _two_latents(z: np.ndarray, caller: str) -> None:
    if z.shape[1] < 2:
        msg = f"{caller}: z must have at least 2 latent coordinates; got {z.shape[1]}."
        raise ValueError(msg)


def _varying_factors(theta: np.ndarray, caller: str) -> None:
    const = np.flatnonzero(np.ptp(theta, axis=0) == 0)
    if const.size:
        msg = f"{caller}: theta must vary in every factor; constant factors {const.tolist()}."
        raise ValueError(msg)


def _bin_codes(v: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width histogram bin (0 .. n_bins - 1) of every entry, per column."""
    codes = np.empty(v.shape, dtype=np.int64)
    for j in range(v.shape[1]):
        edges = np.histogram_bin_edges(v[:, j], bins=n_bins)
        codes[:, j] = np.digitize(v[:, j], edges[1:-1])
    return codes


def _entropy(codes: np.ndarray) -> float:
    p = np.bincount(codes) / len(codes)
    p = p[p > 0]
    return float(-np.sum(p * np.log(p)))


def _mutual_information(a: np.ndarray, b: np.ndarray, n_bins: int) -> float:
    joint = np.bincount(a * n_bins + b, minlength=n_bins * n_bins).reshape(n_bins, n_bins)
    p = joint / len(a)
    outer = np.outer(p.sum(axis=1), p.sum(axis=0))
    nz = p > 0
    return float(np.sum(p[nz] * np.log(p[nz] / outer[nz])))


def mig(z: ArrayLike, theta: ArrayLike, *, n_bins: int = 20) -> float:
    """Mutual information gap (Chen et al. 2018), histogram estimator.

    Parameters
    ----------
    z : array-like of shape (n_samples, n_latent)
        Latent codes, n_latent >= 2.
    theta : array-like of shape (n_samples, n_factors)
        Generative factors of the same samples; each must vary.
    n_bins : int, default=20
        Equal-width bins per coordinate (as disentanglement_lib), in
        ``[2, MAX_BINS]`` with ``MAX_BINS = 1000`` (each joint histogram
        holds n_bins^2 counts: 8 MB at the bound).

    Returns
    -------
    float
        MIG in [0, 1]; 1 when each factor is fully captured by one latent
        and shared with no other.

    Raises
    ------
    ValueError
        Mismatched or too few samples, NaN/inf, fewer than 2 latents, a
        constant factor, n_bins outside [2, 1000].

    Notes
    -----
    Every coordinate of z and theta is cut into ``n_bins`` equal-width bins
    over its range; I(z_j; theta_k) is the plug-in mutual information of the
    binned pair (nats) and H_k the plug-in entropy of binned theta_k. Then

    .. math:: \\mathrm{MIG} = \\frac{1}{K}\\sum_k \\frac{I(z_{j^{(1)}};\\theta_k)
              - I(z_{j^{(2)}};\\theta_k)}{H_k}

    with j^(1), j^(2) the latents of largest and second largest MI with
    theta_k. The plug-in MI is biased up by about (n_bins - 1)^2 / (2 n)
    nats, so independent codes score slightly above 0.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> theta = rng.uniform(size=(5000, 2))
    >>> round(mig(theta, theta), 1)
    1.0
    """
    caller = "mig"
    z, theta = paired_samples(z, theta, caller)
    _two_latents(z, caller)
    _varying_factors(theta, caller)
    n_bins = check_int(n_bins, "n_bins", caller, low=2, high=MAX_BINS)
    z, theta = rescale(z, axis=0)[0], rescale(theta, axis=0)[0]
    zc, tc = _bin_codes(z, n_bins), _bin_codes(theta, n_bins)
    gaps = []
    for kk in range(theta.shape[1]):
        info = np.sort(
            [_mutual_information(zc[:, j], tc[:, kk], n_bins) for j in range(z.shape[1])]
        )
        gaps.append((info[-1] - info[-2]) / _entropy(tc[:, kk]))
    return float(np.mean(gaps))


def sap(z: ArrayLike, theta: ArrayLike) -> float:
    """Separated attribute predictability (Kumar et al. 2018), continuous factors.

    Parameters
    ----------
    z : array-like of shape (n_samples, n_latent)
        Latent codes, n_latent >= 2.
    theta : array-like of shape (n_samples, n_factors)
        Generative factors of the same samples; each must vary.

    Returns
    -------
    float
        SAP in [0, 1].

    Raises
    ------
    ValueError
        Mismatched or too few samples, NaN/inf, fewer than 2 latents, a
        constant factor.

    Notes
    -----
    S_jk is the R^2 of the 1-D least-squares fit of theta_k on z_j, i.e. the
    squared sample correlation (0 for a constant latent). SAP is the mean
    over factors of the gap between the largest and second largest S_jk.
    Equal-variance uncorrelated factors rotated by 45 degrees give S = 1/2
    everywhere and SAP = 0.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> theta = rng.standard_normal((1000, 2))
    >>> round(sap(theta[:, ::-1], theta), 1)
    1.0
    """
    caller = "sap"
    z, theta = paired_samples(z, theta, caller)
    _two_latents(z, caller)
    _varying_factors(theta, caller)
    z, theta = rescale(z, axis=0)[0], rescale(theta, axis=0)[0]
    zc = z - z.mean(axis=0)
    tc = theta - theta.mean(axis=0)
    cov = zc.T @ tc
    var_z = np.sum(zc * zc, axis=0)
    var_t = np.sum(tc * tc, axis=0)
    denom = np.outer(var_z, var_t)
    score = np.divide(cov * cov, denom, out=np.zeros_like(cov), where=denom > 0)
    top = np.sort(score, axis=0)
    return float(np.mean(top[-1] - top[-2]))


@dataclass(frozen=True)
class DCIResult:
    """Outcome of :func:`dci`.

    Attributes
    ----------
    disentanglement, completeness : float
        Eastwood & Williams' D and C, in [0, 1].
    informativeness : float
        Mean over factors of the R^2 of the lasso fit (higher is better).
    importance : ndarray of shape (n_latent, n_factors)
        |lasso coefficient| of latent i for factor j (standardised data).
    """

    disentanglement: float
    completeness: float
    informativeness: float
    importance: NDArray[np.float64] = field(repr=False)


def _standardise(v: np.ndarray) -> np.ndarray:
    centred = v - v.mean(axis=0)
    sd = np.sqrt(np.mean(centred * centred, axis=0))
    return np.divide(centred, sd, out=np.zeros_like(centred), where=sd > 0)


def _lasso(x: np.ndarray, y: np.ndarray, alpha: float, tol: float, max_sweeps: int) -> np.ndarray:
    """Coordinate descent for min (1/2n)||y - x w||^2 + alpha ||w||_1, columns
    of x standardised (mean 0, mean square 1 or all zero), y centred."""
    n, p = x.shape
    col_sq = np.sum(x * x, axis=0) / n
    w = np.zeros(p)
    resid = y.copy()
    for _ in range(max_sweeps):
        largest = 0.0
        for j in range(p):
            if col_sq[j] == 0:
                continue
            rho = x[:, j] @ resid / n + col_sq[j] * w[j]
            new = np.sign(rho) * max(abs(rho) - alpha, 0.0) / col_sq[j]
            if new != w[j]:
                resid -= x[:, j] * (new - w[j])
                largest = max(largest, abs(new - w[j]))
                w[j] = new
        if largest < tol:
            break
    return w


def _normalised_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """Entropy in base ``base`` of each row of a non-negative matrix (rows
    normalised; an all-zero row counts as uniform)."""
    total = p.sum(axis=1, keepdims=True)
    q = np.divide(p, total, out=np.full_like(p, 1.0 / p.shape[1]), where=total > 0)
    logs = np.log(q, out=np.zeros_like(q), where=q > 0)
    return -np.sum(q * logs, axis=1) / math.log(base)


def dci(z: ArrayLike, theta: ArrayLike, *, alpha: float = 0.02) -> DCIResult:
    """DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018).

    Parameters
    ----------
    z : array-like of shape (n_samples, n_latent)
        Latent codes, n_latent >= 2.
    theta : array-like of shape (n_samples, n_factors)
        Generative factors of the same samples, n_factors >= 2, each varying.
    alpha : float, default=0.02
        Lasso penalty on standardised data (> 0).

    Returns
    -------
    DCIResult
        D, C, I and the importance matrix.

    Raises
    ------
    ValueError
        Mismatched or too few samples, NaN/inf, fewer than 2 latents or
        factors, a constant factor, alpha <= 0.

    Notes
    -----
    Regressor: one lasso per factor (coordinate descent, numpy only),
    factor and latents standardised to mean 0, variance 1 (a constant
    latent gets importance 0). R_ij = |w_ij| is the importance of latent i
    for factor j. With K factors and L latents, P_ij = R_ij / sum_k R_ik,
    D_i = 1 - H_K(P_i.), D = sum_i rho_i D_i with rho_i = sum_j R_ij / sum R;
    P~_ij = R_ij / sum_l R_lj, C_j = 1 - H_L(P~_.j), C = mean_j C_j
    (H_b the entropy in base b). A latent or factor with zero total
    importance counts as uniform (D_i or C_j = 0); if every importance is 0,
    D = C = 0. Informativeness is the mean in-sample R^2 of the lasso fits.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> theta = rng.standard_normal((1000, 2))
    >>> res = dci(theta[:, ::-1], theta)
    >>> round(res.disentanglement, 1), round(res.completeness, 1)
    (1.0, 1.0)
    """
    caller = "dci"
    z, theta = paired_samples(z, theta, caller)
    _two_latents(z, caller)
    if theta.shape[1] < 2:
        msg = f"{caller}: theta must have at least 2 factors; got {theta.shape[1]}."
        raise ValueError(msg)
    _varying_factors(theta, caller)
    alpha = check_real(alpha, "alpha", caller, low=0.0, low_open=True)
    zs = _standardise(rescale(z, axis=0)[0])
    ts = _standardise(rescale(theta, axis=0)[0])
    n_latent, n_factors = z.shape[1], theta.shape[1]
    importance = np.empty((n_latent, n_factors))
    r2 = np.empty(n_factors)
    for j in range(n_factors):
        w = _lasso(zs, ts[:, j], alpha, tol=1e-10, max_sweeps=10_000)
        importance[:, j] = np.abs(w)
        resid = ts[:, j] - zs @ w
        r2[j] = 1.0 - np.mean(resid * resid)  # ts[:, j] has mean square 1
    total = importance.sum()
    if total == 0:
        return DCIResult(0.0, 0.0, float(np.mean(r2)), importance)
    weight = importance.sum(axis=1) / total
    disentanglement = float(np.sum(weight * (1.0 - _normalised_entropy(importance, n_factors))))
    completeness = float(np.mean(1.0 - _normalised_entropy(importance.T, n_latent)))
    return DCIResult(disentanglement, completeness, float(np.mean(r2)), importance)
