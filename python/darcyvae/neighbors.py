"""Exact nearest-neighbour search: the C++ KD-tree behind the k-NN estimators.

Public names
------------
KDTree
    Exact k-nearest-neighbour and closed-ball queries, Euclidean or per-axis
    weighted Euclidean (also importable from :mod:`darcyvae.metrics`).

Scale. The C++ tree works with squared distances, which overflow beyond
about 1e154 and underflow below about 1e-162. The tree therefore rescales
internally by powers of two (exact: every distance is the one computed
without rescaling whenever that one is representable): the points so that
their largest |coordinate| lies in [0.5, 1), the weights so that the
largest |weight| does, and queries lying very far outside the points get a
distance scale of their own. Results come back in the caller's units.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _core
from ._checks import as_float_array, check_int, core_threads

__all__ = ["KDTree"]

# Query coordinates up to this size (in the tree's units, where the points lie
# in [-1, 1] and the weights in (2^-334, 1)) keep squared offsets, and their
# sum over up to 2^20 axes, finite; farther queries are answered apart.
_FAR = 2.0**500
# Largest ratio max|w| / min|w| of query weights: beyond it the smaller axes'
# squared terms would underflow (or the larger overflow) in float64.
MAX_WEIGHT_RATIO = 1e100


def binary_exponent(max_abs: float) -> int:
    """The e with ``max_abs * 2**-e`` in [0.5, 1) (0 for 0): an exact rescaling."""
    return int(np.frexp(max_abs)[1]) if max_abs > 0 else 0


def rescale(arr: np.ndarray, axis: int | None = None) -> tuple[NDArray[np.float64], np.ndarray]:
    """``arr * 2**-e`` (C-contiguous float64) with e from :func:`binary_exponent`
    of the largest |entry| (per column with ``axis=0``), and e."""
    peak = (
        np.max(np.abs(arr), axis=axis)
        if arr.size
        else np.zeros(() if axis is None else arr.shape[1])
    )
    exp = np.frexp(peak)[1].astype(np.int64)
    exp = np.where(peak > 0, exp, 0)
    return np.ascontiguousarray(np.ldexp(arr, -exp)), exp


class KDTree:
    """Exact KD-tree for k-nearest-neighbour and radius queries.

    A thin checked wrapper of the C++ tree that the KL estimators use: the
    points are copied once (reordered into leaves of at most ``leaf_size``
    points, sliding-midpoint splits) and every query is exact.

    Parameters
    ----------
    data : array-like of shape (n, d) or (n,)
        The points (finite; any magnitude, see Notes).
    leaf_size : int, default=8
        Largest number of points in a leaf.

    Attributes
    ----------
    n, d : int
        Number of points and dimension.

    Notes
    -----
    The optional per-axis weights ``w`` of the queries give the distance
    :math:`\\sqrt{\\sum_c (w_c (q_c - p_c))^2}`; S_KL uses it to search the
    points :math:`a \\circ (z - b)` through a tree over z (docs/scores.md §5a). A query
    can leave out one point by its index (``exclude``), so self-queries work
    and duplicated points still show up at distance 0.

    Points, queries and weights are rescaled internally by powers of two,
    so any finite magnitude works (1e-300 or 1e300 alike) and distances
    equal those of the unscaled computation wherever that one does not
    overflow. Limits, each a ``ValueError``: weights spanning more than
    ``MAX_WEIGHT_RATIO`` = 1e100 (max / min of |w|), and distances beyond
    the largest float64 (about 1.8e308). As in any float64 sum of squares,
    squared offsets underflow below about 1e-308 in the tree's units: an
    offset below about 1e-154 times the points' largest |coordinate| (1
    when every point is 0) times the largest |weight| counts as 0.

    Examples
    --------
    >>> tree = KDTree([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    >>> dist, idx = tree.query([[0.1, 0.0]], k=2)
    >>> dist.round(3).tolist(), idx.tolist()
    ([[0.1, 0.9]], [[0, 1]])
    """

    def __init__(self, data: ArrayLike, *, leaf_size: int = 8) -> None:
        caller = "KDTree"
        arr = as_float_array(data, "data", caller, ndim=(1, 2))
        arr = arr.reshape(len(arr), -1) if arr.ndim == 1 else arr
        if arr.shape[0] < 1 or arr.shape[1] < 1:
            msg = f"{caller}: data must hold at least one point of dimension >= 1; got shape {arr.shape}."
            raise ValueError(msg)
        leaf_size = check_int(leaf_size, "leaf_size", caller, low=1)
        scaled, exp = rescale(arr)
        self._exp = int(exp)
        self._tree = _core.KDTree(scaled, leaf_size=leaf_size)

    @property
    def n(self) -> int:
        return self._tree.n

    @property
    def d(self) -> int:
        return self._tree.d

    def _queries(self, x: ArrayLike, caller: str) -> tuple[np.ndarray, np.ndarray]:
        """The queries as given (C-contiguous (nq, d)) and in the tree's units."""
        arr = as_float_array(x, "x", caller, ndim=(1, 2))
        if arr.ndim == 1:
            arr = arr.reshape(-1, self.d) if self.d == 1 else arr.reshape(1, -1)
        if arr.shape[1] != self.d:
            msg = f"{caller}: x must have {self.d} columns; got shape {arr.shape}."
            raise ValueError(msg)
        with np.errstate(over="ignore"):  # far queries are handled apart (see _far)
            return arr, np.ldexp(arr, -self._exp)

    def _options(
        self, nq: int, exclude: ArrayLike | None, weights: ArrayLike | None, caller: str
    ) -> tuple[NDArray[np.int64] | None, NDArray[np.float64] | None, int]:
        """Checked exclusions (-1: none); the weights scaled to max |w| in [0.5, 1)
        and their exponent (None and 0 without weights)."""
        ex = None
        if exclude is not None:
            raw = np.asarray(exclude)
            if raw.dtype.kind not in "iu" and raw.size:
                msg = f"{caller}: exclude must hold integer indices; got dtype {raw.dtype}."
                raise TypeError(msg)
            raw = raw.reshape(-1)
            if raw.shape != (nq,):
                msg = f"{caller}: exclude must have one index per query ({nq}); got {raw.size}."
                raise ValueError(msg)
            ex = np.full(nq, -1, dtype=np.int64)
            inside = (raw >= 0) & (raw < self.n)
            ex[inside] = raw[inside]
        if weights is None:
            return ex, None, 0
        w = as_float_array(weights, "weights", caller, ndim=1)
        if w.shape != (self.d,) or np.any(w == 0):
            msg = f"{caller}: weights must be {self.d} non-zero numbers; got {w.tolist()}."
            raise ValueError(msg)
        aw = np.abs(w)
        if aw.max() > MAX_WEIGHT_RATIO * aw.min():
            msg = (
                f"{caller}: weights must lie within a factor {MAX_WEIGHT_RATIO:g} of each "
                "other (beyond it the smaller axes vanish from float64 sums of squares); "
                f"got max |w| = {aw.max():.3g}, min |w| = {aw.min():.3g}."
            )
            raise ValueError(msg)
        scaled, exp = rescale(aw)
        return ex, scaled, int(exp)

    @staticmethod
    def _far(scaled: np.ndarray) -> NDArray[np.bool_]:
        """Queries with a coordinate beyond _FAR in the tree's units.

        There every point of the tree (all within [-1, 1]) is at the same
        float64 distance: on the far axes q - p rounds to q, and the near axes
        add less than 2^-200 of the total (weights span at most 2^333).
        """
        return ~(np.max(np.abs(scaled), axis=1) < _FAR)

    @staticmethod
    def _far_distance(q: np.ndarray, w: NDArray[np.float64] | None, wexp: int) -> np.ndarray:
        """||w o q|| per row, in the caller's units, without overflow on the way
        (inf when the distance itself exceeds the float64 range)."""
        mq, eq = np.frexp(np.abs(q))
        if w is not None:
            mw, ew = np.frexp(w)
            mq, eq = mq * mw, eq + ew + wexp
        top = np.max(np.where(mq > 0, eq, np.iinfo(np.int32).min), axis=1, keepdims=True)
        norm = np.sqrt(np.sum(np.ldexp(mq, eq - top) ** 2, axis=1))
        with np.errstate(over="ignore"):
            return np.ldexp(norm, top[:, 0])

    def _unscale(self, dist: np.ndarray, wexp: int, caller: str) -> np.ndarray:
        with np.errstate(over="ignore"):
            out = np.ldexp(dist, self._exp + wexp)
        return _finite_distances(out, caller)

    def query(
        self,
        x: ArrayLike,
        k: int = 1,
        *,
        exclude: ArrayLike | None = None,
        weights: ArrayLike | None = None,
        threads: int | None = None,
    ) -> tuple[NDArray[np.float64], NDArray[np.int64]]:
        """The k nearest points of each query.

        Parameters
        ----------
        x : array-like of shape (nq, d)
            Query points (finite).
        k : int, default=1
            Number of neighbours, ``1 <= k <= n`` (``n - 1`` with ``exclude``).
        exclude : array-like of int of shape (nq,), optional
            Per query, the index of a point to leave out (an index outside
            ``[0, n)``, e.g. -1, leaves out none).
        weights : array-like of shape (d,), optional
            Per-axis weights of the distance, non-zero, within a factor 1e100
            of each other.
        threads : int, optional
            Worker threads (default: all cores).

        Returns
        -------
        dist : ndarray of shape (nq, k)
            Distances, ascending, finite.
        idx : ndarray of int64 of shape (nq, k)
            Indices of those points, in ``[0, n)`` (ties in any order).

        Raises
        ------
        ValueError
            Wrong shapes, non-finite values, k out of range, weights out of
            range, distances beyond the float64 range.
        TypeError
            Non-numeric input, non-integer ``k`` or ``exclude``.
        """
        caller = "KDTree.query"
        q, qs = self._queries(x, caller)
        k = check_int(k, "k", caller, low=1, high=self.n - (exclude is not None))
        ex, w, wexp = self._options(len(q), exclude, weights, caller)
        threads = core_threads(threads, caller)
        far = self._far(qs)
        if not np.any(far):
            dist, idx = self._tree.query(qs, k, exclude=ex, weights=w, threads=threads)
            return self._unscale(dist, wexp, caller), idx
        dist = np.empty((len(q), k))
        idx = np.empty((len(q), k), dtype=np.int64)
        near = ~far
        if np.any(near):
            sub = None if ex is None else ex[near]
            dn, idx[near] = self._tree.query(
                np.ascontiguousarray(qs[near]), k, exclude=sub, weights=w, threads=threads
            )
            dist[near] = self._unscale(dn, wexp, caller)
        # far queries: every point ties; the first k that are not excluded
        dist[far] = _finite_distances(self._far_distance(q[far], w, wexp), caller)[:, None]
        first = np.arange(k + 1)
        for r in np.flatnonzero(far):
            idx[r] = first[first != (-1 if ex is None else ex[r])][:k]
        return dist, idx

    def count_within(
        self,
        x: ArrayLike,
        radius: ArrayLike,
        *,
        exclude: ArrayLike | None = None,
        weights: ArrayLike | None = None,
        threads: int | None = None,
    ) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
        """Number of points in the closed ball around each query.

        Parameters
        ----------
        x : array-like of shape (nq, d)
            Query points.
        radius : float or array-like of shape (nq,)
            Ball radii (finite, >= 0).
        exclude, weights, threads
            As in :meth:`query`.

        Returns
        -------
        count : ndarray of int64 of shape (nq,)
            Points p with ``dist(q, p) <= radius``.
        max_dist : ndarray of shape (nq,)
            The largest of their distances (0 when the count is 0).
        """
        caller = "KDTree.count_within"
        q, qs = self._queries(x, caller)
        scalar = np.ndim(radius) == 0
        r = as_float_array(radius, "radius", caller, ndim=(0, 1)).reshape(-1)
        if not scalar and r.shape != (len(q),):
            msg = f"{caller}: radius must be a number or one per query ({len(q)}); got shape {r.shape}."
            raise ValueError(msg)
        r = np.ascontiguousarray(np.broadcast_to(r, (len(q),)))
        if np.any(r < 0):
            msg = f"{caller}: radius must be >= 0; got minimum {r.min()!r}."
            raise ValueError(msg)
        ex, w, wexp = self._options(len(q), exclude, weights, caller)
        threads = core_threads(threads, caller)
        count = np.empty(len(q), dtype=np.int64)
        max_dist = np.empty(len(q))
        far = self._far(qs)
        near = ~far
        if np.any(near):
            with np.errstate(over="ignore"):  # an infinite internal radius counts all
                rs = np.ldexp(r[near], -(self._exp + wexp))
            sub = None if ex is None else ex[near]
            count[near], dn = self._tree.count_within(
                np.ascontiguousarray(qs[near]), rs, exclude=sub, weights=w, threads=threads
            )
            max_dist[near] = self._unscale(dn, wexp, caller)
        if np.any(far):  # every point at the same distance (see _far)
            dfar = self._far_distance(q[far], w, wexp)
            inside = dfar <= r[far]
            n_in = self.n - (0 if ex is None else (ex[far] >= 0))
            count[far] = np.where(inside, n_in, 0)
            max_dist[far] = np.where(inside & (n_in > 0), dfar, 0.0)
        return count, max_dist


def _finite_distances(dist: np.ndarray, caller: str) -> np.ndarray:
    if not np.all(np.isfinite(dist)):
        msg = (
            f"{caller}: {int(np.sum(~np.isfinite(dist)))} distances exceed the largest "
            "float64 (about 1.8e308); rescale the points, queries or weights."
        )
        raise ValueError(msg)
    return dist
