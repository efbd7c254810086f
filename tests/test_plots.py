from __future__ import annotations

import numpy as np
import pytest
from darcyvae.darcy import solve
from darcyvae.plots import plot_darcy_sample, save_figure


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
