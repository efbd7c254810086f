"""darcyvae.losses: explicit noise (for batched ensembles) and the released-code variants."""

from __future__ import annotations

import pytest
import torch
from darcyvae.losses import hierarchical_bound_terms, vae_loss
from darcyvae.models import DenseVAE, VAENoise, model_config

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
