"""The reconstruction-only phase's reach (docs/reproduction.md §7, ``_common.reach_extra``).

A phase whose first learning rate cannot carry the decoder's output log-variance from its
start to the data's per-pixel log-variance is lengthened by the missing epochs; checked
against an independent NumPy computation from the HDF5 file, and through ``train_config``.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from _vae_data import write_synthetic_h5
from darcyvae import experiments
from darcyvae.experiments._common import Context, reach_extra, train_config
from hypothesis import given, settings
from hypothesis import strategies as st


def _file(folder: Path, log_variance: float, name: str = "train.h5") -> Path:
    """A 64-sample synthetic training file rescaled so that the mean over pixels of the
    log of its per-pixel variance (averaged over the channels) is ``log_variance``."""
    path = Path(write_synthetic_h5(folder / name, n=64, grid=17))
    with h5py.File(path, "r+") as fh:
        y = np.asarray(fh["output"], dtype=np.float64)
        now = float(np.log(y.var(axis=0).mean(axis=0)).mean())
        fh["output"][...] = (y * math.exp((log_variance - now) / 2)).astype(np.float32)
    return path


def _need(path: Path) -> float:
    """|mean over pixels of log(per-pixel variance averaged over channels)|, by NumPy."""
    with h5py.File(path, "r") as fh:
        y = np.asarray(fh["output"], dtype=np.float64)
    return abs(float(np.log(y.var(axis=0).mean(axis=0)).mean()))


def _ctx(tmp_path: Path, scale: str = "cpu", **changes) -> Context:
    s = experiments.get_scale(scale).replace(**changes)
    return Context("x", tmp_path, tmp_path, s, 0, None, "cpu", False)


@pytest.fixture(scope="module")
def small_fields(tmp_path_factory) -> Path:
    """Fields whose log-variance lies 13.77 below zero."""
    return _file(tmp_path_factory.mktemp("reach"), -13.77)


@settings(max_examples=25, deadline=None)
@given(
    lr=st.sampled_from([1e-4, 5e-4, 3e-3, 1e-2]),
    batch=st.integers(1, 80),
    first=st.integers(0, 5000),
)
def test_reach_extra_is_the_missing_epochs(small_fields, lr, batch, first):
    """Independent computation: ceil(need / (lr * steps)) epochs at the first rate, less
    those the schedule already has; 0 where it has enough."""
    scale = experiments.get_scale("cpu")
    need = _need(small_fields)
    steps = math.ceil(64 / batch)
    ratio = need / (lr * steps)
    expected = max(0, math.ceil(ratio) - first)
    got = reach_extra(small_fields, scale, "zero", lr, batch, first)
    on_a_tie = abs(ratio - round(ratio)) < 1e-5 * ratio  # float32 data: ceil may round up
    assert got == expected or (on_a_tie and abs(got - expected) == 1)
    assert lr * steps * (first + got) >= need * (1 - 1e-6)  # it reaches
    if got:
        assert lr * steps * (first + got - 1) < need  # and by no more than it must


def test_reach_extra_follows_the_units(tmp_path):
    """Fields 100 times smaller have a log-variance 2 log 100 lower; the extra epochs
    follow, at one step per epoch (64 samples, batch 64)."""
    scale = experiments.get_scale("cpu")
    a = _file(tmp_path, -5.0, name="a.h5")
    with h5py.File(a, "r") as fh:
        y = np.asarray(fh["output"])
    b = Path(write_synthetic_h5(tmp_path / "b.h5", n=64, grid=17))
    with h5py.File(b, "r+") as fh:
        fh["output"][...] = y / 100
    assert _need(b) - _need(a) == pytest.approx(2 * math.log(100), rel=1e-5)
    lr = 3e-3
    ea, eb = (reach_extra(p, scale, "zero", lr, 64, 0) for p in (a, b))
    assert eb - ea == pytest.approx(2 * math.log(100) / lr, abs=2)


def test_reach_extra_from_the_data_start_is_zero(small_fields):
    """Started at the data's log-variance (``output_logvar_init = "data"``) nothing is left
    to travel."""
    assert reach_extra(small_fields, experiments.get_scale("cpu"), "data", 1e-6, 64, 0) == 0


def test_reach_extra_uses_the_normalised_units(tmp_path):
    """With per-channel normalisation the model sees unit-scale fields: the need, and the
    extra epochs, do not depend on the raw units."""
    scale = experiments.get_scale("cpu-fast")  # normalize = "channel"
    a, b = _file(tmp_path, 0.0, name="a.h5"), _file(tmp_path, -18.0, name="b.h5")
    ea, eb = (reach_extra(p, scale, "zero", 1e-3, 64, 0) for p in (a, b))
    assert ea == eb


def test_train_config_lengthens_the_phase_and_keeps_its_shape(tmp_path, small_fields):
    """An HP arm at the ``cpu`` scale: reconstruction phase, total and rate drops move by the
    same extra epochs; phase 2 keeps its length; the report gets a note."""
    ctx = _ctx(tmp_path)
    s = ctx.scale
    base = train_config(ctx, prior="hierarchical")
    grown = train_config(ctx, prior="hierarchical", data=small_fields)
    first = s.hp_lr_milestones[0] if s.hp_lr_milestones else s.hp_epochs
    extra = reach_extra(small_fields, s, "zero", s.hp_lr_values[0], s.batch_size, first)
    assert extra > 0
    assert grown.beta.rec_epochs == base.beta.rec_epochs + extra
    assert grown.optim.epochs == base.optim.epochs + extra
    assert grown.optim.lr_milestones == tuple(m + extra for m in base.optim.lr_milestones)
    assert grown.optim.lr_values == base.optim.lr_values
    assert grown.optim.epochs - grown.beta.rec_epochs == base.optim.epochs - base.beta.rec_epochs
    assert any("lengthened" in n and str(grown.beta.rec_epochs) in n for n in ctx.notes)


def test_train_config_leaves_schedules_that_reach(tmp_path):
    """Fields at unit scale need no travel: the ``cpu`` schedules stay as they are; and a
    scale with the rule off, a run without a reconstruction phase, or a data start never
    change."""
    unit = _file(tmp_path, 0.0)
    ctx = _ctx(tmp_path)
    for prior in ("std_norm", "hierarchical"):
        assert train_config(ctx, prior=prior, data=unit) == train_config(ctx, prior=prior)
    small = _file(tmp_path, -14.0, name="small.h5")
    off = _ctx(tmp_path, logvar_reach=False)
    assert train_config(off, prior="hierarchical", data=small) == train_config(
        off, prior="hierarchical"
    )
    plain = {"beta": {"rec_epochs": 0, "mode": "fixed", "value": 1.0}}
    assert train_config(ctx, data=small, **plain) == train_config(ctx, **plain)
    model = {"output_logvar_init": "data"}
    assert train_config(ctx, prior="hierarchical", model=model, data=small) == train_config(
        ctx, prior="hierarchical", model=model
    )
    assert not ctx.notes
