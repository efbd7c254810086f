"""Figures. matplotlib is imported lazily, inside the functions.

Every public function builds and returns a ``matplotlib.figure.Figure``
(object-oriented API, no pyplot state, no GUI backend needed);
``save_figure`` writes it atomically.

Public names
------------
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
