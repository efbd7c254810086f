"""Karhunen-Loeve expansion (KLE) of the log-permeability field (docs/data.md §2).

The log-permeability ``G`` is a zero-mean Gaussian random field on the
``N x N`` unit-square grid with a stationary covariance ``C``; its truncated
KLE is ``G = sum_{i<=s} sqrt(lambda_i) theta_i phi_i`` with the top ``s``
eigenpairs of ``C``, and the permeability is ``K = exp(G)``.

Public names
------------
KLEConfig
    Frozen, validated parameters of a basis (grid, s, kernel, length scale(s),
    variance); ``dataclasses.asdict`` of it keys the disk cache.
KLEBasis
    A computed basis: eigenvalues, modes ``(s, N, N)``, the variance fraction,
    and ``field`` / ``permeability`` for one theta or a batch.
kle_basis
    Compute (or load from the disk cache) the basis of a configuration.
covariance_matvec
    The matrix-free product ``C v`` (FFT circulant embedding).
default_cache_dir
    The folder of the disk cache.
KERNELS
    The covariance kernels.

Conventions: arrays are indexed ``[iy, ix]`` (row = y), node ``(ix, iy)`` at
``(ix h, iy h)``, ``h = 1 / (N - 1)``, flat index ``j = iy N + ix``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from . import _core
from ._checks import as_float_array, check_choice, check_int, check_real, config_kwargs
from ._io import atomic_path

__all__ = [
    "KERNELS",
    "KLEBasis",
    "KLEConfig",
    "covariance_matvec",
    "default_cache_dir",
    "kle_basis",
]

logger = logging.getLogger(__name__)

KERNELS: tuple[str, ...] = ("exponential", "squared_exponential")
"""Covariance kernels: ``sigma^2 exp(-r)`` and ``sigma^2 exp(-r^2 / 2)``."""

_CACHE_FORMAT = 1
"""Version of the cache file layout and of the basis rules; part of every key."""

_MAX_GRID = 8193

_MAX_VARIANCE = 1e100
"""Largest sigma^2: beyond it the eigensolver's float64 residual checks overflow."""

_SOLVER_STATS = ("matvecs", "restarts", "rounds", "blocks", "dense_blocks", "clusters", "matvec")
"""Solver statistics of ``_core.kle_solve`` kept in ``KLEBasis.info``."""


@dataclass(frozen=True)
class KLEConfig:
    """Parameters of a Karhunen-Loeve basis (validated on construction).

    Parameters
    ----------
    grid : int, default=65
        Nodes per side ``N`` of the unit-square grid (``N >= 2``).
    n_modes : int, default=100
        Number of modes ``s``, ``1 <= s <= N**2``.
    kernel : {"exponential", "squared_exponential"}, default="exponential"
        ``k = sigma^2 exp(-r)`` or ``k = sigma^2 exp(-r^2 / 2)`` with
        ``r = sqrt((dx / l_x)^2 + (dy / l_y)^2)`` (Euclidean distance).
    length_scale : float or (float, float), default=0.1
        ``l`` (isotropic) or ``(l_x, l_y)``; every entry > 0.
    variance : float, default=1.0
        ``sigma^2``, ``0 < sigma^2 <= 1e100`` (larger values overflow the
        eigensolver's float64 residual checks; ``darcyvae generate`` further
        needs ``K = exp(G)`` finite in float32).

    Raises
    ------
    ValueError
        A value out of range or an unknown kernel.
    TypeError
        A value of the wrong kind (e.g. a string for ``grid``).

    Notes
    -----
    docs/data.md §2; the paper's datasets use the defaults with
    ``s`` in {2, 10, 100, 1000, 4225}.

    Examples
    --------
    >>> KLEConfig(grid=9, n_modes=4).length_xy
    (0.1, 0.1)
    >>> KLEConfig(length_scale=(0.2, 0.05)).isotropic
    False
    """

    grid: int = 65
    n_modes: int = 100
    kernel: str = "exponential"
    length_scale: float | tuple[float, float] = 0.1
    variance: float = 1.0

    def __post_init__(self) -> None:
        caller = "KLEConfig"
        grid = check_int(self.grid, "grid", caller, low=2, high=_MAX_GRID)
        n_modes = check_int(self.n_modes, "n_modes", caller, low=1, high=grid * grid)
        kernel = check_choice(self.kernel, "kernel", caller, KERNELS)
        ls = self.length_scale
        if isinstance(ls, (tuple, list, np.ndarray)):
            if len(ls) != 2:
                msg = (
                    f"{caller}: length_scale must be a float or a pair (l_x, l_y); "
                    f"got {len(ls)} values."
                )
                raise ValueError(msg)
            length: float | tuple[float, float] = tuple(
                check_real(v, f"length_scale[{i}]", caller, low=0.0, low_open=True)
                for i, v in enumerate(ls)
            )
        else:
            length = check_real(ls, "length_scale", caller, low=0.0, low_open=True)
        variance = check_real(
            self.variance, "variance", caller, low=0.0, high=_MAX_VARIANCE, low_open=True
        )
        object.__setattr__(self, "grid", grid)
        object.__setattr__(self, "n_modes", n_modes)
        object.__setattr__(self, "kernel", kernel)
        object.__setattr__(self, "length_scale", length)
        object.__setattr__(self, "variance", variance)

    @property
    def length_xy(self) -> tuple[float, float]:
        """The length scales ``(l_x, l_y)``."""
        if isinstance(self.length_scale, tuple):
            return self.length_scale
        return (self.length_scale, self.length_scale)

    @property
    def isotropic(self) -> bool:
        """Whether ``l_x == l_y`` (then the swap x <-> y is a symmetry too)."""
        lx, ly = self.length_xy
        return lx == ly


@dataclass(frozen=True, eq=False)
class KLEBasis:
    """A truncated Karhunen-Loeve basis (returned by :func:`kle_basis`).

    Attributes
    ----------
    config : KLEConfig
        The parameters it was computed for.
    eigenvalues : ndarray of shape (s,)
        ``lambda_1 >= lambda_2 >= ...`` (read-only). Inside a cluster
        (Notes) the order is the basis rule's and may differ from descending
        by up to 1e-8 relative.
    modes : ndarray of shape (s, N, N)
        ``phi_i[iy, ix]``, orthonormal as flat vectors (read-only), fixed by
        the basis and sign rules (Notes).
    variance_fraction : float
        ``sum_{i<=s} lambda_i / trace(C)``, ``trace(C) = N^2 sigma^2``.
    residuals : ndarray of shape (s,)
        Bounds on ``||C phi_i - lambda_i phi_i||_2`` (all
        ``<= 1e-8 lambda_1`` by construction; typically ~1e-14 lambda_1).
    info : dict
        How it was obtained: ``source`` ("computed", "cache" or
        "cache-superset"), ``seconds``, solver statistics.

    Notes
    -----
    Basis rule (docs/data.md §2), so equal parameters give equal modes on any machine
    (to solver accuracy, about 1e-10; bitwise on one build, any thread count):
    inside a cluster of (near-)degenerate eigenvalues the basis diagonalises the reflection ``R_x`` (x -> 1 - x), odd modes first; blocks
    with equal ``R_x`` parity are split by ``R_y`` (y -> 1 - y) the same way;
    then (darcyvae's extension) by the swap ``S`` (x <-> y) when the kernel is
    isotropic, then by the Rayleigh quotients of ``diag(r)`` (descending). For
    the default kernel, mode 2 is odd in x (it varies along x) and mode 3 is
    odd in y. Sign rule: ``sum_j r_j phi_i[j] > 0`` with
    ``r_j = ((j + 1) * 2654435761 mod 2^32) / 2^32 - 0.5``; where
    ``|r . phi_i| <= 1e-10 ||r||`` (it vanishes exactly for some modes of tiny
    grids, e.g. the checkerboard mode of N = 2) the sequence with
    ``(j + 1)^2`` in place of ``j + 1`` decides (darcyvae's tie-break).
    Eigenvalues at rounding level (``< ~1e-13 lambda_1``, squared-exponential
    kernel at large ``s``) have modes determined only to rounding.
    Clusters are formed from the top: each starts at the largest eigenvalue
    not yet assigned and takes every following one within ``1e-8`` relative
    of it (no chaining of 1e-8 gaps, which on a nearly flat spectrum, e.g.
    ``l << h``, would merge eigenvalues far apart); for exact degeneracies
    and separated spectra this is the same as the relative gap < 1e-8 of docs/data.md §2.
    """

    config: KLEConfig
    eigenvalues: NDArray[np.float64]
    modes: NDArray[np.float64]
    variance_fraction: float
    residuals: NDArray[np.float64]
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def grid(self) -> int:
        """Nodes per side ``N``."""
        return self.config.grid

    @property
    def n_modes(self) -> int:
        """Number of modes ``s``."""
        return int(self.eigenvalues.shape[0])

    @property
    def trace(self) -> float:
        """``trace(C) = N^2 sigma^2``, the total variance."""
        return float(self.config.grid**2 * self.config.variance)

    def field(self, theta: ArrayLike) -> NDArray[np.float64]:
        """Log-permeability ``G = sum_i sqrt(lambda_i) theta_i phi_i``.

        Parameters
        ----------
        theta : array-like of shape (s,) or (n, s)
            Generative parameters, one row per field.

        Returns
        -------
        ndarray of shape (N, N) or (n, N, N)
            float64, ``[iy, ix]``; one matrix product for a batch.

        Raises
        ------
        ValueError
            ``theta`` of the wrong width or rank, or with NaN / inf.

        Notes
        -----
        docs/data.md §2. Eigenvalues that come out negative at rounding level
        (squared-exponential kernel) count as 0.

        Examples
        --------
        >>> basis = kle_basis(grid=9, n_modes=3, cache=False)
        >>> basis.field(np.zeros(3)).shape
        (9, 9)
        >>> basis.field(np.ones((5, 3))).shape
        (5, 9, 9)
        """
        caller = "KLEBasis.field"
        theta = as_float_array(theta, "theta", caller, ndim=(1, 2))
        s = self.n_modes
        if theta.shape[-1] != s:
            msg = (
                f"{caller}: theta must have shape (s,) or (n, s) with s = n_modes = {s}; "
                f"got shape {theta.shape}."
            )
            raise ValueError(msg)
        scale = np.sqrt(np.clip(self.eigenvalues, 0.0, None))
        n = self.grid
        out = (theta * scale) @ self.modes.reshape(s, n * n)
        return out.reshape((*theta.shape[:-1], n, n))

    def permeability(self, theta: ArrayLike) -> NDArray[np.float64]:
        """Permeability ``K = exp(G)`` of :meth:`field` (same shapes and checks).

        Examples
        --------
        >>> basis = kle_basis(grid=9, n_modes=3, cache=False)
        >>> float(basis.permeability(np.zeros(3)).max())
        1.0
        """
        return np.exp(self.field(theta))


def default_cache_dir() -> Path:
    """Folder of the KLE disk cache.

    ``$DARCYVAE_CACHE_DIR/kle`` if that variable is set, else
    ``$XDG_CACHE_HOME/darcyvae/kle``, else ``~/.cache/darcyvae/kle``.
    """
    env = os.environ.get("DARCYVAE_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "kle"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "darcyvae" / "kle"


def _config_json(config: KLEConfig) -> str:
    data = dataclasses.asdict(config)
    data["length_scale"] = list(config.length_xy) if not config.isotropic else config.length_xy[0]
    data["format"] = _CACHE_FORMAT
    return json.dumps(data, sort_keys=True)


def _family(config: KLEConfig) -> str:
    """Hash of every parameter except ``n_modes`` (bases of one family nest)."""
    key = _config_json(dataclasses.replace(config, n_modes=1))
    return hashlib.sha256(key.encode()).hexdigest()[:20]


def _cache_path(folder: Path, config: KLEConfig) -> Path:
    return folder / f"kle-{_family(config)}-s{config.n_modes}.npz"


def _checksum(eigenvalues: NDArray, modes: NDArray, residuals: NDArray) -> str:
    h = hashlib.sha256()
    for a in (eigenvalues, modes, residuals):
        h.update(np.ascontiguousarray(a, dtype=np.float64).tobytes())
    return h.hexdigest()


def _make_basis(
    config: KLEConfig,
    eigenvalues: NDArray,
    modes: NDArray,
    residuals: NDArray,
    info: dict[str, Any],
) -> KLEBasis:
    n = config.grid
    s = config.n_modes
    eigenvalues = np.ascontiguousarray(eigenvalues[:s], dtype=np.float64)
    modes = np.ascontiguousarray(modes[:s], dtype=np.float64).reshape(s, n, n)
    residuals = np.ascontiguousarray(residuals[:s], dtype=np.float64)
    for a in (eigenvalues, modes, residuals):
        a.setflags(write=False)
    fraction = float(eigenvalues.sum() / (n * n * config.variance))
    return KLEBasis(config, eigenvalues, modes, fraction, residuals, info)


def _load(path: Path, config: KLEConfig) -> tuple[KLEBasis | None, str]:
    """Load a cached basis of ``config``; (None, reason) when unusable."""
    try:
        with path.open("rb") as fh, np.load(fh, allow_pickle=False) as z:
            if int(z["format"]) != _CACHE_FORMAT:
                return None, f"format {int(z['format'])} != {_CACHE_FORMAT}"
            stored = str(z["config"])
            if stored != _config_json(config):
                return None, f"stored configuration {stored} does not match"
            eigenvalues = np.array(z["eigenvalues"])
            modes = np.array(z["modes"])
            residuals = np.array(z["residuals"])
            checksum = str(z["checksum"])
            info = json.loads(str(z["info"]))
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
        # (json.JSONDecodeError is a ValueError)
        return None, f"unreadable ({type(exc).__name__}: {exc})"
    n, s = config.grid, config.n_modes
    if eigenvalues.shape != (s,) or modes.shape != (s, n * n) or residuals.shape != (s,):
        return None, "array shapes do not match"
    if _checksum(eigenvalues, modes, residuals) != checksum:
        return None, "checksum mismatch"
    return _make_basis(config, eigenvalues, modes, residuals, info), ""


def _save(path: Path, config: KLEConfig, basis: KLEBasis) -> None:
    """Write ``basis`` to ``path`` atomically (:func:`darcyvae._io.atomic_path`)."""
    s = basis.n_modes
    modes = basis.modes.reshape(s, -1)
    info = {k: v for k, v in basis.info.items() if k != "source"}
    with atomic_path(path) as tmp, tmp.open("wb") as fh:
        np.savez(
            fh,
            format=np.int64(_CACHE_FORMAT),
            config=np.str_(_config_json(config)),
            eigenvalues=basis.eigenvalues,
            modes=modes,
            residuals=basis.residuals,
            checksum=np.str_(_checksum(basis.eigenvalues, modes, basis.residuals)),
            info=np.str_(json.dumps(info, sort_keys=True, default=str)),
        )


def _from_cache(folder: Path, config: KLEConfig) -> KLEBasis | None:
    """The cached basis of ``config``, or the first ``s`` modes of a cached larger one."""
    path = _cache_path(folder, config)
    if path.exists():
        basis, reason = _load(path, config)
        if basis is not None:
            basis.info["source"] = "cache"
            return basis
        logger.warning("KLE cache file %s is unusable (%s); recomputing.", path, reason)
        return None
    pattern = re.compile(rf"kle-{_family(config)}-s(\d+)\.npz$")
    larger = []
    if folder.is_dir():
        for p in folder.iterdir():
            m = pattern.match(p.name)
            if m and int(m.group(1)) > config.n_modes:
                larger.append((int(m.group(1)), p))
    for s_big, p in sorted(larger):
        big, _ = _load(p, dataclasses.replace(config, n_modes=s_big))
        if big is not None:
            info = dict(big.info, source="cache-superset", superset_n_modes=s_big)
            return _make_basis(
                config, big.eigenvalues, big.modes.reshape(s_big, -1), big.residuals, info
            )
    return None


def kle_basis(
    config: KLEConfig | None = None,
    *,
    cache: bool = True,
    cache_dir: str | os.PathLike | None = None,
    threads: int = 0,
    **overrides: Any,
) -> KLEBasis:
    """Top-``s`` Karhunen-Loeve basis of the covariance, computed or cached.

    Parameters
    ----------
    config : KLEConfig, optional
        Parameters; default ``KLEConfig()`` (N = 65, s = 100, exponential
        kernel, l = 0.1, sigma^2 = 1).
    cache : bool, default=True
        Read and write the disk cache.
    cache_dir : path-like, optional
        Cache folder; default :func:`default_cache_dir`.
    threads : int, default=0
        Worker threads of the eigensolver (<= 0: all cores).
    **overrides
        ``KLEConfig`` fields replacing those of ``config``, e.g.
        ``kle_basis(grid=33, n_modes=10)``.

    Returns
    -------
    KLEBasis

    Raises
    ------
    ValueError
        Invalid parameters (see :class:`KLEConfig`).
    TypeError
        An override that is not a ``KLEConfig`` field (the message lists them).
    RuntimeError
        An eigenpair misses the residual check
        ``||C v - lambda v|| <= 1e-8 lambda_1`` (not expected).

    Notes
    -----
    docs/data.md §2. The covariance ``C`` (``N^2 x N^2``) is never formed for
    large ``N``: it commutes with the reflections x -> 1 - x and y -> 1 - y
    (and, isotropic, with x <-> y), so the eigenproblem splits into symmetry
    blocks of about ``N^2 / 8`` unknowns. Each block's product comes from
    the circulant embedding of ``C`` (size ``2(N - 1)`` a side) through its
    real trigonometric eigenbasis (small dense matrix products; FFT for
    ``N > 360``), and its top eigenpairs from thick-restart Lanczos with full
    reorthogonalisation (dense eigensolver for small blocks). The basis and
    sign rules are described in :class:`KLEBasis`. A cache file stores the
    configuration and a checksum; a corrupt or mismatched file is recomputed
    with a logged warning. A basis with fewer modes is served from a cached
    one of the same family with more modes.

    Examples
    --------
    >>> basis = kle_basis(grid=9, n_modes=4, cache=False)
    >>> basis.modes.shape
    (4, 9, 9)
    >>> bool(basis.eigenvalues[1] == basis.eigenvalues[2])  # the x <-> y pair
    True
    """
    if config is None:
        config = KLEConfig()
    if not isinstance(config, KLEConfig):
        msg = f"kle_basis: config must be a KLEConfig or None; got {type(config).__name__}."
        raise TypeError(msg)
    if overrides:
        config = dataclasses.replace(config, **config_kwargs(KLEConfig, overrides, error=TypeError))
    threads = check_int(threads, "threads", "kle_basis")
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    if cache:
        hit = _from_cache(folder, config)
        if hit is not None:
            return hit
    lx, ly = config.length_xy
    start = time.perf_counter()
    out = _core.kle_solve(
        config.grid,
        config.kernel,
        lx,
        ly,
        config.variance,
        config.n_modes,
        threads=threads,
    )
    seconds = time.perf_counter() - start
    info = {
        "source": "computed",
        "seconds": seconds,
        **{k: out[k] for k in _SOLVER_STATS},
    }
    basis = _make_basis(config, out["eigenvalues"], out["modes"], out["residuals"], info)
    logger.debug("KLE basis %s computed in %.3f s (%s)", config, seconds, info)
    if cache:
        path = _cache_path(folder, config)
        try:
            _save(path, config, basis)
        except OSError as exc:
            logger.warning("could not write the KLE cache file %s (%s).", path, exc)
    return basis


def covariance_matvec(
    v: ArrayLike, config: KLEConfig | None = None, *, threads: int = 0, **overrides: Any
) -> NDArray[np.float64]:
    """The covariance product ``C v`` without forming ``C`` (FFT circulant embedding).

    Parameters
    ----------
    v : array-like of shape (N, N) or (k, N, N)
        Field(s) on the grid, ``[iy, ix]``.
    config : KLEConfig, optional
        Kernel, length scale(s), variance and grid (``n_modes`` is unused).
    threads : int, default=0
        Worker threads for a batch (<= 0: all cores).
    **overrides
        ``KLEConfig`` fields replacing those of ``config``.

    Returns
    -------
    ndarray of the shape of ``v``
        ``(C v)[iy, ix] = sum_{jy, jx} k(x_ix - x_jx, y_iy - y_jy) v[jy, jx]``.

    Raises
    ------
    ValueError
        ``v`` of the wrong shape or not finite; invalid parameters.

    Notes
    -----
    ``C`` is block-Toeplitz with Toeplitz blocks; its circulant embedding of
    size ``M = 2(N - 1)`` a side (exact for kernels even in dx and dy) gives
    the product with real FFTs in O(N^2 log N).

    Examples
    --------
    >>> v = np.zeros((9, 9)); v[4, 4] = 1.0
    >>> cv = covariance_matvec(v, grid=9)
    >>> float(cv[4, 4]), round(float(cv[4, 5]), 4)  # k(0) and k(h) = exp(-1.25)
    (1.0, 0.2865)
    """
    if config is None:
        config = KLEConfig(n_modes=1)  # n_modes plays no part here
    if overrides:
        kwargs = config_kwargs(KLEConfig, {"n_modes": 1, **overrides}, error=TypeError)
        config = dataclasses.replace(config, **kwargs)
    caller = "covariance_matvec"
    v = as_float_array(v, "v", caller, ndim=(2, 3))
    n = config.grid
    if v.shape[-2:] != (n, n):
        msg = f"{caller}: v must have shape ({n}, {n}) or (k, {n}, {n}); got shape {v.shape}."
        raise ValueError(msg)
    lx, ly = config.length_xy
    flat = v.reshape(-1, n * n)
    out = _core.kle_matvec(n, config.kernel, lx, ly, config.variance, flat, threads=threads)
    return out.reshape(v.shape)
