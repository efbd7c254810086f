"""Fig. 5: loss and S_D along the line between two converged solutions of different seeds.

Two models (seeds ``seed`` and ``seed + 1``) are trained with the paper's
method; every floating parameter and buffer is interpolated linearly,
(1 - alpha) A + alpha B, and the training loss (negative ELBO, nats per
sample) and the test S_D are evaluated at each alpha in eval mode.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..evaluation import TRAINED_MARGIN
from . import register_experiment
from ._common import (
    Context,
    dataset,
    fmt,
    interpolate_state,
    load_split,
    losses,
    require_finished,
    train_config,
    train_trials,
    trial_table,
)
from .claims import Claim, Flag, Requires, Rule, Threshold

SD_DIFFERENT = 0.1
"""Endpoints whose test S_D differ by at least this count as differently disentangled."""

SIMILAR_LOSS = Threshold(
    "loss_difference_per_element",
    "<",
    TRAINED_MARGIN,
    "the endpoint losses' difference per field element",
)
SAME_LOSS_DIFFERENT_SD = Claim(
    "same-loss-different-sd",
    "two converged solutions of different seeds reach similar losses but different "
    "disentanglement (S_D), with a loss barrier between them",
    Rule(
        reproduced=SIMILAR_LOSS
        & Threshold("s_d_difference", ">=", SD_DIFFERENT, "their S_D difference"),
        partly=SIMILAR_LOSS,
        gates=(
            Requires(
                Flag("both_trained", "both endpoints beat the Theorem-1 bound"),
                failed="an endpoint does not beat the Theorem-1 bound",
            ),
        ),
    ),
)


@register_experiment(
    "interpolate",
    "Fig. 5: loss and S_D between two solutions of different seeds",
    order=50,
    cpu_minutes=1.5,
)
def interpolate(ctx: Context) -> dict[str, Any]:
    """Train two seeds; evaluate loss and S_D along the straight line between them."""
    paths = dataset(ctx, "normal")
    config = train_config(ctx, train_path=paths["train"])
    a, b = train_trials(
        config,
        ctx.seeds(2, "endpoints"),
        paths["train"],
        paths["test"],
        ctx.out / "trials",
        ctx.device,
        ctx.progress,
        workers=ctx.jobs,
    )
    require_finished([a, b], "interpolate")
    alphas = np.linspace(0.0, 1.0, ctx.scale.interp_points)
    points = _walk(ctx, config, paths, a, b, alphas)
    return {
        "endpoints": [a, b],
        "points": points,
        "claims": _claims(a, b, points),
        "figures": [ctx.save(_figure(alphas, points, a, b), "fig5_interpolate.png")],
        "trial_table": trial_table({"endpoints": [a, b]}),
    }


def _walk(ctx: Context, config, paths, a: dict, b: dict, alphas: np.ndarray) -> list[dict]:
    """Training losses and test S_D at each alpha of the line (1 - alpha) A + alpha B."""
    import torch
    from tqdm import tqdm

    from .._device import resolve_device
    from ..models import DenseVAE

    train_set = load_split(paths["train"], config)
    test_set = load_split(paths["test"], config, paths["train"])
    sa = torch.load(a["checkpoint"], map_location="cpu", weights_only=True)["model"]
    sb = torch.load(b["checkpoint"], map_location="cpu", weights_only=True)["model"]
    # the many evaluations run where training ran (a GPU at the paper scale)
    model = DenseVAE(config.model).to(resolve_device(ctx.device)).eval()
    points = []
    for alpha in tqdm(alphas, disable=not ctx.progress, desc="interpolate", unit="point"):
        model.load_state_dict(interpolate_state(sa, sb, float(alpha)))
        tr = losses(model, train_set, seed=ctx.seed)
        te = losses(model, test_set, seed=ctx.seed)
        points.append({"alpha": float(alpha), "train": tr, "test": te})
    return points


def _curves(points: list[dict]) -> tuple[np.ndarray, np.ndarray]:
    """The training loss and the test S_D (NaN where undefined) along the line."""
    loss = np.array([p["train"]["loss"] for p in points])
    sd = np.array([np.nan if p["test"]["s_d"] is None else p["test"]["s_d"] for p in points])
    return loss, sd


def _claims(a: dict, b: dict, points: list[dict]) -> list[dict[str, Any]]:
    """Fig. 5's claim, judged by its rule."""
    loss, sd = _curves(points)
    d_loss = abs(loss[-1] - loss[0])
    d_sd = abs(sd[-1] - sd[0])
    barrier = float(loss.max() - max(loss[0], loss[-1]))
    tol = TRAINED_MARGIN * a["n_elements"]  # unit-free (docs/model.md §4e)
    return [
        SAME_LOSS_DIFFERENT_SD.judge(
            f"|loss difference| {fmt(d_loss, 1)} nats (tolerance 0.05 nats per element = "
            f"{fmt(tol, 1)}), "
            f"S_D {fmt(sd[0])} vs {fmt(sd[-1])} (difference {fmt(d_sd)}), barrier "
            f"{fmt(barrier, 1)} nats",
            {"loss_difference": d_loss, "s_d_difference": d_sd, "barrier": barrier},
            loss_difference_per_element=d_loss / a["n_elements"],
            both_trained=a["beats_bound"] and b["beats_bound"],
        )
    ]


def _figure(alphas: np.ndarray, points: list[dict], a: dict, b: dict) -> Any:
    """Fig. 5: the loss and S_D along the line."""
    from .. import plots

    loss, sd = _curves(points)
    return plots.plot_panels(
        [
            {
                "series": {"training loss": (alphas, loss, "line+marker")},
                "xlabel": f"alpha (0: seed {a['seed']}, 1: seed {b['seed']})",
                "ylabel": "negative ELBO (nats per sample)",
                "title": "loss along the line",
                "logy": "symlog",
            },
            {
                "series": {"S_D (test)": (alphas, sd, "line+marker")},
                "xlabel": f"alpha (0: seed {a['seed']}, 1: seed {b['seed']})",
                "ylabel": "S_D",
                "title": "disentanglement along the line",
            },
        ],
        title="Fig. 5: between two solutions of different seeds",
    )
