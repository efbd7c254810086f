"""Disentanglement scores of a latent space against its generative factors.

Public names
------------
s_d
    Covariance-based disentanglement score S_D (paper Eq. 6).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from ._checks import as_float_array

__all__ = ["s_d"]


def _paired_samples(z: ArrayLike, theta: ArrayLike, caller: str) -> tuple[np.ndarray, np.ndarray]:
    z = as_float_array(z, "z", caller, ndim=(1, 2))
    theta = as_float_array(theta, "theta", caller, ndim=(1, 2))
    z = z.reshape(len(z), -1)
    theta = theta.reshape(len(theta), -1)
    if len(z) != len(theta):
        msg = f"{caller}: z and theta must have the same number of samples; got {len(z)} and {len(theta)}."
        raise ValueError(msg)
    if len(z) < 2:
        msg = f"{caller}: need at least 2 samples; got {len(z)}."
        raise ValueError(msg)
    return z, theta


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
    z, theta = _paired_samples(z, theta, "s_d")
    zc = z - z.mean(axis=0)
    tc = theta - theta.mean(axis=0)
    cov = np.abs(zc.T @ tc) / (len(z) - 1)
    row_sum = cov.sum(axis=1)
    n_factors = cov.shape[1]
    ratio = np.divide(
        cov.max(axis=1), row_sum, out=np.full(len(row_sum), 1.0 / n_factors), where=row_sum > 0
    )
    return float(ratio.mean())
