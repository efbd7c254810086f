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


@pytest.mark.parametrize("member", [3, 9])
def test_members_never_mix(member):
    """A NaN in one member's input or weights reaches that member's results only: member
    3 of a block of 8, member 9 of the shared block of the 3 left over (K = 11)."""
    g = torch.Generator().manual_seed(1)
    k = 11
    x = torch.randn(2, 9, 9, 3, k, generator=g, requires_grad=True)
    weight = torch.randn(k, 4, 3, 3, 3, generator=g, requires_grad=True)
    with torch.no_grad():
        x[1, 4, 4, 0, member] = float("nan")
        weight[member, 0, 0, 1, 1] = float("nan")
    y = mc.conv2d(x, weight, 2, 1)
    y.sum().backward()
    for t in (y, x.grad, weight.grad.movedim(0, -1)):
        bad = torch.isnan(t)
        assert bad[..., member].any()
        assert not torch.cat([bad[..., :member], bad[..., member + 1 :]], dim=-1).any()


def test_an_images_nan_stays_in_that_image_in_a_shared_block():
    """The shared block's lanes hold several images of a member: a NaN in image 1's input
    reaches image 1's output and input gradient only (and the member's weight gradient)."""
    g = torch.Generator().manual_seed(3)
    k = 9  # the ninth member's images fill the shared block's lanes
    x = torch.randn(5, 6, 6, 2, k, generator=g, requires_grad=True)
    weight = torch.randn(k, 3, 2, 3, 3, generator=g, requires_grad=True)
    with torch.no_grad():
        x[1, 2, 2, 1, 8] = float("nan")
    y = mc.conv2d(x, weight, 1, 1)
    (y * torch.isfinite(y)).nan_to_num().sum().backward()
    bad = torch.isnan(y)
    assert bad[1, ..., 8].any()
    assert bad.sum() == bad[1, ..., 8].sum()
    assert torch.isnan(weight.grad[8]).any()
    assert not torch.isnan(weight.grad[:8]).any()


@settings(max_examples=30, deadline=None)
@given(
    conv_shapes,
    st.integers(0, 11),
    st.integers(0, 11),
    st.sampled_from(ISAS),
    st.integers(0, 2**31 - 1),
)
def test_a_members_results_do_not_depend_on_its_lane_block(shape, before, after, isa, seed):
    """The same members computed in ensembles of other sizes, at other lanes: in a block
    of 8 members, one moved back to overlap its neighbour, or a shared block (the one to
    four members left after the blocks of 8, several images of each a pass). The output
    and the input gradient keep their bits (each lane sums the same taps in the same
    order); the weight gradient, summed over the images in another order in a shared
    block, agrees to float32 rounding."""
    b, h, w, ci, co, kernel, stride, pad, k = fit(shape)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, h, w, ci, k + before + after, generator=g)
    w5 = torch.randn(kernel, kernel, ci, co, k + before + after, generator=g)
    ho, wo = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
    dy = torch.randn(b, ho, wo, co, k + before + after, generator=g)
    inner = slice(before, before + k)

    def run(x, w5, dy):
        y, dx, dw = torch.empty(dy.shape), torch.empty(x.shape), torch.empty(w5.shape)
        _core.conv_forward(x.numpy(), w5.numpy(), y.numpy(), stride, pad, 1, isa)
        _core.conv_backward_data(dy.numpy(), w5.numpy(), dx.numpy(), stride, pad, 1, isa)
        _core.conv_backward_weight(x.numpy(), dy.numpy(), dw.numpy(), stride, pad, 1, isa)
        return y, dx, dw

    (y, dx, dw), alone = run(x, w5, dy), run(*(t[..., inner].contiguous() for t in (x, w5, dy)))
    assert torch.equal(y[..., inner], alone[0])
    assert torch.equal(dx[..., inner], alone[1])
    # each weight's sum over the images and pixels, in absolute values: its rounding scale
    scale = torch.empty(dw.shape)
    _core.conv_backward_weight(x.abs().numpy(), dy.abs().numpy(), scale.numpy(), stride, pad, 1)
    assert torch.all((dw[..., inner] - alone[2]).abs() <= 1e-5 * scale[..., inner] + 1e-30)


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
