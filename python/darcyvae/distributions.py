"""Generative parameter distributions p(theta) of the KLE coefficients (docs/data.md §3).

Every distribution is a frozen dataclass over ``n_modes`` (s) coordinates
with the same interface: ``sample(n, seed, sampling=...)``,
``sample_indices(indices, seed)``, ``sample_lhs(n, seed)``, ``ppf(u)``,
``mean()``, ``cov()``, ``log_prob(theta)`` and ``params()``.

Two sampling designs (:data:`SAMPLINGS`):

``"mc"`` (Monte Carlo)

    Sample ``i`` is a pure function of ``(seed, stream, i)``: draws come in
    fixed blocks of :data:`BLOCK_SIZE` samples, block ``b`` of stream ``k``
    drawn by a PCG64 generator seeded with ``SeedSequence(seed,
    spawn_key=(k, b))``. So any chunking of the index range (resumed runs,
    Dask workers) gives the same thetas, and the first s' coordinates of an
    s-mode draw are the s'-mode draw of the same seed (coordinates are
    filled one after the other), e.g. the KLE2 thetas are the leading
    coordinates of the KLE100 ones.
``"lhs"`` (Latin hypercube)
    ``n`` samples whose every coordinate has exactly one value in each of
    the ``n`` equal-probability strata of its marginal: coordinate ``k``
    takes ``u = (pi_k(i) + v_ik) / n`` through the marginal quantile
    function (:meth:`Distribution.ppf`), with a random permutation ``pi_k``
    and jitter ``v_ik`` drawn from ``SeedSequence(seed, spawn_key=(stream,
    LHS_KEY, n, k))``. The design is a pure function of ``(seed, stream,
    n)``; coordinate k does not depend on s. The authors' training sets are
    LHS samples of p(theta), their test sets Monte Carlo (docs/data.md §3).

Public names
------------
Distribution
    Base class of the distributions.
Normal, Gaussian, Mixture4, Uniform, ThetaArray
    ``normal``: N(0, I_s) (paper section 5.1); ``gaussian``: N(mu,
    diag(sd^2)) (section 5.2); ``mixture4``: +-loc per coordinate plus
    N(0, scale^2) (section 5.3, "multimodal"); ``uniform``: a box; ``array``:
    user-supplied thetas.
get_distribution, list_distributions
    The name registry (``get_distribution("mixture4", 2)``).
BLOCK_SIZE
    Samples per random block (part of the definition of a seed's stream).
SAMPLINGS
    The sampling designs, ``("mc", "lhs")``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import ndtr, ndtri

from ._checks import as_float_array, check_choice, check_int, check_real
from ._random import check_random_state

__all__ = [
    "BLOCK_SIZE",
    "LHS_KEY",
    "SAMPLINGS",
    "Distribution",
    "Gaussian",
    "Mixture4",
    "Normal",
    "ThetaArray",
    "Uniform",
    "get_distribution",
    "list_distributions",
]

BLOCK_SIZE = 256
"""Samples per random block: block b of stream k is drawn from SeedSequence(seed, spawn_key=(k, b))."""

SAMPLINGS = ("mc", "lhs")
"""Sampling designs: Monte Carlo (``"mc"``) and Latin hypercube (``"lhs"``)."""

LHS_KEY = 0x4C4853
"""Part of the spawn key of every LHS design, ``(stream, LHS_KEY, n, k)`` ("LHS" in ASCII)."""

_JITTER_BITS = 32
"""The LHS jitter inside a stratum is ``(m + 0.5) / 2**32``: never on a stratum edge."""

_LOG_2PI = math.log(2.0 * math.pi)


def _check_seed(seed: Any, caller: str) -> int:
    return check_int(seed, "seed", caller, low=0)


def _as_indices(indices: ArrayLike, caller: str) -> NDArray[np.int64]:
    idx = np.asarray(indices)
    if idx.dtype.kind not in "iu" and not (idx.size == 0 and idx.dtype.kind == "f"):
        msg = f"{caller}: indices must be an integer array; got dtype {idx.dtype}."
        raise TypeError(msg)
    idx = np.ascontiguousarray(idx, dtype=np.int64).reshape(-1)
    if idx.size and idx.min() < 0:
        msg = f"{caller}: indices must be >= 0; got minimum {int(idx.min())}."
        raise ValueError(msg)
    return idx


def _vector(value: Any, name: str, caller: str, n_modes: int) -> tuple[float, ...]:
    """A scalar (broadcast to n_modes) or a vector of length n_modes, as a tuple of floats."""
    arr = as_float_array(value, name, caller, ndim=0 if np.ndim(value) == 0 else 1)
    if arr.ndim == 0:
        arr = np.full(n_modes, float(arr))
    if arr.shape != (n_modes,):
        msg = (
            f"{caller}: {name} must be a scalar or have length n_modes = {n_modes}; "
            f"got length {arr.shape[0]}."
        )
        raise ValueError(msg)
    return tuple(float(v) for v in arr)


@dataclass(frozen=True)
class Distribution:
    """Base class: a distribution of ``n_modes``-dimensional thetas.

    Subclasses implement ``_draw(seq, n_block)`` (one block of samples from a
    ``SeedSequence``) and the closed forms they have.

    Parameters
    ----------
    n_modes : int
        Dimension s of theta (the number of KLE modes).
    """

    name: ClassVar[str] = ""
    n_modes: int

    def __post_init__(self) -> None:
        check_int(self.n_modes, "n_modes", type(self).__name__, low=1)

    # -- sampling -----------------------------------------------------------
    def _draw(self, seq: np.random.SeedSequence, n_block: int) -> NDArray[np.float64]:
        raise NotImplementedError

    def sample_indices(
        self, indices: ArrayLike, seed: int, *, stream: int = 0
    ) -> NDArray[np.float64]:
        """Thetas of the samples ``indices`` of the stream ``(seed, stream)``.

        Parameters
        ----------
        indices : array-like of int, shape (m,)
            Sample indices (>= 0), any order, repeats allowed.
        seed : int
            Non-negative seed.
        stream : int, default=0
            Independent stream of the same seed (darcyvae writes the training
            set from stream 0 and the test set from stream 1).

        Returns
        -------
        ndarray of shape (m, n_modes), float64
            Row r is sample ``indices[r]``, a pure function of ``(seed,
            stream, indices[r])`` whatever the other indices are.

        Notes
        -----
        Costs one block of :data:`BLOCK_SIZE` draws per distinct block
        ``index // BLOCK_SIZE`` touched, so contiguous ranges are cheapest.

        Examples
        --------
        >>> d = Normal(2)
        >>> np.array_equal(d.sample_indices([5, 6], seed=0), d.sample(7, seed=0)[5:])
        True
        """
        caller = f"{type(self).__name__}.sample_indices"
        idx = _as_indices(indices, caller)
        seed = _check_seed(seed, caller)
        stream = check_int(stream, "stream", caller, low=0)
        out = np.empty((idx.size, self.n_modes))
        if idx.size == 0:
            return out
        blocks = idx // BLOCK_SIZE
        order = np.argsort(blocks, kind="stable")
        sorted_blocks = blocks[order]
        starts = np.flatnonzero(np.r_[True, sorted_blocks[1:] != sorted_blocks[:-1]])
        stops = np.r_[starts[1:], idx.size]
        for start, stop in zip(starts, stops, strict=True):
            b = int(sorted_blocks[start])
            seq = np.random.SeedSequence(seed, spawn_key=(stream, b))
            draw = self._draw(seq, BLOCK_SIZE)
            rows = order[start:stop]
            local = idx[rows] - b * BLOCK_SIZE
            r0, i0, m = int(rows[0]), int(local[0]), stop - start
            if rows[-1] - r0 == m - 1 and local[-1] - i0 == m - 1 and np.all(np.diff(local) == 1):
                out[r0 : r0 + m] = draw[i0 : i0 + m]  # a contiguous run: copy a slice
            else:
                out[rows] = draw[local]
        return out

    def sample(
        self,
        n: int,
        seed: int | np.random.Generator | None = None,
        *,
        stream: int = 0,
        sampling: str = "mc",
    ) -> NDArray[np.float64]:
        """``n`` samples of the stream ``(seed, stream)``, Monte Carlo or Latin hypercube.

        Parameters
        ----------
        n : int
            Number of samples (>= 0).
        seed : int, numpy.random.Generator or None, default=None
            An int is used as is (``sample(n, s)[i] == sample_indices([i], s)``);
            a Generator or None first draws an int seed from it.
        stream : int, default=0
            See :meth:`sample_indices`.
        sampling : {"mc", "lhs"}, default="mc"
            ``"mc"``: the indices ``0..n-1`` of the stream
            (:meth:`sample_indices`); ``"lhs"``: the Latin hypercube design
            of ``n`` samples (:meth:`sample_lhs`).

        Returns
        -------
        ndarray of shape (n, n_modes), float64

        Examples
        --------
        >>> Gaussian(2).sample(3, seed=0).shape
        (3, 2)
        >>> x = Normal(1).sample(4, seed=0, sampling="lhs")
        >>> sorted(np.floor(Normal(1).cdf(x)[:, 0] * 4).astype(int).tolist())
        [0, 1, 2, 3]
        """
        caller = f"{type(self).__name__}.sample"
        n = check_int(n, "n", caller, low=0)
        sampling = check_choice(sampling, "sampling", caller, SAMPLINGS)
        if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool):
            seed = int(check_random_state(seed).integers(2**63))
        if sampling == "lhs":
            return self.sample_lhs(n, int(seed), stream=stream)
        return self.sample_indices(np.arange(n), int(seed), stream=stream)

    def sample_lhs(self, n: int, seed: int, *, stream: int = 0) -> NDArray[np.float64]:
        """A Latin hypercube sample of ``n`` thetas: one per marginal stratum and coordinate.

        Parameters
        ----------
        n : int
            Number of samples (>= 0); the strata are ``[j/n, (j+1)/n)`` of
            each coordinate's marginal CDF.
        seed : int
            Non-negative seed.
        stream : int, default=0
            Independent stream of the same seed (see :meth:`sample_indices`).

        Returns
        -------
        ndarray of shape (n, n_modes), float64
            A pure function of ``(seed, stream, n)``; column k does not
            depend on ``n_modes``. The rows are in random order (coordinate
            k of row i lies in stratum ``pi_k(i)``).

        Raises
        ------
        NotImplementedError
            The distribution has no marginal quantile function
            (:class:`ThetaArray`).

        Notes
        -----
        ``u_ik = (pi_k(i) + (m_ik + 0.5) / 2**32) / n`` with ``pi_k`` a
        uniformly random permutation of ``0..n-1`` and ``m_ik`` uniform in
        ``[0, 2**32)``, both from ``PCG64(SeedSequence(seed,
        spawn_key=(stream, LHS_KEY, n, k)))``; then ``theta_ik =
        F_k^{-1}(u_ik)``. Coordinates are independent, as the distributions
        here have independent coordinates. The whole design is held in
        memory (8 n s bytes).
        """
        caller = f"{type(self).__name__}.sample_lhs"
        n = check_int(n, "n", caller, low=0)
        seed = _check_seed(seed, caller)
        stream = check_int(stream, "stream", caller, low=0)
        u = np.empty((n, self.n_modes))
        scale = float(2**_JITTER_BITS)
        for k in range(self.n_modes):
            seq = np.random.SeedSequence(seed, spawn_key=(stream, LHS_KEY, n, k))
            rng = np.random.Generator(np.random.PCG64(seq))
            strata = rng.permutation(n)
            jitter = (rng.integers(0, 2**_JITTER_BITS, size=n, dtype=np.uint64) + 0.5) / scale
            u[:, k] = (strata + jitter) / n
        return self._ppf(u)

    # -- marginal CDF and quantile function ---------------------------------
    def _u(self, u: ArrayLike, caller: str) -> NDArray[np.float64]:
        rows = self._theta(u, caller, name="u")
        if np.any(np.isnan(rows)) or np.any((rows < 0.0) | (rows > 1.0)):
            msg = f"{caller}: u must lie in [0, 1] (probabilities); got values outside it or NaN."
            raise ValueError(msg)
        return rows

    def cdf(self, theta: ArrayLike) -> NDArray[np.float64]:
        """Marginal CDFs ``F_k(theta[:, k])`` per coordinate, shape of ``theta`` as 2-D.

        Examples
        --------
        >>> Normal(2).cdf([[0.0, 0.0]])
        array([[0.5, 0.5]])
        """
        rows = self._theta(theta, f"{type(self).__name__}.cdf")
        return self._cdf(rows)

    def ppf(self, u: ArrayLike) -> NDArray[np.float64]:
        """Marginal quantile functions ``F_k^{-1}(u[:, k])`` per coordinate (the inverse of cdf).

        Parameters
        ----------
        u : array-like of shape (m, n_modes) or (n_modes,)
            Probabilities in [0, 1] (0 and 1 give the ends of the support,
            -inf/inf where unbounded).

        Returns
        -------
        ndarray of shape (m, n_modes), float64

        Raises
        ------
        ValueError
            ``u`` of the wrong width or outside [0, 1].
        NotImplementedError
            No quantile function (:class:`ThetaArray`).

        Examples
        --------
        >>> Uniform(1, low=0.0, high=2.0).ppf([[0.25]])
        array([[0.5]])
        """
        return self._ppf(self._u(u, f"{type(self).__name__}.ppf"))

    def _cdf(self, theta: NDArray[np.float64]) -> NDArray[np.float64]:
        msg = f"{type(self).__name__}: no marginal CDF."
        raise NotImplementedError(msg)

    def _ppf(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        msg = f"{type(self).__name__}: no quantile function, so no Latin hypercube sampling."
        raise NotImplementedError(msg)

    # -- closed forms -------------------------------------------------------
    def _theta(self, theta: ArrayLike, caller: str, name: str = "theta") -> NDArray[np.float64]:
        arr = as_float_array(theta, name, caller, ndim=(1, 2), finite=False)
        arr2 = arr.reshape(-1, arr.shape[-1]) if arr.ndim == 2 else arr.reshape(1, -1)
        if arr2.shape[1] != self.n_modes:
            msg = (
                f"{caller}: {name} must have {self.n_modes} coordinates (n_modes); "
                f"got shape {arr.shape}."
            )
            raise ValueError(msg)
        return arr2

    def log_prob(self, theta: ArrayLike) -> NDArray[np.float64] | float:
        """Log density at ``theta`` (shape (s,) gives a float, (m, s) gives (m,))."""
        msg = f"{type(self).__name__}: log_prob has no closed form."
        raise NotImplementedError(msg)

    def _log_prob_rows(self, theta: ArrayLike, fn: Callable) -> NDArray[np.float64] | float:
        caller = f"{type(self).__name__}.log_prob"
        rows = self._theta(theta, caller)
        values = fn(rows)
        return float(values[0]) if np.ndim(theta) == 1 else values

    def mean(self) -> NDArray[np.float64]:
        """Mean vector, shape (n_modes,)."""
        raise NotImplementedError

    def cov(self) -> NDArray[np.float64]:
        """Covariance matrix, shape (n_modes, n_modes)."""
        raise NotImplementedError

    def params(self) -> dict[str, Any]:
        """The parameters (JSON-serialisable; stored as HDF5 attributes)."""
        return {}


@dataclass(frozen=True)
class Normal(Distribution):
    """theta ~ N(0, I_s) (docs/data.md §3, paper section 5.1).

    Examples
    --------
    >>> Normal(3).sample(4, seed=1).shape
    (4, 3)
    """

    name: ClassVar[str] = "normal"

    def _draw(self, seq: np.random.SeedSequence, n_block: int) -> NDArray[np.float64]:
        # (s, n) filled coordinate after coordinate, so a prefix of coordinates
        # does not depend on s.
        return np.random.Generator(np.random.PCG64(seq)).standard_normal((self.n_modes, n_block)).T

    def log_prob(self, theta: ArrayLike) -> NDArray[np.float64] | float:
        """Log density ``-0.5 (|theta|^2 + s log 2 pi)``."""
        return self._log_prob_rows(
            theta, lambda t: -0.5 * (np.einsum("ij,ij->i", t, t) + self.n_modes * _LOG_2PI)
        )

    def _cdf(self, theta: NDArray[np.float64]) -> NDArray[np.float64]:
        return ndtr(theta)

    def _ppf(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        return ndtri(u)

    def mean(self) -> NDArray[np.float64]:
        """Zero vector."""
        return np.zeros(self.n_modes)

    def cov(self) -> NDArray[np.float64]:
        """Identity."""
        return np.eye(self.n_modes)


@dataclass(frozen=True)
class Gaussian(Distribution):
    """theta ~ N(mean, diag(sd^2)), scaled and translated (docs/data.md §3, section 5.2).

    Parameters
    ----------
    n_modes : int
        Dimension s.
    mean : float or sequence of float, default=1.0
        Mean (a scalar is broadcast), stored as the field ``mu``.
    sd : float or sequence of float, default=0.5
        Standard deviations (a scalar is broadcast), > 0.

    Notes
    -----
    The defaults are the paper experiment's radially symmetric p(theta)
    (docs/data.md §3, section 5.3; the authors' generator draws ``randn * 0.5 + 1``
    per coordinate): mu = (1, 1), sd = (0.5, 0.5) for s = 2. Draws
    ``mean + sd * z`` with the ``z`` of :class:`Normal` for the same seed,
    so the two datasets are an affine map of each other.

    Examples
    --------
    >>> Gaussian(2).mean()
    array([1., 1.])
    >>> Gaussian(2).cov()
    array([[0.25, 0.  ],
           [0.  , 0.25]])
    """

    name: ClassVar[str] = "gaussian"
    mu: tuple[float, ...] = (1.0,)
    sd: tuple[float, ...] = (0.5,)

    def __init__(self, n_modes: int, mean: Any = 1.0, sd: Any = 0.5) -> None:
        caller = "Gaussian"
        check_int(n_modes, "n_modes", caller, low=1)
        object.__setattr__(self, "n_modes", int(n_modes))
        object.__setattr__(self, "mu", _vector(mean, "mean", caller, int(n_modes)))
        sd_t = _vector(sd, "sd", caller, int(n_modes))
        if min(sd_t) <= 0:
            msg = f"{caller}: sd must be > 0 in every coordinate; got minimum {min(sd_t)!r}."
            raise ValueError(msg)
        object.__setattr__(self, "sd", sd_t)

    def _draw(self, seq: np.random.SeedSequence, n_block: int) -> NDArray[np.float64]:
        z = np.random.Generator(np.random.PCG64(seq)).standard_normal((self.n_modes, n_block)).T
        return np.asarray(self.mu) + np.asarray(self.sd) * z

    def log_prob(self, theta: ArrayLike) -> NDArray[np.float64] | float:
        """Log density of the diagonal Gaussian."""
        mu, sd = np.asarray(self.mu), np.asarray(self.sd)
        const = -np.log(sd).sum() - 0.5 * self.n_modes * _LOG_2PI
        return self._log_prob_rows(theta, lambda t: const - 0.5 * (((t - mu) / sd) ** 2).sum(1))

    def _cdf(self, theta: NDArray[np.float64]) -> NDArray[np.float64]:
        return ndtr((theta - np.asarray(self.mu)) / np.asarray(self.sd))

    def _ppf(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.asarray(self.mu) + np.asarray(self.sd) * ndtri(u)

    def mean(self) -> NDArray[np.float64]:
        """The ``mean`` parameter."""
        return np.asarray(self.mu, dtype=np.float64)

    def cov(self) -> NDArray[np.float64]:
        """``diag(sd^2)``."""
        return np.diag(np.asarray(self.sd) ** 2)

    def params(self) -> dict[str, Any]:
        """``{"mean": [...], "sd": [...]}``."""
        return {"mean": list(self.mu), "sd": list(self.sd)}


@dataclass(frozen=True)
class Mixture4(Distribution):
    """Each coordinate independently +-loc with probability 1/2, plus N(0, scale^2).

    The paper's "multimodal" case (section 5.3, the authors' "bimodal"
    files): with s = 2, four modes at (+-1, +-1) and four lines of symmetry.

    Parameters
    ----------
    n_modes : int
        Dimension s (2^s modes).
    loc : float, default=1.0
        Distance of the modes from 0 along each axis, > 0.
    scale : float, default=0.25
        Standard deviation around each mode, > 0.

    Notes
    -----
    Density per coordinate ``0.5 N(x; loc, scale^2) + 0.5 N(x; -loc,
    scale^2)``; mean 0, variance ``loc^2 + scale^2`` (1.0625 by default),
    independent coordinates. The noise is the ``z`` of :class:`Normal` for
    the same seed; the signs come from the child ``seq.spawn(1)`` of the
    block's SeedSequence.

    Examples
    --------
    >>> np.diag(Mixture4(2).cov())
    array([1.0625, 1.0625])
    """

    name: ClassVar[str] = "mixture4"
    loc: float = 1.0
    scale: float = 0.25

    def __post_init__(self) -> None:
        super().__post_init__()
        caller = "Mixture4"
        object.__setattr__(self, "loc", check_real(self.loc, "loc", caller, low=0, low_open=True))
        object.__setattr__(
            self, "scale", check_real(self.scale, "scale", caller, low=0, low_open=True)
        )

    def _draw(self, seq: np.random.SeedSequence, n_block: int) -> NDArray[np.float64]:
        z = np.random.Generator(np.random.PCG64(seq)).standard_normal((self.n_modes, n_block))
        (sign_seq,) = seq.spawn(1)
        bits = np.random.Generator(np.random.PCG64(sign_seq)).integers(
            0, 2, size=(self.n_modes, n_block), dtype=np.int8
        )
        return (self.loc * (2.0 * bits - 1.0) + self.scale * z).T

    def log_prob(self, theta: ArrayLike) -> NDArray[np.float64] | float:
        """Sum over coordinates of the log of the two-component mixture density."""
        loc, scale = self.loc, self.scale

        def fn(t: NDArray[np.float64]) -> NDArray[np.float64]:
            a = -0.5 * ((t - loc) / scale) ** 2
            b = -0.5 * ((t + loc) / scale) ** 2
            per = np.logaddexp(a, b) + math.log(0.5) - math.log(scale) - 0.5 * _LOG_2PI
            return per.sum(axis=1)

        return self._log_prob_rows(theta, fn)

    def _cdf(self, theta: NDArray[np.float64]) -> NDArray[np.float64]:
        # F(x) = (Phi((x - loc)/scale) + Phi((x + loc)/scale)) / 2; for x > 0 use
        # F(x) = 1 - F(-x), so both tails keep their relative accuracy.
        x = -np.abs(theta)
        a, b = (x - self.loc) / self.scale, (x + self.loc) / self.scale
        left = 0.5 * (ndtr(a) + ndtr(b))
        return np.where(theta > 0, 1.0 - left, left)

    def _ppf(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        """Invert the CDF numerically: safeguarded Newton on the left half, mirrored.

        For ``q = min(u, 1 - u) <= 1/2`` (``1 - u`` is exact for ``u >= 1/2``)
        the root of ``F(x) = q`` lies in ``[scale Phi^-1(q) - loc,
        min(scale Phi^-1(2q) - loc, 0)]`` (F lies between ``Phi((x + loc) /
        scale) / 2`` and ``Phi((x + loc) / scale)``). Newton steps are kept
        inside the bracket, which shrinks with every evaluation; the
        iteration runs until the step or the bracket is at rounding level.
        """
        loc, sc = self.loc, self.scale
        q = np.minimum(u, 1.0 - u)
        with np.errstate(divide="ignore", invalid="ignore"):
            lo = sc * ndtri(q) - loc
            hi = np.minimum(sc * ndtri(np.minimum(2.0 * q, 1.0)) - loc, 0.0)
        inner = np.flatnonzero(q > 0)
        lo, hi, qq = lo.ravel()[inner], hi.ravel()[inner], q.ravel()[inner]
        x = 0.5 * (lo + hi)
        todo = np.arange(len(x))
        eps, norm = np.finfo(float).eps, sc * math.sqrt(2 * math.pi)
        for _ in range(200):
            if todo.size == 0:
                break
            xt, lt, ht, qt = x[todo], lo[todo], hi[todo], qq[todo]
            a, b = (xt - loc) / sc, (xt + loc) / sc
            # F(x) - q; near the centre as (1/2 - q) - (Phi(-b) - Phi(a)) / 2, two
            # small tail terms, which keeps its relative accuracy where F ~ 1/2
            f = np.where(
                qt < 0.25,
                0.5 * (ndtr(a) + ndtr(b)) - qt,
                (0.5 - qt) - 0.5 * (ndtr(-b) - ndtr(a)),
            )
            pdf = 0.5 * (np.exp(-0.5 * a * a) + np.exp(-0.5 * b * b)) / norm
            lt = np.where(f < 0, xt, lt)
            ht = np.where(f < 0, ht, xt)
            with np.errstate(divide="ignore", invalid="ignore"):
                newton = xt - f / pdf
            # a Newton step is clipped to the bracket (the root may sit on its
            # edge, e.g. x = 0 for q = 1/2); no finite step: bisection
            x_new = np.where(np.isfinite(newton), np.clip(newton, lt, ht), 0.5 * (lt + ht))
            tol = 2 * eps * np.abs(xt) + 1e-300
            done = (f == 0) | (np.abs(x_new - xt) <= tol) | (ht - lt <= 2 * tol)
            x[todo], lo[todo], hi[todo] = x_new, lt, ht
            todo = todo[~done]
        out = np.full(q.size, -np.inf)
        out[inner] = x
        out = out.reshape(q.shape)
        return np.where(u > 0.5, -out, out)

    def mean(self) -> NDArray[np.float64]:
        """Zero vector."""
        return np.zeros(self.n_modes)

    def cov(self) -> NDArray[np.float64]:
        """``(loc^2 + scale^2) I``."""
        return (self.loc**2 + self.scale**2) * np.eye(self.n_modes)

    def params(self) -> dict[str, Any]:
        """``{"loc": ..., "scale": ...}``."""
        return {"loc": self.loc, "scale": self.scale}


@dataclass(frozen=True)
class Uniform(Distribution):
    """theta uniform in the box ``[low, high)`` (per coordinate).

    Parameters
    ----------
    n_modes : int
        Dimension s.
    low, high : float or sequence of float, default=-1.0, 1.0
        Box bounds (scalars are broadcast), ``low < high``.

    Examples
    --------
    >>> Uniform(2, low=0.0, high=2.0).mean()
    array([1., 1.])
    """

    name: ClassVar[str] = "uniform"
    low: tuple[float, ...] = (-1.0,)
    high: tuple[float, ...] = (1.0,)

    def __init__(self, n_modes: int, low: Any = -1.0, high: Any = 1.0) -> None:
        caller = "Uniform"
        check_int(n_modes, "n_modes", caller, low=1)
        object.__setattr__(self, "n_modes", int(n_modes))
        lo = _vector(low, "low", caller, int(n_modes))
        hi = _vector(high, "high", caller, int(n_modes))
        if any(a >= b for a, b in zip(lo, hi, strict=True)):
            msg = f"{caller}: low must be < high in every coordinate; got low={lo}, high={hi}."
            raise ValueError(msg)
        if not all(math.isfinite(b - a) for a, b in zip(lo, hi, strict=True)):
            msg = f"{caller}: high - low must be finite (a float64); got low={lo}, high={hi}."
            raise ValueError(msg)
        object.__setattr__(self, "low", lo)
        object.__setattr__(self, "high", hi)

    def _draw(self, seq: np.random.SeedSequence, n_block: int) -> NDArray[np.float64]:
        u = np.random.Generator(np.random.PCG64(seq)).random((self.n_modes, n_block)).T
        lo = np.asarray(self.low)
        return lo + (np.asarray(self.high) - lo) * u

    def log_prob(self, theta: ArrayLike) -> NDArray[np.float64] | float:
        """``-sum log(high - low)`` inside the box, ``-inf`` outside."""
        lo, hi = np.asarray(self.low), np.asarray(self.high)
        inside_value = -np.log(hi - lo).sum()

        def fn(t: NDArray[np.float64]) -> NDArray[np.float64]:
            inside = np.all((t >= lo) & (t < hi), axis=1)
            return np.where(inside, inside_value, -np.inf)

        return self._log_prob_rows(theta, fn)

    def _cdf(self, theta: NDArray[np.float64]) -> NDArray[np.float64]:
        lo, hi = np.asarray(self.low), np.asarray(self.high)
        return np.clip((theta - lo) / (hi - lo), 0.0, 1.0)

    def _ppf(self, u: NDArray[np.float64]) -> NDArray[np.float64]:
        lo = np.asarray(self.low)
        return lo + (np.asarray(self.high) - lo) * u

    def mean(self) -> NDArray[np.float64]:
        """``(low + high) / 2``."""
        return 0.5 * (np.asarray(self.low) + np.asarray(self.high))

    def cov(self) -> NDArray[np.float64]:
        """``diag((high - low)^2 / 12)``."""
        return np.diag((np.asarray(self.high) - np.asarray(self.low)) ** 2 / 12.0)

    def params(self) -> dict[str, Any]:
        """``{"low": [...], "high": [...]}``."""
        return {"low": list(self.low), "high": list(self.high)}


@dataclass(frozen=True, eq=False)
class ThetaArray(Distribution):
    """User-supplied thetas: sample ``i`` is row ``i`` of the array (the seed is ignored).

    Parameters
    ----------
    theta : array-like of shape (m, s)
        Finite thetas; copied and made read-only. ``n_modes`` is ``s``.

    Notes
    -----
    :meth:`mean` and :meth:`cov` are the moments of the rows (the empirical
    distribution); there is no density. darcyvae's dataset generation
    takes the training samples from rows ``0..n_train-1`` and the test
    samples from the rows after them.

    Examples
    --------
    >>> ThetaArray([[0.0, 1.0], [2.0, 3.0]]).sample_indices([1], seed=0)
    array([[2., 3.]])
    """

    name: ClassVar[str] = "array"
    theta: NDArray[np.float64] = field(default=None, repr=False)  # type: ignore[assignment]

    def __init__(self, theta: ArrayLike) -> None:
        arr = as_float_array(theta, "theta", "ThetaArray", ndim=2).copy()
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            msg = f"ThetaArray: theta must have at least one row and column; got shape {arr.shape}."
            raise ValueError(msg)
        arr.setflags(write=False)
        object.__setattr__(self, "theta", arr)
        object.__setattr__(self, "n_modes", int(arr.shape[1]))

    def __len__(self) -> int:
        return int(self.theta.shape[0])

    def sample_indices(
        self, indices: ArrayLike, seed: int = 0, *, stream: int = 0
    ) -> NDArray[np.float64]:
        """Rows ``indices`` of the array (``seed`` and ``stream`` are ignored)."""
        caller = "ThetaArray.sample_indices"
        idx = _as_indices(indices, caller)
        if idx.size and idx.max() >= len(self):
            msg = (
                f"ThetaArray.sample_indices: indices must be < {len(self)} (the number of "
                f"rows); got maximum {int(idx.max())}."
            )
            raise ValueError(msg)
        return self.theta[idx].copy()

    def mean(self) -> NDArray[np.float64]:
        """Mean of the rows."""
        return self.theta.mean(axis=0)

    def cov(self) -> NDArray[np.float64]:
        """Covariance of the rows (normalised by m, the empirical distribution's)."""
        return np.atleast_2d(np.cov(self.theta, rowvar=False, bias=True))

    def params(self) -> dict[str, Any]:
        """``{"rows": m, "sha256": digest of the float64 rows}``."""
        import hashlib

        digest = hashlib.sha256(self.theta.tobytes()).hexdigest()
        return {"rows": len(self), "sha256": digest}


_REGISTRY: dict[str, type[Distribution]] = {
    cls.name: cls for cls in (Normal, Gaussian, Mixture4, Uniform, ThetaArray)
}
"""Distributions by name (``get_distribution``)."""


def list_distributions() -> list[str]:
    """Names accepted by :func:`get_distribution`, sorted.

    Examples
    --------
    >>> list_distributions()
    ['array', 'gaussian', 'mixture4', 'normal', 'uniform']
    """
    return sorted(_REGISTRY)


def get_distribution(name: str, n_modes: int, **params: Any) -> Distribution:
    """The distribution ``name`` over ``n_modes`` coordinates.

    Parameters
    ----------
    name : str
        One of :func:`list_distributions`.
    n_modes : int
        Dimension s of theta. For ``"array"`` it must equal the number of
        columns of ``theta``.
    **params
        The distribution's parameters: ``gaussian``: ``mean``, ``sd``;
        ``mixture4``: ``loc``, ``scale``; ``uniform``: ``low``, ``high``;
        ``array``: ``theta`` (required); ``normal``: none.

    Returns
    -------
    Distribution

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones), parameters of the
        wrong length, ``sd <= 0``, ``low >= high``, ``n_modes`` not matching
        ``theta``.
    TypeError
        A parameter the distribution does not take.

    Examples
    --------
    >>> get_distribution("gaussian", 2, mean=0.0, sd=[1.0, 3.0]).sd
    (1.0, 3.0)
    """
    caller = "get_distribution"
    check_choice(name, "name", caller, tuple(list_distributions()))
    n_modes = check_int(n_modes, "n_modes", caller, low=1)
    cls = _REGISTRY[name]
    accepted = {
        "normal": (),
        "gaussian": ("mean", "sd"),
        "mixture4": ("loc", "scale"),
        "uniform": ("low", "high"),
        "array": ("theta",),
    }[name]
    unknown = sorted(set(params) - set(accepted))
    if unknown:
        takes = ", ".join(accepted) if accepted else "no parameters"
        msg = f"{caller}: {name!r} takes {takes}; got unexpected {', '.join(unknown)}."
        raise TypeError(msg)
    if cls is ThetaArray:
        if "theta" not in params:
            msg = f"{caller}: 'array' needs theta (an (m, s) array of thetas)."
            raise ValueError(msg)
        dist = ThetaArray(params["theta"])
        if dist.n_modes != n_modes:
            msg = (
                f"{caller}: theta must have n_modes = {n_modes} columns; "
                f"got shape {dist.theta.shape}."
            )
            raise ValueError(msg)
        return dist
    return cls(n_modes, **params)
