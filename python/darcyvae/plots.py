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
