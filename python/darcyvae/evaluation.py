"""Evaluating a trained DenseVAE: rate, distortion, S_D, over-regularisation, figures.

Public names
------------
SplitMetrics
    The numbers of one data split (nats per sample).
Evaluation
    What ``evaluate`` returns (and writes as ``results.json``).
evaluate
    Evaluate a model or checkpoint on test (and training) data; write the
    results and the paper's figures (Figs. 6, 7, 9, 12) to a folder.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ._checks import check_int
from ._device import resolve_device
from ._io import atomic_write_text
from .dataset import ChannelStats, DarcyDataset
from .metrics import s_d, s_kl
from .models import DenseVAE
from .training import (
    OverRegularization,
    detect_over_regularization,
    distortion_bound,
    evaluate_losses,
    load_checkpoint,
    load_model,
)

__all__ = ["Evaluation", "SplitMetrics", "evaluate"]


logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SplitMetrics:
    """Rate-distortion numbers and S_D of one data split.

    Attributes
    ----------
    rate, distortion, loss : float
        Nats per sample (eval mode); ``loss`` = rate + distortion, the
        negative ELBO.
    rate_per_dim : float
        rate / latent_dim.
    s_d : float or None
        S_D of the encoder means against theta (SPEC 5); None when
        undefined (fewer than 2 samples).
    s_kl : float or None
        S_KL (SPEC 5, Eq. 7) of the encoder means against the split's
        thetas, which are samples of p(theta): ``darcyvae.metrics.s_kl``
        (adaptive k-NN estimator, paired, over scales, shifts, permutations
        and flips); lower is better. None when undefined (degenerate latents,
        repeated thetas, fewer than 3 samples).
    distortion_bound : float
        Theorem 1's distortion of an over-regularised model on this split.
    over_regularization : OverRegularization
    n_samples : int
    """

    rate: float
    distortion: float
    loss: float
    rate_per_dim: float
    s_d: float | None
    distortion_bound: float
    over_regularization: OverRegularization
    n_samples: int
    s_kl: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict."""
        return {
            "rate": self.rate,
            "distortion": self.distortion,
            "loss": self.loss,
            "rate_per_dim": self.rate_per_dim,
            "s_d": self.s_d,
            "s_kl": self.s_kl,
            "distortion_bound": self.distortion_bound,
            "over_regularized": self.over_regularization.over_regularized,
            "over_regularization": self.over_regularization.to_dict(),
            "n_samples": self.n_samples,
        }


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
        return split.over_regularization.over_regularized

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (what ``results.json`` holds)."""
        return {
            "test": self.test.to_dict(),
            "train": None if self.train is None else self.train.to_dict(),
            "over_regularized": self.over_regularized,
            "figures": {k: str(v) for k, v in self.figures.items()},
        }


def _dataset(
    data: DarcyDataset | str | os.PathLike, stats: ChannelStats | None, device: torch.device
) -> DarcyDataset:
    if isinstance(data, DarcyDataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        return DarcyDataset(
            data, normalize="channel" if stats is not None else False, stats=stats, device=device
        )
    msg = f"evaluate: data must be a DarcyDataset or a path; got {type(data).__name__}."
    raise TypeError(msg)


def _check_fits(model: DenseVAE, data: DarcyDataset, name: str) -> None:
    cfg = model.config
    if (data.channels, data.grid) != (cfg.channels, cfg.grid):
        msg = (
            f"evaluate: {name} fields are {data.channels} x {data.grid} x {data.grid}; the model "
            f"expects {cfg.channels} x {cfg.grid} x {cfg.grid}."
        )
        raise ValueError(msg)


def _split_metrics(
    model: DenseVAE,
    data: DarcyDataset,
    *,
    n_latent_samples: int,
    batch_size: int,
    seed: int,
    rate_tol: float,
    rel_tol: float,
):
    summary = evaluate_losses(
        model, data, n_latent_samples=n_latent_samples, batch_size=batch_size, seed=seed
    )
    bound = distortion_bound(data.y)
    over = detect_over_regularization(
        summary.rate,
        summary.distortion,
        bound,
        latent_dim=model.config.latent_dim,
        rate_tol=rate_tol,
        rel_tol=rel_tol,
    )
    ok = len(summary.z_mean) >= 2 and np.all(np.isfinite(summary.z_mean))
    metrics = SplitMetrics(
        rate=summary.rate,
        distortion=summary.distortion,
        loss=summary.loss,
        rate_per_dim=summary.rate / model.config.latent_dim,
        s_d=s_d(summary.z_mean, summary.theta) if ok else None,
        distortion_bound=bound,
        over_regularization=over,
        n_samples=len(data),
        s_kl=_s_kl_or_none(summary.z_mean, summary.theta, seed) if ok else None,
    )
    return metrics, summary


def _s_kl_or_none(z: np.ndarray, theta: np.ndarray, seed: int) -> float | None:
    """S_KL of latent means against thetas; None where the estimator is undefined."""
    if z.shape[1] != theta.shape[1] or len(z) < 3:
        return None
    try:
        return float(s_kl(z, theta, seed=seed).score)
    except ValueError as exc:  # degenerate latents or repeated thetas: say why in the log
        logger.info("evaluate: S_KL undefined (%s)", exc)
        return None


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
    rate_tol: float = 0.01,
    rel_tol: float = 0.05,
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
    rate_tol, rel_tol : float, default=0.01, 0.05
        Over-regularisation thresholds (``detect_over_regularization``).

    Returns
    -------
    Evaluation

    Raises
    ------
    FileNotFoundError
        Missing checkpoint or data file.
    ValueError
        Data whose field shape does not fit the model, a bad ``sample_index``.
    """
    check_int(n_prior_samples, "n_prior_samples", "evaluate", low=1)
    stats = None
    if isinstance(model_or_checkpoint, DenseVAE):
        model = model_or_checkpoint
        dev = next(model.parameters()).device if device is None else resolve_device(device)
    else:
        ckpt = load_checkpoint(model_or_checkpoint)
        dev = resolve_device(device, "evaluate")
        model = load_model(ckpt, device=dev)
        if ckpt.get("normalization") is not None:
            stats = ChannelStats(**ckpt["normalization"])
    model = model.to(dev)
    test_set = _dataset(data, stats, dev)
    _check_fits(model, test_set, "data")
    check_int(sample_index, "sample_index", "evaluate", low=0, high=len(test_set) - 1)
    kw = {
        "n_latent_samples": n_latent_samples,
        "batch_size": batch_size,
        "seed": seed,
        "rate_tol": rate_tol,
        "rel_tol": rel_tol,
    }
    test_metrics, test_summary = _split_metrics(model, test_set, **kw)
    train_metrics = None
    if train_data is not None:
        train_set = _dataset(train_data, stats, dev)
        _check_fits(model, train_set, "train_data")
        train_metrics, _ = _split_metrics(model, train_set, **kw)
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
    summary,
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
    # Aggregated posterior: one z ~ q(z|y) per test sample.
    rng = np.random.default_rng(seed)
    z_mean, z_logvar = summary.z_mean, summary.z_logvar
    z_post = z_mean + np.exp(0.5 * z_logvar) * rng.standard_normal(z_mean.shape)
    y_show = test_set.denormalize(y[0]).cpu()
    y_rec = test_set.denormalize(y_mean[0]).cpu()
    figs = {
        "reconstruction": plots.plot_reconstruction(
            y_show, y_rec, title=f"test sample {sample_index}"
        ),
        "latent_distributions": plots.plot_latent_distributions(
            z_post, z_prior.cpu(), summary.theta
        ),
        "latent_vs_theta": plots.plot_latent_vs_theta(z_mean, summary.theta),
    }
    return {name: plots.save_figure(fig, out / f"{name}.png") for name, fig in figs.items()}
