"""The reconstruction-only phase's reach (docs/reproduction.md §7, ``_common.reach_extra``).

A phase whose first learning rate cannot carry the decoder's output log-variance (the average
pixel) from its start to the data's per-pixel log-variance is lengthened by the missing
epochs; checked against an independent NumPy computation from the HDF5 file, on the finished
configuration (overrides included), and through the experiments.
"""

from __future__ import annotations

import math
from pathlib import Path

import h5py
import numpy as np
import pytest
from _vae_data import write_synthetic_h5
from darcyvae import experiments
from darcyvae.experiments import studies
from darcyvae.experiments._common import Context, lengthened, reach_extra, train_config
from hypothesis import given, settings
from hypothesis import strategies as st

N = 64  # samples in the test files


def _pixel_logvar(path: Path) -> np.ndarray:
    """log of the per-pixel variance averaged over the channels, by NumPy."""
    with h5py.File(path, "r") as fh:
        y = np.asarray(fh["output"], dtype=np.float64)
    return np.log(y.var(axis=0).mean(axis=0))


def _need(path: Path) -> float:
    """The average pixel's distance from zero."""
    return float(np.abs(_pixel_logvar(path)).mean())


def _file(folder: Path, log_variance: float, name: str = "train.h5") -> Path:
    """A synthetic training file rescaled so that the mean over pixels of its
    log-variance is ``log_variance``."""
    path = Path(write_synthetic_h5(folder / name, n=N, grid=17))
    with h5py.File(path, "r+") as fh:
        y = np.asarray(fh["output"], dtype=np.float64)
        now = float(np.log(y.var(axis=0).mean(axis=0)).mean())
        fh["output"][...] = (y * math.exp((log_variance - now) / 2)).astype(np.float32)
    return path


def _ctx(tmp_path: Path, scale: str = "cpu", **changes) -> Context:
    s = experiments.get_scale(scale).replace(**changes)
    return Context("x", tmp_path, tmp_path, s, 0, None, "cpu", False)


def _expected(path: Path, lr: float, batch: int, first: int) -> tuple[int, float]:
    """The missing epochs, and the ratio need / (lr * steps) they round up."""
    ratio = _need(path) / (lr * math.ceil(N / batch))
    return max(0, math.ceil(ratio) - first), ratio


def _assert_missing(got: int, path: Path, lr: float, batch: int, first: int) -> None:
    expected, ratio = _expected(path, lr, batch, first)
    on_a_tie = abs(ratio - round(ratio)) < 1e-5 * ratio  # float32 data: ceil may round up
    assert got == expected or (on_a_tie and abs(got - expected) == 1)


@pytest.fixture(scope="module")
def deep(tmp_path_factory) -> Path:
    """Fields whose log-variance lies 13.77 below zero on average."""
    return _file(tmp_path_factory.mktemp("reach"), -13.77)


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    """An HP configuration of the ``cpu`` scale, as the rule would find it."""
    return train_config(_ctx(tmp_path_factory.mktemp("ctx")), prior="hierarchical")


@settings(max_examples=25, deadline=None)
@given(
    lr=st.sampled_from([1e-4, 5e-4, 3e-3, 1e-2]),
    batch=st.integers(1, 80),
    first=st.integers(1, 5000),
    drops=st.booleans(),
)
def test_reach_extra_is_the_missing_epochs(deep, base, lr, batch, first, drops):
    """ceil(need / (lr * steps)) epochs at the first rate, less those the schedule has before
    its first drop (or its end, without drops); 0 where it has enough."""
    optim = {"batch_size": batch, "epochs": first + (300 if drops else 0)}
    optim |= {"lr_values": (lr, lr / 6), "lr_milestones": (first,)} if drops else {}
    optim |= {} if drops else {"lr_values": (lr,), "lr_milestones": ()}
    config = base.replace(optim=optim, beta={"rec_epochs": min(first, 200)})
    got = reach_extra(config, deep)
    _assert_missing(got, deep, lr, batch, first)
    steps = math.ceil(N / batch)
    assert lr * steps * (first + got) >= _need(deep) * (1 - 1e-6)  # it reaches
    if got:
        assert lr * steps * (first + got - 1) < _need(deep)  # by no more than it must


def test_the_need_is_the_average_pixel_s_distance(tmp_path, base):
    """A file whose mean log-variance is 0 still has pixels to move: the mean of |log var|,
    not |mean log var| (which would be 0)."""
    flat = _file(tmp_path, 0.0)
    assert _need(flat) > 0.1
    config = base.replace(optim={"lr_values": (1e-3, 1e-4), "lr_milestones": (1,)})
    _assert_missing(reach_extra(config, flat), flat, 1e-3, config.optim.batch_size, 1)
    assert reach_extra(config, flat) > 0


def test_reach_extra_follows_the_units(tmp_path, base):
    """Fields 100 times smaller: every pixel's log-variance 2 log 100 lower (all below 0),
    so the need, and the missing epochs at one step per epoch, grow by 2 log 100 / lr."""
    a = _file(tmp_path, -5.0, name="a.h5")
    assert np.all(_pixel_logvar(a) < 0)
    with h5py.File(a, "r") as fh:
        y = np.asarray(fh["output"])
    b = Path(write_synthetic_h5(tmp_path / "b.h5", n=N, grid=17))
    with h5py.File(b, "r+") as fh:
        fh["output"][...] = y / 100
    assert _need(b) - _need(a) == pytest.approx(2 * math.log(100), rel=1e-5)
    config = base.replace(optim={"lr_values": (3e-3, 1e-4), "lr_milestones": (1,)})
    ea, eb = (reach_extra(config, p) for p in (a, b))
    assert eb - ea == pytest.approx(2 * math.log(100) / 3e-3, abs=2)


def test_reach_extra_uses_the_normalised_units(tmp_path, base):
    """Normalised per channel, the fields look the same to the model whatever their raw
    units: the same missing epochs."""
    slow = {"lr_values": (1e-4, 1e-5), "lr_milestones": (1,)}
    config = base.replace(run={"normalize": "channel"}, optim=slow)
    a, b = _file(tmp_path, 0.0, name="a.h5"), _file(tmp_path, -18.0, name="b.h5")
    assert reach_extra(config, a) == reach_extra(config, b) > 0
    assert reach_extra(base.replace(optim=slow), b) > reach_extra(config, b)  # raw: further


def test_nothing_to_reach_without_a_phase_or_from_the_data_start(deep, base):
    assert reach_extra(base.replace(beta={"rec_epochs": 0}), deep) == 0
    assert reach_extra(base.replace(model={"output_logvar_init": "data"}), deep) == 0


def test_train_config_lengthens_the_phase_and_keeps_its_shape(tmp_path, deep):
    """An HP arm at the ``cpu`` scale: reconstruction phase, total and rate drops move by the
    same extra epochs; phase 2 keeps its length; the report gets a note."""
    ctx = _ctx(tmp_path)
    s = ctx.scale
    before = train_config(ctx, prior="hierarchical")
    grown = train_config(ctx, prior="hierarchical", train_path=deep)
    first = s.hp_lr_milestones[0] if s.hp_lr_milestones else s.hp_epochs
    extra, _ = _expected(deep, s.hp_lr_values[0], s.batch_size, first)
    assert extra > 0
    assert grown.beta.rec_epochs == before.beta.rec_epochs + extra
    assert grown.optim.epochs == before.optim.epochs + extra
    assert grown.optim.lr_milestones == tuple(m + extra for m in before.optim.lr_milestones)
    assert grown.optim.lr_values == before.optim.lr_values
    assert grown == lengthened(before, extra)
    assert any(f"to {grown.beta.rec_epochs} epochs" in n for n in ctx.notes)


@pytest.mark.parametrize(
    "kind",
    ["mixture", "rec override", "zero over a data scale", "ss batch override"],
)
def test_train_config_applies_the_rule_to_the_finished_config(tmp_path, deep, kind):
    """Overrides and the mixture factor come first; the rule then sees the configuration
    that trains (its rate, drops, batch, start and phase)."""
    ctx = _ctx(tmp_path, output_logvar_init="data" if kind.startswith("zero") else "zero")
    kw = {
        "mixture": {"prior": "hierarchical", "mixture": True},
        "rec override": {"prior": "hierarchical", "beta": {"rec_epochs": 50}},
        "zero over a data scale": {
            "prior": "hierarchical",
            "model": {"output_logvar_init": "zero"},
        },
        "ss batch override": {
            "prior": "scaled_gaussian",
            "schedule": "ss",
            "optim": {"batch_size": 32},
            "model": {"prior_variance": (1.0, 2.0)},
        },
    }[kind]
    before = train_config(ctx, **kw)
    grown = train_config(ctx, **kw, train_path=deep)
    miles = before.optim.lr_milestones
    first = miles[0] if miles else before.optim.epochs
    extra, _ = _expected(deep, before.optim.lr_values[0], before.optim.batch_size, first)
    assert extra > 0
    assert grown == lengthened(before, extra)


def test_train_config_leaves_schedules_that_reach(tmp_path, deep):
    """A first rate that covers the distance, a scale with the rule off, a run without a
    reconstruction phase, or a data start: the configuration as it is, and no note."""
    fast = _ctx(tmp_path, lr_values=(50.0, 1e-3), hp_lr_values=(50.0, 5e-4, 2.5e-4))
    off = _ctx(tmp_path, logvar_reach=False)
    plain = {"beta": {"rec_epochs": 0, "mode": "fixed", "value": 1.0}}
    data = {"prior": "hierarchical", "model": {"output_logvar_init": "data"}}
    cpu = _ctx(tmp_path)
    for ctx, kw in [
        (fast, {}),
        (fast, {"prior": "hierarchical"}),
        (off, {"prior": "hierarchical"}),
        (cpu, plain),
        (cpu, data),
    ]:
        assert train_config(ctx, **kw, train_path=deep) == train_config(ctx, **kw)
        assert not ctx.notes


def test_the_studies_hand_their_training_file_to_the_rule(tmp_path, monkeypatch, deep):
    """``gaussian`` builds its arms on its training file: on fields far below zero both
    arms' phases are lengthened (caught where an experiment forgets ``train_path``)."""
    seen = {}

    def capture(ctx, configs, paths, n):
        seen.update(configs)
        raise _Stop

    monkeypatch.setattr(studies, "dataset", lambda *a, **k: {"train": deep, "test": deep})
    monkeypatch.setattr(studies, "train_arms", capture)
    ctx = _ctx(tmp_path)
    with pytest.raises(_Stop):
        studies.gaussian(ctx)
    assert set(seen) == {"no HP", "HP"}
    for arm, prior in (("no HP", "std_norm"), ("HP", "hierarchical")):
        assert seen[arm].beta.rec_epochs > train_config(ctx, prior=prior).beta.rec_epochs, arm


class _Stop(Exception):
    """Raised by the captured trainer: the configurations are all the test needs."""
