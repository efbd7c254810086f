"""Loss terms, the beta rule and the learning-rate schedule (docs/model.md §4b-§4d,§4f).

Public names
------------
reconstruction_loss, gaussian_kl, gaussian_log_prob
    Per-sample loss pieces (docs/model.md §4b).
hierarchical_bound_terms, HierarchicalTerms
    The Monte Carlo Jensen bound of the hierarchical prior (docs/model.md §4c).
label_loss
    The semi-supervised label term (docs/model.md §4f).
vae_loss, LossTerms
    One batch: the objective to minimise plus rate and distortion in nats.
update_beta, BetaSchedule
    The adaptive beta rule (docs/model.md §4d) and its two-phase schedule (with the
    uncapped beta_p of the HP "full" variant, docs/model.md §4c).
guarded_loss
    The released loop's phase-1 guard (beta = 1 while L_reg > 1e10).
learning_rate
    The piecewise-constant learning rate of the released configuration.
REDUCTIONS, LABEL_LOSSES, LABEL_DIM_REDUCTIONS, BETA_MODES
    The accepted values of the matching options.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor

from ._checks import check_choice
from .models import DenseVAE, HierarchicalPrior, VAENoise, VAEOutput

__all__ = [
    "BETA_MODES",
    "LABEL_DIM_REDUCTIONS",
    "LABEL_LOSSES",
    "REDUCTIONS",
    "BetaSchedule",
    "HierarchicalTerms",
    "LossTerms",
    "gaussian_kl",
    "gaussian_log_prob",
    "guarded_loss",
    "hierarchical_bound_terms",
    "label_loss",
    "learning_rate",
    "reconstruction_loss",
    "update_beta",
    "vae_loss",
]

LOG_2PI = math.log(2.0 * math.pi)
REDUCTIONS = ("mean", "sum")
"""``mean``: the released code's L_rec / N^2 + beta L_reg / n (L_reg summed with HP);
``sum``: the true negative ELBO per sample."""
LABEL_LOSSES = ("nll", "mse")
"""Semi-supervised label terms (docs/model.md §4f)."""
LABEL_DIM_REDUCTIONS = ("rate", "sum")
"""How the label term reduces over latent dimensions (docs/model.md §4f): like the rate, or summed."""
BETA_MODES = ("adaptive", "fixed")
"""``adaptive``: the paper's rule (docs/model.md §4d); ``fixed``: a beta-VAE with constant beta."""

# --------------------------------------------------------------------------- loss pieces


def reconstruction_loss(
    y: Tensor, mean: Tensor, logvar: Tensor, *, reduction: str = "mean"
) -> Tensor:
    """Gaussian negative log-likelihood -log p_psi(y|z) per sample (docs/model.md §4b).

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
    """KL(N(mu, diag e^logvar) || N(0, diag v)) per latent dimension (docs/model.md §4b).

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
    """Elementwise log N(x; mean, e^logvar) (same shape as the broadcast inputs).

    The residual is scaled by e^(-logvar/2) before squaring, not multiplied by
    e^(-logvar): a collapsing encoder variance (logvar below about -88, reached
    when beta is tiny for long) would overflow e^(-logvar) in float32 and give
    0 * inf = NaN for a sample that sits on its mean.
    """
    return -0.5 * (LOG_2PI + logvar + ((x - mean) * torch.exp(-0.5 * logvar)).square())


class HierarchicalTerms(NamedTuple):
    """Per-sample pieces of the hierarchical-prior bound (docs/model.md §4c), each (batch,)."""

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
    noise: Tensor | None = None,
) -> HierarchicalTerms:
    """Monte Carlo pieces of the Jensen bound on KL(q_phi(z|y) || p(z)) (docs/model.md §4c).

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
        Draws xi's reparameterisation noise (one randn of shape (batch, n)).
    noise : Tensor of shape (batch, n) or None
        That noise, pre-drawn (``VAENoise.xi``); overrides ``generator``.

    Returns
    -------
    HierarchicalTerms
        ``log_q + kl_xi + nll_z`` is the per-sample bound in nats.
    """
    log_q = gaussian_log_prob(z, mu, logvar).sum(dim=1)
    xi_mean, xi_logvar = prior.encode(z)
    if noise is not None:
        if tuple(noise.shape) != tuple(xi_mean.shape):
            msg = (
                f"hierarchical_bound_terms: noise must have shape {tuple(xi_mean.shape)}; "
                f"got {tuple(noise.shape)}."
            )
            raise ValueError(msg)
        eps = noise
    else:
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
    dim_reduction: str = "rate",
) -> Tensor:
    """Semi-supervised label term per labelled sample (docs/model.md §4f).

    Parameters
    ----------
    mu, logvar : Tensor of shape (batch, n)
        Encoder outputs for the labelled fields.
    theta : Tensor of shape (batch, n)
        Their labels (generative parameters).
    kind : {"nll", "mse"}, default="nll"
        ``nll``: -log N(theta; mu, diag e^logvar); ``mse``: ||mu - theta||^2.
    reduction : {"mean", "sum"}, default="mean"
        The objective's reduction; with ``dim_reduction="rate"`` the term
        is reduced over latent dimensions like the rate: averaged for
        ``"mean"`` without HP, summed otherwise.
    hierarchical : bool, default=False
        Whether the model has the hierarchical prior (see ``reduction``).
    dim_reduction : {"rate", "sum"}, default="rate"
        ``"rate"``: over latent dimensions like the rate (see
        ``reduction``); ``"sum"``: always summed over them, as the
        authors' semi-supervised code does (docs/model.md §4f), whatever the
        reduction of the rest of the loss.

    Returns
    -------
    Tensor of shape (batch,)

    Examples
    --------
    >>> mu, logvar, theta = torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1, 2)
    >>> float(label_loss(mu, logvar, theta, kind="mse"))  # mean of (1, 1)
    1.0
    >>> float(label_loss(mu, logvar, theta, kind="mse", dim_reduction="sum"))
    2.0
    """
    check_choice(kind, "kind", "label_loss", LABEL_LOSSES)
    check_choice(reduction, "reduction", "label_loss", REDUCTIONS)
    check_choice(dim_reduction, "dim_reduction", "label_loss", LABEL_DIM_REDUCTIONS)
    nll = kind == "nll"
    per_dim = -gaussian_log_prob(theta, mu, logvar) if nll else (mu - theta).square()
    if dim_reduction == "sum":
        return per_dim.sum(dim=1)
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
    noise: VAENoise | None = None,
    distortion: Tensor | None = None,
) -> LossTerms:
    """The VAE objective of one batch (docs/model.md §4b,§4c).

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
        See ``reconstruction_loss`` and docs/model.md §4b: ``"mean"`` minimises
        L_rec / N^2 + beta L_reg / n (L_reg summed with HP).
    include_rate : bool, default=True
        False drops the rate from the objective (the released code's
        reconstruction-only phase); it is still computed and reported.
    generator : torch.Generator or None
        Draws all reparameterisation noise: eps_z first, then (HP) eps_xi.
    noise : VAENoise or None
        The same noise pre-drawn (``model.draw_noise(len(y), generator)``);
        overrides ``generator``. A batched ensemble draws each member's
        noise from that member's generator and gets exactly its single-run
        losses.
    distortion : Tensor of shape (batch,) or None
        L_rec in nats per sample, already computed from the model's output
        (the batched members compute it for all members in one pass,
        ``darcyvae.ensemble.reconstruction``); None computes it here with
        ``reconstruction_loss``.

    Returns
    -------
    LossTerms
    """
    check_choice(reduction, "reduction", "vae_loss", REDUCTIONS)
    if noise is not None and not isinstance(noise, VAENoise):
        msg = f"vae_loss: noise must be a VAENoise (model.draw_noise); got {type(noise).__name__}."
        raise TypeError(msg)
    out = model(y, generator=generator, noise=noise)
    if distortion is None:
        distortion = reconstruction_loss(y, out.y_mean, out.y_logvar, reduction="sum")
    rec = distortion / (y.shape[-1] * y.shape[-2]) if reduction == "mean" else distortion
    prior_nll = None
    if isinstance(model.prior, HierarchicalPrior):
        if noise is not None and noise.xi is None:
            msg = "vae_loss: the hierarchical prior needs noise.xi (model.draw_noise draws it)."
            raise ValueError(msg)
        terms = hierarchical_bound_terms(
            model.prior,
            out.z,
            out.mu,
            out.logvar,
            generator=generator,
            noise=None if noise is None else noise.xi,
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
    beta: float | Tensor,
    rec_loss: float | Tensor,
    nu: float = 0.005,
    tau: float = 1.0,
    *,
    cap: float | None = 1.0,
) -> float | Tensor:
    """One step of the paper's adaptive beta rule (docs/model.md §4d).

    .. math:: \\beta \\leftarrow \\min(1, \\beta \\exp(\\nu f(\\beta, L) L)),\\quad
              f(\\beta, d) = (1 - H(d)) \\tanh(\\tau(\\beta - 1)) - H(d)

    with H(d) = 1 for d > 0, else 0. A positive reconstruction loss shrinks
    beta by exp(-nu L); a negative one grows it towards 1.

    Parameters
    ----------
    beta : float or 0-d Tensor
        Current beta (> 0).
    rec_loss : float or 0-d Tensor
        The batch reconstruction loss L in the training reduction (for
        beta_p of the HP "full" variant: +mean log p_pi(z|xi)).
    nu : float, default=0.005
    tau : float, default=1.0
    cap : float or None, default=1.0
        The upper bound (beta's min(1, .)); None: no cap (beta_p, docs/model.md §4c).

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
        out = b * torch.exp(nu * f * d)
        return out if cap is None else torch.clamp(out, max=cap)
    h = 1.0 if rec_loss > 0 else 0.0
    f = (1.0 - h) * math.tanh(tau * (beta - 1.0)) - h
    out = beta * math.exp(nu * f * rec_loss)
    return out if cap is None else min(cap, out)


def guarded_loss(terms: LossTerms, threshold: float = 1e10) -> tuple[Tensor, Tensor]:
    """The released loop's phase-1 guard (docs/model.md §4d): beta = 1 while the batch L_reg > threshold.

    Parameters
    ----------
    terms : LossTerms
        A phase-1 batch (its ``loss`` weights the rate by beta0, or drops it).
    threshold : float, default=1e10
        On the batch mean of L_reg in the training reduction (``terms.reg``).

    Returns
    -------
    (loss, triggered) : (0-d Tensor, 0-d bool Tensor)
        ``terms.rec + terms.reg`` where triggered, else ``terms.loss``; no
        host sync.
    """
    triggered = terms.reg.detach() > threshold
    return torch.where(triggered, terms.rec + terms.reg, terms.loss), triggered


class BetaSchedule:
    """The two-phase beta of docs/model.md §4d (and beta_p of docs/model.md §4c), kept on the training device.

    Phase 1 (epochs < ``rec_epochs``): beta = ``beta0``, no updates. Phase
    2: ``adaptive`` applies ``update_beta`` after every optimiser step
    (starting from ``beta0``, capped at 1); ``fixed`` uses ``fixed_beta``.
    With ``adaptive_beta_p`` (the HP "full" variant of the released code)
    beta_p starts at ``beta_p0`` and follows the same rule in phase 2 driven
    by L = +mean log p_pi(z|xi) (i.e. ``-prior_nll``), without a cap;
    otherwise beta_p = 1.

    Parameters
    ----------
    rec_epochs : int
        Length of phase 1 (reconstruction only, beta = ``beta0``) in epochs.
    beta0 : float, default=1e-7
        beta in phase 1 and the start of the adaptive beta in phase 2.
    mode : {"adaptive", "fixed"}, default="adaptive"
        Phase 2: the adaptive rule (``update_beta``) or a constant beta.
    fixed_beta : float, default=1.0
        beta in phase 2 when ``mode="fixed"``.
    nu, tau : float, default=0.005, 1.0
        Step size and sharpness of the rule (``update_beta``).
    adaptive_beta_p : bool, default=False
        Adapt beta_p as well (the HP "full" variant); else beta_p = 1.
    beta_p0 : float, default=1e-8
        Start of the adaptive beta_p (the released code's).
    device : torch.device or None, default=None
        Where ``beta`` and ``beta_p`` live (the training device: no host
        sync per step).

    Attributes
    ----------
    beta, beta_p : 0-d Tensor
        Current values (in phase 1 these are what phase 2 starts from).

    See Also
    --------
    update_beta : the rule applied after each optimiser step.

    Examples
    --------
    >>> sched = BetaSchedule(rec_epochs=1)
    >>> sched.phase(0), sched.current(0)
    ('reconstruction', (1e-07, 1.0))
    >>> sched.step(1, torch.tensor(-2.0))  # a negative loss grows beta
    >>> sched.phase(1), sched.current(1)[0] > 1e-7
    ('adaptive', True)
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
        beta_p0: float = 1e-8,
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
        self.beta_p0 = beta_p0
        self.beta = torch.tensor(beta0, device=device)
        self.beta_p = torch.tensor(beta_p0 if adaptive_beta_p else 1.0, device=device)

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
        """Apply the rules after an optimiser step of ``epoch`` (no-op in phase 1).

        ``rec_loss`` drives beta; ``prior_nll`` (the batch mean of
        -log p_pi(z|xi), ``LossTerms.prior_nll``) drives beta_p through
        L = -prior_nll.
        """
        if epoch < self.rec_epochs:
            return
        if self.mode == "adaptive":
            self.beta = update_beta(self.beta, rec_loss, self.nu, self.tau)
        if self.adaptive_beta_p and prior_nll is not None:
            self.beta_p = update_beta(self.beta_p, -prior_nll, self.nu, self.tau, cap=None)

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

    Parameters
    ----------
    epoch : int
        The epoch (from 0).
    values : tuple of float
        The rates, one more than ``milestones``.
    milestones : tuple of int
        Increasing epochs at which the next value starts.

    Returns
    -------
    float
        ``values[k]`` with ``k`` the number of milestones <= ``epoch``.

    Examples
    --------
    >>> learning_rate(5899, (5e-4, 1e-4), (5900,)), learning_rate(5900, (5e-4, 1e-4), (5900,))
    (0.0005, 0.0001)
    """
    k = sum(1 for m in milestones if epoch >= m)
    return float(values[k])
