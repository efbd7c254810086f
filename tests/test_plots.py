from __future__ import annotations

import numpy as np
import pytest
from darcyvae import plots
from darcyvae.darcy import solve
from darcyvae.kle import kle_basis
from darcyvae.plots import plot_darcy_sample, plot_eigenvalue_decay, plot_kle_samples, save_figure
from matplotlib.collections import PathCollection
from matplotlib.image import AxesImage


def test_plot_darcy_sample_draws_the_four_fields(tmp_path):
    rng = np.random.default_rng(0)
    k = np.exp(rng.standard_normal((17, 17)))
    out = solve(k)
    fig = plot_darcy_sample(k[None], out)
    images = [ax for ax in fig.axes if ax.images]
    assert len(images) == 4
    assert len(fig.axes) == 8  # one colorbar per panel
    for ax, data in zip(images, [k, out[0], out[1], out[2]], strict=True):
        image = ax.images[0]
        assert image.origin == "lower"
        assert np.array_equal(image.get_array(), data)
        assert image.get_clim() == pytest.approx((data.min(), data.max()))
        assert image.get_extent() == [0.0, 1.0, 0.0, 1.0]
    assert [ax.get_title() for ax in images] == [
        "permeability $K$",
        "pressure $p$",
        "velocity $u_x$",
        "velocity $u_y$",
    ]
    path = save_figure(fig, tmp_path / "sample.png")
    assert path.stat().st_size > 0


def test_plot_darcy_sample_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match=r"output \(3, N, N\)"):
        plot_darcy_sample(np.ones((9, 9)), np.ones((3, 8, 8)))
    with pytest.raises(ValueError, match="permeability must have shape"):
        plot_darcy_sample(np.ones((9, 8)), np.ones((3, 9, 8)))


@pytest.fixture(scope="module")
def kle_bases():
    return [kle_basis(grid=17, n_modes=s, cache=False) for s in (2, 10, 100, 289)]


@pytest.mark.parametrize("shared", [False, True])
def test_plot_kle_samples_panels_and_data(kle_bases, shared):
    fig = plot_kle_samples(kle_bases, n_samples=2, seed=3, shared_scale=shared)
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 8
    assert len(fig.axes) == 8 + (1 if shared else 4)  # plus the colour bars
    assert [ax.get_title() for ax in panels[:4]] == ["KLE2", "KLE10", "KLE100", "KLE289"]
    theta = np.random.default_rng(3).standard_normal((2, 289))  # one draw per row
    fields = [b.permeability(theta[:, : b.n_modes]) for b in kle_bases]
    for r in range(2):
        for c, basis in enumerate(kle_bases):
            image = panels[r * 4 + c].images[0]
            data = np.asarray(image.get_array())
            assert data.shape == (17, 17)
            assert image.origin == "lower"
            assert tuple(image.get_extent()) == (0, 1, 0, 1)
            np.testing.assert_allclose(data, basis.permeability(theta[r, : basis.n_modes]))
            assert np.all(data > 0)
            group = fields if shared else [fields[c]]
            assert image.norm.vmin == pytest.approx(min(f.min() for f in group))
            assert image.norm.vmax == pytest.approx(max(f.max() for f in group))
    # more modes add small-scale variation to the same draw
    log_k = [np.log(np.asarray(panels[c].images[0].get_array())) for c in range(4)]
    roughness = [np.abs(np.diff(g, axis=1)).sum() + np.abs(np.diff(g, axis=0)).sum() for g in log_k]
    assert roughness[0] < roughness[1] < roughness[3]


def test_plot_kle_samples_bad_input(kle_bases):
    with pytest.raises(ValueError, match="bases must hold at least one KLEBasis"):
        plot_kle_samples([])
    other = kle_basis(grid=9, n_modes=2, cache=False)
    with pytest.raises(ValueError, match=r"bases must share one grid; got grids \[9, 17\]"):
        plot_kle_samples([kle_bases[0], other])
    with pytest.raises(ValueError, match="n_samples must be an integer in"):
        plot_kle_samples(kle_bases, n_samples=0)


def test_plot_eigenvalue_decay_data(kle_bases, tmp_path):
    basis = kle_bases[2]
    fig = plot_eigenvalue_decay(basis)
    ax1, ax2 = fig.axes
    x, y = ax1.lines[0].get_data()
    np.testing.assert_array_equal(x, np.arange(1, 101))
    np.testing.assert_allclose(y, basis.eigenvalues / 17**2)
    assert ax1.get_xscale() == "log"
    assert ax1.get_yscale() == "log"
    x2, kept = ax2.lines[0].get_data()
    np.testing.assert_array_equal(x2, x)
    assert np.all(np.diff(kept) > 0)
    assert kept[-1] == pytest.approx(basis.variance_fraction)
    marks = [tuple(line.get_xdata()) for line in ax2.lines[1:]]
    assert marks == [(2,), (10,), (100,)]
    path = save_figure(fig, tmp_path / "decay.png")
    assert path.read_bytes()[:4] == b"\x89PNG"


# --- VAE figures (darcyvae.evaluation) -----------------------------------------


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
    # Some latent coordinates only, labelled by their own index.
    wide = np.c_[z, 3 * z[:, :1]]
    fig = plots.plot_latent_vs_theta(wide, theta, dims=(0, 2), title="2 of 3")
    scatter_axes = [ax for ax in fig.axes if ax.collections]
    assert len(scatter_axes) == 4
    assert [ax.get_ylabel() for ax in scatter_axes] == ["z_1", "z_1", "z_3", "z_3"]
    np.testing.assert_allclose(scatter_axes[2].collections[0].get_offsets()[:, 1], wide[:, 2])
    with pytest.raises(ValueError, match="dims must be latent coordinates"):
        plots.plot_latent_vs_theta(z, theta, dims=(2,))
    assert isinstance(
        _images(plots.plot_reconstruction(z[None, :2, :2], z[None, :2, :2]))[0], AxesImage
    )


# --- experiment figures (darcyvae.experiments) -------------------------------------


def _png_size(path):
    import struct

    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])  # IHDR width, height


def test_latent_traversal_decodes_the_grid(tmp_path):
    import torch
    from darcyvae.models import DenseVAE, VAEConfig

    torch.manual_seed(0)
    model = DenseVAE(VAEConfig(grid=9, blocks=(1, 1, 1), growth_rate=2, fc_hidden=8)).eval()
    center = np.array([0.5, -1.0])
    offsets = np.array([-1.0, 0.0, 2.0])
    fig = plots.latent_traversal(
        model, center=center, offsets=offsets, denormalize=lambda y: 2 * y + 1
    )
    images = _images(fig)
    assert len(images) == 2 * 3 * 3  # latent axes x channels x steps
    for d in range(2):
        z = np.repeat(center[None], 3, axis=0)
        z[:, d] += offsets
        with torch.no_grad():
            expected = 2 * model.decode(torch.tensor(z, dtype=torch.float32))[0].numpy() + 1
        for ch in range(3):
            row = images[(d * 3 + ch) * 3 : (d * 3 + ch + 1) * 3]
            for j, im in enumerate(row):
                np.testing.assert_allclose(im.get_array(), expected[j, ch], rtol=1e-6)
                assert im.origin == "lower"
                assert im.get_clim() == row[0].get_clim()  # one colour scale per row
    titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
    assert titles[:3] == ["z_1 = -0.5", "z_1 = 0.5", "z_1 = 2.5"]
    assert fig.axes[0].get_ylabel() == "p (z_1)"
    path = plots.save_figure(fig, tmp_path / "trav.png", dpi=50)
    w, h = _png_size(path)
    fw, fh = fig.get_size_inches() * 50
    assert abs(w - fw) <= 2
    assert abs(h - fh) <= 2
    with pytest.raises(ValueError, match="dims must be latent axes"):
        plots.latent_traversal(model, dims=(2,))
    with pytest.raises(ValueError, match="center must have shape"):
        plots.latent_traversal(model, center=[0.0])


def test_plot_panels_series_labels_and_bound(tmp_path):
    x = np.linspace(0, 1, 5)
    fig = plots.plot_panels(
        [
            {
                "series": {"a": (x, x**2), "b": (x, -x, "scatter")},
                "xlabel": "alpha",
                "ylabel": "loss",
                "title": "one",
                "hlines": {"bound": -3.0},
            },
            {
                "series": {"c": (x, x, "line+marker")},
                "xlabel": "t",
                "ylabel": "S_D",
                "title": "two",
                "logx": "symlog",
            },
        ],
        title="panels",
    )
    ax1, ax2 = [ax for ax in fig.axes if ax.get_visible()]
    assert (ax1.get_title(), ax1.get_xlabel(), ax1.get_ylabel()) == ("one", "alpha", "loss")
    np.testing.assert_allclose(ax1.lines[0].get_ydata(), x**2)
    np.testing.assert_allclose(ax1.collections[0].get_offsets(), np.c_[x, -x])
    assert ax1.lines[-1].get_ydata()[0] == -3.0  # the horizontal bound line
    assert ax2.get_xscale() == "symlog"
    # 4.6 x 3.8 inches per panel, up to 3 columns; a constrained layout is saved
    # as laid out (not cropped), so the PNG is exactly the figure size x dpi
    np.testing.assert_allclose(fig.get_size_inches(), [9.2, 3.8])
    assert _png_size(plots.save_figure(fig, tmp_path / "p.png", dpi=40)) == (368, 152)
    four = plots.plot_panels([{"series": {"a": (x, x)}}] * 4)
    assert [ax.get_visible() for ax in four.axes] == [True] * 4 + [False] * 2  # 2 rows of 3
    np.testing.assert_allclose(four.get_size_inches(), [13.8, 7.6])
    assert _png_size(plots.save_figure(four, tmp_path / "four.png", dpi=20)) == (276, 152)
    with pytest.raises(ValueError, match="at least one panel"):
        plots.plot_panels([])


def test_plot_trial_scores_marks_every_trial():
    fig = plots.plot_trial_scores(
        {
            "no HP": {
                "s_d": [0.95, 0.5, None],
                "over_regularized": [False, True, False],
                "trained": [True, True, False],
            },
            "HP": {
                "s_d": [0.99, 0.97],
                "over_regularized": [False, False],
                "trained": [True, True],
            },
        }
    )
    (ax,) = fig.axes
    n_points = sum(len(c.get_offsets()) for c in ax.collections)
    assert n_points == 5  # no trial dropped
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert labels[0].startswith("no HP")
    assert "1/3 disent." in labels[0]
    assert "1/3 over-reg." in labels[0]
    assert "2/2 disent." in labels[1]


def test_plot_latent_grid_one_panel_per_model():
    rng = np.random.default_rng(3)
    th = rng.normal(size=(30, 2))
    fig = plots.plot_latent_grid([th, -th, th @ [[0, 1], [1, 0]]], [th] * 3, ["a", "b", "c"])
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert [ax.get_title() for ax in visible] == ["a", "b", "c"]
    np.testing.assert_allclose(visible[1].collections[0].get_offsets(), -th)
    with pytest.raises(ValueError, match="equal length"):
        plots.plot_latent_grid([th], [th, th], ["a"])


def test_plot_cell_scores_places_every_trial_by_cell_and_arm():
    cells = {
        "raw-a": {
            "no HP": {
                "s_d": [0.95, 0.6],
                "trained": [True, False],
                "over_regularized": [False, False],
            },
            "HP": {"s_d": [0.7], "trained": [True], "over_regularized": [True]},
        },
        "chan-b": {
            "no HP": {
                "s_d": [None, 0.8],
                "trained": [True, True],
                "over_regularized": [False, False],
            }
        },
    }
    fig = plots.plot_cell_scores(cells, title="t")
    (ax,) = fig.axes
    assert [t.get_text() for t in ax.get_xticklabels()] == ["raw-a", "chan-b"]
    points = [p for coll in ax.collections for p in coll.get_offsets() if np.isfinite(p).all()]
    assert len(points) == 4  # None is not drawn
    # every point sits in its cell's column, the two arms on either side of it
    xs = sorted((float(x), float(y)) for x, y in points)
    assert all(-0.5 < x < 0.5 for x, _ in xs[:3])
    assert 0.5 < xs[3][0] < 1.5
    assert xs[3][1] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="at least one cell"):
        plots.plot_cell_scores({})


# --- figures that say what they show (docs/api.md, the evaluation figures) ----------


def test_latent_distributions_has_a_title_and_labelled_count_axes():
    """Was: no title unless one was passed, and the 1-D histograms' y axes unlabelled."""
    rng = np.random.default_rng(3)
    zq, zp, th = rng.normal(size=(50, 2)), rng.normal(size=(80, 2)), rng.normal(size=(60, 2))
    fig = plots.plot_latent_distributions(zq, zp, th)
    assert fig.get_suptitle() == "aggregated posterior q(z), prior p(z) and p(theta)"
    assert plots.plot_latent_distributions(zq, zp, th, title="mine").get_suptitle() == "mine"
    one_d = plots.plot_latent_distributions(zq[:, :1], zp[:, :1], th[:, :1])
    assert one_d.get_suptitle()
    assert [ax.get_ylabel() for ax in one_d.axes] == ["density"] * 3
    fig = plots.plot_latent_vs_theta(zq, th[:50])
    assert fig.get_suptitle() == "latent means against theta"
    hist_axes = [ax for ax in fig.axes if ax.patches]
    assert len(hist_axes) == 4
    # the z marginals are horizontal (counts on x), the theta marginals vertical
    assert [ax.get_xlabel() for ax in hist_axes[:2]] == ["count", "count"]
    assert [ax.get_ylabel() for ax in hist_axes[2:]] == ["count", "count"]


def test_a_traversal_says_the_units_of_its_fields():
    """Was: nothing told decoded fields in physical units from normalised ones."""
    import torch
    from darcyvae.models import DenseVAE, VAEConfig

    torch.manual_seed(0)
    model = DenseVAE(VAEConfig(grid=9, blocks=(1, 1, 1), growth_rate=2, fc_hidden=8)).eval()
    physical = plots.latent_traversal(model, denormalize=lambda y: 2 * y + 1)
    assert physical.get_suptitle().endswith("\nfields in physical units")
    normalised = plots.latent_traversal(model, title="my traversal")
    assert normalised.get_suptitle() == "my traversal\nfields in normalised units"
    bars = [ax.get_ylabel() for ax in normalised.axes if not ax.images and ax.get_ylabel()]
    assert bars[:3] == ["p [normalised units]", "u_x [normalised units]", "u_y [normalised units]"]
    raw = plots.latent_traversal(model, units="physical units (not normalised)")
    assert raw.get_suptitle().endswith("fields in physical units (not normalised)")
    with pytest.raises(TypeError, match="units must be a non-empty string"):
        plots.latent_traversal(model, units="")


def _png_dpi(path):
    from PIL import Image

    with Image.open(path) as image:
        return image.info["dpi"]


def test_figures_are_saved_at_100_dpi_or_more(tmp_path):
    fig = plots.plot_latent_distributions(np.ones((3, 2)), np.ones((3, 2)), np.ones((3, 2)))
    assert plots.DEFAULT_DPI >= 100
    dpi = _png_dpi(save_figure(fig, tmp_path / "a.png"))
    assert dpi == pytest.approx((plots.DEFAULT_DPI, plots.DEFAULT_DPI), abs=0.5)
    with pytest.raises(ValueError, match="dpi must be a finite float in"):
        save_figure(fig, tmp_path / "b.png", dpi=0)
    with pytest.raises(TypeError, match="dpi must be a real number"):
        save_figure(fig, tmp_path / "b.png", dpi="150")
    assert not (tmp_path / "b.png").exists()
