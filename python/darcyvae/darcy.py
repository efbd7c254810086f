"""Darcy flow on the unit square (docs/data.md §1), solved by the C++ core.

Solves ``u = -K grad p``, ``div u = f`` with no flux through the walls and a
zero trapezoid mean of ``p``, on an N x N node grid (``h = 1/(N-1)``; arrays
are indexed ``[iy, ix]``, row = y). Two discretisations:

``"fd"`` (default, the paper's)
    second-order finite differences of ``-K lap p - grad K . grad p = f``
    with ghost-node reflection at the walls (docs/data.md §1a);
``"fv"``
    conservative node-centred finite volumes with harmonic-mean face
    transmissibilities (docs/data.md §1b); its rows are integrated over the control
    volumes, so its right-hand side is ``f * w``.

The gauge is imposed exactly through the bordered system
``[[A, w], [w^T, 0]] [p; lambda] = [b; 0]`` (``w`` the trapezoid weights).

Accuracy guarantee: every returned sample satisfies the bordered system to a
relative residual ``||A p + lambda w - b||_2 / ||b||_2 <= RESIDUAL_TOLERANCE``
(1e-6) and has zero trapezoid mean. A sample that misses it after the
pivoting fallback (extreme permeability contrasts, e.g. one "fv" cell at
1e-50) raises ``ValueError`` naming the sample, unless
``on_inaccurate="warn"`` is passed.

Public names
------------
DarcyConfig
    Scheme and source (well width, rate), validated.
SolveDiagnostics
    Lagrange multiplier of the gauge and relative residual of a solve.
source_term
    The docs/data.md §1 injection/production well source ``f``.
gauge_weights
    The trapezoid weights ``w`` of the zero-mean gauge.
solve
    One permeability field to ``(p, u_x, u_y)``.
solve_batch
    Many fields at once, threaded, into a float32 or float64 array.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, DTypeLike, NDArray

from . import _core
from ._checks import as_float_array, check_choice, check_int, check_real, check_threads
from .errors import SolveAccuracyError

__all__ = [
    "MAX_THREADS",
    "RESIDUAL_TOLERANCE",
    "DarcyConfig",
    "SolveDiagnostics",
    "gauge_weights",
    "solve",
    "solve_batch",
    "source_term",
]

SCHEMES = ("fd", "fv")
"""Discretisations offered: the paper's finite differences and finite volumes."""

RESIDUAL_TOLERANCE = 1e-6
"""Largest relative residual ``||A p + lambda w - b||_2 / ||b||_2`` of the bordered
system a returned sample may have (above it the core re-solves with partial
pivoting; a sample still above it is refused, see `solve_batch`)."""

MAX_THREADS: int = _core.max_threads()
"""Most worker threads a solve uses on this machine: 4 x the hardware threads, in
[4, 256]. Larger ``threads`` requests are reduced to it (results do not depend on
the thread count)."""

ON_INACCURATE = ("raise", "warn")
"""What `solve` and `solve_batch` do with a sample above `RESIDUAL_TOLERANCE`."""


@dataclass(frozen=True)
class DarcyConfig:
    """How a Darcy problem is discretised and driven (docs/data.md §1).

    Parameters
    ----------
    scheme : {"fd", "fv"}, default="fd"
        ``"fd"``: the paper's finite differences (docs/data.md §1a); ``"fv"``:
        conservative finite volumes (docs/data.md §1b).
    well_width : float, default=0.125
        Side ``w_s`` of the two square wells, in (0, 0.5].
    rate : float, default=10.0
        Injection rate ``r`` (``+r`` at the (0, 0) well, ``-r`` at (1, 1)).

    Raises
    ------
    ValueError
        An unknown scheme, a width outside (0, 0.5] or a non-finite rate.
    TypeError
        A non-numeric width or rate.

    Examples
    --------
    >>> DarcyConfig(scheme="fv").rate
    10.0
    """

    scheme: str = "fd"
    well_width: float = 0.125
    rate: float = 10.0

    def __post_init__(self) -> None:
        caller = "DarcyConfig"
        check_choice(self.scheme, "scheme", caller, SCHEMES)
        width = check_real(self.well_width, "well_width", caller, low=0.0, high=0.5, low_open=True)
        rate = check_real(self.rate, "rate", caller)
        object.__setattr__(self, "well_width", width)
        object.__setattr__(self, "rate", rate)


@dataclass(frozen=True)
class SolveDiagnostics:
    """Diagnostics of a solve (floats for `solve`, arrays of shape (n,) for `solve_batch`).

    Attributes
    ----------
    lagrange_multiplier : float or ndarray
        ``lambda`` of the bordered system. For ``"fd"`` it measures how
        inconsistent the non-conservative system is (about 10-20 at N = 65
        for the paper's fields); for ``"fv"`` it is the trapezoid mean of
        ``f`` (zero for the symmetric wells).
    relative_residual : float or ndarray
        ``||A p - b||_2 / ||b||_2`` of the scheme's own (singular) system:
        about 1e-3 for ``"fd"``, rounding level for ``"fv"`` with a
        zero-mean source.
    bordered_residual : float or ndarray or None
        ``||A p + lambda w - b||_2 / ||b||_2`` of the bordered system that is
        actually solved: at most `RESIDUAL_TOLERANCE` for every returned
        sample (rounding level for ordinary fields), larger (or inf) only for
        samples let through with ``on_inaccurate="warn"``.
    """

    lagrange_multiplier: float | NDArray[np.float64]
    relative_residual: float | NDArray[np.float64]
    bordered_residual: float | NDArray[np.float64] | None = None


@functools.lru_cache(maxsize=32)
def _solver(grid: int, scheme: str) -> Any:
    """The C++ solver of (grid, scheme): its symbolic analysis is done once and reused."""
    return _core.DarcySolver(grid, scheme)


@functools.lru_cache(maxsize=32)
def _source(grid: int, well_width: float, rate: float) -> NDArray[np.float64]:
    f = _core.darcy_source(grid, well_width, rate)
    f.flags.writeable = False
    return f


def _check_grid(grid: Any, caller: str) -> int:
    return check_int(grid, "grid", caller, low=3)


def source_term(grid: int, well_width: float = 0.125, rate: float = 10.0) -> NDArray[np.float64]:
    """The docs/data.md §1 source ``f`` on an N x N grid: two square wells in opposite corners.

    ``f = +rate`` where ``|x - w/2| <= w/2`` and ``|y - w/2| <= w/2``,
    ``f = -rate`` in the mirrored square at (1, 1), 0 elsewhere (a node
    within 1e-9 h of a well's edge counts as inside).

    Parameters
    ----------
    grid : int
        Nodes per side N >= 3.
    well_width : float, default=0.125
        Well side ``w`` in (0, 0.5].
    rate : float, default=10.0
        Finite rate.

    Returns
    -------
    ndarray of shape (N, N)
        ``f[iy, ix]``, float64.

    Raises
    ------
    ValueError
        ``grid < 3``, a width outside (0, 0.5], a non-finite rate.

    Examples
    --------
    >>> f = source_term(65)
    >>> int((f > 0).sum()), int((f < 0).sum())
    (81, 81)
    """
    caller = "source_term"
    grid = _check_grid(grid, caller)
    well_width = check_real(well_width, "well_width", caller, low=0.0, high=0.5, low_open=True)
    rate = check_real(rate, "rate", caller)
    return _core.darcy_source(grid, well_width, rate)


def gauge_weights(grid: int) -> NDArray[np.float64]:
    """Trapezoid weights ``w`` of the gauge ``sum(w * p) = 0`` (1, 2, 4 times h^2/4).

    They are also the control-volume areas of the ``"fv"`` scheme and sum
    to 1.

    Parameters
    ----------
    grid : int
        Nodes per side N >= 3.

    Returns
    -------
    ndarray of shape (N, N)

    Examples
    --------
    >>> float(gauge_weights(9).sum())
    1.0
    """
    return _core.darcy_gauge_weights(_check_grid(grid, "gauge_weights"))


def _check_permeability(permeability: ArrayLike, caller: str, ndim: int) -> NDArray[np.float64]:
    raw = np.asarray(permeability)
    if raw.dtype.kind == "b":
        msg = (
            f"{caller}: permeability must be a real (float or integer) array; got dtype bool "
            "(True/False is not a permeability)."
        )
        raise TypeError(msg)
    if raw.dtype.kind in "biuf" and raw.ndim != ndim:
        # Checked before the conversion, which turns a 0-d array into shape (1,).
        msg = f"{caller}: permeability must be a {ndim}-D array; got shape {raw.shape}."
        raise ValueError(msg)
    k = as_float_array(raw, "permeability", caller, ndim=ndim, positive=True)
    n_side = k.shape[-1]
    if k.shape[-2] != n_side or n_side < 3:
        what = "(N, N)" if ndim == 2 else "(n, N, N)"
        msg = f"{caller}: permeability must have shape {what} with N >= 3; got shape {k.shape}."
        raise ValueError(msg)
    return k


def _source_for(
    source: ArrayLike | None, config: DarcyConfig, grid: int, caller: str
) -> NDArray[np.float64]:
    if source is None:
        return _source(grid, config.well_width, config.rate)
    f = as_float_array(source, "source", caller, ndim=2)
    if f.shape != (grid, grid):
        msg = f"{caller}: source must have shape ({grid}, {grid}); got {f.shape}."
        raise ValueError(msg)
    return f


def _check_accuracy(
    k: NDArray[np.float64],
    out: NDArray[np.floating],
    bordered: NDArray[np.float64],
    on_inaccurate: str,
    caller: str,
) -> None:
    """Refuse (or, with ``on_inaccurate="warn"``, warn about) inaccurate samples.

    A sample is inaccurate when its bordered residual exceeds
    `RESIDUAL_TOLERANCE` (or is NaN) after the core's pivoting fallback, or
    when its output is not finite (e.g. a pressure beyond float32's range).
    """
    bad = ~(bordered <= RESIDUAL_TOLERANCE) | ~np.isfinite(out).all(axis=(1, 2, 3))
    if not bad.any():
        return
    idx = np.flatnonzero(bad)
    i = int(idx[0])
    more = ""
    if len(idx) > 1:
        more = f" (and {len(idx) - 1} more: {idx[1:6].tolist()}{' ...' if len(idx) > 6 else ''})"
    k_range = f"its permeability spans [{k[i].min():.3g}, {k[i].max():.3g}]"
    if bordered[i] <= RESIDUAL_TOLERANCE:
        why = (
            f"its output does not fit {out.dtype} (a pressure or velocity beyond its range); "
            f"{k_range}. Use dtype=float64 or rescale the permeability"
        )
    else:
        why = (
            f"the relative residual of the bordered system is {bordered[i]:.3g} (tolerance "
            f"{RESIDUAL_TOLERANCE:g}) after the pivoting fallback; {k_range}. Permeability "
            "contrasts this extreme are beyond double precision for this scheme"
        )
    msg = (
        f"{caller}: sample {i}{more} could not be solved accurately: {why}; pass "
        "on_inaccurate='warn' to get the result anyway."
    )
    if on_inaccurate == "warn":
        warnings.warn(msg, RuntimeWarning, stacklevel=3)
        return
    raise SolveAccuracyError(msg)


def _config(config: DarcyConfig | None, caller: str) -> DarcyConfig:
    if config is None:
        return DarcyConfig()
    if not isinstance(config, DarcyConfig):
        msg = f"{caller}: config must be a DarcyConfig or None; got {type(config).__name__}."
        raise TypeError(msg)
    return config


def solve(
    permeability: ArrayLike,
    config: DarcyConfig | None = None,
    *,
    source: ArrayLike | None = None,
    return_diagnostics: bool = False,
    on_inaccurate: str = "raise",
) -> NDArray[np.float64] | tuple[NDArray[np.float64], SolveDiagnostics]:
    """Solve one Darcy problem: permeability ``K`` to pressure and velocity.

    Parameters
    ----------
    permeability : array-like of shape (N, N)
        ``K[iy, ix]``, finite and > 0, N >= 3.
    config : DarcyConfig, optional
        Scheme and wells; ``DarcyConfig()`` (the paper's) by default.
    source : array-like of shape (N, N), optional
        A source ``f`` to use instead of the config's wells (e.g. a
        manufactured solution's). A source with nonzero mean is made
        consistent by the gauge's multiplier.
    return_diagnostics : bool, default=False
        Also return a `SolveDiagnostics`.
    on_inaccurate : {"raise", "warn"}, default="raise"
        What to do when the solution misses `RESIDUAL_TOLERANCE` even after
        the pivoting fallback: raise ``ValueError``, or return it with a
        ``RuntimeWarning`` (its output may then be inaccurate or NaN).

    Returns
    -------
    output : ndarray of shape (3, N, N)
        ``(p, u_x, u_y)``, float64, ``[iy, ix]`` indexing (docs/data.md §1c layout).
    diagnostics : SolveDiagnostics
        Only with ``return_diagnostics=True``.

    Raises
    ------
    ValueError
        Non-square or too small ``K``, NaN/inf or non-positive entries, a
        source of the wrong shape.
    SolveAccuracyError
        (a ``ValueError``) A solution that misses `RESIDUAL_TOLERANCE` after
        the pivoting fallback (unless ``on_inaccurate="warn"``).
    TypeError
        Complex, boolean or non-numeric input, a config that is not a
        DarcyConfig.

    See Also
    --------
    solve_batch : many fields at once, threaded.

    Notes
    -----
    docs/data.md §1a/§1b. The bordered system ``[[A, w], [w^T, 0]]`` is solved exactly
    without factorising its dense border: the core factorises
    ``A + c e_q e_q^T`` (a multifrontal LU for "fd", LDL^T for "fv", over a
    nested-dissection ordering of the grid, no pivoting) and recovers ``p``
    and ``lambda`` from two forward-eliminated right-hand sides. A sample
    whose backward error exceeds 1e-10, or whose bordered residual exceeds
    `RESIDUAL_TOLERANCE`, is re-solved with partial pivoting.
    Velocities (both schemes): ``u = -K grad p`` by central differences, the
    wall-normal component zero on walls.

    Examples
    --------
    >>> out = solve(np.ones((9, 9)))
    >>> out.shape
    (3, 9, 9)
    >>> bool(abs(np.sum(gauge_weights(9) * out[0])) < 1e-12)
    True
    """
    caller = "solve"
    config = _config(config, caller)
    check_choice(on_inaccurate, "on_inaccurate", caller, ON_INACCURATE)
    k = _check_permeability(permeability, caller, 2)
    grid = k.shape[0]
    f = _source_for(source, config, grid, caller)
    out = np.empty((1, 3, grid, grid))
    bordered = np.empty(1)
    lam, res = _solver(grid, config.scheme).solve_into(k[None], f, out, 1, bordered)
    _check_accuracy(k[None], out, bordered, on_inaccurate, caller)
    if return_diagnostics:
        return out[0], SolveDiagnostics(float(lam[0]), float(res[0]), float(bordered[0]))
    return out[0]


def solve_batch(
    permeability: ArrayLike,
    config: DarcyConfig | None = None,
    *,
    threads: int | None = None,
    out: NDArray[np.floating] | None = None,
    dtype: DTypeLike = np.float64,
    source: ArrayLike | None = None,
    return_diagnostics: bool = False,
    on_inaccurate: str = "raise",
) -> NDArray[np.floating] | tuple[NDArray[np.floating], SolveDiagnostics]:
    """Solve many Darcy problems in C++ threads, writing straight into one array.

    Parameters
    ----------
    permeability : array-like of shape (n, N, N)
        Fields ``K[i, iy, ix]``, finite and > 0, N >= 3.
    config : DarcyConfig, optional
        Scheme and wells, shared by all samples.
    threads : int, optional
        Worker threads; None or 0 uses all cores. Requests above
        `MAX_THREADS` (4 x the hardware threads, at most 256) are reduced to
        it, with a warning (``darcyvae._checks.check_threads``).
    out : ndarray of shape (n, 3, N, N), optional
        C-contiguous, writeable float32 or float64 array filled in place
        (no copies) and returned. Its dtype wins over ``dtype``.
    dtype : {numpy.float64, numpy.float32}, default=numpy.float64
        dtype of the array allocated when ``out`` is None.
    source : array-like of shape (N, N), optional
        A source replacing the config's wells, shared by all samples.
    return_diagnostics : bool, default=False
        Also return a `SolveDiagnostics` of arrays of shape (n,).
    on_inaccurate : {"raise", "warn"}, default="raise"
        What to do with samples that miss `RESIDUAL_TOLERANCE` after the
        pivoting fallback, or whose output is not finite in the output dtype
        (a pressure beyond float32's range): raise ``ValueError`` naming the
        first such sample, or return everything with a ``RuntimeWarning``
        (those samples' outputs may then be inaccurate or NaN).

    Returns
    -------
    output : ndarray of shape (n, 3, N, N)
        ``(p, u_x, u_y)`` of every sample (``out`` when given).
    diagnostics : SolveDiagnostics
        Only with ``return_diagnostics=True``.

    Raises
    ------
    ValueError
        Bad shapes or values of ``permeability``, ``source``, ``out`` or
        ``threads``; an unsupported ``dtype``; ``out`` overlapping the input.
    SolveAccuracyError
        (a ``ValueError``) An inaccurate sample (see ``on_inaccurate``;
        ``out`` then holds partial results).
    TypeError
        Complex, boolean or non-numeric input, ``out`` not an ndarray.
    RuntimeError
        The system refused to start the worker threads (out of memory or of
        threads); retry with fewer ``threads``.

    Notes
    -----
    The GIL is released while the core runs. Samples are solved four at a
    time, one per SIMD lane, and each sample's result is bitwise the same
    whatever the thread count and batch it is solved in. Every call reuses
    the symbolic analysis cached for (N, scheme), and each worker thread a
    workspace of the cached solver: about 7 MB at N = 65, 30 MB at
    N = 129 and 130 MB at N = 257. Between calls the solver keeps at most
    one workspace per hardware thread; the extra ones of a call with more
    threads are freed when it returns.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> k = np.exp(rng.standard_normal((5, 9, 9)))
    >>> y = solve_batch(k, dtype=np.float32)
    >>> y.shape, y.dtype
    ((5, 3, 9, 9), dtype('float32'))
    """
    caller = "solve_batch"
    config = _config(config, caller)
    check_choice(on_inaccurate, "on_inaccurate", caller, ON_INACCURATE)
    k = _check_permeability(permeability, caller, 3)
    n, grid = k.shape[0], k.shape[1]
    # 0 or None: all cores; else checked and reduced to MAX_THREADS in Python, so a huge
    # request (2**70) never reaches pybind's conversion to a C++ int
    threads = 0 if threads is None else check_int(threads, "threads", caller, low=0)
    threads = check_threads(threads, caller) if threads else 0
    f = _source_for(source, config, grid, caller)
    shape = (n, 3, grid, grid)
    if out is None:
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            msg = f"{caller}: dtype must be float32 or float64; got {dt}."
            raise ValueError(msg)
        out = np.empty(shape, dtype=dt)
    else:
        if not isinstance(out, np.ndarray):
            msg = f"{caller}: out must be a numpy.ndarray; got {type(out).__name__}."
            raise TypeError(msg)
        if out.dtype not in (np.float32, np.float64):
            msg = f"{caller}: out must have dtype float32 or float64; got {out.dtype}."
            raise ValueError(msg)
        if out.shape != shape:
            msg = f"{caller}: out must have shape {shape}; got {out.shape}."
            raise ValueError(msg)
        if not out.flags.c_contiguous or not out.flags.writeable:
            msg = f"{caller}: out must be C-contiguous and writeable; got flags {out.flags}."
            raise ValueError(msg.replace("\n", " "))
        if np.may_share_memory(out, k) or np.may_share_memory(out, f):
            msg = f"{caller}: out must not overlap permeability or source; got overlapping arrays."
            raise ValueError(msg)
    bordered = np.empty(n)
    lam, res = _solver(grid, config.scheme).solve_into(k, f, out, threads, bordered)
    _check_accuracy(k, out, bordered, on_inaccurate, caller)
    if return_diagnostics:
        return out, SolveDiagnostics(lam, res, bordered)
    return out
