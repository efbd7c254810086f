"""Fig. 3: the loss landscape between Xavier initialisations and a trained solution.

One model is trained with the paper's method. Then (paper section 4.1) the
loss -- the negative ELBO, rate + distortion in nats per sample, averaged
over all training data with ``landscape_latent_samples`` latent draws -- is
evaluated

- along the straight lines from ``landscape_inits`` Xavier-uniform
  initialisations (alpha = 0) to the solution (alpha = 1), on a uniform
  grid plus ``landscape_refine`` points in the last grid step (the loss
  falls from its maximum to the solution's there), and
- along ``landscape_directions`` random directions out of the solution,
  theta* + t d for t in [0, 1], d Gaussian and scaled per tensor to the
  norm of that tensor of theta* ("filter normalisation", Li et al. 2018;
  the paper does not say how it scaled them).

All floating state is interpolated, BatchNorm running statistics included,
and the model is evaluated in eval mode. Each finished line and direction is
appended to ``walk.jsonl`` with a key of the solution and the grid: a rerun or
an interrupted walk evaluates only the paths not there (the directions are
still drawn in order, so the random stream is the same).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

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
from .claims import Claim, CountRule, Flag, Requires


def _xavier_state(config, seed: int) -> dict:
    import torch

    from ..models import DenseVAE

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DenseVAE(config.model.__class__(**{**config.model.to_dict(), "xavier_init": True}))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _is_valley(point: dict[str, float], bound: float, latent_dim: int, n_elements: int) -> bool:
    """Over-regularised point (docs/model.md §4e): rate < 0.01 nats per dimension and
    distortion within ``TRAINED_MARGIN`` nats per field element of the bound."""
    from ..evaluation import detect_over_regularization

    return detect_over_regularization(
        point["rate"],
        point["distortion"],
        bound,
        latent_dim=latent_dim,
        n_elements=n_elements,
    ).over_regularized


@register_experiment(
    "landscape",
    "Fig. 3: loss along lines from Xavier inits and random directions",
    order=30,
    cpu_minutes=13,
)
def landscape(ctx: Context) -> dict[str, Any]:
    """Train one model; evaluate the loss along lines into and out of it."""
    import torch

    paths = dataset(ctx, "normal")
    config = train_config(ctx, train_path=paths["train"])
    (rec,) = train_trials(
        config,
        ctx.seeds(1, "solution"),
        paths["train"],
        paths["test"],
        ctx.out / "solution",
        ctx.device,
        ctx.progress,
    )
    require_finished([rec], "landscape")
    solution = torch.load(rec["checkpoint"], map_location="cpu", weights_only=True)["model"]
    alphas = np.linspace(0.0, 1.0, ctx.scale.landscape_points)
    line_alphas = _line_alphas(alphas, ctx.scale.landscape_refine)
    data = load_split(paths["train"], config)
    key = {
        "solution": _sha256(rec["checkpoint"]),
        "line_alphas": line_alphas.tolist(),
        "alphas": alphas.tolist(),
        "latent_samples": ctx.scale.landscape_latent_samples,
        "seed": ctx.seed,
    }
    log_ = WalkLog(ctx.out / WALK_LOG, key)
    lines, directions = _walk(ctx, config, data, solution, line_alphas, alphas, log_)
    bound = rec["bound_train"]
    line_loss = np.array([[p["loss"] for p in pts] for pts in lines])
    dir_loss = np.array([[p["loss"] for p in pts] for pts in directions])
    valley = [any(_is_valley(p, bound, 2, rec["n_elements"]) for p in pts[1:-1]) for pts in lines]
    sol_loss = float(dir_loss[0, 0]) if len(directions) else float(line_loss[0, -1])
    tol = 1e-3 * max(1.0, abs(sol_loss))
    lower = [bool(np.any(row[1:] < row[0] - tol)) for row in dir_loss]
    return {
        "solution": rec,
        "alphas": alphas.tolist(),
        "line_alphas": line_alphas.tolist(),
        "lines": lines,
        "directions_loss": dir_loss.tolist(),
        "bound_train": bound,
        "lines_with_valley": valley,
        "directions_going_lower": lower,
        "claims": _claims(valley, lower, sol_loss, trained=rec["beats_bound"]),
        "figures": [
            ctx.save(_figure(line_alphas, lines, alphas, dir_loss, bound), "fig3_landscape.png")
        ],
        "trial_table": trial_table({"solution": [rec]}),
    }


def _line_alphas(alphas: np.ndarray, refine: int) -> np.ndarray:
    """The grid of the lines into the solution: ``alphas`` plus ``refine`` points spaced
    geometrically from one grid step to 1e-3 short of the solution (alpha = 1)."""
    if refine <= 0 or len(alphas) < 2:
        return alphas
    gaps = np.geomspace(alphas[1] - alphas[0], 1e-3, refine + 1)[1:]
    return np.union1d(alphas, 1.0 - gaps)


WALK_LOG = "walk.jsonl"
"""The landscape's finished paths, one JSON line each (``WalkLog``)."""


def _sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class WalkLog:
    """The finished paths of a landscape walk in a JSON-lines file: ``get(kind, k)`` gives a
    path's points when the file holds it under the same ``key`` (the solution's checksum,
    the grids, the latent draws, the seed), ``add`` appends one (flushed to disk, so an
    interrupted walk loses at most the path under way). Lines with another key are
    dropped at the first ``add``; a torn last line is ignored."""

    def __init__(self, path: Path, key: dict[str, Any]) -> None:
        self.path, self.key = Path(path), key
        self.paths: dict[tuple[str, int], list[dict[str, float]]] = {}
        self._stale = False
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    self._stale = True
                    continue
                if rec.get("key") == key:
                    self.paths[(rec["kind"], int(rec["index"]))] = rec["points"]
                else:
                    self._stale = True

    def get(self, kind: str, index: int) -> list[dict[str, float]] | None:
        return self.paths.get((kind, index))

    def add(self, kind: str, index: int, points: list[dict[str, float]]) -> None:
        self.paths[(kind, index)] = points
        if self._stale:  # start the file afresh with the paths of this key
            from .._io import atomic_write_text

            atomic_write_text(
                self.path, "".join(self._line(k, i, p) for (k, i), p in self.paths.items())
            )
            self._stale = False
            return
        with open(self.path, "a") as fh:
            fh.write(self._line(kind, index, points))
            fh.flush()
            os.fsync(fh.fileno())

    def _line(self, kind: str, index: int, points: list[dict[str, float]]) -> str:
        rec = {"key": self.key, "kind": kind, "index": index, "points": points}
        return json.dumps(rec) + "\n"


def _walk(
    ctx: Context,
    config,
    data,
    solution: dict,
    line_alphas: np.ndarray,
    alphas: np.ndarray,
    done: WalkLog,
) -> tuple[list[list[dict[str, float]]], list[list[dict[str, float]]]]:
    """The loss terms at every point of the lines from Xavier initialisations to the
    solution (at ``line_alphas``) and of the random directions out of it (at ``alphas``):
    ``(lines, directions)``; the paths ``done`` holds are read, not evaluated again."""
    import torch
    from tqdm import tqdm

    from .._device import resolve_device
    from ..models import DenseVAE

    s = ctx.scale
    # the many evaluations run where training ran (a GPU at the paper scale)
    model = DenseVAE(config.model).to(resolve_device(ctx.device)).eval()

    def point(state: dict) -> dict[str, float]:
        model.load_state_dict(state)
        return losses(model, data, n_latent_samples=s.landscape_latent_samples, seed=ctx.seed)

    total = s.landscape_inits * len(line_alphas) + s.landscape_directions * len(alphas)
    bar = tqdm(total=total, disable=not ctx.progress, desc="landscape", unit="point")
    lines = []
    for k in range(s.landscape_inits):
        pts = done.get("line", k)
        if pts is None:
            init = _xavier_state(config, 10_000 + ctx.seed * 100 + k)
            pts = []
            for a in line_alphas:
                pts.append(point(interpolate_state(init, solution, float(a))))
                bar.update()
            done.add("line", k, pts)
        else:
            bar.update(len(pts))
        lines.append(pts)
    gen = torch.Generator().manual_seed(ctx.seed)
    param_names = {name for name, _ in model.named_parameters()}
    directions = []
    for k in range(s.landscape_directions):
        direction = _random_direction(solution, param_names, gen)  # drawn even when done
        pts = done.get("direction", k)
        if pts is None:
            pts = []
            for t in alphas:
                state = {
                    key: (v + float(t) * direction[key]) if key in direction else v
                    for key, v in solution.items()
                }
                pts.append(point(state))
                bar.update()
            done.add("direction", k, pts)
        else:
            bar.update(len(pts))
        directions.append(pts)
    bar.close()
    return lines, directions


def _random_direction(solution: dict, param_names: set[str], gen) -> dict:
    """A Gaussian direction over the parameters, each tensor scaled to the norm of the
    solution's ("filter normalisation"; buffers such as BatchNorm statistics stay put)."""
    import torch

    direction = {}
    for key, v in solution.items():
        if key in param_names:
            d = torch.randn(v.shape, generator=gen, dtype=v.dtype)
            direction[key] = d * (v.norm() / (d.norm() + 1e-12))
    return direction


SOLUTION_TRAINED = Requires(
    Flag("trained", "the solution beats the Theorem-1 bound"),
    failed="the solution does not beat the Theorem-1 bound",
)

VALLEY = Claim(
    "valley",
    "the lines from random (Xavier) initialisations to a trained solution pass through "
    "an over-regularised valley (rate ~0, distortion at the Theorem-1 bound)",
    CountRule(
        "lines pass an over-regularised point",
        0.5,
        k="lines_with_valley",
        n="lines",
        gates=(SOLUTION_TRAINED,),
        note=(
            "a point is over-regularised when rate < 0.01 nats/dim and |distortion - bound| < "
            "0.05 nats per field element"
        ),
    ),
)
NO_LOCAL_MINIMUM = Claim(
    "no-local-minimum",
    "there is no lower point (no other minimum) along random directions out of the solution",
    CountRule(
        "directions stay at or above the solution's loss (tolerance 1e-3 relative)",
        0.95,
        partly=0.5,
        k="directions_never_lower",
        n="directions",
        gates=(SOLUTION_TRAINED,),
    ),
)


def _claims(
    valley: list[bool], lower: list[bool], sol_loss: float, *, trained: bool
) -> list[dict[str, Any]]:
    """The valley and no-other-minimum claims of Fig. 3, each judged by its rule."""
    n_init, n_dirs = len(valley), len(lower)
    n_valley, n_lower = int(sum(valley)), int(sum(lower))
    return [
        VALLEY.judge(
            f"{n_valley} of {n_init} lines pass an over-regularised point",
            {"lines_with_valley": n_valley, "lines": n_init},
            trained=trained,
        ),
        NO_LOCAL_MINIMUM.judge(
            f"{n_dirs - n_lower} of {n_dirs} directions never go below the "
            f"solution's loss {fmt(sol_loss)}",
            {"directions_never_lower": n_dirs - n_lower, "directions": n_dirs},
            trained=trained,
        ),
    ]


def _figure(
    line_alphas: np.ndarray, lines: list, alphas: np.ndarray, dir_loss: np.ndarray, bound: float
) -> Any:
    """Fig. 3: loss along the lines, the lines in the RD plane, loss along the directions."""
    from .. import plots

    shown = range(min(len(lines), 10))
    return plots.plot_panels(
        [
            {
                "series": {
                    f"init {k}": (line_alphas, [p["loss"] for p in lines[k]]) for k in shown
                },
                "hlines": {"Theorem-1 bound (rate 0)": bound},
                "xlabel": "alpha (0: Xavier init, 1: trained solution)",
                "ylabel": "loss (nats per sample)",
                "title": "lines from initialisations to the solution",
                "logy": "symlog",
            },
            {
                "series": {
                    f"init {k}": (
                        [p["rate"] for p in lines[k]],
                        [p["distortion"] for p in lines[k]],
                        "line+marker",
                    )
                    for k in shown
                },
                "hlines": {"Theorem-1 bound": bound},
                "xlabel": "rate (nats)",
                "ylabel": "distortion (nats)",
                "title": "the same lines in the rate-distortion plane",
                "logx": "symlog",
                "logy": "symlog",
                "legend": False,
            },
            {
                "series": {f"dir {k}": (alphas, dir_loss[k]) for k in range(len(dir_loss))},
                "xlabel": "t (step along a random direction)",
                "ylabel": "loss (nats per sample)",
                "title": f"{len(dir_loss)} random directions out of the solution",
                "logy": "symlog",
                "legend": False,
            },
        ],
        title="Fig. 3: loss landscape around a trained DenseVAE",
    )
