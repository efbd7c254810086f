"""Convolutions of K members at once with the members innermost (C++ kernels).

Public names
------------
conv2d, conv_transpose2d
    Differentiable convolutions of activations held as (batch, H, W, C, K):
    element (b, h, w, c) of member k at ``x[b, h, w, c, k]``, with stacked
    weights (K, *torch's weight shape).
supported
    Whether a ``nn.Conv2d`` / ``nn.ConvTranspose2d`` of a single model can run
    here (one stride and padding for both axes, no dilation, no groups).
MIN_MEMBERS
    The fewest members the kernels take (one SIMD vector of float32).

Why (docs/benchmarks.md "Training"): a grouped convolution with 2-16
channels a member gives GEMM-based kernels (oneDNN, PyTorch's own) too little
work per member; with the members innermost one AVX2 multiply-add serves
eight members whatever the channel count. The kernels are in
``cpp/conv_kernels.inc``; each output element is summed in a fixed order, so
results do not depend on the thread count. CPU and float32 only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import _core
from ._kernel_args import as_numpy as _np
from ._kernel_args import check_cpu_float32

__all__ = ["MIN_MEMBERS", "conv2d", "conv_transpose2d", "supported"]

MIN_MEMBERS = 8
"""The fewest members the kernels take (one AVX2 vector of float32 lanes)."""


def _single(v: int | tuple[int, ...], what: str) -> int:
    t = (v, v) if isinstance(v, int) else tuple(v)
    if len(t) != 2 or t[0] != t[1]:
        msg = f"member convolutions: {what} must be the same on both axes; got {v}."
        raise ValueError(msg)
    return int(t[0])


def supported(module: nn.Module) -> bool:
    """Whether the kernels can run ``module`` (per member) as it is configured."""
    if not isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)):
        return False
    ks, st, pd = module.kernel_size, module.stride, module.padding
    if isinstance(pd, str) or module.groups != 1 or tuple(module.dilation) != (1, 1):
        return False
    if ks[0] != ks[1] or st[0] != st[1] or pd[0] != pd[1]:
        return False
    if pd[0] >= ks[0] or module.padding_mode != "zeros":
        return False
    if isinstance(module, nn.ConvTranspose2d):
        op = module.output_padding
        return op[0] == op[1] and op[0] < st[0]
    return True


def _check(x: Tensor, w: Tensor, name: str) -> None:
    check_cpu_float32(name, x=x, weight=w)
    if x.ndim != 5 or w.ndim != 5 or x.shape[4] != w.shape[0]:
        msg = (
            f"{name}: expected x of shape (batch, H, W, C, K) and weights (K, ...); "
            f"got {tuple(x.shape)} and {tuple(w.shape)}."
        )
        raise ValueError(msg)
    if x.shape[4] < MIN_MEMBERS:
        msg = f"{name}: the kernels need K >= {MIN_MEMBERS} members; got {x.shape[4]}."
        raise ValueError(msg)


def _threads() -> int:
    """Threads of one kernel call: one. torch's OpenMP workers spin for a while after
    each of its operations, so a thread of ours started for the next convolution waits
    for a core they hold: measured (docs/benchmarks.md "Training"), a 2-thread step
    of 50 tiny members took 231-259 ms with 2 kernel threads and 224-264 ms with one,
    while the convolutions alone run 1.6x faster on two. Processes at one thread each
    (``--workers``, ``--jobs``) are the way to use more cores."""
    return 1


def _weights(w: Tensor) -> Tensor:
    """(K, A, B, kh, kw) -> (kh, kw, B, A, K): the kernels' order for both conv kinds."""
    return w.permute(3, 4, 2, 1, 0).contiguous()


def _forward(x: Tensor, w5: Tensor, shape: tuple[int, int, int], stride: int, pad: int) -> Tensor:
    """conv of x (B, H, W, Ci, K) with w5 (kh, kw, Ci, Co, K) -> (B, Ho, Wo, Co, K)."""
    y = x.new_empty((x.shape[0], *shape, x.shape[4]))
    _core.conv_forward(_np(x), _np(w5), _np(y), stride, pad, _threads())
    return y


def _backward_data(
    dy: Tensor, w5: Tensor, shape: tuple[int, int, int], stride: int, pad: int
) -> Tensor:
    """The transpose of the conv, dy (B, Ho, Wo, Co, K) -> (B, *shape, K)."""
    dx = dy.new_empty((dy.shape[0], *shape, dy.shape[4]))
    _core.conv_backward_data(_np(dy), _np(w5), _np(dx), stride, pad, _threads())
    return dx


def _backward_weight(x: Tensor, dy: Tensor, w_shape: torch.Size, stride: int, pad: int) -> Tensor:
    dw = x.new_empty(w_shape)
    _core.conv_backward_weight(_np(x), _np(dy), _np(dw), stride, pad, _threads())
    return dw


class _MemberConvolution(torch.autograd.Function):
    """A convolution of K members, or (``transposed``) its transpose.

    The two share the three kernels: the transposed convolution's output is the
    convolution's input gradient of its input and the other way round, and the
    weight gradient swaps the roles of input and output gradient.
    """

    @staticmethod
    def forward(ctx, x, w5, stride, pad, transposed, out_shape):  # type: ignore[override]
        x = x.contiguous()
        ctx.save_for_backward(x, w5)
        ctx.conf = (stride, pad, transposed)
        run = _backward_data if transposed else _forward
        return run(x, w5, out_shape, stride, pad)

    @staticmethod
    def backward(ctx, dy):  # type: ignore[override]
        x, w5 = ctx.saved_tensors
        stride, pad, transposed = ctx.conf
        dy = dy.contiguous()
        dx = dw = None
        if ctx.needs_input_grad[0]:
            run = _forward if transposed else _backward_data
            dx = run(dy, w5, tuple(x.shape[1:4]), stride, pad)
        if ctx.needs_input_grad[1]:
            inp, out = (dy, x) if transposed else (x, dy)
            dw = _backward_weight(inp, out, w5.shape, stride, pad)
        return dx, dw, None, None, None, None


def conv2d(
    x: Tensor,
    weight: Tensor,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
) -> Tensor:
    """K members' ``F.conv2d`` (no bias) with the members innermost.

    Parameters
    ----------
    x : Tensor of shape (batch, H, W, Cin, K)
    weight : Tensor of shape (K, Cout, Cin, kh, kw)
        Member k's ``nn.Conv2d.weight`` in ``weight[k]``.
    stride, padding : int or pair of equal ints

    Returns
    -------
    Tensor of shape (batch, Ho, Wo, Cout, K)
    """
    _check(x, weight, "conv2d")
    if weight.shape[2] != x.shape[3]:
        msg = f"conv2d: weight has {weight.shape[2]} input channels, x has {x.shape[3]}."
        raise ValueError(msg)
    s, p = _single(stride, "stride"), _single(padding, "padding")
    kh, kw = weight.shape[3:]
    if x.shape[1] + 2 * p < kh or x.shape[2] + 2 * p < kw:
        msg = (
            f"conv2d: the output would be empty: a {kh}x{kw} kernel on a "
            f"{x.shape[1]}x{x.shape[2]} grid padded by {p}."
        )
        raise ValueError(msg)
    shape = (
        (x.shape[1] + 2 * p - kh) // s + 1,
        (x.shape[2] + 2 * p - kw) // s + 1,
        weight.shape[1],
    )
    return _MemberConvolution.apply(x, _weights(weight), s, p, False, shape)


def conv_transpose2d(
    x: Tensor,
    weight: Tensor,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    output_padding: int | tuple[int, int] = 0,
) -> Tensor:
    """K members' ``F.conv_transpose2d`` (no bias) with the members innermost.

    Parameters
    ----------
    x : Tensor of shape (batch, H, W, Cin, K)
    weight : Tensor of shape (K, Cin, Cout, kh, kw)
        Member k's ``nn.ConvTranspose2d.weight`` in ``weight[k]``.
    stride, padding, output_padding : int or pair of equal ints

    Returns
    -------
    Tensor of shape (batch, Ho, Wo, Cout, K), Ho = (H - 1) stride - 2 padding + kh + output_padding
    """
    _check(x, weight, "conv_transpose2d")
    if weight.shape[1] != x.shape[3]:
        msg = f"conv_transpose2d: weight has {weight.shape[1]} input channels, x has {x.shape[3]}."
        raise ValueError(msg)
    s, p = _single(stride, "stride"), _single(padding, "padding")
    op = _single(output_padding, "output_padding")
    if not 0 <= op < s:
        msg = f"conv_transpose2d: output_padding must be in [0, stride); got {op} (stride {s})."
        raise ValueError(msg)
    ho, wo = (
        (n - 1) * s - 2 * p + kn + op for n, kn in zip(x.shape[1:3], weight.shape[3:], strict=True)
    )
    if ho < 1 or wo < 1:
        msg = f"conv_transpose2d: the output would be empty ({ho}x{wo})."
        raise ValueError(msg)
    return _MemberConvolution.apply(x, _weights(weight), s, p, True, (ho, wo, weight.shape[2]))
