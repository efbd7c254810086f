from __future__ import annotations

import math

import hypothesis.extra.numpy as hnp
import numpy as np
import pytest
import torch
from darcyvae.models import (
    DenseVAE,
    HierarchicalPrior,
    ScaledGaussianPrior,
    StandardNormalPrior,
    VAEConfig,
    count_parameters,
    dense_vae_paper,
    dense_vae_tiny,
    get_model,
    list_models,
    model_config,
    register_model,
)
from hypothesis import given
from hypothesis import strategies as st
from torch import nn


def _bn(f):
    return 2 * f


def _dense_block(layers, f, g):
    """Parameters of a dense block (BN + 3x3 conv per layer, no bias), by hand."""
    total = 0
    for i in range(layers):
        fi = f + i * g
        total += _bn(fi) + fi * g * 9
    return total


def _hand_count_paper():
    """docs/model.md §4a's paper configuration counted layer by layer (n = 2, 65 grid)."""
    enc = 3 * 2 * 49  # conv0 7x7, 3 -> 2, no bias
    enc += _dense_block(4, 2, 4)  # -> 18
    enc += _bn(18) + 18 * 9 + _bn(9) + 9 * 9 * 9  # transition down 18 -> 9
    enc += 2304 * 1152 + 1152 + 1152 * 2 + 2  # head
    dec = 2 * 1152 + 1152 + 1152 * 2304 + 2304  # head
    dec += _dense_block(6, 9, 4)  # -> 33
    dec += _bn(33) + 33 * 16 + _bn(16) + 16 * 16 * 9  # transition up 33 -> 16
    dec += _dense_block(4, 16, 4)  # -> 32
    dec += _bn(32) + 32 * 16 + _bn(16) + 16 * 3 * 16 + 3 * 3 * 25  # last decoding
    return enc, dec


def test_paper_parameter_count_matches_spec():
    counts = count_parameters(dense_vae_paper())
    enc, dec = _hand_count_paper()
    assert counts["encoder_mean"] == counts["encoder_logvar"] == enc
    assert counts["decoder"] == dec
    assert counts["output_logvar"] == 65 * 65
    assert counts["prior"] == 0
    assert counts["total"] == 2 * enc + dec + 4225
    # docs/model.md §4a: about 2.66M per encoder network, 2.67M decoder, 8.0M in all.
    assert counts["encoder_mean"] == pytest.approx(2.66e6, rel=0.005)
    assert counts["decoder"] == pytest.approx(2.67e6, rel=0.005)
    assert counts["total"] == pytest.approx(8.0e6, rel=0.005)


@pytest.mark.parametrize(
    ("grid", "bottleneck"), [(65, (9, 16, 16)), (33, (9, 8, 8)), (17, (9, 4, 4))]
)
def test_shapes_through_encoder_and_decoder(device, grid, bottleneck):
    torch.manual_seed(0)
    model = DenseVAE(VAEConfig(grid=grid)).to(device)
    y = torch.randn(3, 3, grid, grid, device=device)
    features = model.encoder.mean_net.features(y)
    assert tuple(features.shape[1:]) == bottleneck
    mu, logvar = model.encode(y)
    assert mu.shape == logvar.shape == (3, 2)
    mean, out_logvar = model.decode(mu)
    assert mean.shape == (3, 3, grid, grid)
    assert out_logvar.shape == (1, 1, grid, grid)
    out = model(y)
    assert out.z.shape == (3, 2)
    assert out.y_mean.shape == y.shape
    assert out.y_mean.device.type == torch.device(device).type


@pytest.mark.parametrize(
    ("grid", "sizes", "paddings"),
    [
        (65, [32, 32, 16, 16, 8], [1, 1, 1]),  # 65 -> 32 -> 16 -> 8 and back
        (37, [18, 18, 9, 9, 5], [0, 1, 1]),  # 5 -> 9 needs no output padding
    ],
)
def test_intermediate_sizes_follow_the_grid(grid, sizes, paddings):
    model = DenseVAE(VAEConfig(grid=grid, blocks=(2, 2, 2, 2, 2)))
    y = torch.randn(2, 3, grid, grid)
    seen = []
    h = y
    for layer in model.encoder.mean_net.features:
        h = layer(h)
        seen.append(h.shape[-1])
    assert seen == sizes
    assert model(y).y_mean.shape == y.shape
    up = [m for m in model.decoder.modules() if isinstance(m, nn.ConvTranspose2d)]
    assert [m.output_padding[0] for m in up] == paddings


def test_encoder_networks_are_separate_and_same_shape():
    model = dense_vae_tiny()
    a = [p.shape for p in model.encoder.mean_net.parameters()]
    b = [p.shape for p in model.encoder.logvar_net.parameters()]
    assert a == b
    y = torch.randn(4, 3, 17, 17)
    mu, logvar = model.encode(y)
    assert not torch.allclose(mu, logvar)


def test_dense_layer_structure():
    model = dense_vae_tiny()
    layer = model.encoder.mean_net.features.dense1.denselayer1
    assert [name for name, _ in layer.named_children()] == ["norm1", "relu1", "conv1"]
    assert layer.conv1.bias is None
    assert layer.conv1.kernel_size == (3, 3)
    x = torch.randn(2, 2, 8, 8)
    out = layer(x)
    assert out.shape == (2, 2 + 4, 8, 8)
    torch.testing.assert_close(out[:, :2], x)  # input concatenated first


@pytest.mark.parametrize("n", [1, 2, 3])
def test_hierarchical_prior_mlps(n):
    prior = HierarchicalPrior(n, "const")
    for mlp in (prior.enc_mean, prior.dec_mean):
        linears = [m for m in mlp if isinstance(m, nn.Linear)]
        shapes = [(m.in_features, m.out_features) for m in linears]
        assert shapes == [(n, 8 * n), (8 * n, 8 * n), (8 * n, n)]
        kinds = [type(m) for m in mlp]
        assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]  # no output activation
    assert isinstance(prior.enc_logvar, nn.Parameter)
    assert prior.enc_logvar.shape == (n,)
    full = HierarchicalPrior(n, "full")
    assert isinstance(full.dec_logvar, nn.Sequential)
    assert sum(p.numel() for p in full.parameters()) == 4 * (
        n * 8 * n + 8 * n + 64 * n * n + 8 * n + 8 * n * n + n
    )
    z = torch.randn(5, n)
    m, lv = full.encode(z)
    assert m.shape == lv.shape == (5, n)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_released_prior_decoder_structure_and_reference(n):
    prior = HierarchicalPrior(n, "full", decoder="released")
    for net in (prior.dec_mean, prior.dec_logvar):
        kinds = [type(m) for m in net]
        assert kinds == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU]  # ReLU on the output
        shapes = [(m.in_features, m.out_features) for m in net if isinstance(m, nn.Linear)]
        assert shapes == [(n, 8 * n), (8 * n, n)]
    # The prior encoder stays the described 3-layer MLP.
    assert [type(m) for m in prior.enc_mean][-1] is nn.Linear
    # Hand-written reference: relu(W2 relu(W1 xi + b1) + b2), in float64.
    torch.manual_seed(n)
    xi = 3.0 * torch.randn(64, n, dtype=torch.float64)
    w1, b1 = prior.dec_mean.fc1.weight.double(), prior.dec_mean.fc1.bias.double()
    w2, b2 = prior.dec_mean.fc2.weight.double(), prior.dec_mean.fc2.bias.double()
    hand = torch.clamp(torch.clamp(xi @ w1.T + b1, min=0) @ w2.T + b2, min=0)
    mean, logvar = prior.double().decode(xi)
    torch.testing.assert_close(mean, hand, rtol=1e-12, atol=1e-12)
    assert torch.all(logvar >= 0)  # t_z >= 0 by the same construction


@given(
    xi=hnp.arrays(
        np.float32,
        st.tuples(st.integers(1, 8), st.just(2)),
        elements=st.floats(-1e4, 1e4, width=32),
    ),
    seed=st.integers(0, 2**16),
)
def test_released_prior_mean_is_never_negative(xi, seed):
    torch.manual_seed(seed)
    prior = HierarchicalPrior(2, "const", decoder="released")
    with torch.no_grad():
        mean, _ = prior.decode(torch.from_numpy(xi))
    assert torch.all(mean >= 0)


def test_mlp_prior_decoder_can_output_negatives():
    torch.manual_seed(0)
    prior = HierarchicalPrior(2, "const", decoder="mlp")
    with torch.no_grad():
        mean, _ = prior.decode(torch.randn(256, 2))
    assert (mean < 0).any()
    assert (mean > 0).any()


def test_hp_decoder_is_configured_and_validated():
    model = DenseVAE(model_config("dense_vae_tiny", prior="hierarchical", hp_decoder="released"))
    assert model.prior.decoder == "released"
    assert len(model.prior.dec_mean) == 4
    with pytest.raises(ValueError, match="hp_decoder must be one of"):
        VAEConfig(hp_decoder="quirk")


def test_hierarchical_prior_is_a_tiny_addition():
    model = DenseVAE(VAEConfig(prior="hierarchical"))
    counts = count_parameters(model)
    assert 0 < counts["prior"] < 1e-3 * counts["total"]


@pytest.mark.parametrize(
    "config",
    [
        model_config("dense_vae_tiny"),
        model_config("dense_vae_tiny", prior="scaled_gaussian", prior_variance=(1.0, 4.0)),
        model_config("dense_vae_tiny", prior="hierarchical", hp_variant="full"),
    ],
    ids=["std_norm", "scaled", "hp_full"],
)
def test_prior_sampling(device, config):
    model = DenseVAE(config).to(device)
    gen = torch.Generator(device=device).manual_seed(3)
    z = model.sample_prior(20000, generator=gen)
    assert z.shape == (20000, 2)
    assert z.device.type == torch.device(device).type
    gen2 = torch.Generator(device=device).manual_seed(3)
    torch.testing.assert_close(model.sample_prior(20000, generator=gen2), z)
    if isinstance(model.prior, ScaledGaussianPrior):
        var = z.var(dim=0).cpu().numpy()
        np.testing.assert_allclose(var, model.prior.variance.cpu().numpy(), rtol=0.05)
        np.testing.assert_allclose(z.mean(dim=0).cpu().numpy(), 0.0, atol=0.05)
    images = model.eval().generate(4, generator=gen)
    assert images.shape == (4, 3, 17, 17)


def test_learned_prior_sample_follows_its_decoder():
    # With const log-variances the learned prior is a Gaussian mixture whose mean is
    # E[m_pi(xi)]: check against a direct Monte Carlo of the same definition.
    torch.manual_seed(1)
    prior = HierarchicalPrior(2, "const")
    with torch.no_grad():
        prior.dec_logvar.fill_(math.log(0.01))
        z = prior.sample(50000, generator=torch.Generator().manual_seed(0))
        xi = torch.randn(50000, 2, generator=torch.Generator().manual_seed(5))
        ref = prior.dec_mean(xi)
    np.testing.assert_allclose(z.mean(0).numpy(), ref.mean(0).numpy(), atol=0.02)
    np.testing.assert_allclose(z.var(0).numpy(), (ref.var(0) + 0.01).numpy(), rtol=0.05)


def test_standard_normal_prior_variance():
    torch.testing.assert_close(StandardNormalPrior(3).variance, torch.ones(3))


def test_forward_noise_comes_from_the_generator():
    model = dense_vae_tiny().eval()
    y = torch.randn(2, 3, 17, 17)
    a = model(y, generator=torch.Generator().manual_seed(0)).z
    b = model(y, generator=torch.Generator().manual_seed(0)).z
    c = model(y, generator=torch.Generator().manual_seed(1)).z
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, c)


def test_xavier_init():
    torch.manual_seed(0)
    default = dense_vae_tiny()
    torch.manual_seed(0)
    xavier = dense_vae_tiny(xavier_init=True)
    lin = xavier.encoder.mean_net.head.fc1
    bound = math.sqrt(6.0 / (lin.in_features + lin.out_features))
    assert lin.weight.abs().max() <= bound
    assert lin.weight.abs().max() > 0.8 * bound
    assert torch.all(lin.bias == 0)
    assert not torch.allclose(lin.weight, default.encoder.mean_net.head.fc1.weight)
    conv = xavier.decoder.features.last.conv3
    fan_in = conv.in_channels * 25
    fan_out = conv.out_channels * 25
    assert conv.weight.abs().max() <= math.sqrt(6.0 / (fan_in + fan_out))


def test_registry():
    names = [name for name, _ in list_models()]
    assert {"dense_vae_paper", "dense_vae_small", "dense_vae_tiny"} <= set(names)
    assert model_config("dense_vae_small").grid == 33
    model = get_model("dense_vae_tiny", latent_dim=3, prior="hierarchical")
    assert model.config.latent_dim == 3
    assert model.hierarchical
    with pytest.raises(ValueError, match="unknown model"):
        model_config("no_such_model")
    with pytest.raises(ValueError, match="already exists"):
        register_model("dense_vae_tiny", "duplicate")(lambda: None)


def test_config_roundtrip():
    cfg = VAEConfig(grid=33, prior="scaled_gaussian", prior_variance=(1.0, 2.0))
    assert VAEConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["blocks"] == [4, 6, 4]


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"grid": 64}, ValueError, "odd integer"),
        ({"grid": 3}, ValueError, "grid must be an integer in"),
        ({"grid": 33.0}, TypeError, "grid must be an integer"),
        ({"blocks": (4, 6)}, ValueError, "odd number"),
        ({"blocks": (4, 0, 4)}, ValueError, "each entry of blocks"),
        ({"latent_dim": 0}, ValueError, "latent_dim"),
        ({"prior": "laplace"}, ValueError, "prior must be one of"),
        ({"hp_variant": "mlp"}, ValueError, "hp_variant must be one of"),
        ({"prior": "scaled_gaussian"}, ValueError, "one variance per latent"),
        ({"prior": "scaled_gaussian", "prior_variance": (1.0, -1.0)}, ValueError, "> 0"),
        ({"prior_variance": (1.0, 1.0)}, ValueError, "only used by the scaled_gaussian"),
        ({"xavier_init": 1}, TypeError, "xavier_init must be a bool"),
    ],
)
def test_config_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        VAEConfig(**kwargs)


def test_config_unknown_key():
    with pytest.raises(ValueError, match="unknown keys"):
        VAEConfig.from_dict({"grid": 33, "colour": "red"})
