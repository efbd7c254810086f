"""Figures. matplotlib is imported lazily, inside the functions.

Every public function builds and returns a ``matplotlib.figure.Figure``
(object-oriented API, no pyplot state, no GUI backend needed);
``save_figure`` writes it atomically.

Public names
------------
save_figure
plot_reconstruction
    A field, its reconstruction mean and the error (paper Fig. 6).
plot_latent_distributions
    Aggregated posterior, (learned) prior and p(theta) (paper Figs. 6, 9, 12).
plot_latent_vs_theta
    Latent means against theta with marginals (paper Fig. 7).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

__all__ = ["save_figure"]
__all__ += ["plot_latent_distributions", "plot_latent_vs_theta", "plot_reconstruction"]


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


# --------------------------------------------------------------------------- VAE figures


def _as_numpy(value, name: str, caller: str, ndim: int):
    import numpy as np

    if hasattr(value, "detach"):  # torch tensors, on any device
        value = value.detach().cpu().numpy()
    arr = np.asarray(value, dtype=float)
    if arr.ndim != ndim:
        msg = f"{caller}: {name} must be {ndim}-D; got shape {arr.shape}."
        raise ValueError(msg)
    return arr


def plot_reconstruction(
    y,
    y_mean,
    *,
    channel_names: tuple[str, ...] = ("p", "u_x", "u_y"),
    title: str | None = None,
) -> Figure:
    """A field, its reconstruction mean and the error, one row per channel (paper Fig. 6).

    Parameters
    ----------
    y, y_mean : array-like of shape (C, N, N)
        The test sample and the decoder mean mu_psi(z) of its encoding.
    channel_names : tuple of str, default=("p", "u_x", "u_y")
        Row labels (extra channels are numbered).
    title : str or None

    Returns
    -------
    matplotlib.figure.Figure
        C x 3 image axes (columns: data, reconstruction, error = data -
        reconstruction), each with a colour bar; data and reconstruction
        of a row share colour limits. Images use ``origin="lower"``.
    """
    import numpy as np

    caller = "plot_reconstruction"
    y = _as_numpy(y, "y", caller, 3)
    y_mean = _as_numpy(y_mean, "y_mean", caller, 3)
    if y.shape != y_mean.shape:
        msg = f"{caller}: y and y_mean must have the same shape; got {y.shape} and {y_mean.shape}."
        raise ValueError(msg)
    c = y.shape[0]
    fig = _new_figure(figsize=(9.0, 2.8 * c), layout="constrained")
    axes = fig.subplots(c, 3, squeeze=False)
    for i in range(c):
        name = channel_names[i] if i < len(channel_names) else f"channel {i}"
        lo = float(min(y[i].min(), y_mean[i].min()))
        hi = float(max(y[i].max(), y_mean[i].max()))
        err = y[i] - y_mean[i]
        emax = float(np.abs(err).max()) or 1.0
        panels = (
            (y[i], f"{name}: data", "viridis", lo, hi),
            (y_mean[i], f"{name}: reconstruction", "viridis", lo, hi),
            (err, f"{name}: error", "RdBu_r", -emax, emax),
        )
        for j, (img, label, cmap, vmin, vmax) in enumerate(panels):
            ax = axes[i, j]
            im = ax.imshow(
                img, origin="lower", cmap=cmap, vmin=vmin, vmax=vmax, extent=(0, 1, 0, 1)
            )
            ax.set_title(label)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, shrink=0.85)
    if title:
        fig.suptitle(title)
    return fig


def plot_latent_distributions(
    z_posterior,
    z_prior,
    theta,
    *,
    dims: tuple[int, int] = (0, 1),
    title: str | None = None,
) -> Figure:
    """Aggregated posterior, (learned) prior and p(theta) side by side (paper Figs. 6, 9, 12).

    Parameters
    ----------
    z_posterior : array-like of shape (m, n)
        Samples z ~ q_phi(z|y) over the data (the aggregated posterior).
    z_prior : array-like of shape (k, n)
        Samples of the (learned) prior p(z).
    theta : array-like of shape (l, s)
        Samples of the generative parameters.
    dims : (int, int), default=(0, 1)
        The two coordinates shown where there are two or more.

    Returns
    -------
    matplotlib.figure.Figure
        Three axes (q(z), p(z), p(theta)): scatter plots of coordinates
        ``dims`` (histograms of coordinate 0 in one dimension); the latent
        panels share their axis limits.
    """
    caller = "plot_latent_distributions"
    zq = _as_numpy(z_posterior, "z_posterior", caller, 2)
    zp = _as_numpy(z_prior, "z_prior", caller, 2)
    th = _as_numpy(theta, "theta", caller, 2)
    if zq.shape[1] != zp.shape[1]:
        msg = f"{caller}: z_posterior and z_prior must have the same dimension; got {zq.shape[1]} and {zp.shape[1]}."
        raise ValueError(msg)
    fig = _new_figure(figsize=(12.0, 4.0), layout="constrained")
    axes = fig.subplots(1, 3)
    panels = (
        (zq, "aggregated posterior q(z)", "C0", "z"),
        (zp, "prior p(z)", "C1", "z"),
        (th, "p(theta)", "C2", "theta"),
    )
    for ax, (data, label, color, sym) in zip(axes, panels, strict=True):
        ax.set_title(label)
        if data.shape[1] >= 2:
            a, b = dims
            ax.scatter(data[:, a], data[:, b], s=4, alpha=0.5, color=color)
            ax.set_xlabel(f"{sym}_{a + 1}")
            ax.set_ylabel(f"{sym}_{b + 1}")
            ax.set_aspect("equal", adjustable="box")
        else:
            ax.hist(data[:, 0], bins=40, density=True, color=color, alpha=0.7)
            ax.set_xlabel(f"{sym}_1")
    if zq.shape[1] >= 2:
        import numpy as np

        both = np.concatenate([zq[:, list(dims)], zp[:, list(dims)]])
        lo, hi = both.min(axis=0), both.max(axis=0)
        pad = 0.05 * (hi - lo + 1e-12)
        for ax in axes[:2]:
            ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    if title:
        fig.suptitle(title)
    return fig


def plot_latent_vs_theta(z_mean, theta, *, title: str | None = None) -> Figure:
    """Latent means against the generative parameters, with marginals (paper Fig. 7).

    Parameters
    ----------
    z_mean : array-like of shape (m, n)
        Encoder means mu_phi(y) of the samples.
    theta : array-like of shape (m, s)
        Their generative parameters.

    Returns
    -------
    matplotlib.figure.Figure
        An n x s grid of scatter plots (row i: z_i, column j: theta_j), a
        bottom row with the histogram of each theta_j and a right column
        with the histogram of each z_i; a disentangled latent shows one
        tight curve per row.
    """
    caller = "plot_latent_vs_theta"
    z = _as_numpy(z_mean, "z_mean", caller, 2)
    th = _as_numpy(theta, "theta", caller, 2)
    if len(z) != len(th):
        msg = f"{caller}: z_mean and theta must have the same number of samples; got {len(z)} and {len(th)}."
        raise ValueError(msg)
    n, s = z.shape[1], th.shape[1]
    fig = _new_figure(figsize=(2.6 * (s + 1), 2.6 * (n + 1)), layout="constrained")
    grid = fig.add_gridspec(n + 1, s + 1, width_ratios=[3] * s + [1], height_ratios=[3] * n + [1])
    for i in range(n):
        for j in range(s):
            ax = fig.add_subplot(grid[i, j])
            ax.scatter(th[:, j], z[:, i], s=4, alpha=0.6, color="C0")
            ax.set_xlabel(f"theta_{j + 1}")
            ax.set_ylabel(f"z_{i + 1}")
        ax = fig.add_subplot(grid[i, s])
        ax.hist(z[:, i], bins=30, orientation="horizontal", color="C1", alpha=0.7)
        ax.set_title(f"z_{i + 1}", fontsize="small")
    for j in range(s):
        ax = fig.add_subplot(grid[n, j])
        ax.hist(th[:, j], bins=30, color="C2", alpha=0.7)
        ax.set_xlabel(f"theta_{j + 1}")
    if title:
        fig.suptitle(title)
    return fig
