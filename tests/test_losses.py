"""darcyvae.losses: explicit noise (for batched ensembles) and the released-code variants."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from _configs import tiny_train_config
from darcyvae.losses import (
    BetaSchedule,
    LossTerms,
    guarded_loss,
    hierarchical_bound_terms,
    label_loss,
    update_beta,
    vae_loss,
)
from darcyvae.models import DenseVAE, VAENoise, model_config
from darcyvae.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.mark.parametrize(
    "overrides",
    [{}, {"prior": "hierarchical"}, {"prior": "hierarchical", "hp_variant": "full"}],
)
def test_pre_drawn_noise_reproduces_the_generator_draws(overrides):
    torch.manual_seed(0)
    model = DenseVAE(model_config("dense_vae_tiny", **overrides))
    y = torch.randn(5, 3, 17, 17)
    g1 = torch.Generator().manual_seed(11)
    g2 = torch.Generator().manual_seed(11)
    a = vae_loss(model, y, beta=0.3, beta_p=0.7, generator=g1)
    noise = model.draw_noise(len(y), g2)
    assert isinstance(noise, VAENoise)
    assert (noise.xi is not None) == model.hierarchical
    b = vae_loss(model, y, beta=0.3, beta_p=0.7, noise=noise)
    for name in ("loss", "rec", "reg", "distortion", "rate"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name
    assert torch.equal(a.output.z, b.output.z)
    # Both generators advanced by exactly the same draws.
    assert torch.equal(g1.get_state(), g2.get_state())
    # Other noise gives other losses (the noise is really used).
    c = vae_loss(model, y, beta=0.3, beta_p=0.7, noise=model.draw_noise(len(y), g2))
    assert not torch.equal(a.output.z, c.output.z)


def test_noise_for_a_concatenated_labelled_batch():
    """``labeled=n_l``: eps_z covers [batch; labelled] in one draw, eps_xi only the batch,
    in the order the concatenated forward and the hierarchical bound draw them."""
    model = DenseVAE(model_config("dense_vae_tiny", prior="hierarchical"))
    g1 = torch.Generator().manual_seed(4)
    g2 = torch.Generator().manual_seed(4)
    noise = model.draw_noise(5, g1, labeled=3)
    assert torch.equal(noise.z, torch.randn(8, 2, generator=g2))
    assert torch.equal(noise.xi, torch.randn(5, 2, generator=g2))
    assert torch.equal(g1.get_state(), g2.get_state())
    with pytest.raises(ValueError, match="labeled"):
        model.draw_noise(5, g1, labeled=-1)


def test_noise_shape_and_type_errors():
    model = DenseVAE(model_config("dense_vae_tiny", prior="hierarchical"))
    y = torch.randn(4, 3, 17, 17)
    with pytest.raises(ValueError, match="noise must have shape"):
        model(y, noise=torch.zeros(3, 2))
    with pytest.raises(TypeError, match="VAENoise"):
        vae_loss(model, y, noise=torch.zeros(4, 2))
    with pytest.raises(ValueError, match=r"noise\.xi"):
        vae_loss(model, y, noise=VAENoise(torch.zeros(4, 2), None))
    z = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="noise must have shape"):
        hierarchical_bound_terms(model.prior, z, z, z, noise=torch.zeros(4, 3))


# --------------------------------------------------------------------------- released variants


def test_beta_p_follows_the_rule_with_the_log_density_uncapped():
    sched = BetaSchedule(rec_epochs=1, adaptive_beta_p=True, beta_p0=1e-8)
    assert sched.weights(0)[1].item() == pytest.approx(1e-8)
    sched.step(0, torch.tensor(5.0), torch.tensor(-3.0))  # phase 1: no update
    assert sched.beta_p.item() == pytest.approx(1e-8)
    # prior_nll = -3, so L = +mean log p = +3 > 0: shrink by exp(-nu L).
    sched.step(1, torch.tensor(5.0), torch.tensor(-3.0))
    assert sched.beta_p.item() == pytest.approx(1e-8 * math.exp(-0.005 * 3.0), rel=1e-6)
    # prior_nll = +2: L = -2 < 0, f = tanh(beta_p - 1): grows.
    b = sched.beta_p.item()
    sched.step(1, torch.tensor(5.0), torch.tensor(2.0))
    hand = b * math.exp(0.005 * math.tanh(b - 1.0) * -2.0)
    assert sched.beta_p.item() == pytest.approx(hand, rel=1e-6)
    # Not capped at 1 (beta is): near 1 with a very negative L it passes 1.
    sched.load_state_dict({"beta": 0.9999, "beta_p": 0.9999})
    sched.step(1, torch.tensor(-1e4), torch.tensor(1e4))
    hand = 0.9999 * math.exp(0.005 * math.tanh(0.9999 - 1.0) * -1e4)
    assert hand > 1.0
    assert sched.beta_p.item() == pytest.approx(hand, rel=1e-5)
    assert sched.beta.item() == 1.0
    assert update_beta(0.9999, -1e4, cap=None) == pytest.approx(hand, rel=1e-12)


def test_beta_p_is_one_without_the_full_variant():
    sched = BetaSchedule(rec_epochs=0, adaptive_beta_p=False)
    sched.step(0, torch.tensor(1.0), torch.tensor(-3.0))
    assert sched.weights(0)[1].item() == 1.0


def _terms(rec: float, reg: float, loss: float) -> LossTerms:
    t = [torch.tensor(v) for v in (loss, rec, reg, 0.0, 0.0)]
    return LossTerms(*t, None, None)


def test_guarded_loss_sets_beta_to_one_above_the_threshold():
    loss, fired = guarded_loss(_terms(rec=2.0, reg=3e10, loss=2.0 + 1e-9 * 3e10))
    assert bool(fired)
    assert loss.item() == pytest.approx(2.0 + 3e10)
    loss, fired = guarded_loss(_terms(rec=2.0, reg=5e9, loss=2.0 + 1e-9 * 5e9))
    assert not bool(fired)
    assert loss.item() == pytest.approx(2.0 + 5.0)
    loss, fired = guarded_loss(_terms(rec=2.0, reg=50.0, loss=2.0), threshold=10.0)
    assert bool(fired)
    assert loss.item() == pytest.approx(52.0)


def test_phase1_guard_in_training_counts_its_steps(vae_data, tmp_path):
    # A prior variance of 1e-12 makes L_reg ~ mu^2 / v far above 1e10.
    model = model_config("dense_vae_tiny", prior="scaled_gaussian", prior_variance=(1e-12, 1e-12))
    runs = {}
    for guard in (False, True):
        cfg = tiny_train_config(
            model=model, epochs=1, lr_values=(1e-3,), max_restarts=0, phase1_guard=guard
        )
        runs[guard] = train(
            cfg, vae_data.train, out_dir=tmp_path / str(guard), device="cpu", progress=False
        ).history[0]
    assert "guard_steps" not in runs[False]
    assert runs[True]["guard_steps"] == 4  # 64 samples / 16: every step fired
    # beta = 1 instead of 1e-7: the logged loss carries the huge rate.
    assert runs[True]["objective"] > 1e10
    assert runs[False]["objective"] < 1e-6 * runs[True]["objective"]


def test_label_loss_summed_over_latent_dims_by_hand():
    # The released semi-supervised term (docs/model.md §4f): -sum_k log N(theta_k; mu_k, sigma_k^2)
    # per labelled pair, whatever the reduction of the rest of the loss.
    mu = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=torch.float64)
    logvar = torch.tensor([[0.0, math.log(4.0)], [math.log(0.25), 0.0]], dtype=torch.float64)
    theta = torch.tensor([[1.0, 1.0], [1.5, 0.0]], dtype=torch.float64)

    def nll(t, m, v):
        return 0.5 * (math.log(2 * math.pi * v) + (t - m) ** 2 / v)

    hand = [
        nll(1.0, 0.0, 1.0) + nll(1.0, 1.0, 4.0),
        nll(1.5, 2.0, 0.25) + nll(0.0, -1.0, 1.0),
    ]
    for reduction in ("mean", "sum"):
        for hierarchical in (False, True):
            got = label_loss(
                mu,
                logvar,
                theta,
                reduction=reduction,
                hierarchical=hierarchical,
                dim_reduction="sum",
            )
            assert got.tolist() == pytest.approx(hand, rel=1e-12)
    # "rate" (the default) averages over the 2 dimensions in the mean reduction without HP
    assert label_loss(mu, logvar, theta).tolist() == pytest.approx([h / 2 for h in hand])
    mse = label_loss(mu, logvar, theta, kind="mse", dim_reduction="sum")
    assert mse.tolist() == pytest.approx([1.0, 0.25 + 1.0])
    with pytest.raises(ValueError, match="dim_reduction must be one of 'rate', 'sum'"):
        label_loss(mu, logvar, theta, dim_reduction="mean")


def test_gaussian_log_prob_survives_a_collapsed_variance():
    # A collapsing encoder variance (logvar -100: e^100 overflows float32) once made the
    # hierarchical bound NaN for a sample sitting on its mean (the demo, epoch 138).
    from darcyvae.losses import gaussian_log_prob

    logvar = torch.tensor([-100.0, -100.0, -20.0, 3.0])
    mean = torch.tensor([0.5, 0.5, 0.0, -1.0])
    x = torch.tensor([0.5, 0.5 + 1e-45, 1e-9, 2.0])
    got = gaussian_log_prob(x, mean, logvar)
    assert torch.isfinite(got).all()
    xd, md, lvd = x.double().numpy(), mean.double().numpy(), logvar.double().numpy()
    want = -0.5 * (np.log(2 * np.pi) + lvd + (xd - md) ** 2 * np.exp(-lvd))
    np.testing.assert_allclose(got.double().numpy(), want, rtol=1e-5)
