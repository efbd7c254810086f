from __future__ import annotations

import json

import h5py
import numpy as np
import pytest
import torch
from _configs import tiny_train_config
from darcyvae.checkpoint import load_checkpoint, load_model
from darcyvae.dataset import DarcyDataset
from darcyvae.evaluation import (
    SplitMetrics,
    aggregated_posterior_sample,
    distortion_bound,
    evaluate,
    evaluate_losses,
    split_metrics,
)
from darcyvae.metrics import s_d, s_kl
from darcyvae.models import DenseVAE, model_config
from darcyvae.training import train
from matplotlib.image import imread

TINY = model_config("dense_vae_tiny")


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def run(tmp_path_factory, synthetic_h5):
    """A briefly trained tiny model (normalised data, hierarchical prior) and its files."""
    folder = tmp_path_factory.mktemp("eval")
    train_path = synthetic_h5(folder / "train.h5", n=48, grid=17, seed=0)
    test_path = synthetic_h5(folder / "test.h5", n=24, grid=17, seed=1)
    cfg = tiny_train_config(
        model=model_config("dense_vae_tiny", prior="hierarchical"),
        epochs=12,
        rec_epochs=4,
        normalize="channel",
        checkpoint_every=12,
    )
    result = train(cfg, train_path, test_path, out_dir=folder / "run", device="cpu", progress=False)
    return result, train_path, test_path


def test_evaluate_checkpoint_writes_results_and_figures(run, tmp_path):
    result, train_path, test_path = run
    out = tmp_path / "eval"
    ev = evaluate(result.checkpoint, test_path, train_data=train_path, out_dir=out)
    # The checkpoint's normalisation is applied: the numbers match train's own summary.
    assert ev.test.distortion == pytest.approx(result.final["test"]["distortion"], rel=1e-5)
    assert ev.train.rate == pytest.approx(result.final["train"]["rate"], rel=1e-5)
    assert ev.test.loss == pytest.approx(ev.test.rate + ev.test.distortion)
    assert ev.test.rate_per_dim == pytest.approx(ev.test.rate / 2)
    stats = load_checkpoint(result.checkpoint)["normalization"]
    test_set = DarcyDataset(test_path, normalize="channel", stats=train_path)
    assert tuple(stats["mean"]) == test_set.stats.mean
    assert ev.test.distortion_bound == pytest.approx(distortion_bound(test_set.y))
    summary = evaluate_losses(load_model(result.checkpoint), test_set)
    assert ev.test.s_d == pytest.approx(s_d(summary.z_mean, summary.theta))
    saved = json.loads((out / "results.json").read_text())
    assert saved["test"]["s_d"] == pytest.approx(ev.test.s_d)
    assert saved["train"]["n_samples"] == 48
    assert saved["over_regularized"] is False
    for name in ("reconstruction", "latent_distributions", "latent_vs_theta", "latent_traversal"):
        image = imread(out / f"{name}.png")
        assert image.shape[0] > 200
        assert image.shape[1] > 200
        assert ev.figures[name] == out / f"{name}.png"
    assert not list(out.glob(".*"))  # no temporary files left


def test_evaluate_model_object_without_figures(run):
    result, _, test_path = run
    model = load_model(result.checkpoint)
    ev = evaluate(model, test_path, n_latent_samples=3)
    assert ev.train is None
    assert ev.figures == {}
    assert ev.out_dir is None
    assert np.isfinite(ev.test.rate)
    assert ev.test.n_samples == 24
    assert model.training is False


def test_evaluate_flags_a_mean_decoder(tmp_path):
    # Encoder outputs exactly the prior (rate 0) and the decoder the data mean with
    # the data variance: Theorem 1's over-regularised solution.
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    y = rng.normal(size=(30, 3, 17, 17)).astype(np.float32) * 0.5 + 1.0
    model = DenseVAE(TINY)
    with torch.no_grad():
        for net in (model.encoder.mean_net, model.encoder.logvar_net):
            net.head.fc2.weight.zero_()
            net.head.fc2.bias.zero_()
        model.decoder.features.last.conv3.weight.zero_()
    mean = torch.as_tensor(y).mean(0)
    var = torch.as_tensor(y).var(0, unbiased=False).mean(0)
    model.decoder.register_forward_hook(
        lambda mod, inp, out: (out[0] + mean, torch.log(var)[None, None])
    )
    path = tmp_path / "data.h5"
    with h5py.File(path, "w") as fh:
        fh["output"] = y
        fh["generative_params"] = rng.normal(size=(30, 2)).astype(np.float32)
    ev = evaluate(model, path, n_latent_samples=2)
    assert ev.test.rate == pytest.approx(0.0, abs=1e-6)
    assert ev.test.distortion == pytest.approx(ev.test.distortion_bound, rel=0.02)
    assert ev.over_regularized
    # At the bound is not "trained" (docs/reproduction.md §6): the margin is about zero.
    assert not ev.test.trained
    assert not ev.trained
    assert abs(ev.test.margin_per_element) < 0.05


def test_evaluate_errors(run, tmp_path, synthetic_h5):
    result, _, test_path = run
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        evaluate(tmp_path / "nothing.pt", test_path)
    with pytest.raises(ValueError, match="skl_latent must be one of"):
        evaluate(result.checkpoint, test_path, skl_latent="median")
    other = synthetic_h5(tmp_path / "big.h5", n=4, grid=33)
    with pytest.raises(ValueError, match="model expects"):
        evaluate(result.checkpoint, other)
    with pytest.raises(ValueError, match="sample_index"):
        evaluate(result.checkpoint, test_path, sample_index=24)
    with pytest.raises(TypeError, match="DarcyDataset or a path"):
        evaluate(result.checkpoint, 3)


def test_split_metrics_margin_trained_and_s_kl_on_the_aggregated_posterior(run):
    result, _, test_path = run
    model = load_model(result.checkpoint)
    stats = load_checkpoint(result.checkpoint)["normalization"]
    data = DarcyDataset(test_path, normalize="channel", stats=stats["source"])
    summary = evaluate_losses(model, data, seed=5)
    m = split_metrics(model, data, seed=5, summary=summary)
    assert m.distortion_margin == pytest.approx(m.distortion_bound - m.distortion)
    n_el = int(np.prod(data.y.shape[1:]))
    assert m.margin_per_element == pytest.approx(m.distortion_margin / n_el)
    assert m.trained == (m.margin_per_element > 0.05)
    assert m.trained  # this model beats the bound
    # S_KL by default on one z ~ q(z|y) per y, drawn with the seed: the same number as
    # darcyvae.metrics.s_kl on that draw; with skl_latent="mean" on the encoder means.
    z = aggregated_posterior_sample(summary, 5)
    assert not np.allclose(z, summary.z_mean)
    ref = s_kl(z, summary.theta, seed=5)
    assert m.skl_latent == "sample"
    assert m.s_kl == pytest.approx(ref.score)
    assert m.s_kl_in_sample == getattr(ref, "in_sample", None)
    by_mean = split_metrics(model, data, seed=5, summary=summary, skl_latent="mean")
    assert by_mean.s_kl == pytest.approx(s_kl(summary.z_mean, summary.theta, seed=5).score)
    assert by_mean.s_kl != m.s_kl
    d = m.to_dict()
    for key in ("distortion_margin", "margin_per_element", "trained", "s_kl", "s_kl_in_sample"):
        assert key in d
    assert "margin" in m.line()
    assert SplitMetrics.from_dict(json.loads(json.dumps(d))) == m


def test_a_wide_latent_draws_the_ten_axes_that_spread_most(tmp_path, vae_data):
    """Was: evaluate of a latent_dim = 1000 model never ended (a traversal of
    3,000 x 5 panels, memory growing 35 MB/s). The per-axis figures now draw at most
    MAX_FIGURE_LATENTS axes, those whose codes spread most, and their titles say so."""
    import dataclasses

    from darcyvae.evaluation import MAX_FIGURE_LATENTS, shown_latents

    assert MAX_FIGURE_LATENTS == 10
    spread = np.array([5.0, 1.0, 9.0, 0.5, 7.0, 3.0, 8.0, 2.0, 6.0, 4.0, 10.0, 0.1, 11.0, 0.2])
    z = np.random.default_rng(0).standard_normal((200, 14)) * spread
    # all but the four narrowest (spreads 1, 0.5, 0.1, 0.2), in axis order
    assert shown_latents(z) == (0, 2, 4, 5, 6, 7, 8, 9, 10, 12)
    assert shown_latents(z[:, :4]) == (0, 1, 2, 3)  # few axes: all of them
    torch.manual_seed(0)
    model = DenseVAE(dataclasses.replace(TINY, latent_dim=30))
    out = tmp_path / "wide"
    ev = evaluate(model, vae_data.test, out_dir=out)
    h = imread(ev.figures["latent_traversal"]).shape[0]
    assert abs(h - 1.8 * 3 * 10 * 150) <= 2  # 10 axes x 3 channels (30 axes: 3 times taller)
    h = imread(ev.figures["latent_vs_theta"]).shape[0]
    assert abs(h - 2.6 * (10 + 1) * 150) <= 2


def test_evaluate_figures_say_their_units_and_are_100_dpi_or_more(run, tmp_path):
    """The traversal of a model trained on normalised data is drawn denormalised, and
    says so; every figure is written at >= 100 dpi (docs/api.md, the figures)."""
    from darcyvae import evaluation
    from PIL import Image

    result, train_path, test_path = run
    model = load_model(result.checkpoint)
    test_set = DarcyDataset(test_path, normalize="channel", stats=train_path)
    summary = evaluate_losses(model, test_set)
    fig = evaluation._traversal(model, summary, test_set)
    assert fig.get_suptitle().endswith("\nfields in physical units")
    ev = evaluate(result.checkpoint, test_path, train_data=train_path, out_dir=tmp_path / "ev")
    for path in ev.figures.values():
        with Image.open(path) as image:
            assert min(image.info["dpi"]) >= 100, path
