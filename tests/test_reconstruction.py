"""The members' reconstruction term in one pass (darcyvae.ensemble.reconstruction,
cpp/reconstruction.{hpp,cpp}).

Checked against ``darcyvae.losses.reconstruction_loss`` per member in float64 (values
and both gradients) for random shapes and every memory order of the mean, the
closed form at mean = data, members and samples never mixing, the gradient written in
the mean's own layout, the engine's wiring (fused against torch's loss on the same
step) and bad input.
"""

from __future__ import annotations

import itertools
import math
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from darcyvae import _core
from darcyvae.ensemble.reconstruction import reconstruction_nll
from darcyvae.losses import reconstruction_loss
from hypothesis import given, settings
from hypothesis import strategies as st

ORDERS = list(itertools.permutations(range(5)))


def strided(t: torch.Tensor, order: tuple[int, ...]) -> torch.Tensor:
    """t's values (K, B, C, H, W) held in memory with the axes in ``order`` (outermost
    first), returned as a (K, B, C, H, W) view of that memory."""
    inverse = [order.index(a) for a in range(5)]
    return t.permute(*order).contiguous().permute(*inverse)


def reference(y, mean, logvar, grad):
    """(L, dL/dmean, dL/dlogvar) of reconstruction_loss per member in float64."""
    m = mean.detach().double().requires_grad_()
    s = logvar.detach().double().requires_grad_()
    out = torch.stack(
        [reconstruction_loss(y[k].double(), m[k], s[k], reduction="sum") for k in range(len(y))]
    )
    out.backward(grad.double())
    return out, m.grad, s.grad


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


@settings(max_examples=40, deadline=None)
@given(
    st.integers(1, 10),  # K
    st.integers(1, 6),  # batch
    st.integers(1, 3),  # channels
    st.integers(1, 7),  # height
    st.integers(1, 7),  # width
    st.sampled_from(ORDERS),  # the mean's memory order
    st.sampled_from(ORDERS),  # the data's
    st.integers(0, 2**31 - 1),
)
def test_values_and_gradients_equal_the_loss_in_float64(k, b, c, h, w, m_order, y_order, seed):
    g = torch.Generator().manual_seed(seed)
    y = strided(torch.randn(k, b, c, h, w, generator=g), y_order)
    mean = strided(torch.randn(k, b, c, h, w, generator=g), m_order).requires_grad_()
    logvar = (torch.randn(k, 1, 1, h, w, generator=g) * 2).requires_grad_()
    grad = torch.randn(k, b, generator=g)
    out = reconstruction_nll(y, mean, logvar)
    out.backward(grad)
    ref, ref_dmean, ref_dlogvar = reference(y, mean, logvar, grad)
    assert out.shape == (k, b)
    # sums in double: only the float32 inputs' and outputs' rounding is left
    assert relative_error(out, ref) < 1e-6
    assert relative_error(mean.grad, ref_dmean) < 1e-6
    # dL/ds = 1/2 sum g (1 - d^2 e^-s): relative to the terms summed (they may cancel)
    d2 = ((y.double() - mean.detach().double()) ** 2 * torch.exp(-logvar.detach().double())).abs()
    scale = 0.5 * (grad.double().abs()[:, :, None, None, None] * (1 + d2)).sum(dim=(1, 2))
    assert ((logvar.grad.double() - ref_dlogvar).abs()[:, 0, 0] / scale.max()).max() < 1e-6


def test_closed_form_when_the_mean_is_the_data():
    """mean = y: L = C N M (log 2pi) / 2 + C sum s / 2 for every sample; dL/dmean = 0 and
    dL/ds = C sum_b g / 2."""
    k, b, c, n = 3, 4, 2, 5
    y = torch.randn(k, b, c, n, n)
    logvar = torch.linspace(-2, 3, k * n * n).reshape(k, 1, 1, n, n).requires_grad_()
    mean = y.clone().requires_grad_()
    out = reconstruction_nll(y, mean, logvar)
    expected = 0.5 * c * (n * n * math.log(2 * math.pi) + logvar.detach().sum(dim=(1, 2, 3, 4)))
    torch.testing.assert_close(out, expected[:, None].expand(k, b), rtol=1e-6, atol=0)
    grad = torch.rand(k, b)
    out.backward(grad)
    assert torch.equal(mean.grad, torch.zeros_like(mean))
    expected_ds = (0.5 * c * grad.sum(dim=1))[:, None, None, None, None].expand(k, 1, 1, n, n)
    torch.testing.assert_close(logvar.grad, expected_ds, rtol=1e-6, atol=0)


def test_the_gradient_keeps_the_mean_layout_and_the_data_gets_its_negative():
    """The members-last decoder output (batch, H, W, C, K) gets its gradient in its own
    layout (no copy before the last convolution's backward pass)."""
    k, b, c, n = 9, 3, 3, 6
    ml = torch.randn(b, n, n, c, k, requires_grad=True)
    y = torch.randn(k, b, c, n, n, requires_grad=True)
    out = reconstruction_nll(y, ml.permute(4, 0, 3, 1, 2), torch.zeros(k, 1, 1, n, n))
    out.sum().backward()
    assert ml.grad.is_contiguous()
    torch.testing.assert_close(y.grad, -ml.grad.permute(4, 0, 3, 1, 2), rtol=0, atol=0)


def test_members_and_samples_never_mix():
    k, b, c, n = 4, 5, 3, 4
    y = torch.randn(k, b, c, n, n)
    mean = strided(torch.randn(k, b, c, n, n), (1, 3, 4, 2, 0)).requires_grad_()
    logvar = torch.zeros(k, 1, 1, n, n, requires_grad=True)
    with torch.no_grad():
        mean[2, 1, 0, 3, 3] = float("nan")
    out = reconstruction_nll(y, mean, logvar)
    bad = torch.zeros(k, b, dtype=torch.bool)
    bad[2, 1] = True
    assert out[bad].isnan().all()
    assert out[~bad].isfinite().all()
    out.sum().backward()
    others = torch.arange(k) != 2
    assert mean.grad[2, 1].isnan().any()
    assert mean.grad[others].isfinite().all()
    assert mean.grad[2, torch.arange(b) != 1].isfinite().all()
    assert logvar.grad[2].isnan().any()
    assert logvar.grad[others].isfinite().all()


def test_same_input_same_bits():
    y = torch.randn(9, 8, 3, 17, 17)
    mean = strided(torch.randn(9, 8, 3, 17, 17), (1, 3, 4, 2, 0)).requires_grad_()
    logvar = torch.randn(9, 1, 1, 17, 17, requires_grad=True)
    runs = []
    for _ in range(2):
        out = reconstruction_nll(y, mean, logvar)
        runs.append((out, *torch.autograd.grad(out.sum(), (mean, logvar))))
    for a, b in zip(*runs, strict=True):
        assert torch.equal(a, b)


def test_engine_losses_equal_torch_loss_on_the_same_step():
    """StackedMembers.losses with the one-pass term (the decoder mean left as a view)
    against the same members with fuse_reconstruction=False (a copy, then the loss's
    torch operations): every loss term and every parameter gradient to rounding."""
    from darcyvae.ensemble.members import StackedMembers
    from darcyvae.models import DenseVAE, model_config

    cfg = model_config("dense_vae_tiny")
    torch.manual_seed(0)
    models = [DenseVAE(cfg) for _ in range(9)]
    y = torch.randn(9, 6, 3, cfg.grid, cfg.grid)
    eps = torch.randn(9, 6, cfg.latent_dim)
    results = []
    for fused in (True, False):
        runs = [SimpleNamespace(model=m, optimizer=None) for m in models]
        members = StackedMembers(runs, None, 1e-3)
        members.net.fuse_reconstruction = fused
        assert members.net.strided_mean is fused
        out = members.forward(y, eps)
        assert out.y_mean.is_contiguous() is not fused
        terms = members.losses(y, out, eps, None, 0.5, 1.0, "mean", True, None)
        terms[0].sum().backward()
        results.append((terms, [p.grad.clone() for p in members.net.parameters()]))
    (fused_terms, fused_grads), (torch_terms, torch_grads) = results
    for a, b in zip(fused_terms, torch_terms, strict=True):
        torch.testing.assert_close(a, b, rtol=2e-6, atol=1e-6)
    for a, b in zip(fused_grads, torch_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


# --------------------------------------------------------------------------- bad input


def arrays(k=2, b=3, c=2, n=4):
    y = np.zeros((k, b, c, n, n), np.float32)
    return y, y.copy(), np.zeros((k, n, n), np.float32), np.zeros((k, b), np.float32)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: (a[0].astype(np.float64), *a[1:]), "y must be float32"),
        (lambda a: (a[0], a[1][..., 0], *a[2:]), "mean must be 5-d"),
        (lambda a: (a[0], a[1][:1], *a[2:]), "mean .* must have y's shape"),
        (lambda a: (a[0], a[1], a[2][:, :2].copy(), a[3]), r"logvar .* \(K, H, W\)"),
        (lambda a: (a[0], a[1], a[2][:, :2], a[3]), "logvar must be C-contiguous"),
        (lambda a: (*a[:3], a[3][:, :2].copy()), r"\(K, B\)"),
        (lambda a: (*a[:3], np.zeros((3, 2), np.float32).T), "out must be C-contiguous"),
        (lambda a: (*arrays(b=0),), "must be >= 1"),
    ],
)
def test_bad_forward_arrays_raise_value_error(change, match):
    y, mean, logvar, out = change(arrays())
    with pytest.raises(ValueError, match=match):
        _core.reconstruction_nll_forward(y, mean, logvar, out)


def test_bad_outputs_raise_value_error():
    y, mean, logvar, out = arrays()
    out.setflags(write=False)
    with pytest.raises(ValueError, match="out must be writeable"):
        _core.reconstruction_nll_forward(y, mean, logvar, out)
    grad = np.zeros((2, 3), np.float32)
    overlapping = np.lib.stride_tricks.as_strided(
        np.zeros(8, np.float32), y.shape, (0, 0, 0, 4, 4), writeable=True
    )
    with pytest.raises(ValueError, match="dmean must not overlap itself"):
        _core.reconstruction_nll_backward(y, mean, logvar, grad, overlapping, logvar.copy())
    with pytest.raises(ValueError, match="overlaps mean"):
        _core.reconstruction_nll_backward(y, mean, logvar, grad, mean, logvar.copy())
    with pytest.raises(ValueError, match="overlaps logvar"):
        _core.reconstruction_nll_backward(y, mean, logvar, grad, y.copy(), logvar)
    half_strides = np.lib.stride_tricks.as_strided(
        np.zeros(y.size * 2, np.float32), y.shape, tuple(s // 2 * 2 + 2 for s in y.strides)
    )
    with pytest.raises(ValueError, match="whole elements"):
        _core.reconstruction_nll_forward(y, half_strides, logvar, np.zeros((2, 3), np.float32))


def test_python_layer_checks():
    y = torch.zeros(2, 3, 1, 4, 4)
    s = torch.zeros(2, 1, 1, 4, 4)
    with pytest.raises(ValueError, match="mean must be float32"):
        reconstruction_nll(y, y.double(), s)
    with pytest.raises(ValueError, match="one shape"):
        reconstruction_nll(y, y[:, :2], s)
    with pytest.raises(ValueError, match="no empty axis"):
        reconstruction_nll(y[:, :0], y[:, :0], s)
    with pytest.raises(ValueError, match=r"logvar must have shape \(2, 1, 1, 4, 4\)"):
        reconstruction_nll(y, y, s[:, :, :, :3])
