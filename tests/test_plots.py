from __future__ import annotations

import numpy as np
import pytest
from darcyvae import plots
from matplotlib.collections import PathCollection
from matplotlib.image import AxesImage


def _images(fig):
    return [im for ax in fig.axes for im in ax.get_images()]


def test_plot_reconstruction_panels_and_data(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.normal(size=(3, 9, 9))
    y_mean = y + 0.1 * rng.normal(size=(3, 9, 9))
    fig = plots.plot_reconstruction(y, y_mean, title="sample 0")
    images = _images(fig)
    assert len(images) == 9  # 3 channels x (data, reconstruction, error)
    for c in range(3):
        data, rec, err = (np.asarray(images[3 * c + k].get_array()) for k in range(3))
        np.testing.assert_allclose(data, y[c])
        np.testing.assert_allclose(rec, y_mean[c])
        np.testing.assert_allclose(err, y[c] - y_mean[c])
        assert images[3 * c].get_clim() == images[3 * c + 1].get_clim()  # shared limits
        lo, hi = images[3 * c + 2].get_clim()
        assert lo == -hi == pytest.approx(-np.abs(y[c] - y_mean[c]).max())
        assert images[3 * c].origin == "lower"
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:3] == ["p: data", "p: reconstruction", "p: error"]
    path = plots.save_figure(fig, tmp_path / "rec.png")
    assert path.stat().st_size > 1000
    with pytest.raises(ValueError, match="same shape"):
        plots.plot_reconstruction(y, y_mean[:2])
    with pytest.raises(ValueError, match="3-D"):
        plots.plot_reconstruction(y[0], y_mean[0])


def test_plot_latent_distributions_panels_and_data():
    rng = np.random.default_rng(1)
    zq, zp, th = rng.normal(size=(50, 2)), rng.normal(size=(80, 2)), rng.normal(size=(60, 2)) + 3
    fig = plots.plot_latent_distributions(zq, zp, th)
    assert len(fig.axes) == 3
    assert [ax.get_title() for ax in fig.axes] == [
        "aggregated posterior q(z)",
        "prior p(z)",
        "p(theta)",
    ]
    for ax, data in zip(fig.axes, (zq, zp, th), strict=True):
        (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
        np.testing.assert_allclose(points.get_offsets(), data)
    # The two latent panels share limits covering both sample sets.
    assert fig.axes[0].get_xlim() == fig.axes[1].get_xlim()
    lo, hi = fig.axes[0].get_xlim()
    both = np.concatenate([zq, zp])
    assert lo <= both[:, 0].min()
    assert hi >= both[:, 0].max()
    one_d = plots.plot_latent_distributions(zq[:, :1], zp[:, :1], th[:, :1])
    assert all(len(ax.patches) == 40 for ax in one_d.axes)  # histograms
    with pytest.raises(ValueError, match="same dimension"):
        plots.plot_latent_distributions(zq, zp[:, :1], th)


def test_plot_latent_vs_theta_grid_and_data():
    rng = np.random.default_rng(2)
    theta = rng.normal(size=(40, 2))
    z = np.stack([2 * theta[:, 1], -theta[:, 0]], axis=1)
    fig = plots.plot_latent_vs_theta(z, theta)
    scatter_axes = [ax for ax in fig.axes if ax.collections]
    hist_axes = [ax for ax in fig.axes if ax.patches]
    assert len(scatter_axes) == 4
    assert len(hist_axes) == 4
    for k, ax in enumerate(scatter_axes):
        i, j = divmod(k, 2)
        np.testing.assert_allclose(ax.collections[0].get_offsets(), np.c_[theta[:, j], z[:, i]])
        assert ax.get_xlabel() == f"theta_{j + 1}"
        assert ax.get_ylabel() == f"z_{i + 1}"
    heights = [sum(p.get_width() for p in ax.patches) for ax in hist_axes[:2]]  # horizontal
    assert heights == [40, 40]
    with pytest.raises(ValueError, match="same number of samples"):
        plots.plot_latent_vs_theta(z[:5], theta)
    assert isinstance(
        _images(plots.plot_reconstruction(z[None, :2, :2], z[None, :2, :2]))[0], AxesImage
    )
