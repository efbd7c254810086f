"""K DenseVAEs as one batched network: grouped convolutions and batched matmuls.

Public names
------------
BatchedDenseVAE
    Stacked parameters of K DenseVAEs of one configuration and a forward pass
    that runs all of them at once (member k sees only its own inputs).
StackedAdam
    Adam over stacked parameters, elementwise, with the arithmetic of
    ``torch.optim.Adam`` (so member k follows its single run's optimiser).
BatchedOutput
    What ``BatchedDenseVAE.forward`` returns (``VAEOutput`` with a leading K).
LAYOUTS, default_layout
    The activation layouts of the convolutional parts and the one chosen when
    none is asked for.

How the members are kept apart (docs/model.md §4a per member)
---------------------------------------------------
Every parameter and buffer of a single DenseVAE becomes one tensor with a
leading member axis K. In the convolutional parts the activations of all
members share one tensor whose channel axis holds K blocks of F features;
each convolution is one grouped convolution (``groups=K``, member k's
weights act on block k only), each BatchNorm normalises K*F channels (per
member and channel, so batch statistics and running averages are those of
the single model), a dense layer concatenates within each member's block.
The fully connected layers are batched matrix products over K. Members
never mix: a NaN in one stays in its own block.

Layout (``LAYOUTS``): on the CPU with K >= 8 members in float32 the
activations live as (batch, H, W, F, K), members innermost, and darcyvae's
own convolution kernels (``convolutions.py``, ``cpp/conv_kernels.inc``) run
every member at once, one SIMD lane per member; BatchNorm then sees channel
c*K + k. Otherwise they live as (batch, H, W, K, F) (channels last: oneDNN's
grouped kernels, 1.5-3.5x faster than K separate convolutions) or
(batch, K, F, H, W) off the CPU. All give the single model's results to
rounding (docs/benchmarks.md "Training" has the speeds).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models import DenseVAE, VAEConfig, _DenseLayer
from . import convolutions as member_convs
from .batch_norm import batch_norm_relu
from .convolutions import MIN_MEMBERS

__all__ = [
    "LAYOUTS",
    "BatchedDenseVAE",
    "BatchedOutput",
    "StackedAdam",
    "adam_member_state",
    "adam_update",
    "default_layout",
]


class BatchedOutput(NamedTuple):
    """``VAEOutput`` of K members: every field has a leading member axis."""

    mu: Tensor
    """(K, batch, n)."""
    logvar: Tensor
    """(K, batch, n)."""
    z: Tensor
    """(K, batch, n)."""
    y_mean: Tensor
    """(K, batch, C, N, N); with ``BatchedDenseVAE.strided_mean`` a view of (batch, N, N, C, K)
    memory."""
    y_logvar: Tensor
    """(K, 1, 1, N, N)."""


LAYOUTS = ("members_last", "channels_last", "nchw")
"""Activation layouts of the convolutional parts (see the module notes)."""


class _Layout:
    """Activation layout of the convolutional parts (5-d; see ``LAYOUTS``).

    members_last: (B, H, W, F, K), run by darcyvae's member kernels;
    channels_last: (B, H, W, K, F) and nchw: (B, K, F, H, W), run by torch's grouped
    convolutions (member k's block of F channels on the channel axis).
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.members_last = name == "members_last"
        self.channels_last = name == "channels_last"

    def from_members(self, y: Tensor) -> Tensor:
        """(K, B, C, H, W) -> the layout."""
        if self.members_last:
            return y.permute(1, 3, 4, 2, 0).contiguous()  # B, H, W, C, K
        if self.channels_last:
            return y.permute(1, 3, 4, 0, 2).contiguous()  # B, H, W, K, C
        return y.transpose(0, 1).contiguous()  # B, K, C, H, W

    def to_members(self, x: Tensor) -> Tensor:
        """The layout -> (K, B, C, H, W) (a view)."""
        if self.members_last:
            return x.permute(4, 0, 3, 1, 2)
        return x.permute(3, 0, 4, 1, 2) if self.channels_last else x.transpose(0, 1)

    def nchw(self, x: Tensor) -> Tensor:
        """The layout -> (B, K*C, H, W) view for BatchNorm (and torch's convolutions).

        Channel index k*C + c, except members_last: c*K + k.
        """
        if self.members_last or self.channels_last:
            b, h, w, m, n = x.shape
            return x.view(b, h, w, m * n).permute(0, 3, 1, 2)
        b, k, c, h, w = x.shape
        return x.view(b, k * c, h, w)

    def from_nchw(self, t: Tensor, k: int) -> Tensor:
        """(B, K*C, H, W) -> the layout (copies only if the strides do not fit)."""
        b, kc, h, w = t.shape
        if self.members_last:
            return t.permute(0, 2, 3, 1).reshape(b, h, w, kc // k, k)
        if self.channels_last:
            return t.permute(0, 2, 3, 1).reshape(b, h, w, k, kc // k)
        return t.reshape(b, k, kc // k, h, w)

    def channels(self, t: Tensor) -> Tensor:
        """Per-member channel values (K, C) in the order of ``nchw``'s channel axis."""
        return t.t().reshape(-1) if self.members_last else t.reshape(-1)

    @property
    def feature_dim(self) -> int:
        return 3 if self.members_last else 4 if self.channels_last else 2


def default_layout(device: torch.device, dtype: torch.dtype, k: int, model: nn.Module) -> str:
    """The layout used when none is asked for: the member kernels where they run
    (CPU, float32, K >= 8, every convolution supported), else channels last on the
    CPU and NCHW elsewhere (faster there; docs/benchmarks.md "Training").
    ``model``: one member (any device, ``meta`` too), whose convolutions are checked."""
    if device.type != "cpu":
        return "nchw"
    if dtype == torch.float32 and k >= MIN_MEMBERS:
        convs = [m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
        if all(member_convs.supported(m) for m in convs):
            return "members_last"
    return "channels_last"


class BatchedDenseVAE:
    """K DenseVAEs of one configuration run as one network (see the module notes).

    Parameters
    ----------
    models : sequence of DenseVAE
        The members, all with the same ``config`` and on the same device and
        dtype. Their parameters and buffers are copied (stacked); the
        models themselves are left untouched.
    channels_last : bool or None, default=None
        True / False: torch's grouped convolutions with the activations
        channels last, (B, H, W, K, F), or (B, K, F, H, W). None: the fastest
        layout (``default_layout``): darcyvae's member kernels where they run
        (CPU, float32, K >= 8), else channels last on the CPU and
        (B, K, F, H, W) elsewhere.

    Attributes
    ----------
    k : int
        Number of members.
    config : VAEConfig
    params : dict of str to Tensor
        ``name -> (K, *shape)`` leaf tensors (``requires_grad``), named as
        in ``DenseVAE.named_parameters``.
    buffers : dict of str to Tensor
        ``name -> (K, *shape)`` BatchNorm statistics and prior buffers.
    fuse_batch_norm : bool, default=True
        In the members-last layout in training, run each BatchNorm + ReLU
        pair as darcyvae's fused layer (``batch_norm.batch_norm_relu``);
        False: torch's ``F.batch_norm`` and ``F.relu`` on the same memory
        (``benchmarks/bench_batch_norm.py`` compares the two).
    fuse_reconstruction : bool, default=True
        In the members-last layout, leave the decoder mean as a strided view
        of its (batch, N, N, C, K) memory (``strided_mean``), for the
        training engine's one-pass reconstruction term
        (``reconstruction.reconstruction_nll``); False: copied into
        (K, batch, C, N, N) for torch's elementwise loss.

    Notes
    -----
    Supports the DenseVAE's encoder and decoder with any prior whose
    parameters are not needed for the forward pass (std_norm,
    scaled_gaussian); the hierarchical prior's networks are not part of
    ``forward`` (its terms are computed per member by the caller).
    """

    fuse_batch_norm: bool = True
    fuse_reconstruction: bool = True

    def __init__(self, models: Sequence[DenseVAE], *, channels_last: bool | None = None) -> None:
        models = list(models)
        if not models:
            msg = "BatchedDenseVAE: models must hold at least one DenseVAE; got none."
            raise ValueError(msg)
        for m in models:
            if not isinstance(m, DenseVAE):
                msg = f"BatchedDenseVAE: every member must be a DenseVAE; got {type(m).__name__}."
                raise TypeError(msg)
        config = models[0].config
        if any(m.config != config for m in models):
            msg = "BatchedDenseVAE: all members must have the same VAEConfig."
            raise ValueError(msg)
        self.config: VAEConfig = config
        self.k = len(models)
        first = next(models[0].parameters())
        self.device, self.dtype = first.device, first.dtype
        self.training = True
        self.template = copy.deepcopy(models[0]).to("meta")
        if channels_last is None:
            name = default_layout(self.device, self.dtype, self.k, self.template)
        else:
            name = "channels_last" if channels_last else "nchw"
        self.layout = _Layout(name)
        with torch.no_grad():
            self.params = {
                name: torch.stack([dict(m.named_parameters())[name].detach() for m in models])
                .clone()
                .requires_grad_(True)
                for name, _ in models[0].named_parameters()
            }
            self.buffers = {
                name: torch.stack([dict(m.named_buffers())[name] for m in models]).clone()
                for name, _ in models[0].named_buffers()
            }

    @property
    def strided_mean(self) -> bool:
        """Whether ``decode`` returns the mean as a view of members-last memory (no copy)."""
        return self.fuse_reconstruction and self.layout.members_last

    # ------------------------------------------------------------------ state

    def parameters(self) -> list[Tensor]:
        """The stacked parameters, in ``DenseVAE.parameters()`` order."""
        return list(self.params.values())

    def train(self, mode: bool = True) -> BatchedDenseVAE:
        """Training mode (batch statistics in BatchNorm) or eval mode (running statistics)."""
        self.training = bool(mode)
        return self

    def eval(self) -> BatchedDenseVAE:
        """Eval mode."""
        return self.train(False)

    def member_state_dict(self, k: int) -> dict[str, Tensor]:
        """Member ``k`` as a ``DenseVAE.state_dict()`` (copies, detached)."""
        out = {}
        for name in self.template.state_dict():
            src = self.params[name] if name in self.params else self.buffers[name]
            out[name] = src[k].detach().clone()
        return out

    def member(self, k: int) -> DenseVAE:
        """Member ``k`` as a stand-alone DenseVAE on the ensemble's device (train mode)."""
        model = DenseVAE(self.config).to(device=self.device, dtype=self.dtype)
        model.load_state_dict(self.member_state_dict(k))
        return model

    @torch.no_grad()
    def load_member(self, k: int, model: DenseVAE) -> None:
        """Overwrite member ``k`` with ``model``'s parameters and buffers."""
        state = model.state_dict()
        for name, t in self.params.items():
            t[k].copy_(state[name])
        for name, t in self.buffers.items():
            t[k].copy_(state[name])

    def state_dict(self) -> dict[str, Tensor]:
        """Stacked parameters and buffers (for the ensemble checkpoint)."""
        return {**{n: t.detach() for n, t in self.params.items()}, **self.buffers}

    @torch.no_grad()
    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        """Inverse of ``state_dict`` (shapes must match)."""
        for name, t in {**self.params, **self.buffers}.items():
            if name not in state or tuple(state[name].shape) != tuple(t.shape):
                msg = f"BatchedDenseVAE.load_state_dict: missing or mis-shaped entry {name!r}."
                raise ValueError(msg)
            t.copy_(state[name])

    # ------------------------------------------------------------------ forward

    def forward(self, y: Tensor, eps: Tensor) -> BatchedOutput:
        """Encode, reparameterise with the given noise, decode; all members at once.

        Parameters
        ----------
        y : Tensor of shape (K, batch, C, N, N)
            Member k's batch in ``y[k]``.
        eps : Tensor of shape (K, batch, n)
            Standard normal noise of the reparameterisation z = mu + e^(logvar/2) eps
            (member k's draws in ``eps[k]``).

        Returns
        -------
        BatchedOutput
        """
        mu, logvar = self.encode(y)
        z = mu + torch.exp(0.5 * logvar) * eps
        y_mean, y_logvar = self.decode(z)
        return BatchedOutput(mu, logvar, z, y_mean, y_logvar)

    __call__ = forward

    def encode(self, y: Tensor) -> tuple[Tensor, Tensor]:
        """``(mu, logvar)``, each (K, batch, n), for ``y`` (K, batch, C, N, N)."""
        if y.ndim != 5 or y.shape[0] != self.k:
            msg = (
                f"BatchedDenseVAE: y must have shape (K={self.k}, batch, C, N, N); "
                f"got {tuple(y.shape)}."
            )
            raise ValueError(msg)
        x = self.layout.from_members(y)
        enc = self.template.encoder
        return (
            self._encoder_network(enc.mean_net, "encoder.mean_net.", x),
            self._encoder_network(enc.logvar_net, "encoder.logvar_net.", x),
        )

    def decode(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, logvar)``: (K, batch, C, N, N) and (K, 1, 1, N, N).

        With ``strided_mean`` ``mean`` is a strided view of the decoder's
        (batch, N, N, C, K) output (no copy); else contiguous."""
        dec = self.template.decoder
        h = self._run(dec.head, "decoder.head.", z)  # K, B, flat
        f, s, _ = dec._bottleneck
        h = h.view(self.k, -1, f, s, s)
        x = self.layout.from_members(h)
        x = self._run(dec.features, "decoder.features.", x)
        mean = self.layout.to_members(x)
        # strided_mean: the view, which the engine's loss reads in place
        # (ensemble.reconstruction); otherwise one copy into (K, batch, C, N, N): torch's
        # elementwise loss on the strided view of channels last ran ~5x slower
        if not self.strided_mean:
            mean = mean.contiguous()
        return mean, self.params["decoder.output_logvar"]

    def _encoder_network(self, net: nn.Module, prefix: str, x: Tensor) -> Tensor:
        h = self._run(net.features, prefix + "features.", x)
        flat = self.layout.to_members(h).reshape(self.k, h.shape[0], -1)  # K, B, F*h*w
        return self._run(net.head, prefix + "head.", flat)

    def _run(self, module: nn.Module, prefix: str, x: Tensor) -> Tensor:
        """Apply the batched version of ``module`` (a part of the template) to ``x``."""
        p, lay, k = self.params, self.layout, self.k
        if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d)) and lay.members_last:
            return self._member_conv(module, p[prefix + "weight"], p.get(prefix + "bias"), x)
        if isinstance(module, nn.Conv2d):
            w = p[prefix + "weight"]
            w = w.reshape(k * w.shape[1], *w.shape[2:])
            bias = p[prefix + "bias"].reshape(-1) if module.bias is not None else None
            t = F.conv2d(lay.nchw(x), w, bias, module.stride, module.padding, module.dilation, k)
            return lay.from_nchw(t, k)
        if isinstance(module, nn.ConvTranspose2d):
            w = p[prefix + "weight"]  # K, in, out, kh, kw
            w = w.reshape(k * w.shape[1], *w.shape[2:])
            bias = p[prefix + "bias"].reshape(-1) if module.bias is not None else None
            t = F.conv_transpose2d(
                lay.nchw(x),
                w,
                bias,
                module.stride,
                module.padding,
                module.output_padding,
                k,
                module.dilation,
            )
            return lay.from_nchw(t, k)
        if isinstance(module, nn.BatchNorm2d):
            b = self.buffers
            if self.training and module.track_running_stats:
                b[prefix + "num_batches_tracked"].add_(1)
            mean, var = b[prefix + "running_mean"], b[prefix + "running_var"]
            if lay.members_last:  # channel index c*K + k: F.batch_norm updates copies
                run_mean, run_var = lay.channels(mean), lay.channels(var)
            else:
                run_mean, run_var = mean.view(-1), var.view(-1)
            t = F.batch_norm(
                lay.nchw(x),
                run_mean,
                run_var,
                lay.channels(p[prefix + "weight"]),
                lay.channels(p[prefix + "bias"]),
                self.training,
                module.momentum,
                module.eps,
            )
            if lay.members_last and self.training:
                with torch.no_grad():
                    mean.copy_(run_mean.view(-1, k).t())
                    var.copy_(run_var.view(-1, k).t())
            return lay.from_nchw(t, k)
        if isinstance(module, nn.ReLU):
            return F.relu(x)
        if isinstance(module, nn.Linear):  # x: K, B, in
            w, bias = p[prefix + "weight"], p.get(prefix + "bias")
            if bias is None:
                return torch.bmm(x, w.transpose(1, 2))
            return torch.baddbmm(bias.unsqueeze(1), x, w.transpose(1, 2))
        if isinstance(module, _DenseLayer):
            return torch.cat([x, self._run_children(module, prefix, x)], dim=lay.feature_dim)
        if isinstance(module, nn.Sequential) and type(module).forward is nn.Sequential.forward:
            return self._run_children(module, prefix, x)
        msg = f"BatchedDenseVAE: no batched version of {type(module).__name__} ({prefix!r})."
        raise TypeError(msg)

    def _run_children(self, module: nn.Module, prefix: str, x: Tensor) -> Tensor:
        """The children of ``module`` one after the other; in the members-last layout in
        training, each BatchNorm followed by a ReLU runs as one fused operation."""
        children = list(module.named_children())
        i = 0
        while i < len(children):
            name, child = children[i]
            following = children[i + 1][1] if i + 1 < len(children) else None
            if self._fuses(child, following, x):
                x = self._batch_norm_relu(child, f"{prefix}{name}.", x)
                i += 2
            else:
                x = self._run(child, f"{prefix}{name}.", x)
                i += 1
        return x

    def _fuses(self, module: nn.Module, following: nn.Module | None, x: Tensor) -> bool:
        """Whether ``module`` and ``following`` run as ``batch_norm_relu``: a training-mode
        BatchNorm2d (batch statistics, running averages with a momentum) and a ReLU, on
        the members-last layout in float32 (docs/model.md §4g)."""
        return (
            self.fuse_batch_norm
            and self.layout.members_last
            and self.training
            and isinstance(module, nn.BatchNorm2d)
            and isinstance(following, nn.ReLU)
            and module.track_running_stats
            and module.momentum is not None
            and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu")
        )

    def _batch_norm_relu(self, module: nn.BatchNorm2d, prefix: str, x: Tensor) -> Tensor:
        """ReLU(BatchNorm(x)) of every member in one pass (x: (B, H, W, C, K), channel
        c*K + k); the running averages of member k are updated in place."""
        b, p = self.buffers, self.params
        b[prefix + "num_batches_tracked"].add_(1)
        y = batch_norm_relu(
            x.flatten(-2),  # channel c*K + k last
            self.layout.channels(p[prefix + "weight"]),
            self.layout.channels(p[prefix + "bias"]),
            b[prefix + "running_mean"].t(),  # (C, K) views of the (K, C) buffers
            b[prefix + "running_var"].t(),
            module.momentum,
            module.eps,
        )
        return y.view(x.shape)

    def _member_conv(self, module: nn.Module, w: Tensor, bias: Tensor | None, x: Tensor) -> Tensor:
        """``module`` of every member by the member kernels (x: (B, H, W, C, K))."""
        if isinstance(module, nn.Conv2d):
            y = member_convs.conv2d(x, w, module.stride, module.padding)
        else:
            y = member_convs.conv_transpose2d(
                x, w, module.stride, module.padding, module.output_padding
            )
        return y if bias is None else y + bias.t()  # bias (K, C) -> (C, K)


class StackedAdam:
    """Adam (weight decay 0) over stacked parameters, elementwise per member.

    Follows ``torch.optim.Adam``'s update step by step (``exp_avg.lerp_``,
    ``exp_avg_sq.mul_().addcmul_()``, bias corrections from the step count,
    ``addcdiv_``; as ``torch._foreach_*`` ops over all tensors, which are
    elementwise the same arithmetic), so on the same gradients member k's
    parameters move exactly as its single run's. All members share the step
    count (members that restart run in a new ensemble).

    Parameters
    ----------
    params : list of Tensor
        Stacked leaf tensors (K, ...).
    lr : float
    betas : (float, float), default=(0.9, 0.999)
    eps : float, default=1e-8
    """

    def __init__(
        self,
        params: list[Tensor],
        lr: float,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
    ) -> None:
        self.params = list(params)
        self.lr = float(lr)
        self.betas = (float(betas[0]), float(betas[1]))
        self.eps = float(eps)
        self.step_count = 0
        self.exp_avg = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]
        self.exp_avg_sq = [torch.zeros_like(p, memory_format=torch.preserve_format) for p in params]

    def zero_grad(self) -> None:
        """Drop the gradients (set to None)."""
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self) -> None:
        """One Adam step on every stacked parameter."""
        self.step_count += 1
        live = [
            (p, m, v)
            for p, m, v in zip(self.params, self.exp_avg, self.exp_avg_sq, strict=True)
            if p.grad is not None
        ]
        if live:
            params, ms, vs = (list(t) for t in zip(*live, strict=True))
            adam_update(params, ms, vs, self.step_count, self.lr, self.betas, self.eps)

    def state_dict(self, *, clone: bool = True) -> dict:
        """Step count, moments and hyper-parameters (for the ensemble checkpoint).

        ``clone=False`` returns the live moment tensors (no copy).
        """

        def copy(t: Tensor) -> Tensor:
            return t.detach().clone() if clone else t

        return {
            "step": self.step_count,
            "lr": self.lr,
            "betas": list(self.betas),
            "eps": self.eps,
            "exp_avg": [copy(m) for m in self.exp_avg],
            "exp_avg_sq": [copy(v) for v in self.exp_avg_sq],
        }

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Inverse of ``state_dict``."""
        self.step_count = int(state["step"])
        self.lr = float(state["lr"])
        for dst, src in zip(self.exp_avg, state["exp_avg"], strict=True):
            dst.copy_(src)
        for dst, src in zip(self.exp_avg_sq, state["exp_avg_sq"], strict=True):
            dst.copy_(src)


@torch.no_grad()
def adam_update(
    params: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    step: int,
    lr: float,
    betas: tuple[float, float],
    eps: float,
) -> None:
    """One Adam step (weight decay 0) of ``params`` from their ``.grad``, the moments in place.

    ``torch.optim.Adam``'s single-tensor arithmetic (``lerp_``, ``mul_().addcmul_()``,
    ``sqrt() / sqrt(bias correction 2) + eps``, ``addcdiv_`` by ``lr / bias correction 1``),
    written as one ``torch._foreach_*`` op over all tensors at a time with Python-float
    scalars: elementwise the same, so bitwise the same results, without the per-tensor
    step counts and scalar lists of Adam's own multi-tensor path (~1 ms less a step for the
    tiny model on one CPU thread). ``step`` is the step count after this step (>= 1).
    """
    beta1, beta2 = betas
    bias_correction1 = 1 - beta1 ** float(step)
    bias_correction2 = 1 - beta2 ** float(step)
    step_size = lr / bias_correction1
    bias_correction2_sqrt = bias_correction2**0.5
    grads = [p.grad for p in params]
    torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
    torch._foreach_mul_(exp_avg_sqs, beta2)
    torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
    denom = torch._foreach_sqrt(exp_avg_sqs)
    torch._foreach_div_(denom, bias_correction2_sqrt)
    torch._foreach_add_(denom, eps)
    torch._foreach_addcdiv_(params, exp_avgs, denom, value=-step_size)


def adam_member_state(state: dict, k: int, model: DenseVAE) -> dict:
    """Member ``k`` of a ``StackedAdam.state_dict()`` as ``torch.optim.Adam(model.parameters())``'s."""
    opt = torch.optim.Adam(
        model.parameters(), lr=state["lr"], betas=tuple(state["betas"]), eps=state["eps"]
    )
    out = opt.state_dict()
    if state["step"]:
        step = torch.tensor(float(state["step"]))
        out["state"] = {
            i: {
                "step": step.clone(),
                "exp_avg": m[k].detach().clone(),
                "exp_avg_sq": v[k].detach().clone(),
            }
            for i, (m, v) in enumerate(zip(state["exp_avg"], state["exp_avg_sq"], strict=True))
        }
    return out
