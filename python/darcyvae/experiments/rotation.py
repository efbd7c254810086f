"""Fig. 10: rate and S_D against a rotation of the latent space.

For a trained model and an angle omega, the latent is rotated, z' = R(omega) z,
and the decoder is composed with R(omega)^T, so the distortion does not
change. The rate of the rotated model is estimated per test sample with the
same Monte Carlo noise at every angle: log q(z|y) (a rotation keeps the
density) minus log p(z') for the standard-normal prior, and the Jensen bound
log q(z|y) + KL(q_gamma(xi|z') || N(0, I)) - log p_pi(z'|xi) for the
hierarchical prior (docs/model.md §4c). S_D is that of the rotated encoder means.
Models are trained on the gaussian p(theta) (docs/data.md §3, section 5.2).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from . import register_experiment
from ._common import (
    GAUSSIAN_PARAMS,
    Context,
    dataset,
    fmt,
    load_split,
    train_arms,
    train_config,
    trial_table,
)
from .claims import Claim, HalfTrained, ThresholdRule

STD_NORMAL_INVARIANT = Claim(
    "std-normal-invariant",
    "with a standard-normal prior the rate does not change when the latent is rotated",
    ThresholdRule(
        "max_relative_change",
        "the largest (max - min) / |rate(0)| over the models",
        "<=",
        1e-3,
        gates=(HalfTrained(),),
    ),
)
HP_CHANGES = Claim(
    "hp-changes",
    "with the hierarchical prior the rate changes with the rotation (so the prior can "
    "prefer an orientation)",
    ThresholdRule(
        "relative_changes",
        "HP model's (max - min) / |rate(0)|",
        ">=",
        0.05,
        partly=0.01,
        each=True,
        gates=(HalfTrained(),),
    ),
)


def rotated_rate(model, data, omegas, *, n_draws: int = 4, seed: int = 0) -> np.ndarray:
    """Mean rate (nats per sample) of ``model`` on ``data`` with the latent rotated by each omega.

    Parameters
    ----------
    model : DenseVAE with a 2-D latent
    data : DarcyDataset
    omegas : array-like of float
        Angles in radians.
    n_draws : int
        Latent draws per sample (the same noise at every angle).

    Returns
    -------
    ndarray of shape (len(omegas),)
    """
    import torch

    from ..losses import gaussian_log_prob, hierarchical_bound_terms

    gen = torch.Generator().manual_seed(seed)
    model.eval()
    with torch.no_grad():
        mu, logvar = model.encode(data.y)
        eps = torch.randn((n_draws, *mu.shape), generator=gen)
        z = mu + torch.exp(0.5 * logvar) * eps  # (draws, n, 2)
        log_q = gaussian_log_prob(z, mu, logvar).sum(-1)
        out = []
        for omega in omegas:
            c, s = math.cos(omega), math.sin(omega)
            rot = torch.tensor([[c, -s], [s, c]], dtype=z.dtype)
            zr = z @ rot.T
            if model.hierarchical:
                g = torch.Generator().manual_seed(seed + 1)
                flat = zr.reshape(-1, 2)
                terms = hierarchical_bound_terms(
                    model.prior, flat, flat, torch.zeros_like(flat), generator=g
                )
                log_p = -(terms.kl_xi + terms.nll_z).reshape(zr.shape[:2])
            else:
                var = model.prior.variance.to(zr.dtype)
                log_p = gaussian_log_prob(zr, torch.zeros_like(zr), torch.log(var)).sum(-1)
            out.append(float((log_q - log_p).mean()))
    return np.asarray(out)


@register_experiment(
    "rotation", "Fig. 10: rate and S_D against a rotation of the latent", order=80, cpu_minutes=5
)
def rotation(ctx: Context) -> dict[str, Any]:
    """Rotate trained std-normal-prior and HP models' latents; record rate and S_D."""
    n = ctx.n_trials(ctx.scale.few_trials)
    paths = dataset(ctx, "gaussian", GAUSSIAN_PARAMS)
    configs = {
        "std-normal prior": train_config(ctx, train_path=paths["train"]),
        "HP": train_config(ctx, prior="hierarchical", train_path=paths["train"]),
    }
    arms = train_arms(ctx, configs, paths, n)
    omegas = np.linspace(0.0, math.pi / 2, ctx.scale.rotation_angles)
    curves = _curves(ctx, arms, configs, paths, omegas)
    return {
        "omegas": omegas.tolist(),
        "curves": curves,
        "records": arms,
        "claims": _claims(arms, curves),
        "figures": [ctx.save(_figure(omegas, curves), "fig10_rotation.png")],
        "trial_table": trial_table(arms),
    }


def _curves(
    ctx: Context,
    arms: dict[str, list[dict[str, Any]]],
    configs: dict[str, Any],
    paths: dict[str, Any],
    omegas: np.ndarray,
) -> dict[str, list[dict[str, Any]]]:
    """Per arm and trained model: the rate and S_D at each rotation angle, and the rate's
    relative change ``(max - min) / |rate(0)|``."""
    import torch

    from ..checkpoint import load_model
    from ..metrics import s_d

    curves: dict[str, list[dict[str, Any]]] = {}
    for arm, recs in arms.items():
        data = load_split(paths["test"], configs[arm], paths["train"])
        theta = data.theta.double().numpy()
        curves[arm] = []
        for r in recs:
            if r["status"] != "finished":
                continue  # diverged: no model to rotate (listed in the trial table)
            model = load_model(r["checkpoint"], device="cpu")
            rates = rotated_rate(model, data, omegas, seed=ctx.seed)
            with torch.no_grad():
                mu = model.encode(data.y)[0].double().numpy()
            sds = [
                s_d(
                    mu @ np.array([[math.cos(w), -math.sin(w)], [math.sin(w), math.cos(w)]]).T,
                    theta,
                )
                for w in omegas
            ]
            change = float((rates.max() - rates.min()) / max(abs(rates[0]), 1e-12))
            curves[arm].append(
                {
                    "seed": r["seed"],
                    "rate": rates.tolist(),
                    "s_d": sds,
                    "relative_rate_change": change,
                }
            )
    return curves


def _claims(
    arms: dict[str, list[dict[str, Any]]], curves: dict[str, list[dict[str, Any]]]
) -> list[dict[str, Any]]:
    """Fig. 10's two claims, each judged by its rule."""
    std_change = max((c["relative_rate_change"] for c in curves["std-normal prior"]), default=0.0)
    hp_changes = [c["relative_rate_change"] for c in curves["HP"]]
    return [
        STD_NORMAL_INVARIANT.judge(
            f"largest relative rate change over omega: {fmt(std_change)}",
            {"max_relative_change": std_change},
            trials=arms["std-normal prior"],
            subject="std-normal prior",
        ),
        HP_CHANGES.judge(
            "relative rate change over omega per model: " + ", ".join(fmt(c) for c in hp_changes),
            {"relative_changes": hp_changes},
            trials=arms["HP"],
            subject="HP",
        ),
    ]


def _figure(omegas: np.ndarray, curves: dict[str, list[dict[str, Any]]]) -> Any:
    """Fig. 10: rate and S_D against the rotation angle, one line per model."""
    from .. import plots

    deg = np.degrees(omegas)
    panels = []
    for key, label in (("rate", "rate (nats per sample)"), ("s_d", "S_D (test)")):
        series = {}
        for arm, cs in curves.items():
            for c in cs:
                series[f"{arm}, seed {c['seed']}"] = (deg, c[key], "line+marker")
        panels.append(
            {
                "series": series,
                "xlabel": "rotation omega (degrees)",
                "ylabel": label,
                "title": f"{label.split(' (')[0]} against the rotation",
            }
        )
    return plots.plot_panels(panels, title="Fig. 10: rotating the latent space")
