"""The reconstruction term of K stacked decoders in one pass (C++), in any layout.

Public names
------------
reconstruction_nll
    ``darcyvae.losses.reconstruction_loss(..., reduction="sum")`` of every
    member at once: (K, batch) nats from the data and decoder means
    (K, batch, C, N, N), which may be strided views, and the log-variances
    (K, 1, 1, N, N). Differentiable in the means and log-variances.

Why (docs/benchmarks.md "Training"): as torch operations the Gaussian
negative log-likelihood makes about ten elementwise passes over the decoder
output, forward and backward, and the members-last decoder output
(batch, H, W, C, K) had to be copied into (K, batch, C, H, W) before them and
its gradient copied back after. Here one C++ pass reads the output where it
lies and one writes its gradient in the same layout (``cpp/reconstruction.cpp``,
sums in double, in the order of the mean's memory). CPU and float32 only.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import _core
from ._kernel_args import as_numpy as _np
from ._kernel_args import check_cpu_float32

__all__ = ["reconstruction_nll"]


class _ReconstructionNLL(torch.autograd.Function):
    """(K, B) nats of the Gaussian decoder; saves the inputs for the backward pass."""

    @staticmethod
    def forward(ctx, y, mean, logvar):  # type: ignore[override]
        out = y.new_empty(y.shape[:2])
        _core.reconstruction_nll_forward(_np(y), _np(mean), _np(logvar), _np(out))
        ctx.save_for_backward(y, mean, logvar)
        return out

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        y, mean, logvar = ctx.saved_tensors
        # preserve_format: mean's own strides when they are dense (the members-last
        # output), so the decoder's last layer gets its gradient in its own layout
        dmean = torch.empty_like(mean)
        dlogvar = torch.empty_like(logvar)
        _core.reconstruction_nll_backward(
            _np(y),
            _np(mean),
            _np(logvar),
            _np(grad.contiguous()),
            _np(dmean),
            _np(dlogvar),
        )
        dy = -dmean if ctx.needs_input_grad[0] else None
        return dy, dmean, dlogvar


def reconstruction_nll(y: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """The decoder's negative log-likelihood of the data per member and sample, in nats.

    .. math:: L_{kb} = \\tfrac12 \\sum_{c,i,j} \\left(\\log 2\\pi + s_{kij}
              + (y_{kbcij} - \\mu_{kbcij})^2 e^{-s_{kij}}\\right)

    Equal to ``reconstruction_loss(y[k], mean[k], logvar[k], reduction="sum")`` for
    every member k, to float32 rounding (docs/model.md §4b, §4g).

    Parameters
    ----------
    y, mean : Tensor of shape (K, batch, C, N, M), float32 on the CPU
        Data and decoder means; any strides (e.g. the permuted view of the
        members-last decoder output), read in place.
    logvar : Tensor of shape (K, 1, 1, N, M), float32 on the CPU
        The decoders' log-variances s.

    Returns
    -------
    Tensor of shape (K, batch)

    Raises
    ------
    ValueError
        Not float32 on the CPU, shapes that do not fit, an empty axis.
    """
    check_cpu_float32("reconstruction_nll", y=y, mean=mean, logvar=logvar)
    if y.ndim != 5 or mean.shape != y.shape or 0 in y.shape:
        msg = (
            "reconstruction_nll: y and mean must have one shape (K, batch, C, N, M) with no "
            f"empty axis; got {tuple(y.shape)} and {tuple(mean.shape)}."
        )
        raise ValueError(msg)
    k, _, _, n, m = y.shape
    if logvar.shape != (k, 1, 1, n, m):
        msg = (
            f"reconstruction_nll: logvar must have shape ({k}, 1, 1, {n}, {m}); "
            f"got {tuple(logvar.shape)}."
        )
        raise ValueError(msg)
    return _ReconstructionNLL.apply(y, mean, logvar.reshape(k, n, m).contiguous())
