from __future__ import annotations

import numpy as np
import pytest
from darcyvae.darcy import solve
from darcyvae.kle import kle_basis
from darcyvae.plots import plot_darcy_sample, plot_eigenvalue_decay, plot_kle_samples, save_figure


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
