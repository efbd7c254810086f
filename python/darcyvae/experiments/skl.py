"""Fig. 13: S_KL against S_D and the qualitative verdict, over every trained model found.

Searches the output root (the folder holding this experiment's folder)
for training runs of the other experiments (a summary beside a checkpoint,
``checkpoint.SUMMARY_NAME`` and ``CHECKPOINT_NAME``), and for each run whose test distortion beats the
Theorem-1 bound computes, on its test data: S_D of the encoder means, and
S_KL (docs/scores.md §5) of aggregated-posterior samples z ~ q(z|y) against the test
thetas (samples of p(theta)). The reported S_KL is ``s_kl(...).score``
(cross-fitted where the metrics module provides it, with the in-sample
minimum beside it). The qualitative class is read from S_D: disentangled
(>= 0.9), rotated (<= 0.6), partly between; the paper judged by eye.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import CHECKPOINT_NAME, SUMMARY_NAME
from . import MARKER, register_experiment
from ._common import (
    SD_DISENTANGLED,
    SD_ROTATED,
    Context,
    fmt,
    spread,
)
from .claims import Claim, Flag, Requires, Rule, Threshold

MIN_PER_CLASS = 3
"""Trained models needed in each class (disentangled, others) to judge Fig. 13's claim."""

MEDIANS_ORDERED = Flag(
    "medians_ordered", "the disentangled models' median S_KL is below the others'"
)
SKL_TRACKS = Claim(
    "skl-tracks",
    "S_KL agrees with the qualitative judgement: disentangled models score lower S_KL "
    "than rotated or entangled ones",
    Rule(
        reproduced=MEDIANS_ORDERED & Threshold("spearman", "<=", -0.5, "Spearman(S_D, S_KL)"),
        partly=MEDIANS_ORDERED,
        gates=(
            Requires(
                Threshold("n_disentangled", ">=", MIN_PER_CLASS, "disentangled")
                & Threshold("n_other", ">=", MIN_PER_CLASS, "others"),
                failed=f"fewer than {MIN_PER_CLASS} trained models in a class",
                label=f"at least {MIN_PER_CLASS} trained models are in each class",
            ),
        ),
        note=(
            "judged on the models that beat the Theorem-1 bound (the others are drawn but "
            "not judged)"
        ),
    ),
)


def _runs(root: Path, exclude: Path) -> list[Path]:
    found = []
    for summary in sorted(root.rglob(SUMMARY_NAME)):
        folder = summary.parent
        if exclude in folder.parents or folder == exclude:
            continue
        if (folder / CHECKPOINT_NAME).is_file():
            found.append(folder)
    return found


def _experiment_of(folder: Path, root: Path) -> str:
    for parent in [folder, *folder.parents]:
        if parent == root:
            break
        marker = parent / MARKER
        if marker.is_file():
            try:
                return str(json.loads(marker.read_text()).get("experiment", "?"))
            except ValueError:
                return "?"
    return "?"


@register_experiment(
    "skl", "Fig. 13: S_KL against S_D over all trained models found", order=1000, after_others=True
)
def skl(ctx: Context) -> dict[str, Any]:
    """Score every trained model under the output root with S_D and S_KL."""
    from collections import Counter

    from tqdm import tqdm

    root = ctx.root
    rows, skipped = [], []
    runs = _runs(root, ctx.out)
    for folder in tqdm(runs, disable=not ctx.progress, desc="skl", unit="model"):
        row = _score(folder, root, ctx.seed)
        (rows if "why" not in row else skipped).append(row)
    if rows:
        counts = Counter(r["experiment"] for r in rows)
        ctx.note(
            "models scored, by experiment: "
            + ", ".join(f"{name} {n}" for name, n in sorted(counts.items()))
        )
    else:
        ctx.note(f"no model found under {root}: run the other experiments first")
    return {
        "root": str(root),
        "models": rows,
        "skipped": skipped,
        "claims": _claims(rows),
        "figures": [ctx.save(_figure(rows), "fig13_skl.png")] if rows else [],
    }


def _test_file(train_path: Path, folder: Path, root: Path) -> Path | None:
    """The test file beside the training file the checkpoint recorded; if that path is gone
    (the experiment's folder was moved or copied), the same file under the model's own
    experiment folder (``<experiment>/data/<distribution>/test.h5``)."""
    recorded = train_path.with_name("test.h5")
    if recorded.is_file():
        return recorded
    if len(train_path.parts) < 3 or train_path.parts[-3] != "data":
        return None
    experiment = root / folder.relative_to(root).parts[0]
    moved = experiment / "data" / train_path.parts[-2] / "test.h5"
    return moved if moved.is_file() else None


def _score(folder: Path, root: Path, seed: int) -> dict[str, Any]:
    """S_D, S_KL (cross-fitted and in-sample), the Theorem-1 margin and the class of the
    model in ``folder`` on its test data; ``{"folder", "why"}`` when it cannot be scored."""
    from ..checkpoint import load_checkpoint, load_model
    from ..dataset import ChannelStats, DarcyDataset
    from ..evaluation import beats_bound, distortion_bound, evaluate_losses
    from ..metrics import s_d, s_kl

    ckpt = load_checkpoint(folder)
    test_path = _test_file(Path(ckpt.get("train_path", "")), folder, root)
    if test_path is None:
        return {"folder": str(folder), "why": "no test data beside the training data"}
    stats = ckpt.get("normalization")
    data = DarcyDataset(
        test_path,
        normalize="channel" if stats else False,
        stats=ChannelStats(**stats) if stats else None,
    )
    model = load_model(ckpt, device="cpu")
    if model.config.latent_dim != data.n_params:
        return {"folder": str(folder), "why": "latent dimension != s"}
    summ = evaluate_losses(model, data, seed=seed)
    bound = distortion_bound(data.y)
    rng = np.random.default_rng(seed)
    z = summ.z_mean + np.exp(0.5 * summ.z_logvar) * rng.standard_normal(summ.z_mean.shape)
    try:
        res = s_kl(z, summ.theta, seed=seed)
    except ValueError as exc:
        return {"folder": str(folder), "why": f"S_KL undefined ({exc})"}
    sd = s_d(summ.z_mean, summ.theta)
    return {
        "folder": str(folder.relative_to(root)),
        "experiment": _experiment_of(folder, root),
        "s_d": sd,
        "s_kl": float(res.score),
        "s_kl_in_sample": float(res.in_sample),
        "margin": bound - summ.distortion,
        "trained": beats_bound(summ.distortion, bound, int(np.prod(data.y.shape[1:]))),
        "class": "disentangled"
        if sd >= SD_DISENTANGLED
        else "rotated"
        if sd <= SD_ROTATED
        else "partly",
    }


def _claims(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fig. 13's claim, judged on the models that beat the Theorem-1 bound."""
    judged = [r for r in rows if r["trained"]]
    dis = [r["s_kl"] for r in judged if r["class"] == "disentangled"]
    other = [r["s_kl"] for r in judged if r["class"] != "disentangled"]
    rho = None
    if len(judged) >= 3:
        from scipy.stats import spearmanr

        # A collapsed latent scores S_KL = +inf (docs/scores.md §5): it ranks last, as it should,
        # so the rank correlation and the medians keep it (``spread`` would drop it).
        x = [r["s_d"] for r in judged]
        y = [r["s_kl"] for r in judged]
        if len(set(x)) > 1 and len(set(y)) > 1:
            rho = float(spearmanr(x, y).statistic)
    sd_dis, sd_other = spread(dis), spread(other)
    sd_dis["median"] = float(np.median(dis)) if dis else None
    sd_other["median"] = float(np.median(other)) if other else None
    sd_dis["n"], sd_other["n"] = len(dis), len(other)
    ordered = None if not (dis and other) else bool(sd_dis["median"] < sd_other["median"])
    return [
        SKL_TRACKS.judge(
            f"{len(judged)} trained models (of {len(rows)} found): median S_KL disentangled "
            f"{fmt(sd_dis['median'])} (n = {sd_dis['n']}), others {fmt(sd_other['median'])} "
            f"(n = {sd_other['n']}); Spearman(S_D, S_KL) {fmt(rho)}",
            {
                "spearman": rho,
                "median_disentangled": sd_dis["median"],
                "median_other": sd_other["median"],
            },
            n_disentangled=len(dis),
            n_other=len(other),
            medians_ordered=ordered,
        )
    ]


def _figure(rows: list[dict[str, Any]]) -> Any:
    """Fig. 13: S_KL against S_D, coloured by class, untrained models marked."""
    from .. import plots

    by_class: dict[str, Any] = {}
    for cls in ("disentangled", "partly", "rotated"):
        for ok in (True, False):
            sel = [r for r in rows if r["class"] == cls and r["trained"] == ok]
            if sel:
                label = cls if ok else f"{cls} (did not beat the bound)"
                by_class[label] = ([r["s_d"] for r in sel], [r["s_kl"] for r in sel], "scatter")
    judged = sum(r["trained"] for r in rows)
    return plots.plot_panels(
        [
            {
                "series": by_class,
                "xlabel": "S_D (test)",
                "ylabel": "S_KL (nats, lower is better)",
                "title": f"{len(rows)} models ({judged} beat the Theorem-1 bound)",
            }
        ],
        title="Fig. 13: S_KL against S_D and the qualitative class",
    )
