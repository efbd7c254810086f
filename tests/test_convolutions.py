"""darcyvae's member convolution kernels (darcyvae.ensemble.convolutions, cpp/conv*.{hpp,cpp,inc}).

Checked against torch's own convolutions in float64 (grouped, one group per member):
outputs and both gradients, for convolutions and transposed convolutions of random
shapes, with both instruction sets; plus what the kernels promise beyond that:
members never mix, the thread count does not change a bit, and bad input raises.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from darcyvae import _core
from darcyvae.ensemble import convolutions as mc
from hypothesis import assume, given, settings
from hypothesis import strategies as st

ISAS = ["generic"] + (["avx2"] if _core.conv_isa("auto") == "avx2" else [])


def torch_reference(x, weight, stride, padding, transposed=False, output_padding=0):
    """torch's grouped convolution of members-innermost x (B, H, W, C, K) in float64,
    returned members innermost, with the autograd leaves to read gradients from."""
    b, h, w, c, k = x.shape
    xt = x.double().permute(0, 4, 3, 1, 2).reshape(b, k * c, h, w).detach().requires_grad_()
    wt = weight.double().reshape(k * weight.shape[1], *weight.shape[2:]).detach().requires_grad_()
    if transposed:
        y = F.conv_transpose2d(xt, wt, None, stride, padding, output_padding, k)
    else:
        y = F.conv2d(xt, wt, None, stride, padding, 1, k)
    bo, kc, ho, wo = y.shape
    y5 = y.view(bo, k, kc // k, ho, wo).permute(0, 3, 4, 2, 1)
    return y5, xt, wt


def members_last(t: torch.Tensor, k: int) -> torch.Tensor:
    """(B, K*C, H, W) -> (B, H, W, C, K)."""
    b, kc, h, w = t.shape
    return t.view(b, k, kc // k, h, w).permute(0, 3, 4, 2, 1)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.double() - b.double()).abs().max() / b.double().abs().max().clamp_min(1e-30)).item()


conv_shapes = st.tuples(
    st.integers(1, 3),  # batch
    st.integers(1, 12),  # height
    st.integers(1, 12),  # width
    st.integers(1, 6),  # in channels
    st.integers(1, 6),  # out channels
    st.integers(1, 7),  # kernel
    st.integers(1, 3),  # stride
    st.integers(0, 6),  # padding (kept below the kernel)
    st.integers(8, 20),  # members
)


def fit(shape):
    b, h, w, ci, co, kernel, stride, pad, k = shape
    pad = min(pad, kernel - 1)
    h, w = max(h, kernel - 2 * pad), max(w, kernel - 2 * pad)
    return b, h, w, ci, co, kernel, stride, pad, k


@settings(max_examples=40, deadline=None)
@given(conv_shapes, st.sampled_from(ISAS), st.integers(0, 2**31 - 1))
def test_conv2d_and_its_gradients_equal_torch(shape, isa, seed):
    b, h, w, ci, co, kernel, stride, pad, k = fit(shape)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, h, w, ci, k, generator=g)
    weight = torch.randn(k, co, ci, kernel, kernel, generator=g)
    ref, xt, wt = torch_reference(x, weight, stride, pad)
    dy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    ref.backward(dy)
    w5 = weight.permute(3, 4, 2, 1, 0).contiguous()
    y = torch.empty(ref.shape)
    _core.conv_forward(x.numpy(), w5.numpy(), y.numpy(), stride, pad, 1, isa)
    dy32 = dy.float().contiguous()
    dx = torch.empty_like(x)
    _core.conv_backward_data(dy32.numpy(), w5.numpy(), dx.numpy(), stride, pad, 1, isa)
    dw = torch.empty_like(w5)
    _core.conv_backward_weight(x.numpy(), dy32.numpy(), dw.numpy(), stride, pad, 1, isa)
    # float32 sums of at most 6 * 49 products, against float64
    assert relative_error(y, ref) < 1e-5
    assert relative_error(dx, members_last(xt.grad, k)) < 1e-5
    dw_ref = wt.grad.view(k, co, ci, kernel, kernel).permute(3, 4, 2, 1, 0)
    assert relative_error(dw, dw_ref) < 1e-5


@settings(max_examples=25, deadline=None)
@given(conv_shapes, st.integers(0, 2), st.integers(0, 2**31 - 1))
def test_autograd_functions_equal_torch_for_conv_and_transposed_conv(shape, op, seed):
    """``conv2d`` / ``conv_transpose2d``: values and gradients through torch.autograd."""
    b, h, w, ci, co, kernel, stride, pad, k = fit(shape)
    g = torch.Generator().manual_seed(seed)
    transposed = op > 0
    out_pad = min(op - 1, stride - 1) if transposed else 0
    if transposed:  # torch refuses an empty output too
        assume((min(h, w) - 1) * stride - 2 * pad + kernel + out_pad >= 1)
    x = torch.randn(b, h, w, ci, k, generator=g, requires_grad=True)
    shape_w = (k, ci, co, kernel, kernel) if transposed else (k, co, ci, kernel, kernel)
    weight = torch.randn(shape_w, generator=g, requires_grad=True)
    if transposed:
        y = mc.conv_transpose2d(x, weight, stride, pad, out_pad)
    else:
        y = mc.conv2d(x, weight, stride, pad)
    ref, xt, wt = torch_reference(x, weight, stride, pad, transposed, out_pad)
    assert y.shape == ref.shape
    assert relative_error(y, ref) < 1e-5
    dy = torch.randn(ref.shape, generator=g, dtype=torch.float64)
    y.backward(dy.float())
    ref.backward(dy)
    assert relative_error(x.grad, members_last(xt.grad, k)) < 1e-5
    assert relative_error(weight.grad, wt.grad.view(shape_w)) < 1e-5


def test_members_never_mix():
    """A NaN in member 3's input or weights reaches member 3's results only."""
    g = torch.Generator().manual_seed(1)
    k = 11  # two lane blocks, the second overlapping the first
    x = torch.randn(2, 9, 9, 3, k, generator=g, requires_grad=True)
    weight = torch.randn(k, 4, 3, 3, 3, generator=g, requires_grad=True)
    with torch.no_grad():
        x[1, 4, 4, 0, 3] = float("nan")
        weight[3, 0, 0, 1, 1] = float("nan")
    y = mc.conv2d(x, weight, 2, 1)
    y.sum().backward()
    for t in (y, x.grad, weight.grad.movedim(0, -1)):
        bad = torch.isnan(t)
        assert bad[..., 3].any()
        assert not torch.cat([bad[..., :3], bad[..., 4:]], dim=-1).any()


def test_thread_count_does_not_change_a_bit():
    g = torch.Generator().manual_seed(2)
    k = 19
    x = torch.randn(5, 10, 10, 4, k, generator=g)
    w5 = torch.randn(3, 3, 4, 6, k, generator=g)
    dy = torch.randn(5, 10, 10, 6, k, generator=g)
    results = []
    for threads in (1, 2, 3):
        y = torch.empty(5, 10, 10, 6, k)
        dx = torch.empty_like(x)
        dw = torch.empty_like(w5)
        _core.conv_forward(x.numpy(), w5.numpy(), y.numpy(), 1, 1, threads)
        _core.conv_backward_data(dy.numpy(), w5.numpy(), dx.numpy(), 1, 1, threads)
        _core.conv_backward_weight(x.numpy(), dy.numpy(), dw.numpy(), 1, 1, threads)
        results.append((y, dx, dw))
    for other in results[1:]:
        for a, b in zip(results[0], other, strict=True):
            assert torch.equal(a, b)


def test_supported_modules():
    assert mc.supported(torch.nn.Conv2d(3, 4, 5, stride=2, padding=2, bias=False))
    assert mc.supported(torch.nn.ConvTranspose2d(3, 4, 4, 2, 1, output_padding=1))
    assert not mc.supported(torch.nn.Conv2d(3, 4, (3, 5)))
    assert not mc.supported(torch.nn.Conv2d(3, 4, 3, stride=(1, 2)))
    assert not mc.supported(torch.nn.Conv2d(4, 4, 3, groups=2))
    assert not mc.supported(torch.nn.Conv2d(3, 4, 3, dilation=2))
    assert not mc.supported(torch.nn.Conv2d(3, 4, 3, padding="same"))
    assert not mc.supported(torch.nn.Conv2d(3, 4, 3, padding=3))
    assert not mc.supported(torch.nn.Linear(3, 4))


# --------------------------------------------------------------------------- bad input


def arrays(k=8):
    x = np.zeros((2, 6, 6, 3, k), np.float32)
    w = np.zeros((3, 3, 3, 4, k), np.float32)
    y = np.zeros((2, 6, 6, 4, k), np.float32)
    return x, w, y


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda x, w, y: (x.astype(np.float64), w, y), "x must be float32"),
        (lambda x, w, y: (x, w, y[..., :4]), "y must be C-contiguous"),
        (lambda x, w, y: (x[0], w, y), "x must be 5-d"),
        (lambda x, w, y: (x, w[:, :, :2].copy(), y), "shapes do not fit"),
        (lambda x, w, y: (x, w, np.zeros((2, 5, 6, 4, 8), np.float32)), "output grid"),
        (lambda x, w, y: (x, w, x), "overlaps|shapes do not fit"),
    ],
)
def test_bad_arrays_raise_value_error(change, match):
    x, w, y = change(*arrays())
    with pytest.raises(ValueError, match=match):
        _core.conv_forward(x, w, y, 1, 1)


def test_bad_settings_raise_value_error():
    x, w, y = arrays()
    with pytest.raises(ValueError, match="stride must be >= 1"):
        _core.conv_forward(x, w, y, 0, 1)
    with pytest.raises(ValueError, match="padding must be in"):
        _core.conv_forward(x, w, y, 1, 3)
    with pytest.raises(ValueError, match="isa must be"):
        _core.conv_forward(x, w, y, 1, 1, 1, "sse9")
    y.setflags(write=False)
    with pytest.raises(ValueError, match="writeable"):
        _core.conv_forward(x, w, y, 1, 1)
    small = arrays(k=7)
    with pytest.raises(ValueError, match="at least 8 members"):
        _core.conv_forward(*small, 1, 1)
    xo = np.zeros((2, 6, 6, 3, 8), np.float32)
    dw_in_x = xo.reshape(-1)[: 3 * 3 * 3 * 4 * 8].reshape(3, 3, 3, 4, 8)  # a view of xo
    with pytest.raises(ValueError, match="overlaps x"):
        _core.conv_backward_weight(xo, np.zeros((2, 6, 6, 4, 8), np.float32), dw_in_x, 1, 1)


def test_python_layer_checks():
    x = torch.zeros(2, 6, 6, 3, 8)
    w = torch.zeros(8, 4, 3, 3, 3)
    with pytest.raises(ValueError, match="float32"):
        mc.conv2d(x.double(), w.double())
    with pytest.raises(ValueError, match="K >= 8"):
        mc.conv2d(x[..., :4], w[:4])
    with pytest.raises(ValueError, match="input channels"):
        mc.conv2d(x, torch.zeros(8, 4, 2, 3, 3))
    with pytest.raises(ValueError, match="same on both axes"):
        mc.conv2d(x, w, stride=(1, 2))
    with pytest.raises(ValueError, match="output_padding"):
        mc.conv_transpose2d(x, torch.zeros(8, 3, 4, 3, 3), stride=2, output_padding=2)
    with pytest.raises(ValueError, match="empty"):
        mc.conv_transpose2d(x[:, :1, :1], torch.zeros(8, 3, 4, 2, 2), padding=1)
    with pytest.raises(ValueError, match="empty"):
        mc.conv2d(x[:, :1, :1], torch.zeros(8, 4, 3, 5, 5), padding=1)
