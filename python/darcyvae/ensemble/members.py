"""How the members of a block are held: one model alone, or K stacked as one network.

The training engine (``darcyvae.ensemble.engine``) steps either holder through
the same stacked interface (a leading member axis): ``OneMember`` trains a
run's own ``DenseVAE`` with ``torch.optim.Adam`` in place; ``StackedMembers``
holds K members as a ``BatchedDenseVAE`` with ``StackedAdam`` and vmaps the
loss over them. ``stack_for`` picks one per K, by measurement
(docs/benchmarks.md, Training). Both compute ``darcyvae.losses.vae_loss`` per
member (``MemberLoss``), so member s equals the single run with seed s to
float32 rounding.
"""

from __future__ import annotations

import copy
from typing import Any

import torch
from torch import Tensor, nn

from .._run import RunState
from ..checkpoint import load_state
from ..dataset import DarcyDataset
from ..evaluation import LossSummary, evaluate_losses, loss_summaries
from ..losses import guarded_loss, vae_loss
from ..models import DenseVAE, VAENoise, VAEOutput
from .batched import BatchedDenseVAE, BatchedOutput, StackedAdam, adam_member_state, adam_update
from .reconstruction import reconstruction_nll

__all__ = ["MemberLoss", "OneMember", "StackedMembers", "stack_for"]

# --------------------------------------------------------------------------- the loss of a member


class _Precomputed:
    """Stands in for one member's DenseVAE inside ``vae_loss``: its outputs are already computed."""

    def __init__(self, output: VAEOutput, prior: nn.Module) -> None:
        self._output = output
        self.prior = prior

    def __call__(self, y: Tensor, **_: Any) -> VAEOutput:
        return self._output


class MemberLoss(nn.Module):
    """``vae_loss`` of one member from its outputs (and ``guarded_loss`` with a ``guard``).

    With several members the prior's parameters are swapped in per member by
    ``torch.func.functional_call`` (the hierarchical prior's networks)."""

    def __init__(self, prior: nn.Module) -> None:
        super().__init__()
        self.prior = prior

    def forward(
        self, y, output, noise, beta, beta_p, reduction, include_rate, guard, distortion=None
    ):
        terms = vae_loss(
            _Precomputed(output, self.prior),
            y,
            beta=beta,
            beta_p=beta_p,
            reduction=reduction,
            include_rate=include_rate,
            noise=noise,
            distortion=distortion,
        )
        nll = terms.prior_nll if terms.prior_nll is not None else torch.zeros_like(terms.loss)
        loss, fired = terms.loss, torch.zeros_like(terms.loss)
        if guard is not None:  # the released loop's phase-1 guard (docs/model.md §4d)
            loss, triggered = guarded_loss(terms, guard)
            fired = triggered.to(loss.dtype)
        return loss, terms.rec, terms.distortion, terms.rate, nll, fired


# --------------------------------------------------------------------------- how members are held


class OneMember:
    """One member: its own ``DenseVAE`` and ``torch.optim.Adam`` (the fastest for K = 1).

    Presents the stacked interface of ``StackedMembers`` (a leading member axis of
    length 1) without copying: the run's model and optimiser are trained in place.
    """

    k = 1

    def __init__(self, run: RunState) -> None:
        self.model = run.model
        self.optimizer = run.optimizer
        self.loss_module = MemberLoss(self.model.prior)
        self.hierarchical = self.model.hierarchical
        self.template = self.model  # draws the member's noise
        self._scratch: DenseVAE | None = None

    # training
    def train(self) -> None:
        self.model.train()

    def forward(self, y: Tensor, eps: Tensor) -> BatchedOutput:
        out = self.model(y[0], noise=eps[0])
        return BatchedOutput(*(t.unsqueeze(0) for t in out))

    def encode(self, y: Tensor) -> tuple[Tensor, Tensor]:
        mu, logvar = self.model.encode(y[0])
        return mu.unsqueeze(0), logvar.unsqueeze(0)

    def losses(self, y: Tensor, output: Any, eps_z, eps_xi, beta, beta_p, *rest) -> tuple:
        out = VAEOutput(*(t[0] for t in output))
        noise = VAENoise(eps_z[0], None if eps_xi is None else eps_xi[0])
        beta = beta[0] if isinstance(beta, Tensor) else beta
        beta_p = beta_p[0] if isinstance(beta_p, Tensor) else beta_p
        terms = self.loss_module(y[0], out, noise, beta, beta_p, *rest)
        return tuple(t.unsqueeze(0) for t in terms)

    def label_losses(self, one: Any, mu: Tensor, logvar: Tensor, theta: Tensor) -> Tensor:
        return one(mu[0], logvar[0], theta[0]).unsqueeze(0)

    def evaluate(self, data: DarcyDataset, *, batch_size: int, seed: int) -> list[LossSummary]:
        """``[evaluate_losses(model, data, batch_size=batch_size, seed=seed)]``."""
        return [evaluate_losses(self.model, data, batch_size=batch_size, seed=seed)]

    def set_lr(self, lr: float) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] = lr

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """``self.optimizer.step()``, as one ``adam_update`` over all parameters when it can.

        Bitwise the single-tensor step of ``torch.optim.Adam`` (and its state is kept in
        Adam's own form: checkpoints are unchanged); measured ~1 ms a step faster for the
        tiny model on one CPU thread than Adam's loop (``foreach=False``, its CPU default).
        Anything but the plain Adam the run builds (weight decay, amsgrad, ...), or
        parameters at different step counts, take Adam's own step.
        """
        opt = self.optimizer
        group = opt.param_groups[0]
        plain = (
            type(opt) is torch.optim.Adam
            and len(opt.param_groups) == 1
            and group["weight_decay"] == 0
            and not group["amsgrad"]
            and not group["maximize"]
            and not group.get("capturable")
            and not group.get("differentiable")
            and not isinstance(group["lr"], Tensor)
        )
        params = [p for p in group["params"] if p.grad is not None]
        states = [opt.state[p] for p in params]
        counts = {float(st["step"]) if st else 0.0 for st in states}
        if not plain or not params or len(counts) != 1 or params[0].device.type != "cpu":
            opt.step()
            return
        for p, st in zip(params, states, strict=True):
            if not st:  # as Adam initialises a parameter's state
                st["step"] = torch.tensor(0.0, dtype=_adam_step_dtype())
                st["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                st["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        torch._foreach_add_([st["step"] for st in states], 1)
        adam_update(
            params,
            [st["exp_avg"] for st in states],
            [st["exp_avg_sq"] for st in states],
            int(counts.pop()) + 1,
            group["lr"],
            group["betas"],
            group["eps"],
        )

    # state, in the stacked form of the ensemble checkpoint
    def state_dict(self) -> dict[str, Tensor]:
        return {n: t.detach().unsqueeze(0) for n, t in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        load_state(self.model, {n: t[0] for n, t in state.items()}, "train_ensemble (resume)")

    def optimizer_state(self) -> dict[str, Any]:
        group = self.optimizer.param_groups[0]
        params = list(self.model.parameters())
        states = [self.optimizer.state.get(p, {}) for p in params]
        steps = [int(s["step"]) for s in states if "step" in s]

        def moment(key: str) -> list[Tensor]:
            return [
                (s[key] if key in s else torch.zeros_like(p)).detach().clone().unsqueeze(0)
                for p, s in zip(params, states, strict=True)
            ]

        return {
            "step": max(steps, default=0),
            "lr": group["lr"],
            "betas": list(group["betas"]),
            "eps": group["eps"],
            "exp_avg": moment("exp_avg"),
            "exp_avg_sq": moment("exp_avg_sq"),
        }

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.optimizer.load_state_dict(adam_member_state(state, 0, self.model))

    # member 0 alone
    def member(
        self, m: int, *, with_optimizer: bool = True
    ) -> tuple[DenseVAE, torch.optim.Optimizer | None]:
        return self.model, self.optimizer

    def scratch(self) -> DenseVAE:
        """A second model of the same configuration (for a saved state; the live one trains on)."""
        if self._scratch is None:
            self._scratch = copy.deepcopy(self.model)
        return self._scratch


class StackedMembers:
    """K members as one ``BatchedDenseVAE`` with ``StackedAdam``; losses vmapped over members."""

    def __init__(self, runs: list[RunState], channels_last: bool | None, lr: float) -> None:
        models = [r.model for r in runs]
        self.k = len(models)
        self._scratch = models[0]  # reloaded with a member's state when one is needed alone
        self.hierarchical = self._scratch.hierarchical
        self.template = self._scratch  # draws each member's noise
        self.net = BatchedDenseVAE(models, channels_last=channels_last)
        for r in runs:  # the batched model holds the parameters now
            r.model = r.optimizer = None
        self.loss_module = MemberLoss(copy.deepcopy(self._scratch.prior))
        self.prior_params = {n: t for n, t in self.net.params.items() if n.startswith("prior.")}
        self.opt = StackedAdam(self.net.parameters(), lr=lr)

    def train(self) -> None:
        self.net.train()

    def forward(self, y: Tensor, eps: Tensor) -> BatchedOutput:
        return self.net(y, eps)

    def encode(self, y: Tensor) -> tuple[Tensor, Tensor]:
        return self.net.encode(y)

    def losses(self, y, output, eps_z, eps_xi, beta, beta_p, reduction, include_rate, guard):
        """(loss, rec, distortion, rate, prior_nll, guard fired) of every member, each (K,).

        With ``BatchedDenseVAE.strided_mean`` (members last) the reconstruction term of
        all members is one C++ pass over the decoder output where it lies
        (``reconstruction_nll``; torch's elementwise loss would read the view slowly)."""
        loss_module = self.loss_module
        distortion = None
        if self.net.strided_mean and y.dtype == output.y_mean.dtype == torch.float32:
            distortion = reconstruction_nll(y, output.y_mean, output.y_logvar)

        def one(params, y, mu, logvar, z, y_mean, y_logvar, eps_z, eps_xi, beta, beta_p, dist):
            out = VAEOutput(mu, logvar, z, y_mean, y_logvar)
            noise = VAENoise(eps_z, eps_xi)
            args = (y, out, noise, beta, beta_p, reduction, include_rate, guard, dist)
            return torch.func.functional_call(loss_module, params, args)

        tensors = (self.prior_params, y, *output, eps_z, eps_xi, beta, beta_p, distortion)
        dims = tuple(None if t is None or isinstance(t, float) else 0 for t in tensors)
        dims = (0, *dims[1:]) if self.prior_params else (None, *dims[1:])
        return torch.func.vmap(one, in_dims=dims)(*tensors)

    def label_losses(self, one: Any, mu: Tensor, logvar: Tensor, theta: Tensor) -> Tensor:
        return torch.func.vmap(one)(mu, logvar, theta)

    def evaluate(self, data: DarcyDataset, *, batch_size: int, seed: int) -> list[LossSummary]:
        """Every member's ``evaluate_losses(member, data, batch_size=..., seed=...)``, all
        members in one pass of the batched network (eval mode).

        Each member draws the noise its own evaluation draws (one generator seeded
        ``seed``, the same draws for every member), so member m's summary equals its own
        ``evaluate_losses`` to float32 rounding (the batched network's arithmetic)."""
        net, k = self.net, self.k

        def terms(y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
            noise = self.template.draw_noise(len(y), gen, device=y.device, dtype=y.dtype)
            y_k = y.expand(k, *y.shape)
            eps_z = noise.z.expand(k, *noise.z.shape)
            eps_xi = None if noise.xi is None else noise.xi.expand(k, *noise.xi.shape)
            out = net(y_k, eps_z)
            _, _, distortion, rate, _, _ = self.losses(
                y_k, out, eps_z, eps_xi, 1.0, 1.0, "sum", True, None
            )
            return rate, distortion, out.mu, out.logvar

        net.eval()
        try:
            return loss_summaries(terms, data, k, net.device, batch_size=batch_size, seed=seed)
        finally:
            net.train()

    def set_lr(self, lr: float) -> None:
        self.opt.lr = lr

    def zero_grad(self) -> None:
        self.opt.zero_grad()

    def step(self) -> None:
        self.opt.step()

    def state_dict(self) -> dict[str, Tensor]:
        return self.net.state_dict()

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        self.net.load_state_dict(state)

    def optimizer_state(self) -> dict[str, Any]:
        return self.opt.state_dict()

    def load_optimizer_state(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state)

    def member(
        self, m: int, *, with_optimizer: bool = True
    ) -> tuple[DenseVAE, torch.optim.Optimizer | None]:
        """Member ``m`` in the scratch model, with its Adam state (``with_optimizer``)."""
        model = self._scratch
        model.load_state_dict(self.net.member_state_dict(m))
        model.train()
        if not with_optimizer:
            return model, None
        opt_state = self.opt.state_dict(clone=False)
        optimizer = torch.optim.Adam(model.parameters(), lr=opt_state["lr"], weight_decay=0.0)
        optimizer.load_state_dict(adam_member_state(opt_state, m, model))
        return model, optimizer

    def scratch(self) -> DenseVAE:
        return self._scratch


_FORCE_BATCHED = False
"""Hold a single member as a batched network too: for ``benchmarks/bench_training.py``
(row ``batched K=1``) only, which times both paths; not for resuming a run."""


def stack_for(k: int, device: torch.device, channels_last: bool | None) -> tuple[bool, bool | None]:
    """How K members are held: (batched?, ``channels_last`` of the batched network).

    Measured (``bench_training.py --models dense_vae_tiny --ks 2,4,16 --threads 1,2
    --layouts --rounds 3``, 2-core EPYC, docs/benchmarks.md "Training"), samples/s:

    - K = 1: the run's own DenseVAE + Adam 3576 (1 thread) / 3611 (2 threads) against
      the batched path's 3552 / 2980: its own model (never slower);
    - K = 2: batched, channels last 5426 / 5811, i.e. 1.52x / 1.61x two sequential
      single runs: batched from K = 2 on;
    - channels last against NCHW: K = 2 5426 vs 3260 (1 thread), 5811 vs 4603
      (2 threads); K = 4 7451 vs 3762, 7996 vs 5795; K = 16 8143 vs 3957, 10670 vs
      7002: channels last on the CPU below K = 8; from K = 8 on, darcyvae's member
      convolution kernels (members innermost; faster than channels last, see
      ``benchmarks/bench_convolutions.py``). None lets ``BatchedDenseVAE`` pick
      (``batched.default_layout``: member kernels, channels last, or NCHW off the CPU);
      an explicit ``channels_last`` is kept.

    Not taken: dense_vae_small at 1 thread ran 1.22x faster on the batched path at
    K = 1 (807 vs 660 samples/s; 0.93x at 2 threads), and the plain DenseVAE with
    channels-last activations 1.1x (tiny) to 1.3x (small) faster at 1 thread (a
    forward + backward step); both round the convolutions differently, which moves a
    single run's pinned metrics (tests/test_training_pin.py, held to 1e-6 relative)
    by 1.1e-4 (batched) and 7e-6 (channels last) relative.
    """
    if k == 1 and not _FORCE_BATCHED:
        return False, None
    return True, channels_last


def _adam_step_dtype() -> torch.dtype:
    """The dtype of ``torch.optim.Adam``'s step count on the CPU (its ``_get_scalar_dtype``)."""
    return torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
