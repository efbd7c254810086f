"""Batch normalisation + ReLU in training mode, fused (C++), channels innermost.

Public names
------------
batch_norm_relu
    ``relu(batch_norm(x))`` in training mode for activations whose last axis
    is the channel axis (any leading axes are the rows the statistics run
    over): the member-batched networks' (batch, H, W, C, K) activations, with
    channel c * K + k. Differentiable; updates the running averages as
    ``F.batch_norm`` does.

Why (docs/benchmarks.md "Training"): every BatchNorm of the DenseVAE is
followed by a ReLU. As torch's two operations the pair makes three passes
over its activation forward and three backward; fused it makes two and two,
with the running averages updated in place (no copies). The passes are in
``cpp/batch_norm_kernels.inc`` (AVX2 or generic, chosen at run time): the
moments in one pass over the data shifted by its first row, sums in float
over blocks of 16 rows added into double, in a fixed order (docs/model.md
§4g). CPU and float32 only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _core
from ._kernel_args import as_numpy as _np
from ._kernel_args import check_cpu_float32

__all__ = ["batch_norm_relu"]


class _BatchNormReLU(torch.autograd.Function):
    """y = ReLU(BatchNorm(x)) over the rows of x (rows, channels); saves x, y and the
    batch statistics for the backward pass."""

    @staticmethod
    def forward(ctx, x, gamma, beta, eps, isa):  # type: ignore[override]
        y = torch.empty_like(x)
        mean = torch.empty(x.shape[1], dtype=x.dtype)
        var = torch.empty_like(mean)
        _core.batch_norm_relu_forward(
            _np(x), _np(gamma), _np(beta), eps, _np(y), _np(mean), _np(var), isa
        )
        ctx.save_for_backward(x, y, gamma, mean, var)
        ctx.eps, ctx.isa = eps, isa
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    def backward(ctx, dy, _dmean, _dvar):  # type: ignore[override]
        x, y, gamma, mean, var = ctx.saved_tensors
        dx, dgamma, dbeta = torch.empty_like(x), torch.empty_like(gamma), torch.empty_like(gamma)
        _core.batch_norm_relu_backward(
            _np(x),
            _np(y),
            _np(dy.contiguous()),
            _np(gamma),
            _np(mean),
            _np(var),
            ctx.eps,
            _np(dx),
            _np(dgamma),
            _np(dbeta),
            ctx.isa,
        )
        return dx, dgamma, dbeta, None, None


def batch_norm_relu(
    x: Tensor,
    weight: Tensor,
    bias: Tensor,
    running_mean: Tensor | None = None,
    running_var: Tensor | None = None,
    momentum: float = 0.1,
    eps: float = 1e-5,
    *,
    isa: str = "auto",
) -> Tensor:
    """``F.relu(F.batch_norm(x, ..., training=True))`` with the channels last.

    Parameters
    ----------
    x : Tensor of shape (..., channels), float32 on the CPU
        Statistics per channel over all leading axes (at least 2 values).
    weight, bias : Tensor of shape (channels,)
        BatchNorm's gamma and beta.
    running_mean, running_var : Tensor or None
        ``channels`` float32 values in any shape and strides (e.g. the
        (C, K) transpose of a (K, C) buffer, for channel c * K + k), updated
        in place as ``F.batch_norm`` updates its running averages:
        ``(1 - momentum) * running + momentum * batch``, with the unbiased
        batch variance.
    momentum, eps : float
        As ``nn.BatchNorm2d``'s (eps > 0).
    isa : {"auto", "avx2", "generic"}
        Instruction set of the C++ passes (``"auto"``: AVX2+FMA when the CPU
        has them); for tests.

    Returns
    -------
    Tensor
        Of x's shape, contiguous.

    Raises
    ------
    ValueError
        Not float32 on the CPU, shapes that do not fit, fewer than 2 rows,
        eps not > 0.
    """
    check_cpu_float32("batch_norm_relu", x=x, weight=weight, bias=bias)
    if x.ndim < 2:
        msg = f"batch_norm_relu: x must have a row axis and a channel axis; got {tuple(x.shape)}."
        raise ValueError(msg)
    channels = x.shape[-1]
    for name, t in (("weight", weight), ("bias", bias)):
        if t.shape != (channels,):
            msg = (
                f"batch_norm_relu: {name} must be float32 of shape ({channels},) on the CPU; "
                f"got {t.dtype} {tuple(t.shape)} on {t.device.type}."
            )
            raise ValueError(msg)
    for name, t in (("running_mean", running_mean), ("running_var", running_var)):
        if t is not None and (t.dtype != torch.float32 or t.numel() != channels):
            msg = (
                f"batch_norm_relu: {name} must hold {channels} float32 values; "
                f"got {t.dtype} {tuple(t.shape)}."
            )
            raise ValueError(msg)
    rows = x.numel() // channels if channels else 0
    y, mean, var = _BatchNormReLU.apply(
        x.contiguous().view(rows, channels),
        weight.contiguous(),
        bias.contiguous(),
        float(eps),
        isa,
    )
    with torch.no_grad():
        if running_mean is not None:
            running_mean.mul_(1 - momentum).add_(mean.view(running_mean.shape), alpha=momentum)
        if running_var is not None:
            unbiased = var.view(running_var.shape) * (rows / (rows - 1))
            running_var.mul_(1 - momentum).add_(unbiased, alpha=momentum)
    return y.view(x.shape)
