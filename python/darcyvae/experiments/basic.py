"""Fig. 1 (KLE samples) and the end-to-end CPU demo."""

from __future__ import annotations

import itertools
import time
from pathlib import Path
from typing import Any

from .._io import atomic_write_text
from . import register_experiment
from ._common import Context, dataset, fmt, train_arms, train_config
from .claims import Claim, Flag, Rule

KLE_DETAIL = Claim(
    "kle-detail",
    "more KLE modes give finer-scaled permeability fields (more of the field's variance kept)",
    Rule(Flag("grows", "the kept variance fraction grows strictly with the modes")),
)


@register_experiment(
    "fig1",
    "Fig. 1: KLE2/10/100/1000 permeability samples, eigenvalue decay",
    order=10,
    cpu_minutes=0.1,
)
def fig1_kle_samples(
    ctx: Context,
    *,
    grid: int | None = None,
    n_samples: int = 3,
    n_modes: tuple[int, ...] = (2, 10, 100, 1000),
) -> dict[str, Any]:
    """Paper Fig. 1: permeability samples of the KLE truncations, and the spectrum.

    Computes the KLE bases (exponential kernel, l = 0.1, sigma^2 = 1; docs/data.md §2)
    on a ``grid`` x ``grid`` grid (65; 17 at the smoke scale, where KLE1000 becomes
    KLE289, all modes), largest first
    so the smaller ones come from the disk cache, and writes
    ``fig1_kle_samples.png`` (``n_samples`` rows, one column per truncation,
    one draw of theta per row shared by the columns) and
    ``eigenvalue_decay.png``.
    """
    from .. import plots
    from ..kle import KLEConfig, kle_basis

    grid = grid if grid is not None else (17 if ctx.scale.name == "smoke" else 65)
    sizes = sorted({min(int(s), grid * grid) for s in n_modes})
    bases = {}
    basis_seconds = {}
    for s in reversed(sizes):
        start = time.perf_counter()
        bases[s] = kle_basis(KLEConfig(grid=grid, n_modes=s))
        basis_seconds[f"KLE{s}"] = time.perf_counter() - start
    ordered = [bases[s] for s in sizes]
    fig = plots.plot_kle_samples(ordered, n_samples=n_samples, seed=ctx.seed)
    files = [ctx.save(fig, "fig1_kle_samples.png")]
    fig = plots.plot_eigenvalue_decay(ordered[-1])
    files.append(ctx.save(fig, "eigenvalue_decay.png"))
    fractions = {f"KLE{b.n_modes}": b.variance_fraction for b in ordered}
    values = [fractions[f"KLE{s}"] for s in sizes]
    grows = all(a < b for a, b in itertools.pairwise(values))
    measured = ", ".join(f"KLE{s} {fmt(v)}" for s, v in zip(sizes, values, strict=True))
    return {
        "grid": grid,
        "n_modes": sizes,
        "variance_fraction": fractions,
        "basis_seconds": basis_seconds,
        "lambda_1": float(ordered[-1].eigenvalues[0]),
        "figures": files,
        "files": [str(p) for p in files],
        "claims": [
            KLE_DETAIL.judge(
                f"fraction of variance kept: {measured}",
                {"variance_fraction": {k: round(v, 3) for k, v in fractions.items()}},
                grows=grows,
            )
        ],
    }


@register_experiment(
    "demo",
    "end to end on a CPU in minutes: KLE2 mixture4 data, a DenseVAE without and with the "
    "hierarchical prior, each evaluated against the Theorem-1 bound",
    order=20,
    cpu_minutes=3.5,
)
def demo(
    ctx: Context,
    *,
    grid: int | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    epochs: int | None = None,
) -> dict[str, Any]:
    """Generate KLE2 ``mixture4`` data, train one model per arm (no HP, HP), evaluate both.

    The arms are one trial of each arm of the scale's ``mixture4`` study
    (``train_config(..., mixture=True)``: the grid, model, schedule and
    normalisation that the ``sensitivity`` grid measured for the ``cpu``
    scale, docs/reproduction.md §7; Figs. 11-12 of the paper), seeded with
    ``ctx.seed`` and run deterministically, so the same command gives the same
    numbers. Writes ``out/data/``, one run folder per arm (``out/no_HP/seed_S``,
    ``out/HP/seed_S``), ``out/evaluation/<arm>/`` (results.json and the
    paper's Fig. 6, 7 and 9-style figures: reconstruction, aggregated
    posterior against the prior, latent means against theta, a traversal)
    and ``summary.txt``: per arm the test rate and distortion beside the
    Theorem-1 bound, whether the model is trained (the margin), S_D and S_KL.
    ``grid``, ``n_train``, ``n_test`` and ``epochs`` override the scale's
    (``epochs`` for both arms, with the reconstruction-only phase cut to 2/5).
    Re-running the same command continues an interrupted run.
    """
    paths, configs = _plan(ctx, grid=grid, n_train=n_train, n_test=n_test, epochs=epochs)
    records = train_arms(ctx, configs, paths, 1)
    arms, evaluations = _judge(ctx, records, paths)
    text = _summary(ctx, arms, evaluations)
    atomic_write_text(Path(ctx.out) / "summary.txt", text)
    print(text, end="")
    return {
        "data": {k: str(v) for k, v in paths.items()},
        "arms": arms,
        "trained": all(a["trained"] for a in arms.values()),
        "figures": [
            Path(a["evaluation_figures"][k])
            for a in arms.values()
            for k in ("latent_vs_theta", "latent_distributions")
        ],
    }


def _plan(
    ctx: Context,
    *,
    grid: int | None,
    n_train: int | None,
    n_test: int | None,
    epochs: int | None,
) -> tuple[dict[str, Path], dict[str, Any]]:
    """The demo's data and arms: one trial of each arm of the scale's mixture4 study,
    deterministic; ``grid``, ``n_train`` and ``n_test`` change the scale of ``ctx``,
    ``epochs`` the schedules (``_shortened``)."""
    changes = {k: v for k, v in (("grid", grid), ("n_train", n_train), ("n_test", n_test)) if v}
    if changes:
        ctx.scale = ctx.scale.replace(**changes)
    paths = dataset(ctx, "mixture4")
    deterministic = {"deterministic": True}
    # a schedule shortened by --epochs is the user's: the reach rule does not lengthen it
    train_path = paths["train"] if epochs is None else None
    configs = {
        "no HP": train_config(ctx, mixture=True, run=deterministic, train_path=train_path),
        "HP": train_config(
            ctx, prior="hierarchical", mixture=True, run=deterministic, train_path=train_path
        ),
    }
    if epochs is not None:
        configs = {arm: _shortened(c, epochs) for arm, c in configs.items()}
    return paths, configs


def _judge(
    ctx: Context, records: dict[str, list[dict[str, Any]]], paths: dict[str, Path]
) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Evaluate each arm's model (``darcyvae.evaluation.evaluate``: its numbers, whether it
    beats the Theorem-1 bound, and its figures in ``out/evaluation/<arm>/``): the arms'
    results and their ``Evaluation`` objects."""
    from ..evaluation import evaluate

    arms, evaluations = {}, {}
    for arm, (rec,) in records.items():
        ev = evaluate(
            rec["checkpoint"],
            paths["test"],
            train_data=paths["train"],
            out_dir=ctx.out / "evaluation" / arm.replace(" ", "_"),
            device=ctx.device,
            seed=ctx.seed,
        )
        arms[arm] = {
            "checkpoint": rec["checkpoint"],
            "epochs": rec["epochs"],
            "over_regularized": ev.over_regularized,
            "trained": ev.test.trained,
            "train": ev.train.to_dict() if ev.train is not None else None,
            "test": ev.test.to_dict(),
            "evaluation_figures": {k: str(v) for k, v in ev.figures.items()},
        }
        evaluations[arm] = ev
    return arms, evaluations


def _summary(ctx: Context, arms: dict[str, dict[str, Any]], evaluations: dict[str, Any]) -> str:
    """``summary.txt``: the data, then per arm its numbers beside the Theorem-1 bound."""
    s = ctx.scale
    lines = [
        (
            f"darcyvae demo: KLE2 (mixture4), grid {s.grid}, {s.n_train} train / {s.n_test} test "
            f"samples, scale {s.name!r}, seed {ctx.seed}"
        ),
        (
            "  (nats per sample; S_D: 1 = each latent tracks one theta, 0.5 = 45 degrees rotated; "
            "S_KL: lower is better)"
        ),
    ]
    for arm, a in arms.items():
        lines += _arm_lines(arm, a["epochs"], evaluations[arm])
    lines.append(f"  figures: {ctx.out / 'evaluation'}/<arm>/")
    return "\n".join(lines) + "\n"


def _shortened(config: Any, epochs: int) -> Any:
    """``config`` cut to ``epochs`` (reconstruction-only phase 2/5 of it, drops beyond it left out)."""
    miles = tuple(m for m in config.optim.lr_milestones if m < epochs)
    return config.replace(
        optim={
            "epochs": epochs,
            "lr_milestones": miles,
            "lr_values": config.optim.lr_values[: len(miles) + 1],
        },
        beta={"rec_epochs": max(1, min(config.beta.rec_epochs, epochs * 2 // 5))},
    )


def _arm_lines(arm: str, epochs: int, ev: Any) -> list[str]:
    """The summary lines of one arm."""
    tr, te = ev.train, ev.test
    return [
        f"{arm} ({epochs} epochs):",
        f"  test rate        {te.rate:.4g}",
        f"  test distortion  {te.distortion:.6g} (Theorem-1 bound {te.distortion_bound:.6g})",
        f"  trained          {_trained_line(te)}",
        f"  S_D  train/test  {_fmt(tr.s_d if tr else None)} / {_fmt(te.s_d)}",
        f"  S_KL train/test  {_fmt(tr.s_kl if tr else None)} / {_fmt(te.s_kl)} (lower is better)",
        f"  over-regularised {ev.over_regularized}",
    ]


def _trained_line(metrics: Any) -> str:
    """Whether the demo's model beats the Theorem-1 bound, in words (docs/model.md §4e)."""
    margin = metrics.distortion_margin
    per_el = metrics.margin_per_element
    if metrics.trained:
        return (
            f"yes: test distortion {margin:.4g} nats ({per_el:.3f} per field element) below "
            "the Theorem-1 bound"
        )
    where = (
        f"only {per_el:.3f} nats per field element below the bound (needs 0.05)"
        if margin > 0
        else f"{-margin:.4g} nats above the Theorem-1 bound (a decoder that ignores z does better)"
    )
    return f"NO: the test distortion is {where}, so S_D says little here"


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
