"""Data handling shared by training and evaluation: datasets from paths, shape checks,
and the fingerprint of a training set that a checkpoint records (docs/safety.md,
Training: "The same data on resume")."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import numpy as np
import torch

from .dataset import ChannelStats, DarcyDataset
from .models import VAEConfig

__all__ = ["as_dataset", "check_fits", "data_fingerprint", "fingerprint_differences"]


def as_dataset(
    data: DarcyDataset | str | os.PathLike,
    *,
    normalize: bool,
    stats: ChannelStats | None,
    device: torch.device,
    caller: str,
) -> DarcyDataset:
    """``data`` itself, or the file it names read with (or without) normalisation.

    ``stats`` (the training statistics) normalises a file that is not the
    training file; ``normalize`` with ``stats=None`` uses the file's own.
    """
    if isinstance(data, DarcyDataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        mode = "channel" if (normalize or stats is not None) else False
        return DarcyDataset(data, normalize=mode, stats=stats, device=device)
    msg = f"{caller}: data must be a DarcyDataset or a path; got {type(data).__name__}."
    raise TypeError(msg)


def check_fits(config: VAEConfig, data: DarcyDataset, name: str, caller: str) -> None:
    """Raise ``ValueError`` unless ``data``'s fields are ``config.channels x grid x grid``."""
    if (data.channels, data.grid) != (config.channels, config.grid):
        msg = (
            f"{caller}: {name} fields are {data.channels} x {data.grid} x {data.grid} but the "
            f"model expects {config.channels} x {config.grid} x {config.grid}; set model.grid "
            "and model.channels to match."
        )
        raise ValueError(msg)


def data_fingerprint(data: DarcyDataset) -> dict[str, Any]:
    """What identifies a training set: file attributes, size, statistics and a digest.

    Returns
    -------
    dict
        ``attrs`` (the HDF5 root attributes as canonical JSON), ``n_samples``,
        ``shape`` (C, N, N), ``n_params``, ``normalization`` (mean and std
        per channel, or None) and ``theta_sha256`` (a digest of the
        generative parameters, which tells two seeds apart even when the
        attributes match).
    """
    attrs = getattr(data, "attrs", {}) or {}
    theta = np.ascontiguousarray(data.theta.detach().cpu().numpy())
    stats = data.stats
    return {
        "attrs": json.dumps(attrs, sort_keys=True, default=str),
        "n_samples": len(data),
        "shape": [data.channels, data.grid, data.grid],
        "n_params": data.n_params,
        "normalization": None
        if stats is None
        else {"mean": list(stats.mean), "std": list(stats.std)},
        "theta_sha256": hashlib.sha256(theta.tobytes()).hexdigest(),
    }


def fingerprint_differences(saved: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """Names of the fingerprint entries that differ (normalisation compared to 1e-9)."""
    out = []
    for key in sorted(set(saved) | set(now)):
        a, b = saved.get(key), now.get(key)
        if key == "normalization" and a is not None and b is not None:
            same = all(np.allclose(a[k], b[k], rtol=1e-9, atol=0.0) for k in ("mean", "std"))
        else:
            same = a == b
        if not same:
            out.append(key)
    return out
