"""The fused batch norm + ReLU (darcyvae.ensemble.batch_norm, cpp/batch_norm*.{hpp,cpp,inc}).

Checked against torch's ``F.relu(F.batch_norm(...))`` in float64: outputs, running
averages and all three gradients, for random shapes and data far from zero, with both
instruction sets; plus channels never mixing, NaN propagating as torch's, the
``BatchedDenseVAE`` wiring (members-last against torch's own layer) and bad input.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from darcyvae import _core
from darcyvae.ensemble.batch_norm import batch_norm_relu
from hypothesis import given, settings
from hypothesis import strategies as st

ISAS = ["generic"] + (["avx2"] if _core.batch_norm_isa("auto") == "avx2" else [])


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


def largest(t: torch.Tensor) -> float:
    """The largest entry (0 for an empty tensor)."""
    return t.max().item() if t.numel() else 0.0


def absolute_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return largest((a.double() - b.double()).abs())


def torch_reference(x, gamma, beta, dy, momentum=0.1, eps=1e-5):
    """(y, dx, dgamma, dbeta, running_mean, running_var) of torch's layers in float64,
    for x (rows, channels)."""
    c = x.shape[1]
    xt = x.double().t().unsqueeze(0).detach().requires_grad_()  # (1, channels, rows)
    g = gamma.double().detach().requires_grad_()
    b = beta.double().detach().requires_grad_()
    rm = torch.zeros(c, dtype=torch.float64)
    rv = torch.ones(c, dtype=torch.float64)
    y = F.relu(F.batch_norm(xt, rm, rv, g, b, True, momentum, eps))
    y.backward(dy.double().t().unsqueeze(0))
    return y[0].t(), xt.grad[0].t(), g.grad, b.grad, rm, rv


@settings(max_examples=40, deadline=None)
@given(
    st.integers(2, 300),  # rows
    st.integers(1, 40),  # channels
    st.floats(-1e3, 1e3),  # offset of the data
    st.floats(1e-2, 1e2),  # spread of the data
    st.sampled_from(ISAS),
    st.integers(0, 2**31 - 1),
)
def test_forward_backward_and_running_stats_equal_torch(rows, channels, offset, spread, isa, seed):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, channels, generator=g) * spread + offset).requires_grad_()
    gamma = (torch.rand(channels, generator=g) + 0.5).requires_grad_()
    beta = torch.randn(channels, generator=g).requires_grad_()
    dy = torch.randn(rows, channels, generator=g)
    rm, rv = torch.zeros(channels), torch.ones(channels)
    y = batch_norm_relu(x, gamma, beta, rm, rv, 0.1, 1e-5, isa=isa)
    y.backward(dy)
    ref_y, ref_dx, ref_dg, ref_db, ref_rm, ref_rv = torch_reference(x, gamma, beta, dy)
    # normalised values are O(1): float32 rounding of the data (offset up to 1e3 times
    # the spread) bounds what any float32 implementation can reach
    tol = 1e-5 * (1 + abs(offset) / spread)
    assert relative_error(y, ref_y) < tol
    assert relative_error(rm, ref_rm) < 1e-5
    assert relative_error(rv, ref_rv) < 1e-4
    # gradients are sums that may cancel: errors relative to the terms summed; a value
    # whose pre-activation lies within rounding of 0 may pass ReLU in one and not the
    # other, so channels with one are left out of the gradient checks
    xd = x.detach().double()
    sd = (xd.var(0, unbiased=False) + 1e-5).sqrt()
    xhat = (xd - xd.mean(0)) / sd
    pre = xhat * gamma.detach().double() + beta.detach().double()
    keep = (pre.abs() > 10 * tol).all(0)
    a = (gamma.detach().double() / sd)[keep]
    g_abs = dy.double().abs()[:, keep]
    assert absolute_error(beta.grad[keep], ref_db[keep]) <= 1e-5 * largest(g_abs.sum(0))
    dg_scale = largest((g_abs * xhat[:, keep].abs()).sum(0))
    assert absolute_error(gamma.grad[keep], ref_dg[keep]) <= tol * dg_scale
    dx_scale = largest(a.abs()) * largest(g_abs)
    assert absolute_error(x.grad[:, keep], ref_dx[:, keep]) <= tol * dx_scale * 4


def test_moments_of_data_far_from_zero_are_accurate():
    """Data at 1e4 +- 1: a one-pass E[x^2] - E[x]^2 in float32 would lose every digit of
    the variance; the shifted moments keep it."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4096, 6, generator=g, dtype=torch.float64) + 1e4
    x32 = x.float()
    y = torch.empty_like(x32)
    mean, var = torch.empty(6), torch.empty(6)
    ones, zeros = torch.ones(6), torch.zeros(6)
    _core.batch_norm_relu_forward(
        x32.numpy(), ones.numpy(), zeros.numpy(), 1e-5, y.numpy(), mean.numpy(), var.numpy()
    )
    exact = x32.double()
    assert relative_error(mean, exact.mean(0)) < 1e-7
    assert relative_error(var, exact.var(0, unbiased=False)) < 1e-4


def test_channels_never_mix_and_nan_propagates_as_torch():
    """A NaN in channel 5 turns channel 5 (values, gradients) into NaN and nothing else,
    as torch's layers do; the ISAs agree elsewhere to float32 rounding."""
    g = torch.Generator().manual_seed(4)
    results = []
    for isa in ISAS:
        x = torch.randn(64, 11, generator=g.manual_seed(4)).requires_grad_()
        with torch.no_grad():
            x[7, 5] = float("nan")
        gamma, beta = torch.ones(11, requires_grad=True), torch.zeros(11, requires_grad=True)
        y = batch_norm_relu(x, gamma, beta, isa=isa)
        y.sum().backward()
        for t in (y, x.grad):
            bad = torch.isnan(t).any(dim=0)
            assert bad[5]
            assert bad.sum() == 1
        assert torch.isnan(gamma.grad[5])
        assert torch.isfinite(gamma.grad[:5]).all()
        results.append((y.detach(), x.grad))
    for a, b in zip(results[0], results[-1], strict=True):
        keep = torch.ones(11, dtype=torch.bool)
        keep[5] = False
        assert relative_error(a[:, keep], b[:, keep]) < 1e-5


def test_same_input_same_bits():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(500, 33, generator=g, requires_grad=True)
    gamma, beta = torch.rand(33, generator=g), torch.randn(33, generator=g)
    outs = []
    for _ in range(2):
        y = batch_norm_relu(x, gamma, beta)
        (dx,) = torch.autograd.grad(y, x, torch.ones_like(y))
        outs.append((y, dx))
    assert torch.equal(outs[0][0], outs[1][0])
    assert torch.equal(outs[0][1], outs[1][1])


def test_members_last_training_fuses_every_batch_norm():
    """In training, a members-last BatchedDenseVAE runs each BatchNorm + ReLU pair of the
    DenseVAE as one fused layer (test_ensemble checks its values against each member's
    own model: outputs, gradients and running averages)."""
    from darcyvae.ensemble.batched import BatchedDenseVAE
    from darcyvae.models import DenseVAE, model_config

    cfg = model_config("dense_vae_tiny")
    models = [DenseVAE(cfg) for _ in range(9)]
    net = BatchedDenseVAE(models)
    assert net.layout.name == "members_last"
    y = torch.randn(9, 4, 3, cfg.grid, cfg.grid)
    out = net(y, torch.randn(9, 4, 2))
    seen, todo, fused = set(), [out.y_mean.grad_fn, out.mu.grad_fn], 0
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        fused += type(node).__name__ == "_BatchNormReLUBackward"
        todo.extend(n for n, _ in node.next_functions)
    norms = sum(isinstance(m, torch.nn.BatchNorm2d) for m in models[0].modules())
    assert fused == norms > 0


# --------------------------------------------------------------------------- bad input


def arrays(rows=8, channels=3):
    x = np.zeros((rows, channels), np.float32)
    c = np.ones(channels, np.float32)
    return x, c, c.copy(), np.zeros_like(x), np.zeros_like(c), np.zeros_like(c)


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda a: (a[0].astype(np.float64), *a[1:]), "x must be float32"),
        (lambda a: (a[0][None], *a[1:]), "x must be 2-d"),
        (lambda a: (np.asfortranarray(np.zeros((8, 3), np.float32)), *a[1:]), "C-contiguous"),
        (lambda a: (a[0], a[1][:2], *a[2:]), "per-channel"),
        (lambda a: (a[0], a[1], a[2], np.zeros((7, 3), np.float32), *a[4:]), "x's shape"),
        (lambda a: (a[0], a[1], a[2], a[0], *a[4:]), "overlaps x"),
        (lambda a: (*arrays(rows=1),), "at least 2 rows"),
    ],
)
def test_bad_arrays_raise_value_error(change, match):
    x, gamma, beta, y, mean, var = change(arrays())
    with pytest.raises(ValueError, match=match):
        _core.batch_norm_relu_forward(x, gamma, beta, 1e-5, y, mean, var)


def test_bad_settings_raise_value_error():
    x, gamma, beta, y, mean, var = arrays()
    for eps in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="eps must be"):
            _core.batch_norm_relu_forward(x, gamma, beta, eps, y, mean, var)
    with pytest.raises(ValueError, match="isa must be"):
        _core.batch_norm_relu_forward(x, gamma, beta, 1e-5, y, mean, var, "sse9")
    y.setflags(write=False)
    with pytest.raises(ValueError, match="y must be writeable"):
        _core.batch_norm_relu_forward(x, gamma, beta, 1e-5, y, mean, var)
    dx, dg, db = np.zeros_like(x), np.zeros_like(gamma), np.zeros_like(gamma)
    with pytest.raises(ValueError, match="overlaps dy"):
        _core.batch_norm_relu_backward(x, x.copy(), dx, gamma, mean, var, 1e-5, dx, dg, db)
    with pytest.raises(ValueError, match="x's shape"):
        _core.batch_norm_relu_backward(x, x[:4].copy(), x, gamma, mean, var, 1e-5, dx, dg, db)


def test_python_layer_checks():
    x = torch.zeros(6, 4)
    w = torch.ones(4)
    with pytest.raises(ValueError, match="float32"):
        batch_norm_relu(x.double(), w, w)
    with pytest.raises(ValueError, match="weight must be float32 of shape"):
        batch_norm_relu(x, torch.ones(3), w)
    with pytest.raises(ValueError, match="running_var must hold 4"):
        batch_norm_relu(x, w, w, torch.zeros(4), torch.ones(5))
    with pytest.raises(ValueError, match="row axis"):
        batch_norm_relu(torch.zeros(4), w, w)
    with pytest.raises(ValueError, match="at least 2 rows"):
        batch_norm_relu(x[:1], w, w)
