"""Evaluating a DenseVAE: whole-dataset losses, Theorem 1, the verdicts, scores, figures.

Public names
------------
evaluate_losses, LossSummary
    Rate, distortion and latent codes of a model over a whole dataset.
distortion_bound
    Theorem 1's distortion of an over-regularised VAE (docs/model.md §4e).
detect_over_regularization, OverRegularization
    The over-regularisation verdict (docs/model.md §4e).
split_metrics, SplitMetrics
    The one result type for "metrics of a split": rate, distortion, loss,
    the Theorem-1 bound, the margin to it and whether the model beats it
    (``trained``, docs/reproduction.md §6), the over-regularisation verdict, S_D, S_KL and
    the number of samples. Training's ``summary.json`` and ``evaluate``'s
    ``results.json`` both hold its ``to_dict()``.
evaluate, Evaluation
    Evaluate a model or checkpoint on test (and training) data; write the
    results and the paper's figures (Figs. 6, 7, 9, 12) to a folder.
SKL_LATENTS
    What S_KL is computed on: ``"sample"`` (one z ~ q(z|y) per y, the
    aggregated posterior; default) or ``"mean"`` (the encoder means).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ._checks import check_choice, check_int, check_real
from ._device import resolve_device
from ._io import atomic_write_text
from ._vaedata import as_dataset, check_fits
from .checkpoint import load_checkpoint, load_model, run_checkpoint
from .dataset import ChannelStats, DarcyDataset, make_loader
from .losses import REDUCTIONS, vae_loss
from .metrics import s_d, s_kl
from .models import DenseVAE

__all__ = [
    "RATE_TOL",
    "SKL_LATENTS",
    "TRAINED_MARGIN",
    "Evaluation",
    "LossSummary",
    "OverRegularization",
    "SplitMetrics",
    "aggregated_posterior_sample",
    "beats_bound",
    "data_output_logvar",
    "detect_over_regularization",
    "distortion_bound",
    "evaluate",
    "evaluate_losses",
    "is_over_regularized",
    "margin_per_element",
    "s_d_or_none",
    "split_metrics",
]

logger = logging.getLogger(__name__)

SKL_LATENTS = ("sample", "mean")

# --------------------------------------------------------------------------- over-regularisation


def _pixel_variance(arr: np.ndarray, shared_over_channels: bool, min_variance: float) -> np.ndarray:
    """The (C, N, N) maximum-likelihood variance of ``arr`` (n, C, N, N), optionally
    averaged over channels (broadcast back), floored at ``min_variance``."""
    var = arr.var(axis=0)
    if shared_over_channels:
        var = np.broadcast_to(var.mean(axis=0, keepdims=True), var.shape)
    return np.maximum(var, min_variance)


def data_output_logvar(y: Tensor | NDArray[np.floating], *, min_variance: float = 1e-12) -> Tensor:
    """The Theorem-1 optimum of the decoder's shared output log-variance (docs/model.md §4e).

    log of the data's per-pixel (maximum-likelihood) variance averaged over
    the channels, shape (1, 1, N, N), float32: what
    ``output_logvar_init = "data"`` starts the decoder at. ``y`` (n, C, N, N)
    in the units the model sees (after any normalisation).
    """
    arr = y.detach().cpu().double().numpy() if isinstance(y, Tensor) else np.asarray(y, float)
    if arr.ndim != 4 or arr.shape[0] < 2 or not np.all(np.isfinite(arr)):
        msg = f"data_output_logvar: y must be finite with shape (n >= 2, C, N, N); got {arr.shape}."
        raise ValueError(msg)
    var = _pixel_variance(arr, True, min_variance)[:1]
    return torch.from_numpy(np.log(var)[None].astype(np.float32))


RATE_TOL = 0.01
"""Nats per latent dimension below which a run's rate counts as near zero (docs/model.md §4e)."""

TRAINED_MARGIN = 0.05
"""Nats per field element (channel x pixel): a model counts as trained when its
distortion lies more than this far below the Theorem-1 bound, and a run with
near-zero rate counts as over-regularised when its distortion lies within it
(docs/model.md §4e). Unit-free: rescaling a channel shifts the distortion and
the bound alike, so the margin does not move. 0.05 nats per element means the
decoder's residual variance is at most e^-0.1 ~ 0.90 of the data's per-pixel
variance (geometric mean); it is ~20x the bootstrap noise of the test margin
(0.002-0.003 nats per element, 512 test samples, KLE2 at grid 17) and ~10x
the test-set gap of the train-fitted decoder that ignores z (0.0015-0.004)."""


def margin_per_element(distortion: float, bound: float, n_elements: int) -> float:
    """(bound - distortion) / n_elements: nats per field element below the Theorem-1 bound.

    ``n_elements`` is the number of field values per sample (channels x N x N).
    Unlike the margin as a fraction of |bound| it does not change when a
    channel is rescaled (docs/model.md §4e).
    """
    check_int(n_elements, "n_elements", "margin_per_element", low=1)
    return float((bound - distortion) / n_elements)


def beats_bound(
    distortion: float, bound: float, n_elements: int, margin_tol: float = TRAINED_MARGIN
) -> bool:
    """Whether ``distortion`` lies more than ``margin_tol`` nats per element below ``bound``.

    The one definition of a trained model (docs/model.md §4e), used by
    ``SplitMetrics.trained`` and by every experiment report.

    Examples
    --------
    >>> beats_bound(-2000.0, -1900.0, n_elements=867)   # 0.115 nats per element
    True
    >>> beats_bound(-1920.0, -1900.0, n_elements=867)   # 0.023: within the margin
    False
    """
    margin = margin_per_element(distortion, bound, n_elements)
    return bool(math.isfinite(margin) and margin > margin_tol)


def distortion_bound(
    y: Tensor | NDArray[np.floating],
    *,
    shared_over_channels: bool = True,
    reduction: str = "sum",
    min_variance: float = 1e-12,
) -> float:
    """Theorem 1: the distortion of an over-regularised VAE (docs/model.md §4e).

    A latent that carries no information leaves the optimal decoder with
    the per-pixel data mean and (constant) data variance, whose expected
    negative log-likelihood is

    .. math:: L_{rec}^{OR} = \\sum_{c,i,j} \\tfrac12 (\\log 2\\pi\\sigma_{cij}^2 + 1).

    Parameters
    ----------
    y : Tensor or ndarray of shape (n, C, N, N)
        The data the model is trained on (normalised if it is).
    shared_over_channels : bool, default=True
        The model's output variance is shared over channels (docs/model.md §4); its
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
    var = _pixel_variance(arr, shared_over_channels, min_variance)
    bound = float(np.sum(0.5 * (np.log(2.0 * np.pi * var) + 1.0)))
    if reduction == "mean":
        bound /= arr.shape[-1] * arr.shape[-2]
    return bound


@dataclass(frozen=True)
class OverRegularization:
    """Verdict of ``detect_over_regularization`` (values in nats per sample unless named)."""

    over_regularized: bool
    rate: float
    rate_per_dim: float
    distortion: float
    bound: float
    margin_per_element: float
    """(bound - distortion) / n_elements: nats per field element below the bound."""

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> OverRegularization:
        """Inverse of ``to_dict``; a record written before the unit-free margin
        (with ``relative_gap``) reads with ``margin_per_element`` NaN."""
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        kw.setdefault("margin_per_element", math.nan)
        if kw["margin_per_element"] is None:
            kw["margin_per_element"] = math.nan
        return cls(**kw)


def is_over_regularized(
    rate_per_dim: float,
    margin_per_element: float,
    *,
    rate_tol: float = RATE_TOL,
    margin_tol: float = TRAINED_MARGIN,
) -> bool:
    """The rule of docs/model.md §4e on unit-free numbers: a rate under ``rate_tol`` nats
    per latent dimension and a distortion within ``margin_tol`` nats per field element of
    the Theorem-1 bound."""
    return bool(rate_per_dim < rate_tol and abs(margin_per_element) < margin_tol)


def detect_over_regularization(
    rate: float,
    distortion: float,
    bound: float,
    *,
    latent_dim: int,
    n_elements: int,
    rate_tol: float = RATE_TOL,
    margin_tol: float = TRAINED_MARGIN,
) -> OverRegularization:
    """Flag an over-regularised run (docs/model.md §4e, paper section 4.2).

    A run is over-regularised when its rate is near zero (below ``rate_tol``
    nats per latent dimension) and its distortion lies within ``margin_tol``
    nats per field element of Theorem 1's bound:
    |bound - distortion| / n_elements < margin_tol. (A zero rate with a
    distortion far above the bound is an unconverged run, not the
    over-regularised optimum.) Both thresholds are unit-free.

    Parameters
    ----------
    rate, distortion, bound : float
        Nats per sample (``evaluate_losses``, ``distortion_bound``).
    latent_dim : int
    n_elements : int
        Field values per sample (channels x N x N).
    rate_tol : float, default=0.01
    margin_tol : float, default=TRAINED_MARGIN (0.05)

    Returns
    -------
    OverRegularization
    """
    check_int(latent_dim, "latent_dim", "detect_over_regularization", low=1)
    check_real(margin_tol, "margin_tol", "detect_over_regularization", low=0.0)
    margin = margin_per_element(distortion, bound, n_elements)
    per_dim = rate / latent_dim
    flag = is_over_regularized(per_dim, margin, rate_tol=rate_tol, margin_tol=margin_tol)
    return OverRegularization(
        flag, float(rate), float(per_dim), float(distortion), float(bound), margin
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

    def terms(y: Tensor, gen: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        t = vae_loss(model, y, reduction="sum", generator=gen)
        return t.rate[None], t.distortion[None], t.output.mu[None], t.output.logvar[None]

    was_training = model.training
    model.eval()
    try:
        (summary,) = loss_summaries(
            terms,
            data,
            1,
            next(model.parameters()).device,
            n_latent_samples=n_latent_samples,
            batch_size=batch_size,
            seed=seed,
        )
    finally:
        model.train(was_training)
    return summary


def loss_summaries(
    terms: Callable[[Tensor, torch.Generator], tuple[Tensor, Tensor, Tensor, Tensor]],
    data: DarcyDataset,
    k: int,
    device: torch.device,
    *,
    n_latent_samples: int = 1,
    batch_size: int = 256,
    seed: int = 0,
) -> list[LossSummary]:
    """``evaluate_losses``'s pass over ``data`` for k models evaluated together.

    ``terms(y, generator)`` evaluates a batch ``y`` (batch, C, N, N) with noise drawn
    from ``generator``: the rate and distortion of each model, (k,) nats per sample, and
    its encoder's mu and logvar, (k, batch, n). Returns one ``LossSummary`` a model.
    """
    gen = torch.Generator(device=device).manual_seed(int(seed))
    sums = torch.zeros(2, k, dtype=torch.float64, device=device)
    mus, logvars = [], []
    with torch.no_grad():
        for y, _ in make_loader(data, batch_size=batch_size):
            y = y.to(device)
            for j in range(n_latent_samples):
                rate, distortion, mu, logvar = terms(y, gen)
                sums += torch.stack([rate, distortion]).double() * len(y)
                if j == 0:
                    mus.append(mu)
                    logvars.append(logvar)
    rates, distortions = (sums / (len(data) * n_latent_samples)).tolist()
    z_mean = torch.cat(mus, dim=1).double().cpu().numpy()
    z_logvar = torch.cat(logvars, dim=1).double().cpu().numpy()
    theta = data.theta.double().cpu().numpy()
    return [
        LossSummary(
            rate=rates[m],
            distortion=distortions[m],
            loss=rates[m] + distortions[m],
            z_mean=z_mean[m],
            z_logvar=z_logvar[m],
            theta=theta,
        )
        for m in range(k)
    ]


# --------------------------------------------------------------------------- one split


@dataclass(frozen=True)
class SplitMetrics:
    """The numbers of one data split, in nats per sample (eval mode).

    Attributes
    ----------
    rate, distortion, loss : float
        ``loss`` = rate + distortion, the negative ELBO.
    rate_per_dim : float
        rate / latent_dim.
    distortion_bound : float
        Theorem 1's distortion of an over-regularised model on this split (docs/model.md §4e).
    distortion_margin : float
        bound - distortion: how many nats per sample the decoder explains
        beyond the per-pixel mean and variance (positive: below the bound).
    margin_per_element : float
        distortion_margin / (channels x N x N): nats per field element, unit-free
        (docs/model.md §4e).
    trained : bool
        The model counts as trained (docs/model.md §4e): margin_per_element >
        ``margin_tol`` (``TRAINED_MARGIN``, 0.05 nats per element), i.e. the
        distortion is clearly below the bound.
    over_regularization : OverRegularization
    s_d : float or None
        S_D of the encoder means against theta (docs/scores.md §5); None when undefined.
    s_kl : float or None
        S_KL (docs/scores.md §5, Eq. 7): ``darcyvae.metrics.s_kl(...).score`` of the
        latents (``skl_latent``) against the split's thetas; lower is better.
        None when undefined (latent dimension != s, degenerate latents,
        repeated thetas, fewer than 3 samples).
    s_kl_in_sample : float or None
        The in-sample minimum of the same search, where ``s_kl`` reports it
        (``getattr(result, "in_sample", None)``); side by side with ``s_kl``.
    skl_latent : {"sample", "mean"}
        What S_KL was computed on.
    n_samples : int
    """

    rate: float
    distortion: float
    loss: float
    rate_per_dim: float
    distortion_bound: float
    distortion_margin: float
    margin_per_element: float
    trained: bool
    over_regularization: OverRegularization
    s_d: float | None
    s_kl: float | None
    s_kl_in_sample: float | None
    skl_latent: str
    n_samples: int

    @property
    def over_regularized(self) -> bool:
        """The over-regularisation verdict of this split."""
        return self.over_regularization.over_regularized

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (non-finite numbers as None)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "over_regularization":
                value = value.to_dict()
            elif isinstance(value, float) and not math.isfinite(value):
                value = None
            out[f.name] = value
        out["over_regularized"] = self.over_regularized
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SplitMetrics:
        """Inverse of ``to_dict`` (e.g. a split of ``summary.json``); None numbers become NaN."""
        kw = {}
        for f in dataclasses.fields(cls):
            value = data.get(f.name)
            if f.name == "over_regularization":
                value = OverRegularization.from_dict(value)
            elif f.type == "float" and value is None:
                value = math.nan
            kw[f.name] = value
        return cls(**kw)

    def line(self) -> str:
        """One human-readable line (what the command line prints)."""

        def fmt(v: float | None) -> str:
            return "n/a" if v is None else f"{v:.3f}"

        skl = fmt(self.s_kl)
        if self.s_kl_in_sample is not None:
            skl += f" (in-sample {fmt(self.s_kl_in_sample)})"
        verdict = "trained" if self.trained else "NOT below the bound"
        return (
            f"rate {self.rate:.4g} nats, distortion {self.distortion:.6g} nats "
            f"(bound {self.distortion_bound:.6g}, margin {self.distortion_margin:+.4g} = "
            f"{self.margin_per_element:+.3f} per element: {verdict}), "
            f"S_D {fmt(self.s_d)}, S_KL {skl} (lower is better)"
        )


def s_d_or_none(summary: LossSummary) -> float | None:
    """S_D of a LossSummary's encoder means; None when undefined (< 2 or non-finite)."""
    z, theta = summary.z_mean, summary.theta
    if len(z) < 2 or not np.all(np.isfinite(z)):
        return None
    return s_d(z, theta)


def _s_kl_or_none(z: NDArray, theta: NDArray, seed: int) -> tuple[float | None, float | None]:
    """(score, in-sample minimum) of S_KL; None where the estimator is undefined."""
    if z.shape[1] != theta.shape[1] or len(z) < 3 or not np.all(np.isfinite(z)):
        return None, None
    try:
        result = s_kl(z, theta, seed=seed)
    except ValueError as exc:  # degenerate latents or repeated thetas: say why in the log
        logger.info("evaluate: S_KL undefined (%s)", exc)
        return None, None
    in_sample = getattr(result, "in_sample", None)
    return float(result.score), None if in_sample is None else float(in_sample)


def split_metrics(
    model: DenseVAE,
    data: DarcyDataset,
    *,
    n_latent_samples: int = 1,
    batch_size: int = 256,
    seed: int = 0,
    rate_tol: float = RATE_TOL,
    margin_tol: float = TRAINED_MARGIN,
    skl_latent: str = "sample",
    with_s_kl: bool = True,
    summary: LossSummary | None = None,
) -> SplitMetrics:
    """All metrics of ``model`` on one split (the one place ``SplitMetrics`` is made).

    Parameters
    ----------
    model : DenseVAE
    data : DarcyDataset
    n_latent_samples, batch_size, seed : see ``evaluate_losses``
        ``seed`` also seeds the aggregated-posterior draw and S_KL's search.
    rate_tol, margin_tol : float, default=0.01, TRAINED_MARGIN (0.05)
        Over-regularisation thresholds (nats per latent dimension, nats per
        field element); ``margin_tol`` is also the margin below the bound that
        counts as trained (docs/model.md §4e).
    skl_latent : {"sample", "mean"}, default="sample"
        S_KL on one z ~ q(z|y) per y (the aggregated posterior, drawn with
        ``seed``) or on the encoder means.
    with_s_kl : bool, default=True
        False skips S_KL (None).
    summary : LossSummary or None
        Reuse an ``evaluate_losses`` result of the same arguments.

    Returns
    -------
    SplitMetrics
    """
    check_choice(skl_latent, "skl_latent", "split_metrics", SKL_LATENTS)
    check_real(margin_tol, "margin_tol", "split_metrics", low=0.0)
    if summary is None:
        summary = evaluate_losses(
            model, data, n_latent_samples=n_latent_samples, batch_size=batch_size, seed=seed
        )
    latent_dim = model.config.latent_dim
    bound = distortion_bound(data.y)
    n_elements = int(np.prod(data.y.shape[1:]))
    over = detect_over_regularization(
        summary.rate,
        summary.distortion,
        bound,
        latent_dim=latent_dim,
        n_elements=n_elements,
        rate_tol=rate_tol,
        margin_tol=margin_tol,
    )
    skl = in_sample = None
    if with_s_kl:
        z = summary.z_mean
        if skl_latent == "sample":
            z = aggregated_posterior_sample(summary, seed)
        skl, in_sample = _s_kl_or_none(z, summary.theta, seed)
    margin = bound - summary.distortion
    return SplitMetrics(
        rate=summary.rate,
        distortion=summary.distortion,
        loss=summary.loss,
        rate_per_dim=summary.rate / latent_dim,
        distortion_bound=bound,
        distortion_margin=float(margin),
        margin_per_element=over.margin_per_element,
        trained=beats_bound(summary.distortion, bound, n_elements, margin_tol),
        over_regularization=over,
        s_d=s_d_or_none(summary),
        s_kl=skl,
        s_kl_in_sample=in_sample,
        skl_latent=skl_latent,
        n_samples=len(data),
    )


def aggregated_posterior_sample(summary: LossSummary, seed: int) -> NDArray[np.float64]:
    """One z ~ q(z|y) per sample of a LossSummary (numpy generator seeded by ``seed``)."""
    rng = np.random.default_rng(seed)
    z_mean, z_logvar = summary.z_mean, summary.z_logvar
    return z_mean + np.exp(0.5 * z_logvar) * rng.standard_normal(z_mean.shape)


# --------------------------------------------------------------------------- evaluate


@dataclass(frozen=True)
class Evaluation:
    """Result of ``evaluate``.

    Attributes
    ----------
    test : SplitMetrics
        On ``data``.
    train : SplitMetrics or None
        On ``train_data`` when given.
    figures : dict of str to Path
        The PNGs written (empty without ``out_dir``).
    out_dir : Path or None
    """

    test: SplitMetrics
    train: SplitMetrics | None
    figures: dict[str, Path] = field(default_factory=dict)
    out_dir: Path | None = None

    @property
    def over_regularized(self) -> bool:
        """The verdict on the training split when there is one, else on the test split."""
        split = self.train if self.train is not None else self.test
        return split.over_regularized

    @property
    def trained(self) -> bool:
        """Whether the test distortion is clearly below its Theorem-1 bound (docs/reproduction.md §6)."""
        return self.test.trained

    def splits(self) -> list[tuple[str, SplitMetrics]]:
        """``[("train", ...), ("test", ...)]`` for the splits evaluated."""
        out = [] if self.train is None else [("train", self.train)]
        return [*out, ("test", self.test)]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what ``results.json`` holds)."""
        return {
            "test": self.test.to_dict(),
            "train": None if self.train is None else self.train.to_dict(),
            "over_regularized": self.over_regularized,
            "trained": self.trained,
            "figures": {k: str(v) for k, v in self.figures.items()},
        }


def evaluate(
    model_or_checkpoint: DenseVAE | str | os.PathLike,
    data: DarcyDataset | str | os.PathLike,
    *,
    train_data: DarcyDataset | str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    n_latent_samples: int = 1,
    n_prior_samples: int = 2000,
    sample_index: int = 0,
    batch_size: int = 256,
    device: str | torch.device | None = None,
    seed: int = 0,
    rate_tol: float = RATE_TOL,
    margin_tol: float = TRAINED_MARGIN,
    skl_latent: str = "sample",
    recorded_train: bool = False,
) -> Evaluation:
    """Evaluate a DenseVAE on test data (and training data) and draw the paper's figures.

    Parameters
    ----------
    model_or_checkpoint : DenseVAE or path
        A model, or a checkpoint written by ``train`` (file or run folder);
        a checkpoint also brings the training normalisation, applied to
        data given as paths.
    data : DarcyDataset or path
        The test data.
    train_data : DarcyDataset, path or None, default=None
        Also evaluate on the training data.
    out_dir : path-like or None, default=None
        Write ``results.json`` and the figures ``reconstruction.png`` (Fig.
        6), ``latent_distributions.png`` (Figs. 6, 9, 12) and
        ``latent_vs_theta.png`` (Fig. 7) there, each atomically.
    n_latent_samples : int, default=1
        Latent draws per sample for rate and distortion.
    n_prior_samples : int, default=2000
        Samples of the (learned) prior drawn for the figure.
    sample_index : int, default=0
        The test sample shown in the reconstruction figure.
    batch_size : int, default=256
    device : str, torch.device or None, default=None
        None: the model's device (a checkpoint loads on the CPU).
    seed : int, default=0
        Seeds every draw (private generators).
    rate_tol, margin_tol : float, default=0.01, TRAINED_MARGIN (0.05)
        Over-regularisation thresholds (``detect_over_regularization``);
        ``margin_tol`` (nats per field element) is also the margin below the
        bound that counts as trained.
    skl_latent : {"sample", "mean"}, default="sample"
        S_KL on the aggregated posterior (one z ~ q(z|y) per y) or on the
        encoder means.
    recorded_train : bool, default=False
        With a checkpoint and no ``train_data``: also evaluate the training
        file recorded in the checkpoint when it still exists.

    Returns
    -------
    Evaluation

    Raises
    ------
    FileNotFoundError
        Missing checkpoint or data file.
    ValueError
        Data whose field shape does not fit the model, a bad ``sample_index``.
    IntegrityError
        A damaged checkpoint.
    """
    check_int(n_prior_samples, "n_prior_samples", "evaluate", low=1)
    check_choice(skl_latent, "skl_latent", "evaluate", SKL_LATENTS)
    stats = None
    if isinstance(model_or_checkpoint, DenseVAE):
        model = model_or_checkpoint
        dev = next(model.parameters()).device if device is None else resolve_device(device)
    else:
        path = Path(model_or_checkpoint)
        ckpt = load_checkpoint(run_checkpoint(path, "evaluate") if path.is_dir() else path)
        dev = resolve_device(device, "evaluate")
        model = load_model(ckpt, device=dev)
        if ckpt.get("normalization") is not None:
            stats = ChannelStats(**ckpt["normalization"])
        if train_data is None and recorded_train:
            recorded = ckpt.get("train_path")
            if recorded and Path(recorded).is_file():
                train_data = recorded
    model = model.to(dev)
    test_set = as_dataset(data, normalize=False, stats=stats, device=dev, caller="evaluate")
    check_fits(model.config, test_set, "data", "evaluate")
    check_int(sample_index, "sample_index", "evaluate", low=0, high=len(test_set) - 1)
    kw = {
        "n_latent_samples": n_latent_samples,
        "batch_size": batch_size,
        "seed": seed,
        "rate_tol": rate_tol,
        "margin_tol": margin_tol,
        "skl_latent": skl_latent,
    }
    test_summary = evaluate_losses(
        model, test_set, n_latent_samples=n_latent_samples, batch_size=batch_size, seed=seed
    )
    test_metrics = split_metrics(model, test_set, summary=test_summary, **kw)
    train_metrics = None
    if train_data is not None:
        train_set = as_dataset(
            train_data, normalize=False, stats=stats, device=dev, caller="evaluate"
        )
        check_fits(model.config, train_set, "train_data", "evaluate")
        train_metrics = split_metrics(model, train_set, **kw)
    figures: dict[str, Path] = {}
    out = None
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        figures = _figures(model, test_set, test_summary, out, n_prior_samples, sample_index, seed)
    result = Evaluation(test_metrics, train_metrics, figures, out)
    if out is not None:
        atomic_write_text(
            out / "results.json", json.dumps(result.to_dict(), indent=2, sort_keys=True)
        )
    return result


def _figures(
    model: DenseVAE,
    test_set: DarcyDataset,
    summary: LossSummary,
    out: Path,
    n_prior_samples: int,
    sample_index: int,
    seed: int,
) -> dict[str, Path]:
    from . import plots

    dev = next(model.parameters()).device
    gen = torch.Generator(device=dev).manual_seed(int(seed))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            y = test_set.y[sample_index : sample_index + 1].to(dev)
            mu, _ = model.encode(y)
            y_mean, _ = model.decode(mu)
            z_prior = model.sample_prior(n_prior_samples, generator=gen)
    finally:
        model.train(was_training)
    z_post = aggregated_posterior_sample(summary, seed)
    y_show = test_set.denormalize(y[0]).cpu()
    y_rec = test_set.denormalize(y_mean[0]).cpu()
    figs = {
        "reconstruction": plots.plot_reconstruction(
            y_show, y_rec, title=f"test sample {sample_index}"
        ),
        "latent_distributions": plots.plot_latent_distributions(
            z_post, z_prior.cpu(), summary.theta
        ),
        "latent_vs_theta": plots.plot_latent_vs_theta(
            summary.z_mean,
            summary.theta,
            dims=shown_latents(summary.z_mean),
            title=_shown_title("latent means against theta", summary.z_mean),
        ),
        "latent_traversal": _traversal(model, summary, test_set),
    }
    return {name: plots.save_figure(fig, out / f"{name}.png") for name, fig in figs.items()}


MAX_FIGURE_LATENTS = 10
"""Most latent axes the per-axis figures draw (traversal, latents against theta): a
``latent_dim = 1000`` model would ask for thousands of panels and never finish."""


def shown_latents(z_mean: Any, limit: int = MAX_FIGURE_LATENTS) -> tuple[int, ...]:
    """The latent axes the figures draw: all of them, or the ``limit`` whose codes have
    the largest spread (standard deviation over the samples), in axis order."""
    z = np.asarray(z_mean, dtype=np.float64).reshape(len(z_mean), -1)
    n = z.shape[1]
    if n <= limit:
        return tuple(range(n))
    spread = np.nan_to_num(np.std(z, axis=0), nan=-1.0) if len(z) > 1 else np.zeros(n)
    top = np.argsort(-spread, kind="stable")[:limit]
    return tuple(sorted(int(d) for d in top))


def _shown_title(what: str, z_mean: Any) -> str | None:
    """The title that says when only some latent axes are drawn (None: all of them)."""
    n = np.asarray(z_mean).reshape(len(z_mean), -1).shape[1]
    if n <= MAX_FIGURE_LATENTS:
        return None
    return f"{what}: the {MAX_FIGURE_LATENTS} of {n} latent axes with the largest spread"


def _traversal(model: DenseVAE, summary: LossSummary, test_set: DarcyDataset):
    """Decoded fields along each latent axis through the mean code, +-2 spreads of the codes
    (at most ``MAX_FIGURE_LATENTS`` axes: those whose codes spread most)."""
    from . import plots

    z = np.asarray(summary.z_mean, dtype=np.float64)
    spread = float(np.mean(np.std(z, axis=0))) if len(z) > 1 else 1.0
    spread = spread if np.isfinite(spread) and spread > 0 else 1.0
    title = "latent traversal: decoded mean fields along each latent axis"
    return plots.latent_traversal(
        model,
        center=z.mean(axis=0),
        offsets=np.linspace(-2.0 * spread, 2.0 * spread, 5),
        dims=shown_latents(z),
        denormalize=test_set.denormalize,
        title=_shown_title("latent traversal: decoded mean fields", z) or title,
    )
