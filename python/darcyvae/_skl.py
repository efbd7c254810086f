"""The S_KL search (docs/scores.md §5): the machinery behind :func:`darcyvae.metrics.s_kl`.

``SKLOptions`` (public through :mod:`darcyvae.metrics`) holds the optimiser
settings; ``Search`` is one sample pair (theta, z) with its estimator and
tree, which evaluates the divergence at given (a, b, permutation) and
minimises it; ``Fit`` is what a minimisation found.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from scipy.optimize import linear_sum_assignment

from . import _core
from ._checks import check_int, check_real

__all__ = ["Fit", "Orientation", "SKLOptions", "Search"]

ASSIGNMENTS = ("exhaustive", "hungarian")


@dataclass(frozen=True)
class SKLOptions:
    """Optimiser settings of :func:`darcyvae.metrics.s_kl`.

    Parameters
    ----------
    refine : int, default=8
        In the exhaustive search, Nelder-Mead refines the ``refine``
        orientations (permutation x signs) whose moment-matched start scores
        lowest.
    restarts : int, default=1
        Extra Nelder-Mead runs per refined orientation, each from a fresh,
        randomly rotated simplex around the best point so far; stops early
        once a restart gains less than ``fatol``.
    scale_range : float, default=10.0
        Each |a_c| stays within a factor ``scale_range`` of its
        moment-matched value (> 1).
    min_ratio : float, default=1e-2
        Floor on each per-sample ratio nu/rho of the estimator, in the
        search and in the held-out evaluation (>= 0; see ``s_kl`` Notes).
    simplex_step : float, default=0.5
        Initial simplex size, in log-scale and in latent standard deviations.
    xatol, fatol : float, default=1e-3, 1e-4
        Nelder-Mead tolerances on the parameters and on the divergence.
    maxfev : int, optional
        Evaluations per Nelder-Mead run (scipy's default: 200 x 2d).
    permutations : bool, default=True
        Search the assignments of latent axes to factors (else identity).
    flips : bool, default=True
        Search the sign patterns of a (else all positive).
    max_orientations : int, default=4096
        The search is exhaustive (every orientation scored at its start)
        while their number, d! x 2^d with permutations and flips (3840 for
        d = 5, 46080 for d = 6), is at most this; above it one orientation
        comes from a Hungarian assignment (see ``s_kl`` Notes).
    """

    refine: int = 8
    restarts: int = 1
    scale_range: float = 10.0
    min_ratio: float = 1e-2
    simplex_step: float = 0.5
    xatol: float = 1e-3
    fatol: float = 1e-4
    maxfev: int | None = None
    permutations: bool = True
    flips: bool = True
    max_orientations: int = 4096

    def __post_init__(self) -> None:
        c = "SKLOptions"
        checked = {
            "refine": check_int(self.refine, "refine", c, low=1),
            "restarts": check_int(self.restarts, "restarts", c, low=0),
            "scale_range": check_real(self.scale_range, "scale_range", c, low=1.0, low_open=True),
            "min_ratio": check_real(self.min_ratio, "min_ratio", c, low=0.0),
            "simplex_step": check_real(
                self.simplex_step, "simplex_step", c, low=0.0, low_open=True
            ),
            "xatol": check_real(self.xatol, "xatol", c, low=0.0, low_open=True),
            "fatol": check_real(self.fatol, "fatol", c, low=0.0, low_open=True),
            "maxfev": None if self.maxfev is None else check_int(self.maxfev, "maxfev", c, low=1),
            "max_orientations": check_int(self.max_orientations, "max_orientations", c, low=1),
        }
        for name in ("permutations", "flips"):
            if not isinstance(getattr(self, name), (bool, np.bool_)):
                msg = f"{c}: {name} must be a bool; got {getattr(self, name)!r}."
                raise TypeError(msg)
            checked[name] = bool(getattr(self, name))
        for name, value in checked.items():
            object.__setattr__(self, name, value)

    def n_orientations(self, d: int) -> int:
        """Number of orientations of a d-dimensional latent these options allow."""
        return (math.factorial(d) if self.permutations else 1) * (2**d if self.flips else 1)

    def assignment(self, d: int) -> str:
        """ "exhaustive" or "hungarian" for a d-dimensional latent."""
        return "exhaustive" if self.n_orientations(d) <= self.max_orientations else "hungarian"


class Orientation:
    """One axis permutation and sign pattern, its moment-matched start and the
    log-scale / standardised-shift parameterisation searched by Nelder-Mead."""

    def __init__(self, perm, signs, search: Search) -> None:
        self.perm = np.asarray(perm, dtype=np.int64)
        self.a0 = np.asarray(signs, dtype=float) * search.t_sd / search.z_sd[self.perm]
        self.b0 = search.z_mean[self.perm] - search.t_mean / self.a0
        self.step = search.z_sd[self.perm]

    def affine(self, p: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        d = len(self.perm)
        return self.a0 * np.exp(p[:d]), self.b0 + p[d:] * self.step


@dataclass(frozen=True)
class Fit:
    """A minimisation's outcome: the value, where, and the best start."""

    value: float
    orientation: Orientation
    x: NDArray[np.float64]
    converged: bool
    start: float

    def params(self) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.int64]]:
        """(scale a, shift b, permutation) of the minimiser."""
        a, b = self.orientation.affine(self.x)
        return a, b, self.orientation.perm


class Search:
    """The divergence D(theta || a o (z_perm - b)) of one sample pair and its
    minimisation over (a, b) and the orientations (docs/scores.md §5).

    One tree over z is built once and theta's rho_k are computed once; each
    evaluation queries the tree with theta mapped to theta / a + b and axis
    weights |a| (docs/scores.md §5a, last paragraph).
    """

    def __init__(
        self,
        theta: np.ndarray,
        z: np.ndarray,
        *,
        k: int,
        method: str,
        paired: bool,
        options: SKLOptions,
        threads: int,
        caller: str,
        where: str = "",
    ) -> None:
        self.theta, self.z = theta, z
        self.paired, self.options, self.threads = paired, options, threads
        self.z_mean, self.z_sd = z.mean(axis=0), z.std(axis=0)
        self.t_mean, self.t_sd = theta.mean(axis=0), theta.std(axis=0)
        # constant coordinates: exactly (np.std of equal values can round above 0)
        constant = np.flatnonzero(np.ptp(theta, axis=0) == 0)
        if len(constant):
            msg = (
                f"{caller}: theta must vary in every coordinate{where}; constant "
                f"coordinates {constant.tolist()}."
            )
            raise ValueError(msg)
        self.est = _core.KLEstimator(theta, k=k, method=method, threads=threads)
        repeated = int(np.sum(self.est.rho == 0))
        if repeated:
            msg = (
                f"{caller}: theta must hold distinct samples{where}; {repeated} samples have "
                f"their {k}-th neighbour at distance 0 (repeated points)."
            )
            raise ValueError(msg)
        # A latent coordinate constant over these samples (exactly: ties in that
        # coordinate across all of them) stays constant under every a o (z - b):
        # q lies on a hyperplane to which p(theta), varying in every coordinate,
        # gives probability 0, so every divergence is +inf (docs/scores.md §5,
        # degenerate latents). Such a search is not run.
        self.singular = np.flatnonzero(np.ptp(z, axis=0) == 0)
        self.ztree = _core.KDTree(z)
        self.n_evaluations = 0

    @property
    def d(self) -> int:
        return self.theta.shape[1]

    def divergence(self, a, b, perm) -> float:
        """The estimate at y' = a o (z_perm - b); inf for a singular latent (a
        constant coordinate) and where a latent lands exactly on a theta sample
        (nu = 0, only with min_ratio = 0)."""
        if len(self.singular):
            return math.inf
        self.n_evaluations += 1
        value, _, zero_y = self.est.divergence(
            self.ztree,
            a,
            b,
            perm,
            paired=self.paired,
            min_ratio=self.options.min_ratio,
            threads=self.threads,
        )
        return math.inf if zero_y else float(value)

    # -- orientations ----------------------------------------------------------------------
    def orientations(self) -> Iterator[Orientation]:
        """The candidate orientations, lazily: all of them (exhaustive), or the
        one of the Hungarian assignment."""
        opts, d = self.options, self.d
        if opts.assignment(d) == "exhaustive":
            perms = itertools.permutations(range(d)) if opts.permutations else [tuple(range(d))]
            for perm in perms:
                signs = itertools.product((1.0, -1.0), repeat=d) if opts.flips else [(1.0,) * d]
                for s in signs:
                    yield Orientation(perm, s, self)
        else:
            yield self.hungarian()

    def hungarian(self) -> Orientation:
        """One orientation from a minimum-cost assignment of latent axes to factors.

        Paired samples: cost -|corr(theta_j, z_i)|, sign of a_j that of the
        correlation. Unpaired samples (no correlation to speak of): the
        mean absolute difference of the standardised marginal quantiles of
        theta_j and +-z_i, the sign the better of the two.
        """
        opts, d = self.options, self.d
        ts = (self.theta - self.t_mean) / self.t_sd
        zs = (self.z - self.z_mean) / self.z_sd
        if self.paired:
            corr = ts.T @ zs / len(ts)  # (factor j, latent i)
            cost_pos, cost_neg = -corr, corr
        else:
            probs = (np.arange(256) + 0.5) / 256
            qt, qz = np.quantile(ts, probs, axis=0), np.quantile(zs, probs, axis=0)
            cost_pos = np.abs(qt[:, :, None] - qz[:, None, :]).mean(axis=0)
            cost_neg = np.abs(qt[:, :, None] + qz[::-1, None, :]).mean(axis=0)
        cost = np.minimum(cost_pos, cost_neg) if opts.flips else cost_pos
        if opts.permutations:
            _, perm = linear_sum_assignment(cost)
        else:
            perm = np.arange(d)
        rows = np.arange(d)
        flip = opts.flips & (cost_neg[rows, perm] < cost_pos[rows, perm])
        return Orientation(perm, np.where(flip, -1.0, 1.0), self)

    # -- minimisation ----------------------------------------------------------------------
    def _nelder_mead(self, orient: Orientation, x0, directions) -> tuple[float, np.ndarray, bool]:
        """(value, point, converged) of Nelder-Mead from the simplex x0, x0 + step
        directions: scipy's bounded Nelder-Mead, run in C++ on the divergence
        (``KLEstimator.minimize_divergence``, step for step ``scipy.optimize.minimize``)."""
        opts, d = self.options, self.d
        log_range = math.log(opts.scale_range)
        simplex = np.vstack([x0, x0 + opts.simplex_step * directions])
        simplex[:, :d] = np.clip(simplex[:, :d], -log_range, log_range)
        x, fun, nfev, ok = self.est.minimize_divergence(
            self.ztree,
            orient.a0,
            orient.b0,
            orient.step,
            orient.perm,
            simplex,
            log_range,
            opts.xatol,
            opts.fatol,
            0 if opts.maxfev is None else opts.maxfev,
            paired=self.paired,
            min_ratio=self.options.min_ratio,
            threads=self.threads,
        )
        self.n_evaluations += nfev
        return float(fun), x, bool(ok)

    def _refine(self, orient: Orientation, rng: np.random.Generator):
        fun, x, ok = self._nelder_mead(orient, np.zeros(2 * self.d), np.eye(2 * self.d))
        for _ in range(self.options.restarts):
            q, _ = np.linalg.qr(rng.standard_normal((2 * self.d, 2 * self.d)))
            again = self._nelder_mead(orient, x, q.T)
            gain = fun - again[0]
            if gain > 0:
                fun, x, ok = again
            if gain < self.options.fatol:
                break
        return fun, x, ok

    def fit(self, rng: np.random.Generator) -> Fit:
        """Score every candidate orientation at its moment-matched start, refine
        the ``refine`` best with Nelder-Mead (plus restarts), keep the lowest.
        Not for a singular latent (``singular`` non-empty)."""
        assert not len(self.singular), "a singular latent has no finite fit"
        zero = np.zeros(2 * self.d)
        scored = (
            (self.divergence(*o.affine(zero), o.perm), i, o)
            for i, o in enumerate(self.orientations())
        )
        starts = heapq.nsmallest(self.options.refine, scored, key=lambda t: (t[0], t[1]))
        best: Fit | None = None
        for _, _, orient in starts:
            fun, x, ok = self._refine(orient, rng)
            if best is None or fun < best.value:
                best = Fit(fun, orient, x, ok, starts[0][0])
        assert best is not None
        return best
