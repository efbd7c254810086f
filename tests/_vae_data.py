"""The writer of synthetic docs/data.md §1c files behind the `synthetic_h5` and `vae_data` fixtures."""

from __future__ import annotations

import h5py
import numpy as np


def synthetic_fields(theta: np.ndarray, grid: int, noise: float, rng) -> np.ndarray:
    """Smooth 3-channel fields driven by the first two entries of each theta row."""
    x = np.linspace(0.0, 1.0, grid)
    xx, yy = np.meshgrid(x, x)  # [iy, ix]
    b1, b2 = np.cos(np.pi * xx), np.cos(np.pi * yy)
    b3 = np.sin(np.pi * xx) * np.sin(np.pi * yy)
    t1 = theta[:, 0, None, None]
    t2 = theta[:, 1, None, None]
    p = t1 * b1 + t2 * b2 + 0.3 * t1 * t2 * b3
    ux = np.tanh(0.5 * t1) * b3 + 0.2 * t2 * b1
    uy = 0.5 * np.sin(t2) * b3 - 0.2 * t1 * b2
    y = np.stack([p, ux, uy], axis=1)
    return (y + noise * rng.standard_normal(y.shape)).astype(np.float32)


def write_synthetic_h5(
    path, *, n: int = 64, grid: int = 17, s: int = 2, seed: int = 0, noise: float = 0.01
) -> str:
    """An HDF5 file in the docs/data.md §1c layout with y a smooth function of theta."""
    rng = np.random.default_rng(seed)
    theta = rng.standard_normal((n, s)).astype(np.float32)
    y = synthetic_fields(theta, grid, noise, rng)
    perm = np.exp(y[:, :1]).astype(np.float32)
    with h5py.File(path, "w") as fh:
        fh.create_dataset("generative_params", data=theta)
        fh.create_dataset("permeability", data=perm)
        fh.create_dataset("output", data=y)
        fh.attrs.update(
            {
                "grid": grid,
                "kernel": "synthetic",
                "length_scale": 0.1,
                "n_modes": s,
                "distribution": "normal",
                "seed": seed,
                "scheme": "none",
                "version": "test",
            }
        )
    return str(path)
