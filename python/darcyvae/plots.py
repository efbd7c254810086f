"""Figures. matplotlib is imported lazily, inside the functions.

Every public function builds and returns a ``matplotlib.figure.Figure``
(object-oriented API, no pyplot state, no GUI backend needed);
``save_figure`` writes it atomically.

Public names
------------
plot_darcy_sample
save_figure
plot_reconstruction
    A field, its reconstruction mean and the error (paper Fig. 6).
plot_latent_distributions
    Aggregated posterior, (learned) prior and p(theta) (paper Figs. 6, 9, 12).
plot_latent_vs_theta
    Latent means against theta with marginals (paper Fig. 7).
latent_traversal
    Decoded fields (p, u_x, u_y) along each latent axis.
plot_panels
    Line/scatter panels of the experiments (Figs. 3, 4, 5, 10, 14, 15).
plot_trial_scores
    S_D of every trial per arm, over-regularised and untrained ones marked (Figs. 8, 11-12).
plot_latent_grid
    Latent means of several trials, coloured by the mode of theta (Figs. 9, 11).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from ._io import atomic_path

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


DEFAULT_DPI = 150
"""Resolution of ``save_figure`` (the experiments' scales use 150, ``smoke`` 100)."""


def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: float = DEFAULT_DPI) -> Path:
    """Write ``fig`` to ``path`` (format from the suffix) through a temporary file.

    The file appears complete or not at all. Returns the path written. A
    figure with a layout engine (``layout="constrained"``) is saved as laid
    out; others are cropped to their content (``bbox_inches="tight"``, which
    costs a second draw). ``dpi`` (default 150) must be a finite number > 0.
    """
    from ._checks import check_real

    dpi = check_real(dpi, "dpi", "save_figure", low=0.0, low_open=True)
    path = Path(path)
    bbox = None if fig.get_layout_engine() is not None else "tight"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, bbox_inches=bbox, format=path.suffix.lstrip(".") or "png")
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


# --- VAE figures (darcyvae.evaluation) -------------------------------------

__all__ += ["plot_latent_distributions", "plot_latent_vs_theta", "plot_reconstruction"]


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
    title : str or None, default=None
        The figure's title (None: ``"aggregated posterior q(z), prior p(z)
        and p(theta)"``).

    Returns
    -------
    matplotlib.figure.Figure
        Three axes (q(z), p(z), p(theta)): scatter plots of coordinates
        ``dims`` (density histograms of coordinate 0 in one dimension); the
        latent panels share their axis limits.
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
            ax.set_ylabel("density")
    if zq.shape[1] >= 2:
        import numpy as np

        both = np.concatenate([zq[:, list(dims)], zp[:, list(dims)]])
        lo, hi = both.min(axis=0), both.max(axis=0)
        pad = 0.05 * (hi - lo + 1e-12)
        for ax in axes[:2]:
            ax.set_xlim(lo[0] - pad[0], hi[0] + pad[0])
            ax.set_ylim(lo[1] - pad[1], hi[1] + pad[1])
    fig.suptitle(title or "aggregated posterior q(z), prior p(z) and p(theta)")
    return fig


def plot_latent_vs_theta(
    z_mean, theta, *, title: str | None = None, dims: tuple[int, ...] | None = None
) -> Figure:
    """Latent means against the generative parameters, with marginals (paper Fig. 7).

    Parameters
    ----------
    z_mean : array-like of shape (m, n)
        Encoder means mu_phi(y) of the samples.
    theta : array-like of shape (m, s)
        Their generative parameters.
    title : str or None
        The figure's title (None: ``"latent means against theta"``).
    dims : tuple of int or None
        The latent coordinates drawn, one row each, labelled by their own
        index (None: all n; ``evaluate`` passes at most ten of a wide latent).

    Returns
    -------
    matplotlib.figure.Figure
        A len(dims) x s grid of scatter plots (row i: z_i, column j: theta_j),
        a bottom row with the histogram of each theta_j and a right column
        with the histogram of each z_i (their count axes labelled "count");
        a disentangled latent shows one tight curve per row.
    """
    caller = "plot_latent_vs_theta"
    z = _as_numpy(z_mean, "z_mean", caller, 2)
    th = _as_numpy(theta, "theta", caller, 2)
    if len(z) != len(th):
        msg = f"{caller}: z_mean and theta must have the same number of samples; got {len(z)} and {len(th)}."
        raise ValueError(msg)
    dims = tuple(range(z.shape[1])) if dims is None else tuple(int(d) for d in dims)
    if not dims or any(d < 0 or d >= z.shape[1] for d in dims):
        msg = f"{caller}: dims must be latent coordinates in [0, {z.shape[1]}); got {dims}."
        raise ValueError(msg)
    z = z[:, list(dims)]
    n, s = z.shape[1], th.shape[1]
    fig = _new_figure(figsize=(2.6 * (s + 1), 2.6 * (n + 1)), layout="constrained")
    grid = fig.add_gridspec(n + 1, s + 1, width_ratios=[3] * s + [1], height_ratios=[3] * n + [1])
    for i in range(n):
        for j in range(s):
            ax = fig.add_subplot(grid[i, j])
            ax.scatter(th[:, j], z[:, i], s=4, alpha=0.6, color="C0")
            ax.set_xlabel(f"theta_{j + 1}")
            ax.set_ylabel(f"z_{dims[i] + 1}")
        ax = fig.add_subplot(grid[i, s])
        ax.hist(z[:, i], bins=30, orientation="horizontal", color="C1", alpha=0.7)
        ax.set_title(f"z_{dims[i] + 1}", fontsize="small")
        ax.set_xlabel("count")
    for j in range(s):
        ax = fig.add_subplot(grid[n, j])
        ax.hist(th[:, j], bins=30, color="C2", alpha=0.7)
        ax.set_xlabel(f"theta_{j + 1}")
        ax.set_ylabel("count")
    fig.suptitle(title or "latent means against theta")
    return fig


__all__ += [
    "latent_traversal",
    "plot_cell_scores",
    "plot_latent_grid",
    "plot_panels",
    "plot_trial_scores",
]


def latent_traversal(
    model,
    *,
    center=None,
    offsets=None,
    dims: tuple[int, ...] | None = None,
    denormalize=None,
    channel_names: tuple[str, ...] = ("p", "u_x", "u_y"),
    title: str | None = None,
    units: str | None = None,
) -> Figure:
    """Decode a grid of latent values into fields: one block of rows per latent axis.

    Latent axis ``d`` is moved through ``center[d] + offsets`` while the
    other coordinates stay at ``center``; each decoded mean mu_psi(z) is
    drawn as one image per channel.

    Parameters
    ----------
    model : DenseVAE
        A trained model (its ``decode`` is called in eval mode, no gradients).
    center : array-like of shape (n,) or None
        The latent point traversed around (None: the origin, the prior's mean).
    offsets : array-like of shape (k,) or None
        The steps along each axis (None: -2, -1, 0, 1, 2).
    dims : tuple of int or None
        The latent axes traversed (None: all).
    denormalize : callable or None
        Maps decoded (k, C, N, N) tensors back to physical units (e.g.
        ``DarcyDataset.denormalize``).
    channel_names : tuple of str
    title : str or None
        The figure's title (None: ``"latent traversal: decoder mean along
        each latent axis"``); the units follow it on a second line.
    units : str or None
        The units of the decoded fields, said under the title and on each
        colour bar. None: ``"physical units"`` with ``denormalize``, else
        ``"normalised units"`` (pass ``units="physical units"`` for a model
        trained on data that were not normalised).

    Returns
    -------
    matplotlib.figure.Figure
        ``len(dims) * C`` rows by ``k`` columns of images (``origin="lower"``);
        images of one row share colour limits, the column titles give z, the
        title says the units.
    """
    import numpy as np
    import torch

    caller = "latent_traversal"
    n = int(model.config.latent_dim)
    center = np.zeros(n) if center is None else _as_numpy(center, "center", caller, 1)
    if center.shape != (n,):
        msg = f"{caller}: center must have shape ({n},); got {center.shape}."
        raise ValueError(msg)
    offsets = (
        np.linspace(-2.0, 2.0, 5) if offsets is None else _as_numpy(offsets, "offsets", caller, 1)
    )
    if len(offsets) < 1 or not np.all(np.isfinite(offsets)) or not np.all(np.isfinite(center)):
        msg = f"{caller}: center and offsets must be finite and offsets non-empty."
        raise ValueError(msg)
    dims = tuple(range(n)) if dims is None else tuple(int(d) for d in dims)
    if not dims or any(d < 0 or d >= n for d in dims):
        msg = f"{caller}: dims must be latent axes in [0, {n}); got {dims}."
        raise ValueError(msg)
    if units is None:
        units = "physical units" if denormalize is not None else "normalised units"
    elif not isinstance(units, str) or not units.strip():
        msg = f"{caller}: units must be a non-empty string or None; got {units!r}."
        raise TypeError(msg)
    device = next(model.parameters()).device
    fields = []
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for d in dims:
                z = np.repeat(center[None, :], len(offsets), axis=0)
                z[:, d] = center[d] + offsets
                zt = torch.as_tensor(z, dtype=torch.float32, device=device)
                y = model.decode(zt)[0]
                if denormalize is not None:
                    y = denormalize(y)
                fields.append(y.detach().cpu().double().numpy())
    finally:
        model.train(was_training)
    c = fields[0].shape[1]
    k = len(offsets)
    fig = _new_figure(figsize=(1.9 * k + 1.0, 1.8 * c * len(dims)), layout="constrained")
    axes = fig.subplots(c * len(dims), k, squeeze=False)
    for b, d in enumerate(dims):
        for ch in range(c):
            row = b * c + ch
            lo, hi = float(fields[b][:, ch].min()), float(fields[b][:, ch].max())
            name = channel_names[ch] if ch < len(channel_names) else f"channel {ch}"
            for j in range(k):
                ax = axes[row, j]
                im = ax.imshow(
                    fields[b][j, ch],
                    origin="lower",
                    cmap="viridis",
                    vmin=lo,
                    vmax=hi,
                    extent=(0, 1, 0, 1),
                )
                ax.set_xticks([])
                ax.set_yticks([])
                if ch == 0:
                    ax.set_title(f"z_{d + 1} = {center[d] + offsets[j]:.2g}", fontsize="small")
                if j == 0:
                    ax.set_ylabel(f"{name} (z_{d + 1})")
            bar = fig.colorbar(im, ax=axes[row, -1], shrink=0.8)
            bar.set_label(f"{name} [{units}]", fontsize="small")
    head = title or "latent traversal: decoder mean along each latent axis"
    fig.suptitle(f"{head}\nfields in {units}")
    return fig


def plot_panels(
    panels: list[dict], *, title: str | None = None, ncols: int | None = None
) -> Figure:
    """Panels of curves, one dict per panel.

    Each panel dict has ``series`` (label -> (x, y), or label -> (x, y, style)
    with style one of "line", "scatter", "line+marker"), ``xlabel``,
    ``ylabel``, ``title`` and optionally ``hlines`` (label -> y value),
    ``logx``/``logy`` (bool), ``band`` (label -> (x, low, high)), ``legend``
    (bool, default True).

    Returns
    -------
    matplotlib.figure.Figure
        One axes per panel, with the given titles and axis labels.
    """
    import numpy as np

    if not panels:
        msg = "plot_panels: give at least one panel."
        raise ValueError(msg)
    ncols = ncols or min(len(panels), 3)
    nrows = -(-len(panels) // ncols)
    fig = _new_figure(figsize=(4.6 * ncols, 3.8 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, panel in zip(axes, panels, strict=False):
        for i, (label, spec) in enumerate(panel.get("series", {}).items()):
            x = np.asarray(spec[0], dtype=float)
            y = np.asarray(spec[1], dtype=float)
            style = spec[2] if len(spec) > 2 else "line"
            color = f"C{i % 10}"
            if style == "scatter":
                ax.scatter(x, y, s=14, color=color, label=label)
            elif style == "line+marker":
                ax.plot(x, y, "o-", ms=3, color=color, label=label)
            else:
                ax.plot(x, y, color=color, label=label, lw=1.2)
        for i, (label, (x, lo, hi)) in enumerate(panel.get("band", {}).items()):
            ax.fill_between(
                np.asarray(x, float), lo, hi, alpha=0.2, color=f"C{i % 10}", label=label
            )
        for i, (label, yv) in enumerate(panel.get("hlines", {}).items()):
            ax.axhline(yv, ls="--", color=f"C{(i + 7) % 10}", lw=1, label=label)
        if panel.get("logx"):
            ax.set_xscale("symlog" if panel.get("logx") == "symlog" else "log")
        if panel.get("logy"):
            ax.set_yscale("symlog" if panel.get("logy") == "symlog" else "log")
        ax.set_xlabel(panel.get("xlabel", ""))
        ax.set_ylabel(panel.get("ylabel", ""))
        ax.set_title(panel.get("title", ""))
        if panel.get("legend", True) and ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="x-small")
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig


def plot_trial_scores(
    arms: dict,
    *,
    threshold: float | None = 0.9,
    title: str | None = None,
) -> Figure:
    """S_D of every trial, one column per arm (paper Figs. 8, 11-12 in one number per trial).

    Parameters
    ----------
    arms : dict of str to dict
        Per arm: ``s_d`` (list of float or None), ``over_regularized`` and
        ``trained`` (lists of bool of the same length).
    threshold : float or None
        S_D drawn as the "disentangled" line.

    Returns
    -------
    matplotlib.figure.Figure
        One axes; trained trials as dots, untrained ones as open circles,
        over-regularised ones as red crosses; x tick labels give k/n counts.
    """
    import numpy as np

    if not arms:
        msg = "plot_trial_scores: give at least one arm."
        raise ValueError(msg)
    fig = _new_figure(figsize=(2.2 + 1.8 * len(arms), 4.0), layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    labels = []
    for i, (arm, d) in enumerate(arms.items()):
        sd = np.asarray([np.nan if v is None else v for v in d["s_d"]], dtype=float)
        over = np.asarray(d.get("over_regularized", [False] * len(sd)), dtype=bool)
        ok = np.asarray(d.get("trained", [True] * len(sd)), dtype=bool)
        x = i + rng.uniform(-0.15, 0.15, len(sd))
        ax.scatter(
            x[ok & ~over], sd[ok & ~over], s=22, color="C0", label="trained" if i == 0 else None
        )
        ax.scatter(
            x[~ok & ~over],
            sd[~ok & ~over],
            s=22,
            facecolors="none",
            edgecolors="C1",
            label="did not beat the bound" if i == 0 else None,
        )
        ax.scatter(
            x[over],
            sd[over],
            s=30,
            marker="x",
            color="C3",
            label="over-regularised" if i == 0 else None,
        )
        n_dis = int(np.sum((sd >= (threshold or 2)) & ok))
        labels.append(f"{arm}\n{n_dis}/{len(sd)} disent.\n{int(over.sum())}/{len(sd)} over-reg.")
    ax.set_xticks(range(len(arms)), labels)
    if threshold is not None:
        ax.axhline(threshold, ls="--", color="grey", lw=1)
    ax.set_ylim(0.45, 1.02)
    ax.set_ylabel("S_D (test)")
    ax.set_title(title or "disentanglement of every trial")
    ax.legend(fontsize="x-small", loc="lower right")
    return fig


def plot_cell_scores(
    cells: dict,
    *,
    threshold: float | None = 0.9,
    title: str | None = None,
) -> Figure:
    """S_D of every trial by cell (x) and arm (colour): the sensitivity study's figure.

    Parameters
    ----------
    cells : dict of str to dict of str to dict
        ``cells[cell][arm]`` holds ``s_d`` (list of float or None),
        ``trained`` and ``over_regularized`` (lists of bool of the same length).
    threshold : float or None
        S_D drawn as the "disentangled" line.

    Returns
    -------
    matplotlib.figure.Figure
        One axes; per cell one column of points per arm, side by side: filled
        when the trial beat the Theorem-1 bound, open when it did not, a cross
        when it ended over-regularised.
    """
    import numpy as np

    if not cells:
        msg = "plot_cell_scores: give at least one cell."
        raise ValueError(msg)
    arms = list(dict.fromkeys(a for c in cells.values() for a in c))
    fig = _new_figure(figsize=(2.0 + 1.3 * len(cells), 4.6), layout="constrained")
    ax = fig.subplots()
    rng = np.random.default_rng(0)
    width = 0.7 / max(len(arms), 1)
    for i, per_arm in enumerate(cells.values()):
        for j, arm in enumerate(arms):
            d = per_arm.get(arm)
            if not d:
                continue
            sd = np.asarray([np.nan if v is None else v for v in d["s_d"]], dtype=float)
            ok = np.asarray(d.get("trained", [True] * len(sd)), dtype=bool)
            over = np.asarray(d.get("over_regularized", [False] * len(sd)), dtype=bool)
            x = i + (j - (len(arms) - 1) / 2) * width + rng.uniform(-0.3, 0.3, len(sd)) * width
            color = f"C{j}"
            first = i == 0
            ax.scatter(
                x[ok & ~over], sd[ok & ~over], s=18, color=color, label=arm if first else None
            )
            ax.scatter(x[~ok & ~over], sd[~ok & ~over], s=18, facecolors="none", edgecolors=color)
            ax.scatter(x[over], sd[over], s=26, marker="x", color=color)
    ax.scatter([], [], s=18, facecolors="none", edgecolors="grey", label="did not beat the bound")
    ax.scatter([], [], s=26, marker="x", color="grey", label="over-regularised")
    ax.set_xticks(range(len(cells)), list(cells), rotation=30, ha="right")
    if threshold is not None:
        ax.axhline(threshold, ls="--", color="grey", lw=1)
    ax.set_ylim(0.45, 1.02)
    ax.set_ylabel("S_D (test)")
    ax.set_title(title or "S_D of every trial, by cell and arm")
    ax.legend(fontsize="x-small", loc="lower right")
    return fig


def plot_latent_grid(
    latents: list,
    thetas: list,
    titles: list[str],
    *,
    ncols: int = 4,
    title: str | None = None,
) -> Figure:
    """Latent means of several models, each point coloured by the quadrant of its theta.

    A disentangled model separates the four colours along the axes; a
    rotated one along the diagonals (paper Figs. 9, 11).

    Returns
    -------
    matplotlib.figure.Figure
        One scatter axes (z_1 against z_2) per model.
    """
    import numpy as np

    if not latents or len(latents) != len(thetas) or len(latents) != len(titles):
        msg = "plot_latent_grid: latents, thetas and titles must be non-empty and of equal length."
        raise ValueError(msg)
    ncols = min(ncols, len(latents))
    nrows = -(-len(latents) // ncols)
    fig = _new_figure(figsize=(3.0 * ncols, 3.0 * nrows), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax, z, th, t in zip(axes, latents, thetas, titles, strict=False):
        z = _as_numpy(z, "latents", "plot_latent_grid", 2)
        th = _as_numpy(th, "thetas", "plot_latent_grid", 2)
        quadrant = (th[:, 0] > np.median(th[:, 0])).astype(int) * 2 + (
            th[:, 1] > np.median(th[:, 1])
        ).astype(int)
        ax.scatter(z[:, 0], z[:, 1], c=quadrant, cmap="tab10", vmin=0, vmax=9, s=5)
        ax.set_title(t, fontsize="small")
        ax.set_xlabel("z_1")
        ax.set_ylabel("z_2")
        ax.set_aspect("equal", adjustable="datalim")
    for ax in axes[len(latents) :]:
        ax.set_visible(False)
    if title:
        fig.suptitle(title)
    return fig
