"""Figures. matplotlib is imported lazily, inside the functions.

Every public function builds and returns a ``matplotlib.figure.Figure``
(object-oriented API, no pyplot state, no GUI backend needed);
``save_figure`` writes it atomically.

Public names
------------
plot_darcy_sample
save_figure
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["save_figure"]


def _new_figure(**kwargs) -> Figure:
    """Return a new Figure without touching pyplot's global state."""
    try:
        from matplotlib.figure import Figure
    except ImportError as exc:  # pragma: no cover
        msg = "darcyvae.plots needs matplotlib: pip install matplotlib"
        raise ImportError(msg) from exc
    return Figure(**kwargs)


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) through a temporary file.

    The file appears complete or not at all. Returns the path written.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


if TYPE_CHECKING:  # pragma: no cover
    from numpy.typing import ArrayLike


def plot_darcy_sample(permeability: ArrayLike, output: ArrayLike) -> Figure:
    """Panels of one Darcy sample: permeability K, pressure p, velocities u_x, u_y.

    Parameters
    ----------
    permeability : array-like of shape (N, N) or (1, N, N)
        ``K[iy, ix]`` (the dataset's ``permeability[i]`` works as is).
    output : array-like of shape (3, N, N)
        ``(p, u_x, u_y)`` as returned by `darcyvae.darcy.solve`.

    Returns
    -------
    matplotlib.figure.Figure
        Four image panels on the unit square (``origin="lower"``, so y
        grows upwards), each with its colorbar.

    Raises
    ------
    ValueError
        Shapes that do not match (N, N) and (3, N, N).

    Examples
    --------
    >>> import numpy as np
    >>> from darcyvae.darcy import solve
    >>> k = np.ones((9, 9))
    >>> fig = plot_darcy_sample(k, solve(k))
    >>> len(fig.axes)
    8
    """
    import numpy as np

    k = np.asarray(permeability, dtype=float)
    if k.ndim == 3 and k.shape[0] == 1:
        k = k[0]
    out = np.asarray(output, dtype=float)
    if k.ndim != 2 or k.shape[0] != k.shape[1] or out.shape != (3, *k.shape):
        msg = (
            "plot_darcy_sample: permeability must have shape (N, N) and output (3, N, N); "
            f"got {k.shape} and {out.shape}."
        )
        raise ValueError(msg)
    fig = _new_figure(figsize=(14.0, 3.2), layout="constrained")
    axes = fig.subplots(1, 4)
    panels = [
        (k, "permeability $K$", "viridis"),
        (out[0], "pressure $p$", "RdBu_r"),
        (out[1], "velocity $u_x$", "PuOr_r"),
        (out[2], "velocity $u_y$", "PuOr_r"),
    ]
    for ax, (data, title, cmap) in zip(axes, panels, strict=True):
        image = ax.imshow(data, origin="lower", extent=(0.0, 1.0, 0.0, 1.0), cmap=cmap)
        ax.set_title(title)
        ax.set_xlabel("$x$")
        ax.set_ylabel("$y$")
        fig.colorbar(image, ax=ax)
    return fig


__all__ += ["plot_darcy_sample"]


# --- KLE figures (darcyvae.kle) ---------------------------------------------

__all__ += ["plot_eigenvalue_decay", "plot_kle_samples"]

if TYPE_CHECKING:  # pragma: no cover
    from collections.abc import Sequence

    import numpy as np

    from .kle import KLEBasis


def plot_kle_samples(
    bases: Sequence[KLEBasis],
    *,
    n_samples: int = 3,
    seed: int | np.random.Generator | None = 0,
    log_scale: bool = True,
    shared_scale: bool = False,
) -> Figure:
    """Sample permeability fields of several KLE truncations side by side (paper Fig. 1).

    Parameters
    ----------
    bases : sequence of KLEBasis
        One column each (e.g. KLE2, KLE10, KLE100, KLE1000), all on one grid.
    n_samples : int, default=3
        Rows: sample ``r`` draws one ``theta ~ N(0, I)`` of the largest width
        and each column uses its first ``s`` entries, so a row shows one draw
        at increasing truncation (the same seed in every column).
    seed : int, Generator or None, default=0
        Seed of the draws.
    log_scale : bool, default=True
        Colour ``K`` on a logarithmic scale.
    shared_scale : bool, default=False
        One colour scale (and colour bar) for all panels; by default each
        column has its own, below it (the truncations differ in variance).

    Returns
    -------
    matplotlib.figure.Figure
        Axes ``[row * n_cols + col]`` hold the fields (``origin="lower"``,
        unit square), the colour bars follow.

    Raises
    ------
    ValueError
        No bases, bases on different grids, ``n_samples < 1``.

    Examples
    --------
    >>> from darcyvae.kle import kle_basis
    >>> bases = [kle_basis(grid=9, n_modes=s, cache=False) for s in (2, 10)]
    >>> fig = plot_kle_samples(bases, n_samples=2)
    >>> len(fig.axes)  # 4 panels, 2 colour bars
    6
    """
    from matplotlib.colors import LogNorm, Normalize

    from ._checks import check_int
    from ._random import check_random_state

    caller = "plot_kle_samples"
    bases = list(bases)
    if not bases:
        msg = f"{caller}: bases must hold at least one KLEBasis; got none."
        raise ValueError(msg)
    grids = {b.grid for b in bases}
    if len(grids) != 1:
        msg = f"{caller}: bases must share one grid; got grids {sorted(grids)}."
        raise ValueError(msg)
    n_samples = check_int(n_samples, "n_samples", caller, low=1)
    rng = check_random_state(seed)
    width = max(b.n_modes for b in bases)
    theta = rng.standard_normal((n_samples, width))
    fields = [b.permeability(theta[:, : b.n_modes]) for b in bases]  # (n_samples, N, N) each
    if shared_scale:
        ranges = [(min(float(f.min()) for f in fields), max(float(f.max()) for f in fields))]
        ranges = ranges * len(fields)
    else:
        ranges = [(float(f.min()), float(f.max())) for f in fields]
    norm_type = LogNorm if log_scale else Normalize
    norms = [norm_type(lo, hi) for lo, hi in ranges]
    n_cols = len(bases)
    height = 2.3 * n_samples + (0.0 if shared_scale else 0.6)
    fig = _new_figure(figsize=(2.4 * n_cols + 0.8, height), layout="constrained")
    axes = fig.subplots(n_samples, n_cols, squeeze=False)
    images = []
    for r in range(n_samples):
        for c, (basis, field, norm) in enumerate(zip(bases, fields, norms, strict=True)):
            ax = axes[r, c]
            image = ax.imshow(
                field[r],
                origin="lower",
                extent=(0, 1, 0, 1),
                norm=norm,
                cmap="viridis",
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(f"KLE{basis.n_modes}")
            if c == 0:
                ax.set_ylabel(f"sample {r + 1}")
            if r == 0:
                images.append(image)
    if shared_scale:
        fig.colorbar(images[0], ax=axes, shrink=0.8, label="permeability K")
    else:
        from matplotlib.ticker import FormatStrFormatter, MaxNLocator, NullFormatter

        for c, image in enumerate(images):
            bar = fig.colorbar(image, ax=axes[:, c], location="bottom", shrink=0.9, label="K")
            lo, hi = ranges[c]
            if not log_scale or hi < 10 * lo:  # narrow range: a few plain ticks
                bar.ax.xaxis.set_major_locator(MaxNLocator(4))
                bar.ax.xaxis.set_major_formatter(FormatStrFormatter("%.2g"))
            bar.ax.xaxis.set_minor_formatter(NullFormatter())
    return fig


def plot_eigenvalue_decay(basis: KLEBasis) -> Figure:
    """Eigenvalues and the variance fraction kept against the number of modes.

    Parameters
    ----------
    basis : KLEBasis
        The basis (its ``n_modes`` eigenvalues are shown).

    Returns
    -------
    matplotlib.figure.Figure
        Left axes: ``lambda_i / trace(C)`` against ``i`` (log-log); right axes:
        ``sum_{j<=s} lambda_j / trace(C)`` against ``s``, with the paper's
        truncations (2, 10, 100, 1000) marked where available.

    Examples
    --------
    >>> from darcyvae.kle import kle_basis
    >>> fig = plot_eigenvalue_decay(kle_basis(grid=9, n_modes=20, cache=False))
    >>> [ax.get_xscale() for ax in fig.axes]
    ['log', 'log']
    """
    import numpy as np

    s = basis.n_modes
    i = np.arange(1, s + 1)
    lam = basis.eigenvalues / basis.trace
    kept = np.cumsum(basis.eigenvalues) / basis.trace
    fig = _new_figure(figsize=(9, 3.6), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.loglog(i, np.clip(lam, np.finfo(float).tiny, None), ".-", ms=3, lw=0.8)
    ax1.set_xlabel("mode i")
    ax1.set_ylabel("lambda_i / trace(C)")
    cfg = basis.config
    ax1.set_title(f"{cfg.kernel}, l = {cfg.length_scale}, N = {cfg.grid}")
    ax2.semilogx(i, kept, "-", lw=1.2)
    for mark in (2, 10, 100, 1000):
        if mark <= s:
            ax2.plot([mark], [kept[mark - 1]], "o", color="C3", ms=4)
            ax2.annotate(
                f"KLE{mark}: {kept[mark - 1]:.2f}",
                (mark, kept[mark - 1]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=8,
            )
    ax2.set_xlabel("modes kept s")
    ax2.set_ylabel("variance fraction")
    ax2.set_ylim(0, 1)
    return fig
