"""Losses, the beta schedule and the training loop of the paper (SPEC 4b-4f).

Public names
------------
reconstruction_loss, gaussian_kl, gaussian_log_prob
    Per-sample loss pieces (SPEC 4b).
hierarchical_bound_terms, HierarchicalTerms
    The Monte Carlo Jensen bound of the hierarchical prior (SPEC 4c).
label_loss
    The semi-supervised label term (SPEC 4f).
vae_loss, LossTerms
    One batch: the objective to minimise plus rate and distortion in nats.
update_beta, BetaSchedule
    The adaptive beta rule (SPEC 4d) and its two-phase schedule.
learning_rate
    The piecewise-constant learning rate of the released configuration.
distortion_bound, detect_over_regularization, OverRegularization
    Theorem 1's distortion of an over-regularised VAE and the detector (SPEC 4e).
evaluate_losses, LossSummary
    Rate, distortion and latent codes of a model over a whole dataset.
TrainConfig
    Frozen run configuration, read from and written to TOML.
list_presets, load_preset
    The shipped configurations of the paper's experiments.
train, train_with_restarts, TrainResult, TrainingDivergedError
    The training loop (checkpoints, exact resume, logs) and the trial runner
    that restarts over-regularised runs with a new seed.
load_checkpoint, load_model
    Read what ``train`` wrote.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, fields
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from . import _toml
from ._checks import check_choice, check_int, check_real, config_kwargs
from ._device import resolve_device, to_device_async
from ._io import atomic_path, atomic_write_text
from .dataset import ChannelStats, DarcyDataset, make_loader
from .metrics import s_d
from .models import DenseVAE, HierarchicalPrior, VAEConfig, VAEOutput

__all__ = [
    "BetaSchedule",
    "HierarchicalTerms",
    "LossSummary",
    "LossTerms",
    "OverRegularization",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "detect_over_regularization",
    "distortion_bound",
    "evaluate_losses",
    "gaussian_kl",
    "gaussian_log_prob",
    "hierarchical_bound_terms",
    "label_loss",
    "learning_rate",
    "list_presets",
    "load_checkpoint",
    "load_model",
    "load_preset",
    "reconstruction_loss",
    "train",
    "train_with_restarts",
    "update_beta",
    "vae_loss",
]

log = logging.getLogger(__name__)

LOG_2PI = math.log(2.0 * math.pi)
REDUCTIONS = ("mean", "sum")
"""``mean``: the released code's L_rec / N^2 + beta L_reg / n (L_reg summed with HP);
``sum``: the true negative ELBO per sample."""
LABEL_LOSSES = ("nll", "mse")
"""Semi-supervised label terms (SPEC 4f)."""
BETA_MODES = ("adaptive", "fixed")
"""``adaptive``: the paper's rule (SPEC 4d); ``fixed``: a beta-VAE with constant beta."""
NORMALIZATIONS = ("none", "channel")

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "metrics.jsonl"
CONFIG_NAME = "config.toml"
SUMMARY_NAME = "summary.json"
_CHECKPOINT_FORMAT = 1


# --------------------------------------------------------------------------- loss pieces


def reconstruction_loss(
    y: Tensor, mean: Tensor, logvar: Tensor, *, reduction: str = "mean"
) -> Tensor:
    """Gaussian negative log-likelihood -log p_psi(y|z) per sample (SPEC 4b).

    .. math:: L_{rec} = \\sum_{c,i,j} \\tfrac12 \\left(\\log 2\\pi + s_{ij}
              + (y_{cij} - \\mu_{cij})^2 e^{-s_{ij}}\\right)

    Parameters
    ----------
    y, mean : Tensor of shape (batch, C, N, N)
        Data and decoder mean.
    logvar : Tensor broadcastable to (batch, C, N, N)
        Decoder log-variance s (the model's is (1, 1, N, N)).
    reduction : {"mean", "sum"}, default="mean"
        ``"sum"``: nats per sample; ``"mean"``: divided by N^2 (channels
        summed, pixels averaged), the released code's convention.

    Returns
    -------
    Tensor of shape (batch,)
    """
    check_choice(reduction, "reduction", "reconstruction_loss", REDUCTIONS)
    nll = 0.5 * (LOG_2PI + logvar + (y - mean).square() * torch.exp(-logvar))
    per_sample = nll.sum(dim=tuple(range(1, y.ndim)))
    if reduction == "mean":
        per_sample = per_sample / (y.shape[-1] * y.shape[-2])
    return per_sample


def gaussian_kl(mu: Tensor, logvar: Tensor, variance: Tensor | None = None) -> Tensor:
    """KL(N(mu, diag e^logvar) || N(0, diag v)) per latent dimension (SPEC 4b).

    .. math:: \\tfrac12\\left(\\mu_k^2/v_k + \\sigma_k^2/v_k - 1 - \\log\\sigma_k^2
              + \\log v_k\\right)

    Parameters
    ----------
    mu, logvar : Tensor of shape (batch, n)
    variance : Tensor of shape (n,) or None, default=None
        The prior variances v; None means v = 1.

    Returns
    -------
    Tensor of shape (batch, n)
    """
    if variance is None:
        return 0.5 * (mu.square() + torch.exp(logvar) - 1.0 - logvar)
    return 0.5 * ((mu.square() + torch.exp(logvar)) / variance - 1.0 - logvar + torch.log(variance))


def gaussian_log_prob(x: Tensor, mean: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(x; mean, e^logvar) (same shape as the broadcast inputs)."""
    return -0.5 * (LOG_2PI + logvar + (x - mean).square() * torch.exp(-logvar))


class HierarchicalTerms(NamedTuple):
    """Per-sample pieces of the hierarchical-prior bound (SPEC 4c), each (batch,)."""

    log_q: Tensor
    """log q_phi(z|y) at the sampled z."""
    kl_xi: Tensor
    """KL(q_gamma(xi|z) || N(0, I)), in closed form."""
    nll_z: Tensor
    """-log p_pi(z|xi) at the sampled xi."""


def hierarchical_bound_terms(
    prior: HierarchicalPrior,
    z: Tensor,
    mu: Tensor,
    logvar: Tensor,
    *,
    generator: torch.Generator | None = None,
) -> HierarchicalTerms:
    """Monte Carlo pieces of the Jensen bound on KL(q_phi(z|y) || p(z)) (SPEC 4c).

    .. math:: L_{reg}^{HP} = \\log q_\\phi(z|y) + KL(q_\\gamma(\\xi|z) \\| N(0, I))
              - \\log p_\\pi(z|\\xi),\\quad z \\sim q_\\phi(z|y),\\ \\xi \\sim q_\\gamma(\\xi|z)

    Its expectation is at least the true KL(q_phi(z|y) || p(z)) of the
    learned prior p(z) = E_{N(xi; 0, I)} p_pi(z|xi), with equality when
    q_gamma(xi|z) is the exact posterior of xi.

    Parameters
    ----------
    prior : HierarchicalPrior
    z : Tensor of shape (batch, n)
        Samples of q_phi(z|y) (reparameterised, so gradients reach the encoder).
    mu, logvar : Tensor of shape (batch, n)
        The encoder's mean and log-variance.
    generator : torch.Generator or None
        Draws xi's reparameterisation noise.

    Returns
    -------
    HierarchicalTerms
        ``log_q + kl_xi + nll_z`` is the per-sample bound in nats.
    """
    log_q = gaussian_log_prob(z, mu, logvar).sum(dim=1)
    xi_mean, xi_logvar = prior.encode(z)
    eps = torch.randn(xi_mean.shape, generator=generator, device=z.device, dtype=z.dtype)
    xi = xi_mean + torch.exp(0.5 * xi_logvar) * eps
    kl_xi = gaussian_kl(xi_mean, xi_logvar).sum(dim=1)
    z_mean, z_logvar = prior.decode(xi)
    nll_z = -gaussian_log_prob(z, z_mean, z_logvar).sum(dim=1)
    return HierarchicalTerms(log_q, kl_xi, nll_z)


def _reduce_latent(x: Tensor, reduction: str, hierarchical: bool) -> Tensor:
    """(batch, n) -> (batch,): mean over n for ``mean`` without HP, else the sum."""
    if reduction == "mean" and not hierarchical:
        return x.mean(dim=1)
    return x.sum(dim=1)


def label_loss(
    mu: Tensor,
    logvar: Tensor,
    theta: Tensor,
    *,
    kind: str = "nll",
    reduction: str = "mean",
    hierarchical: bool = False,
) -> Tensor:
    """Semi-supervised label term per labelled sample (SPEC 4f).

    Parameters
    ----------
    mu, logvar : Tensor of shape (batch, n)
        Encoder outputs for the labelled fields.
    theta : Tensor of shape (batch, n)
        Their labels (generative parameters).
    kind : {"nll", "mse"}, default="nll"
        ``nll``: -log N(theta; mu, diag e^logvar); ``mse``: ||mu - theta||^2.
    reduction : {"mean", "sum"}, default="mean"
        Reduced over latent dimensions like the rate: averaged for
        ``"mean"`` without HP, summed otherwise.
    hierarchical : bool, default=False
        Whether the model has the hierarchical prior (see ``reduction``).

    Returns
    -------
    Tensor of shape (batch,)
    """
    check_choice(kind, "kind", "label_loss", LABEL_LOSSES)
    check_choice(reduction, "reduction", "label_loss", REDUCTIONS)
    nll = kind == "nll"
    per_dim = -gaussian_log_prob(theta, mu, logvar) if nll else (mu - theta).square()
    return _reduce_latent(per_dim, reduction, hierarchical)


class LossTerms(NamedTuple):
    """One batch's loss terms; every field is a 0-d tensor (no host sync)."""

    loss: Tensor
    """Objective to minimise: batch mean of L_rec + beta L_reg (chosen reduction)."""
    rec: Tensor
    """Batch mean of L_rec in the chosen reduction (drives the beta rule)."""
    reg: Tensor
    """Batch mean of L_reg in the chosen reduction (with beta_p for HP)."""
    distortion: Tensor
    """Batch mean of L_rec in nats per sample."""
    rate: Tensor
    """Batch mean of the rate in nats per sample (KL, or the HP bound with beta_p = 1)."""
    prior_nll: Tensor | None
    """Batch mean of -log p_pi(z|xi) (drives beta_p of the HP "full" variant); None without HP."""
    output: VAEOutput
    """The model's forward pass."""


def vae_loss(
    model: DenseVAE,
    y: Tensor,
    *,
    beta: float | Tensor = 1.0,
    beta_p: float | Tensor = 1.0,
    reduction: str = "mean",
    include_rate: bool = True,
    generator: torch.Generator | None = None,
) -> LossTerms:
    """The VAE objective of one batch (SPEC 4b, 4c).

    Parameters
    ----------
    model : DenseVAE
    y : Tensor of shape (batch, C, N, N)
    beta : float or 0-d Tensor, default=1.0
        Weight of the rate (1: the negative ELBO).
    beta_p : float or 0-d Tensor, default=1.0
        Weight of KL(q_gamma || p(xi)) inside the HP bound (the "full"
        variant's beta_p); ignored without HP.
    reduction : {"mean", "sum"}, default="mean"
        See ``reconstruction_loss`` and SPEC 4b: ``"mean"`` minimises
        L_rec / N^2 + beta L_reg / n (L_reg summed with HP).
    include_rate : bool, default=True
        False drops the rate from the objective (the released code's
        reconstruction-only phase); it is still computed and reported.
    generator : torch.Generator or None
        Draws all reparameterisation noise.

    Returns
    -------
    LossTerms
    """
    check_choice(reduction, "reduction", "vae_loss", REDUCTIONS)
    out = model(y, generator=generator)
    distortion = reconstruction_loss(y, out.y_mean, out.y_logvar, reduction="sum")
    rec = distortion / (y.shape[-1] * y.shape[-2]) if reduction == "mean" else distortion
    prior_nll = None
    if isinstance(model.prior, HierarchicalPrior):
        terms = hierarchical_bound_terms(
            model.prior, out.z, out.mu, out.logvar, generator=generator
        )
        rate = terms.log_q + terms.kl_xi + terms.nll_z
        reg = terms.log_q + beta_p * terms.kl_xi + terms.nll_z
        prior_nll = terms.nll_z.mean()
    else:
        kl = gaussian_kl(out.mu, out.logvar, model.prior.variance)
        rate = kl.sum(dim=1)
        reg = _reduce_latent(kl, reduction, hierarchical=False)
    rec_mean, reg_mean = rec.mean(), reg.mean()
    loss = rec_mean + beta * reg_mean if include_rate else rec_mean
    return LossTerms(loss, rec_mean, reg_mean, distortion.mean(), rate.mean(), prior_nll, out)


# --------------------------------------------------------------------------- beta and lr


def update_beta(
    beta: float | Tensor, rec_loss: float | Tensor, nu: float = 0.005, tau: float = 1.0
) -> float | Tensor:
    """One step of the paper's adaptive beta rule (SPEC 4d).

    .. math:: \\beta \\leftarrow \\min(1, \\beta \\exp(\\nu f(\\beta, L) L)),\\quad
              f(\\beta, d) = (1 - H(d)) \\tanh(\\tau(\\beta - 1)) - H(d)

    with H(d) = 1 for d > 0, else 0. A positive reconstruction loss shrinks
    beta by exp(-nu L); a negative one grows it towards 1.

    Parameters
    ----------
    beta : float or 0-d Tensor
        Current beta (> 0).
    rec_loss : float or 0-d Tensor
        The batch reconstruction loss L in the training reduction.
    nu : float, default=0.005
    tau : float, default=1.0

    Returns
    -------
    float or Tensor
        A float for float inputs; a detached tensor (no host sync) when
        either input is a tensor.

    Examples
    --------
    >>> round(update_beta(0.5, 2.0), 6)  # shrink: 0.5 * exp(-0.005 * 2)
    0.495025
    """
    if isinstance(beta, Tensor) or isinstance(rec_loss, Tensor):
        d = torch.as_tensor(rec_loss).detach()
        b = torch.as_tensor(beta, dtype=d.dtype, device=d.device).detach()
        h = (d > 0).to(d.dtype)
        f = (1.0 - h) * torch.tanh(tau * (b - 1.0)) - h
        return torch.clamp(b * torch.exp(nu * f * d), max=1.0)
    h = 1.0 if rec_loss > 0 else 0.0
    f = (1.0 - h) * math.tanh(tau * (beta - 1.0)) - h
    return min(1.0, beta * math.exp(nu * f * rec_loss))


class BetaSchedule:
    """The two-phase beta of SPEC 4d, kept on the training device.

    Phase 1 (epochs < ``rec_epochs``): beta = ``beta0``, no updates. Phase
    2: ``adaptive`` applies ``update_beta`` after every optimiser step
    (starting from ``beta0``, capped at 1); ``fixed`` uses ``fixed_beta``.
    With ``adaptive_beta_p`` (the HP "full" variant of the released code)
    beta_p follows the same rule driven by -log p_pi(z|xi); otherwise
    beta_p = 1.

    Parameters
    ----------
    rec_epochs : int
    beta0 : float, default=1e-7
    mode : {"adaptive", "fixed"}, default="adaptive"
    fixed_beta : float, default=1.0
    nu, tau : float, default=0.005, 1.0
    adaptive_beta_p : bool, default=False
    device : torch.device or None

    Attributes
    ----------
    beta, beta_p : 0-d Tensor
        Current values (in phase 1 these are what phase 2 starts from).
    """

    def __init__(
        self,
        *,
        rec_epochs: int,
        beta0: float = 1e-7,
        mode: str = "adaptive",
        fixed_beta: float = 1.0,
        nu: float = 0.005,
        tau: float = 1.0,
        adaptive_beta_p: bool = False,
        device: torch.device | None = None,
    ) -> None:
        check_choice(mode, "mode", "BetaSchedule", BETA_MODES)
        self.rec_epochs = rec_epochs
        self.beta0 = beta0
        self.mode = mode
        self.fixed_beta = fixed_beta
        self.nu = nu
        self.tau = tau
        self.adaptive_beta_p = adaptive_beta_p
        self.beta = torch.tensor(beta0, device=device)
        self.beta_p = torch.tensor(beta0 if adaptive_beta_p else 1.0, device=device)

    def phase(self, epoch: int) -> str:
        """``"reconstruction"`` in phase 1, else the mode."""
        return "reconstruction" if epoch < self.rec_epochs else self.mode

    def weights(self, epoch: int) -> tuple[Tensor | float, Tensor | float]:
        """``(beta, beta_p)`` to use in ``epoch``."""
        if epoch < self.rec_epochs:
            return self.beta0, (self.beta_p if self.adaptive_beta_p else 1.0)
        if self.mode == "fixed":
            return self.fixed_beta, self.beta_p
        return self.beta, self.beta_p

    def step(self, epoch: int, rec_loss: Tensor, prior_nll: Tensor | None = None) -> None:
        """Apply the rule after an optimiser step of ``epoch`` (no-op in phase 1)."""
        if epoch < self.rec_epochs:
            return
        if self.mode == "adaptive":
            self.beta = update_beta(self.beta, rec_loss, self.nu, self.tau)
        if self.adaptive_beta_p and prior_nll is not None:
            self.beta_p = update_beta(self.beta_p, prior_nll, self.nu, self.tau)

    def current(self, epoch: int) -> tuple[float, float]:
        """The weights of ``epoch`` as floats (one host sync; for logs)."""
        beta, beta_p = self.weights(epoch)
        return float(beta), float(beta_p)

    def state_dict(self) -> dict[str, float]:
        """Tensors' values as floats (for checkpoints)."""
        return {"beta": float(self.beta), "beta_p": float(self.beta_p)}

    def load_state_dict(self, state: dict[str, float]) -> None:
        """Restore ``beta`` and ``beta_p`` (dtype float32, as created)."""
        device = self.beta.device
        self.beta = torch.tensor(state["beta"], device=device)
        self.beta_p = torch.tensor(state["beta_p"], device=device)


def learning_rate(epoch: int, values: tuple[float, ...], milestones: tuple[int, ...]) -> float:
    """Piecewise-constant learning rate: ``values[k]`` for milestones[k-1] <= epoch < milestones[k].

    Examples
    --------
    >>> learning_rate(5899, (5e-4, 1e-4), (5900,)), learning_rate(5900, (5e-4, 1e-4), (5900,))
    (0.0005, 0.0001)
    """
    k = sum(1 for m in milestones if epoch >= m)
    return float(values[k])


# --------------------------------------------------------------------------- over-regularisation


def distortion_bound(
    y: Tensor | NDArray[np.floating],
    *,
    shared_over_channels: bool = True,
    reduction: str = "sum",
    min_variance: float = 1e-12,
) -> float:
    """Theorem 1: the distortion of an over-regularised VAE (SPEC 4e).

    A latent that carries no information leaves the optimal decoder with
    the per-pixel data mean and (constant) data variance, whose expected
    negative log-likelihood is

    .. math:: L_{rec}^{OR} = \\sum_{c,i,j} \\tfrac12 (\\log 2\\pi\\sigma_{cij}^2 + 1).

    Parameters
    ----------
    y : Tensor or ndarray of shape (n, C, N, N)
        The data the model is trained on (normalised if it is).
    shared_over_channels : bool, default=True
        The model's output variance is shared over channels (SPEC 4); its
        optimum is then the channel-average of the data variance, and the
        bound is sum_{i,j} C/2 (log 2 pi mean_c sigma_cij^2 + 1) (>= the
        per-channel bound, by Jensen).
    reduction : {"sum", "mean"}, default="sum"
        Nats per sample, or divided by N^2 as in training.
    min_variance : float, default=1e-12
        Floor for pixels whose variance is zero (e.g. u_x on the left and
        right walls), which would otherwise give -inf.

    Returns
    -------
    float
    """
    check_choice(reduction, "reduction", "distortion_bound", REDUCTIONS)
    arr = y.detach().cpu().double().numpy() if isinstance(y, Tensor) else np.asarray(y, float)
    if arr.ndim != 4 or arr.shape[0] < 2:
        msg = f"distortion_bound: y must have shape (n >= 2, C, N, N); got {arr.shape}."
        raise ValueError(msg)
    if not np.all(np.isfinite(arr)):
        msg = "distortion_bound: y must be finite (no NaN or inf)."
        raise ValueError(msg)
    var = arr.var(axis=0)  # (C, N, N), the maximum-likelihood variance
    if shared_over_channels:
        var = np.broadcast_to(var.mean(axis=0, keepdims=True), var.shape)
    var = np.maximum(var, min_variance)
    bound = float(np.sum(0.5 * (np.log(2.0 * np.pi * var) + 1.0)))
    if reduction == "mean":
        bound /= arr.shape[-1] * arr.shape[-2]
    return bound


@dataclass(frozen=True)
class OverRegularization:
    """Verdict of ``detect_over_regularization`` (all values in nats per sample)."""

    over_regularized: bool
    rate: float
    rate_per_dim: float
    distortion: float
    bound: float
    relative_gap: float
    """(bound - distortion) / |bound|: how far below the bound the distortion lies."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)


def detect_over_regularization(
    rate: float,
    distortion: float,
    bound: float,
    *,
    latent_dim: int,
    rate_tol: float = 0.01,
    rel_tol: float = 0.05,
) -> OverRegularization:
    """Flag an over-regularised run (SPEC 4e, paper section 4.2).

    A run is over-regularised when its rate is near zero (below ``rate_tol``
    nats per latent dimension) and its distortion is within ``rel_tol`` of
    Theorem 1's bound: |distortion - bound| < rel_tol * |bound|. (A zero rate
    with a distortion far above the bound is an unconverged run, not the
    over-regularised optimum.)

    Parameters
    ----------
    rate, distortion, bound : float
        Nats per sample (``evaluate_losses``, ``distortion_bound``).
    latent_dim : int
    rate_tol : float, default=0.01
    rel_tol : float, default=0.05

    Returns
    -------
    OverRegularization
    """
    check_int(latent_dim, "latent_dim", "detect_over_regularization", low=1)
    gap = (bound - distortion) / max(abs(bound), 1e-12)
    per_dim = rate / latent_dim
    flag = bool(per_dim < rate_tol and abs(gap) < rel_tol)
    return OverRegularization(
        flag, float(rate), float(per_dim), float(distortion), float(bound), float(gap)
    )


# --------------------------------------------------------------------------- whole-dataset losses


@dataclass(frozen=True)
class LossSummary:
    """A model's losses over a dataset (eval mode), in nats per sample.

    Attributes
    ----------
    rate, distortion : float
        Averages over samples (and ``n_latent_samples`` latent draws).
    loss : float
        rate + distortion, the negative ELBO per sample (beta = 1).
    z_mean, z_logvar : ndarray of shape (n, latent_dim)
        Encoder outputs.
    theta : ndarray of shape (n, s)
        The dataset's generative parameters.
    """

    rate: float
    distortion: float
    loss: float
    z_mean: NDArray[np.float64] = field(repr=False)
    z_logvar: NDArray[np.float64] = field(repr=False)
    theta: NDArray[np.float64] = field(repr=False)


def evaluate_losses(
    model: DenseVAE,
    data: DarcyDataset,
    *,
    n_latent_samples: int = 1,
    batch_size: int = 256,
    seed: int = 0,
) -> LossSummary:
    """Rate, distortion and latent codes of ``model`` over ``data``, in eval mode.

    Parameters
    ----------
    model : DenseVAE
    data : DarcyDataset
    n_latent_samples : int, default=1
        Latent draws per sample for the Monte Carlo terms (the paper's
        landscape plots use 10).
    batch_size : int, default=256
    seed : int, default=0
        Seed of the draws (a private generator; global state untouched).

    Returns
    -------
    LossSummary
    """
    check_int(n_latent_samples, "n_latent_samples", "evaluate_losses", low=1)
    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(int(seed))
    was_training = model.training
    model.eval()
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    mus, logvars = [], []
    try:
        with torch.no_grad():
            for y, _ in make_loader(data, batch_size=batch_size):
                y = y.to(device)
                for k in range(n_latent_samples):
                    t = vae_loss(model, y, reduction="sum", generator=gen)
                    sums += torch.stack([t.rate, t.distortion]).double() * len(y)
                    if k == 0:
                        mus.append(t.output.mu)
                        logvars.append(t.output.logvar)
    finally:
        model.train(was_training)
    rate, distortion = (sums / (len(data) * n_latent_samples)).tolist()
    return LossSummary(
        rate=rate,
        distortion=distortion,
        loss=rate + distortion,
        z_mean=torch.cat(mus).double().cpu().numpy(),
        z_logvar=torch.cat(logvars).double().cpu().numpy(),
        theta=data.theta.double().cpu().numpy(),
    )


# --------------------------------------------------------------------------- configuration


_RUN_LENGTH_FIELDS = ("epochs", "checkpoint_every", "eval_every", "max_restarts")
"""Fields that may change when a run is resumed (they do not change its path)."""


@dataclass(frozen=True)
class TrainConfig:
    """Configuration of one training run (SPEC 4d-4f); TOML round-trips it.

    Parameters
    ----------
    model : VAEConfig, default=VAEConfig()
        The network and prior.
    epochs : int, default=6500
    batch_size : int, default=64
    rec_epochs : int, default=4000
        E_rec: epochs of the reconstruction-only phase.
    lr_values : tuple of float, default=(5e-4, 1e-4)
    lr_milestones : tuple of int, default=(5900,)
        Piecewise-constant learning rate (see ``learning_rate``); the
        defaults are the released no-HP schedule, the HP one is (3e-4,
        5e-5, 2.5e-5) with milestones (6500, 12500) over 14000 epochs.
    beta_mode : {"adaptive", "fixed"}, default="adaptive"
    beta : float, default=1.0
        The constant beta of ``fixed`` mode (after phase 1).
    beta0 : float, default=1e-7
        Beta of phase 1 and the start of the adaptive rule (released code: 1e-9).
    warmup_rate : bool, default=True
        Keep the rate (weighted by beta0) in phase 1; False drops it, as the
        released code does.
    nu, tau : float, default=0.005, 1.0
        Parameters of the beta rule.
    adaptive_beta_p : bool or None, default=None
        Weight the HP's KL(q_gamma || p(xi)) by beta_p driven by the same
        rule; None means "when ``model.hp_variant == 'full'``" (the released code).
    reduction : {"mean", "sum"}, default="mean"
    n_labeled : int, default=0
        Semi-supervised: number of labelled training samples (SPEC 4f).
    label_loss : {"nll", "mse"}, default="nll"
    label_weight : float, default=1.0
        lambda.
    label_seed : int or None, default=None
        Chooses the labelled subset (None: derived from ``seed``).
    label_batch_size : int, default=64
        Labelled samples per step (all of them when fewer).
    normalize : {"none", "channel"}, default="none"
        Per-channel normalisation with the training file's statistics.
    seed : int, default=0
        Seeds initialisation, shuffling, noise and (by default) the labels.
    deterministic : bool, default=False
        Run under ``torch.use_deterministic_algorithms(True)`` (restored
        afterwards; on CUDA also sets ``CUBLAS_WORKSPACE_CONFIG`` if unset).
    checkpoint_every : int, default=100
        Epochs between checkpoints (one is always written at the end).
    eval_every : int, default=1
        Epochs between test/S_D evaluations (0: only at the end).
    eval_batch_size : int, default=256
    rate_tol, rel_tol : float, default=0.01, 0.05
        Over-regularisation thresholds (``detect_over_regularization``).
    max_restarts : int, default=0
        Restarts with a new seed when the run ends over-regularised
        (``train_with_restarts``).
    """

    model: VAEConfig = field(default_factory=VAEConfig)
    epochs: int = 6500
    batch_size: int = 64
    rec_epochs: int = 4000
    lr_values: tuple[float, ...] = (5e-4, 1e-4)
    lr_milestones: tuple[int, ...] = (5900,)
    beta_mode: str = "adaptive"
    beta: float = 1.0
    beta0: float = 1e-7
    warmup_rate: bool = True
    nu: float = 0.005
    tau: float = 1.0
    adaptive_beta_p: bool | None = None
    reduction: str = "mean"
    n_labeled: int = 0
    label_loss: str = "nll"
    label_weight: float = 1.0
    label_seed: int | None = None
    label_batch_size: int = 64
    normalize: str = "none"
    seed: int = 0
    deterministic: bool = False
    checkpoint_every: int = 100
    eval_every: int = 1
    eval_batch_size: int = 256
    rate_tol: float = 0.01
    rel_tol: float = 0.05
    max_restarts: int = 0

    def __post_init__(self) -> None:
        c = "TrainConfig"
        if isinstance(self.model, dict):
            object.__setattr__(self, "model", VAEConfig.from_dict(self.model))
        if not isinstance(self.model, VAEConfig):
            msg = f"{c}: model must be a VAEConfig or a dict; got {type(self.model).__name__}."
            raise TypeError(msg)
        check_int(self.epochs, "epochs", c, low=0)
        check_int(self.batch_size, "batch_size", c, low=1)
        check_int(self.rec_epochs, "rec_epochs", c, low=0)
        values = tuple(float(v) for v in self.lr_values)
        milestones = tuple(self.lr_milestones)
        for v in values:
            check_real(v, "each learning rate", c, low=0.0, low_open=True)
        for m in milestones:
            check_int(m, "each lr milestone", c, low=1)
        if len(values) != len(milestones) + 1 or list(milestones) != sorted(set(milestones)):
            msg = (
                f"{c}: lr_values must have one more entry than lr_milestones, which must be "
                f"strictly increasing; got {values} and {milestones}."
            )
            raise ValueError(msg)
        object.__setattr__(self, "lr_values", values)
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in milestones))
        check_choice(self.beta_mode, "beta_mode", c, BETA_MODES)
        check_real(self.beta, "beta", c, low=0.0)
        check_real(self.beta0, "beta0", c, low=0.0, low_open=True, high=1.0)
        check_real(self.nu, "nu", c, low=0.0)
        check_real(self.tau, "tau", c, low=0.0)
        for name in ("warmup_rate", "deterministic"):
            if not isinstance(getattr(self, name), bool):
                msg = f"{c}: {name} must be a bool; got {getattr(self, name)!r}."
                raise TypeError(msg)
        if self.adaptive_beta_p is not None and not isinstance(self.adaptive_beta_p, bool):
            msg = f"{c}: adaptive_beta_p must be a bool or None; got {self.adaptive_beta_p!r}."
            raise TypeError(msg)
        check_choice(self.reduction, "reduction", c, REDUCTIONS)
        check_int(self.n_labeled, "n_labeled", c, low=0)
        check_choice(self.label_loss, "label_loss", c, LABEL_LOSSES)
        check_real(self.label_weight, "label_weight", c, low=0.0)
        if self.label_seed is not None:
            check_int(self.label_seed, "label_seed", c, low=0)
        check_int(self.label_batch_size, "label_batch_size", c, low=1)
        check_choice(self.normalize, "normalize", c, NORMALIZATIONS)
        check_int(self.seed, "seed", c, low=0)
        check_int(self.checkpoint_every, "checkpoint_every", c, low=1)
        check_int(self.eval_every, "eval_every", c, low=0)
        check_int(self.eval_batch_size, "eval_batch_size", c, low=1)
        check_real(self.rate_tol, "rate_tol", c, low=0.0)
        check_real(self.rel_tol, "rel_tol", c, low=0.0)
        check_int(self.max_restarts, "max_restarts", c, low=0)

    @property
    def beta_p_adaptive(self) -> bool:
        """Whether beta_p follows the adaptive rule (resolves ``adaptive_beta_p=None``)."""
        if self.adaptive_beta_p is not None:
            return self.adaptive_beta_p and self.model.prior == "hierarchical"
        return self.model.prior == "hierarchical" and self.model.hp_variant == "full"

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; ``model`` may be a dict of VAEConfig changes."""
        model = changes.pop("model", None)
        if isinstance(model, dict):
            changes["model"] = dataclasses.replace(self.model, **model)
        elif model is not None:
            changes["model"] = model
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (the model as a nested dict, tuples as lists, None dropped)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "model":
                value = value.to_dict()
            elif isinstance(value, tuple):
                value = list(value)
            if value is not None:
                out[f.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; unknown keys raise ``ValueError``."""
        kw = config_kwargs(cls, data)
        if "model" in kw:
            kw["model"] = VAEConfig.from_dict(dict(kw["model"]))
        return cls(**kw)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a TOML file (top-level run keys, the network under ``[model]``)."""
        return cls.from_dict(_toml.load(path))

    def to_toml(self, path: str | os.PathLike, header: str = "") -> Path:
        """Write the configuration as TOML, atomically; returns the path."""
        return _toml.write(path, self.to_dict(), header)


def _presets_dir():
    return resources.files("darcyvae") / "configs"


def list_presets() -> list[tuple[str, str]]:
    """``(name, first comment line)`` of each shipped configuration (``configs/*.toml``)."""
    out = []
    for entry in sorted(_presets_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            lines = entry.read_text().splitlines()
            first = lines[0] if lines else ""
            out.append((entry.name[: -len(".toml")], first.lstrip("# ").strip()))
    return out


def load_preset(name: str) -> TrainConfig:
    """The shipped configuration ``name`` (see ``list_presets``)."""
    entry = _presets_dir() / f"{name}.toml"
    if not entry.is_file():
        known = ", ".join(n for n, _ in list_presets())
        msg = f"load_preset: unknown preset {name!r}; known: {known}."
        raise ValueError(msg)
    return TrainConfig.from_dict(_toml.loads(entry.read_text()))


# --------------------------------------------------------------------------- checkpoints and files


def _atomic_torch_save(obj: Any, path: Path) -> None:
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by ``train`` (a folder means its ``checkpoint.pt``).

    Raises
    ------
    FileNotFoundError
        No checkpoint there.
    ValueError
        Not a darcyvae checkpoint.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        msg = f"load_checkpoint: no checkpoint at {str(path)!r}."
        raise FileNotFoundError(msg)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        msg = f"load_checkpoint: {str(path)!r} is not a readable torch checkpoint ({exc})."
        raise ValueError(msg) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") != _CHECKPOINT_FORMAT:
        msg = f"load_checkpoint: {str(path)!r} is not a darcyvae training checkpoint."
        raise ValueError(msg)
    return ckpt


def load_model(
    checkpoint: str | os.PathLike | dict[str, Any], *, device: str | torch.device | None = None
) -> DenseVAE:
    """Rebuild the trained DenseVAE of a checkpoint (in eval mode) on ``device``."""
    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    dev = resolve_device(device, "load_model")
    model = DenseVAE(TrainConfig.from_dict(ckpt["config"]).model)
    model.load_state_dict(ckpt["model"])
    return model.to(dev).eval()


class TrainingDivergedError(RuntimeError):
    """A NaN or inf loss; the last good checkpoint is kept on disk."""


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` returns (also written to ``summary.json``).

    Attributes
    ----------
    out_dir : Path
    checkpoint : Path
    epochs : int
        Epochs completed.
    seed : int
    history : list of dict
        The per-epoch log records (also in ``metrics.jsonl``).
    final : dict
        Rate, distortion, loss (nats per sample, eval mode) and S_D on
        train (and test), the Theorem-1 bound.
    over_regularization : OverRegularization
    """

    out_dir: Path
    checkpoint: Path
    epochs: int
    seed: int
    history: list[dict[str, Any]] = field(repr=False)
    final: dict[str, Any]
    over_regularization: OverRegularization

    @property
    def over_regularized(self) -> bool:
        """Whether the run ended over-regularised."""
        return self.over_regularization.over_regularized


# --------------------------------------------------------------------------- the loop


@contextlib.contextmanager
def _deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms for the duration of a run; previous settings restored."""
    if not enabled:
        yield
        return
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        # cuBLAS needs this for deterministic GEMMs (documented in TrainConfig).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.backends.cudnn.benchmark = prev_bench


def _seeds(seed: int) -> dict[str, int]:
    """Independent child seeds for initialisation, shuffling, noise, labels."""
    states = np.random.SeedSequence(seed).generate_state(4, dtype=np.uint64)
    s = [int(v >> np.uint64(1)) for v in states]  # torch wants < 2**63
    return {"init": s[0], "loader": s[1], "noise": s[2], "labels": s[3]}


def _build_model(config: VAEConfig, seed: int, device: torch.device) -> DenseVAE:
    # Parameter initialisation draws from torch's global RNG; fork it so the
    # caller's global state is left exactly as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DenseVAE(config)
    return model.to(device)


def _as_dataset(
    data: DarcyDataset | str | os.PathLike,
    config: TrainConfig,
    device: torch.device,
    stats: ChannelStats | None,
    caller: str,
) -> DarcyDataset:
    if isinstance(data, DarcyDataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        normalize = "channel" if config.normalize == "channel" else False
        return DarcyDataset(data, normalize=normalize, stats=stats, device=device)
    msg = f"{caller}: data must be a DarcyDataset or a path; got {type(data).__name__}."
    raise TypeError(msg)


def _check_data(model_cfg: VAEConfig, data: DarcyDataset, name: str) -> None:
    if (data.channels, data.grid) != (model_cfg.channels, model_cfg.grid):
        msg = (
            f"train: {name} fields are {data.channels} x {data.grid} x {data.grid} but the model "
            f"expects {model_cfg.channels} x {model_cfg.grid} x {model_cfg.grid}; set model.grid "
            "and model.channels to match."
        )
        raise ValueError(msg)


def _read_log(path: Path, before_epoch: int) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            if rec["epoch"] < before_epoch:
                records.append(rec)
    return records


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


def train(
    config: TrainConfig,
    train_data: DarcyDataset | str | os.PathLike,
    test_data: DarcyDataset | str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike,
    device: str | torch.device | None = "auto",
    resume: bool = False,
    progress: bool = True,
) -> TrainResult:
    """Train a DenseVAE with the paper's method (SPEC 4d), optionally semi-supervised (4f).

    Parameters
    ----------
    config : TrainConfig
    train_data : DarcyDataset or path
        The training set (a path is read with ``config.normalize``).
    test_data : DarcyDataset, path or None
        Evaluated every ``config.eval_every`` epochs (a path is normalised
        with the training statistics).
    out_dir : path-like
        Receives ``config.toml``, ``metrics.jsonl`` (one JSON record per
        epoch), ``checkpoint.pt`` and ``summary.json``.
    device : str, torch.device or None, default="auto"
        CUDA when available, else the CPU.
    resume : bool, default=False
        Continue from ``out_dir/checkpoint.pt`` exactly where it stopped
        (same batches, noise and beta); ``config`` may differ only in
        epochs, checkpoint_every, eval_every and max_restarts.
    progress : bool, default=True
        Show a tqdm bar over epochs.

    Returns
    -------
    TrainResult

    Raises
    ------
    FileExistsError
        ``out_dir`` already holds a checkpoint and ``resume`` is False.
    FileNotFoundError
        ``resume`` without a checkpoint.
    ValueError
        Data that do not fit the model, a resumed config that differs.
    TrainingDivergedError
        A NaN or inf loss; the last good checkpoint stays on disk.

    Notes
    -----
    Each epoch: the learning rate of the released schedule, then per batch
    one forward pass, ``vae_loss`` (plus ``label_weight`` times the label
    term on the labelled subset), an Adam step and, in phase 2, the beta
    rule. Losses accumulate on the device; the host reads them once per
    epoch. Randomness comes from three private generators (shuffling,
    reparameterisation noise, labelled batches) seeded from
    ``config.seed``; initialisation runs under a forked global RNG, so the
    caller's global state is unchanged. Checkpoints hold the model,
    optimiser, beta schedule, epoch and all generator states.
    """
    from tqdm import tqdm

    if not isinstance(config, TrainConfig):
        msg = f"train: config must be a TrainConfig; got {type(config).__name__}."
        raise TypeError(msg)
    dev = resolve_device(device, "train")
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    if resume and not ckpt_path.is_file():
        msg = f"train: resume asked for, but {str(ckpt_path)!r} does not exist."
        raise FileNotFoundError(msg)
    if not resume and ckpt_path.exists():
        msg = f"train: {str(ckpt_path)!r} already exists; pass resume=True or pick another out_dir."
        raise FileExistsError(msg)

    train_set = _as_dataset(train_data, config, dev, None, "train")
    test_set = (
        None if test_data is None else _as_dataset(test_data, config, dev, train_set.stats, "train")
    )
    mcfg = config.model
    _check_data(mcfg, train_set, "training")
    if test_set is not None:
        _check_data(mcfg, test_set, "test")
    if config.n_labeled:
        if config.n_labeled > len(train_set):
            msg = f"train: n_labeled must be <= {len(train_set)} training samples; got {config.n_labeled}."
            raise ValueError(msg)
        if train_set.n_params != mcfg.latent_dim:
            msg = (
                f"train: semi-supervised labels need latent_dim == s; got latent_dim "
                f"{mcfg.latent_dim} and s = {train_set.n_params}."
            )
            raise ValueError(msg)

    seeds = _seeds(config.seed)
    with _deterministic_mode(config.deterministic, dev):
        model = _build_model(mcfg, seeds["init"], dev)
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr_values[0], weight_decay=0.0)
        schedule = BetaSchedule(
            rec_epochs=config.rec_epochs,
            beta0=config.beta0,
            mode=config.beta_mode,
            fixed_beta=config.beta,
            nu=config.nu,
            tau=config.tau,
            adaptive_beta_p=config.beta_p_adaptive,
            device=dev,
        )
        loader_gen = torch.Generator().manual_seed(seeds["loader"])
        noise_gen = torch.Generator(device=dev).manual_seed(seeds["noise"])
        label_gen = torch.Generator().manual_seed(seeds["labels"])
        label_idx = _labeled_indices(config, len(train_set), seeds["labels"])
        loader = make_loader(
            train_set, batch_size=config.batch_size, shuffle=True, generator=loader_gen
        )
        start = 0
        if resume:
            ckpt = load_checkpoint(ckpt_path, map_location=dev)
            _check_resume(ckpt["config"], config)
            model.load_state_dict(ckpt["model"])
            optimizer.load_state_dict(ckpt["optimizer"])
            schedule.load_state_dict(ckpt["schedule"])
            loader_gen.set_state(ckpt["rng"]["loader"].cpu())
            noise_gen.set_state(ckpt["rng"]["noise"].cpu())
            label_gen.set_state(ckpt["rng"]["labels"].cpu())
            start = int(ckpt["epoch"])
            log.info("train: resuming %s at epoch %d", out, start)
        out.mkdir(parents=True, exist_ok=True)
        config.to_toml(out / CONFIG_NAME, header="darcyvae training run (written by train)")
        log_path = out / LOG_NAME
        history = _read_log(log_path, start)
        atomic_write_text(log_path, "".join(json.dumps(r) + "\n" for r in history))

        labeled = None
        if label_idx is not None:
            idx = torch.as_tensor(label_idx, device=train_set.device)
            labeled = (train_set.y[idx].to(dev), train_set.theta[idx].to(dev))
        bound = distortion_bound(train_set.y, reduction="sum")

        def save(epoch_done: int) -> None:
            payload = {
                "format": _CHECKPOINT_FORMAT,
                "config": config.to_dict(),
                "epoch": epoch_done,
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "schedule": schedule.state_dict(),
                "rng": {
                    "loader": loader_gen.get_state(),
                    "noise": noise_gen.get_state().cpu(),
                    "labels": label_gen.get_state(),
                },
                "labeled_indices": [] if label_idx is None else [int(i) for i in label_idx],
                "normalization": None if train_set.stats is None else train_set.stats.to_dict(),
                "train_path": str(train_set.path),
                "distortion_bound": bound,
            }
            _atomic_torch_save(payload, ckpt_path)

        bar = tqdm(
            range(start, config.epochs),
            initial=start,
            total=config.epochs,
            disable=not progress,
            desc=f"train {out.name}",
            unit="epoch",
        )
        with open(log_path, "a") as log_file:
            for epoch in bar:
                t0 = time.perf_counter()
                lr = learning_rate(epoch, config.lr_values, config.lr_milestones)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                include_rate = config.warmup_rate or epoch >= config.rec_epochs
                model.train()
                acc = torch.zeros(4, device=dev)
                for y, _ in loader:
                    y = y.to(dev, non_blocking=True)
                    beta, beta_p = schedule.weights(epoch)
                    terms = vae_loss(
                        model,
                        y,
                        beta=beta,
                        beta_p=beta_p,
                        reduction=config.reduction,
                        include_rate=include_rate,
                        generator=noise_gen,
                    )
                    loss = terms.loss
                    lab = torch.zeros((), device=dev)
                    if labeled is not None and config.label_weight > 0:
                        lab = _label_term(model, labeled, config, label_gen)
                        loss = loss + config.label_weight * lab
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
                    schedule.step(epoch, terms.rec, terms.prior_nll)
                    stacked = torch.stack([loss, terms.rate, terms.distortion, lab]).detach()
                    acc += stacked * len(y)
                sums = (acc / len(train_set)).tolist()  # the epoch's one host sync
                if not all(math.isfinite(v) for v in sums):
                    msg = (
                        f"train: non-finite loss in epoch {epoch} (loss {sums[0]}, rate "
                        f"{sums[1]}, distortion {sums[2]}); stopped. The last good checkpoint "
                        f"({str(ckpt_path)!r}) is kept."
                    )
                    raise TrainingDivergedError(msg)
                beta_now, beta_p_now = schedule.current(epoch)
                record: dict[str, Any] = {
                    "epoch": epoch,
                    "phase": schedule.phase(epoch),
                    "lr": lr,
                    "beta": beta_now,
                    "loss": sums[0],
                    "rate": sums[1],
                    "distortion": sums[2],
                }
                if model.hierarchical:
                    record["beta_p"] = beta_p_now
                if labeled is not None:
                    record["label_loss"] = sums[3]
                last = epoch == config.epochs - 1
                if last or (config.eval_every and (epoch + 1) % config.eval_every == 0):
                    record.update(_epoch_eval(model, train_set, test_set, config, epoch))
                record["seconds"] = time.perf_counter() - t0
                history.append(record)
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                bar.set_postfix(
                    loss=f"{sums[0]:.4g}", beta=f"{beta_now:.3g}", rate=f"{sums[1]:.3g}"
                )
                if last or (epoch + 1) % config.checkpoint_every == 0:
                    save(epoch + 1)
        bar.close()

        final = _final_summary(model, train_set, test_set, config, bound)
    over = detect_over_regularization(
        final["train"]["rate"],
        final["train"]["distortion"],
        bound,
        latent_dim=mcfg.latent_dim,
        rate_tol=config.rate_tol,
        rel_tol=config.rel_tol,
    )
    final["over_regularization"] = over.to_dict()
    final["seed"] = config.seed
    final["epochs"] = max(start, config.epochs)
    atomic_write_text(out / SUMMARY_NAME, json.dumps(final, indent=2, sort_keys=True))
    if over.over_regularized:
        log.warning(
            "train: %s looks over-regularised (rate %.3g nats/dim, distortion %.6g vs bound %.6g)",
            out,
            over.rate_per_dim,
            over.distortion,
            over.bound,
        )
    return TrainResult(out, ckpt_path, final["epochs"], config.seed, history, final, over)


def _labeled_indices(config: TrainConfig, n: int, derived_seed: int) -> NDArray[np.int64] | None:
    if not config.n_labeled:
        return None
    seed = config.label_seed if config.label_seed is not None else derived_seed
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=config.n_labeled, replace=False)).astype(np.int64)


def _label_term(
    model: DenseVAE,
    labeled: tuple[Tensor, Tensor],
    config: TrainConfig,
    generator: torch.Generator,
) -> Tensor:
    y_l, theta_l = labeled
    if len(y_l) > config.label_batch_size:
        pick = torch.randperm(len(y_l), generator=generator)[: config.label_batch_size]
        pick = to_device_async(pick, y_l.device)
        y_l, theta_l = y_l[pick], theta_l[pick]
    mu, logvar = model.encode(y_l)
    return label_loss(
        mu,
        logvar,
        theta_l,
        kind=config.label_loss,
        reduction=config.reduction,
        hierarchical=model.hierarchical,
    ).mean()


def _epoch_eval(
    model: DenseVAE,
    train_set: DarcyDataset,
    test_set: DarcyDataset | None,
    config: TrainConfig,
    epoch: int,
) -> dict[str, Any]:
    """S_D on train and test, test losses (eval mode, fixed per-epoch noise seed)."""
    rec: dict[str, Any] = {}
    tr = evaluate_losses(model, train_set, batch_size=config.eval_batch_size, seed=epoch)
    rec["s_d_train"] = _s_d_or_none(tr)
    if test_set is not None:
        te = evaluate_losses(model, test_set, batch_size=config.eval_batch_size, seed=epoch)
        rec.update(
            test_loss=_finite(te.loss),
            test_rate=_finite(te.rate),
            test_distortion=_finite(te.distortion),
            s_d_test=_s_d_or_none(te),
        )
    return rec


def _s_d_or_none(summary: LossSummary) -> float | None:
    z, theta = summary.z_mean, summary.theta
    if len(z) < 2 or not np.all(np.isfinite(z)):
        return None
    return s_d(z, theta)


def _final_summary(
    model: DenseVAE,
    train_set: DarcyDataset,
    test_set: DarcyDataset | None,
    config: TrainConfig,
    bound: float,
) -> dict[str, Any]:
    out: dict[str, Any] = {"distortion_bound": bound}
    for name, data in (("train", train_set), ("test", test_set)):
        if data is None:
            continue
        summ = evaluate_losses(model, data, batch_size=config.eval_batch_size, seed=0)
        out[name] = {
            "rate": summ.rate,
            "distortion": summ.distortion,
            "loss": summ.loss,
            "s_d": _s_d_or_none(summ),
            "n_samples": len(data),
        }
    return out


def _check_resume(saved: dict[str, Any], config: TrainConfig) -> None:
    now = config.to_dict()
    keys = sorted(set(saved) | set(now))
    differ = [k for k in keys if k not in _RUN_LENGTH_FIELDS and saved.get(k) != now.get(k)]
    if differ:
        msg = (
            "train: the checkpoint was written with a different configuration "
            f"(keys {differ}); only {list(_RUN_LENGTH_FIELDS)} may change on resume."
        )
        raise ValueError(msg)


def train_with_restarts(
    config: TrainConfig,
    train_data: DarcyDataset | str | os.PathLike,
    test_data: DarcyDataset | str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike,
    max_restarts: int | None = None,
    device: str | torch.device | None = "auto",
    progress: bool = True,
) -> tuple[TrainResult, list[dict[str, Any]]]:
    """Train, and restart with a new seed while the run ends over-regularised (SPEC 4e).

    Attempt k runs in ``out_dir/attempt_k`` with seed ``config.seed + k``;
    ``out_dir/trials.json`` lists every attempt (seed, verdict, folder).

    Parameters
    ----------
    config : TrainConfig
    train_data, test_data : see ``train``
    out_dir : path-like
    max_restarts : int or None, default=None
        None uses ``config.max_restarts``.
    device, progress : see ``train``

    Returns
    -------
    (TrainResult, list of dict)
        The first attempt that is not over-regularised (or the last one)
        and the record of all attempts.
    """
    restarts = config.max_restarts if max_restarts is None else max_restarts
    check_int(restarts, "max_restarts", "train_with_restarts", low=0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    trials: list[dict[str, Any]] = []
    result = None
    for k in range(restarts + 1):
        cfg = config.replace(seed=config.seed + k)
        result = train(
            cfg,
            train_data,
            test_data,
            out_dir=out / f"attempt_{k}",
            device=device,
            progress=progress,
        )
        trials.append(
            {
                "attempt": k,
                "seed": cfg.seed,
                "out_dir": str(result.out_dir),
                "over_regularized": result.over_regularized,
                "rate_per_dim": result.over_regularization.rate_per_dim,
                "relative_gap": result.over_regularization.relative_gap,
            }
        )
        atomic_write_text(out / "trials.json", json.dumps(trials, indent=2))
        if not result.over_regularized:
            break
        log.warning("train_with_restarts: attempt %d over-regularised; restarting", k)
    assert result is not None
    return result, trials
