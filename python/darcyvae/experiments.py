"""The paper's experiments, one registered function each.

An experiment is a function ``fn(out_dir: Path, *, seed: int, quick: bool, **kw)
-> dict`` that writes its figures and numbers into ``out_dir`` and returns the
numbers. ``run_experiment`` seeds, creates the folder and stores the returned
numbers as ``out_dir/results.json``. The CLI verb ``darcyvae reproduce NAME``
calls it.

Public names
------------
register_experiment, list_experiments, run_experiment
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._io import atomic_write_text

__all__ = ["Experiment", "list_experiments", "register_experiment", "run_experiment"]


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its name, a one-line description and the function."""

    name: str
    description: str
    fn: Callable[..., dict[str, Any]]


_EXPERIMENTS: dict[str, Experiment] = {}
"""Registry of experiments by name (filled by ``@register_experiment``)."""


def register_experiment(name: str, description: str) -> Callable:
    """Decorator adding an experiment function to the registry under ``name``."""

    def decorate(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        if name in _EXPERIMENTS:
            msg = f"register_experiment: an experiment named {name!r} already exists."
            raise ValueError(msg)
        _EXPERIMENTS[name] = Experiment(name, description, fn)
        return fn

    return decorate


def list_experiments() -> list[Experiment]:
    """Return the registered experiments, sorted by name."""
    return [_EXPERIMENTS[k] for k in sorted(_EXPERIMENTS)]


def run_experiment(
    name: str, out_dir: str | os.PathLike, *, seed: int = 0, quick: bool = False, **kwargs: Any
) -> dict[str, Any]:
    """Run experiment ``name``, writing figures and ``results.json`` into ``out_dir``.

    Parameters
    ----------
    name : str
        A registered experiment (see ``list_experiments``).
    out_dir : path-like
        Output folder, created if needed.
    seed : int, default=0
        Seed of every random choice of the experiment (recorded in the results).
    quick : bool, default=False
        Smaller sizes for a smoke run (seconds to minutes on a CPU).

    Returns
    -------
    dict
        The experiment's numbers, plus ``experiment``, ``seed``, ``quick``,
        ``seconds``.
    """
    if name not in _EXPERIMENTS:
        known = ", ".join(sorted(_EXPERIMENTS)) or "none"
        msg = f"run_experiment: unknown experiment {name!r}; known: {known}."
        raise ValueError(msg)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    results = dict(_EXPERIMENTS[name].fn(out, seed=seed, quick=quick, **kwargs))
    results.update(experiment=name, seed=seed, quick=quick, seconds=time.perf_counter() - start)
    atomic_write_text(
        out / "results.json", json.dumps(results, indent=2, sort_keys=True, default=str)
    )
    return results


# --- Fig. 1: KLE samples and eigenvalue decay (darcyvae.kle) -----------------


@register_experiment("fig1", "Fig. 1: KLE2/10/100/1000 permeability samples, eigenvalue decay")
def fig1_kle_samples(
    out_dir: Path,
    *,
    seed: int,
    quick: bool,
    grid: int | None = None,
    n_samples: int = 3,
    n_modes: tuple[int, ...] = (2, 10, 100, 1000),
) -> dict[str, Any]:
    """Paper Fig. 1: permeability samples of the KLE truncations, and the spectrum.

    Computes the KLE bases (exponential kernel, l = 0.1, sigma^2 = 1; SPEC 2)
    on a ``grid`` x ``grid`` grid (65; 33 when ``quick``), largest first so the
    smaller ones come from the disk cache, and writes
    ``fig1_kle_samples.png`` (``n_samples`` rows, one column per truncation,
    one draw of theta per row shared by the columns) and
    ``eigenvalue_decay.png``.

    Returns
    -------
    dict
        ``grid``, ``n_modes``, ``variance_fraction`` and ``basis_seconds``
        (per truncation, keyed ``KLE<s>``; near 0 when served from the disk
        cache), ``lambda_1``, ``files``.
    """
    from . import plots
    from .kle import KLEConfig, kle_basis

    grid = grid if grid is not None else (33 if quick else 65)
    sizes = sorted({min(int(s), grid * grid) for s in n_modes})
    bases = {}
    basis_seconds = {}
    for s in reversed(sizes):
        start = time.perf_counter()
        bases[s] = kle_basis(KLEConfig(grid=grid, n_modes=s))
        basis_seconds[f"KLE{s}"] = time.perf_counter() - start
    ordered = [bases[s] for s in sizes]
    fig = plots.plot_kle_samples(ordered, n_samples=n_samples, seed=seed)
    files = [plots.save_figure(fig, out_dir / "fig1_kle_samples.png")]
    fig = plots.plot_eigenvalue_decay(ordered[-1])
    files.append(plots.save_figure(fig, out_dir / "eigenvalue_decay.png"))
    return {
        "grid": grid,
        "n_modes": sizes,
        "variance_fraction": {f"KLE{b.n_modes}": b.variance_fraction for b in ordered},
        "basis_seconds": basis_seconds,
        "lambda_1": float(ordered[-1].eigenvalues[0]),
        "files": [str(p) for p in files],
    }


# --- The README's main job ---------------------------------------------------


@register_experiment(
    "demo",
    "end to end on a CPU in minutes: KLE2 data (33 x 33), a small HP DenseVAE, its evaluation",
)
def demo(
    out: Path,
    *,
    seed: int,
    quick: bool,
    grid: int = 33,
    n_train: int = 512,
    n_test: int = 128,
    epochs: int | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """Generate a small KLE2 dataset, train the ``quick_hp`` preset, evaluate it.

    Writes ``out/data/{train,test}.h5``, ``out/model/`` (checkpoint, config,
    per-epoch log) and ``out/evaluation/`` (the paper's Fig. 6, 7 and 9-style
    figures, ``results.json``), and returns rate, distortion, S_D and S_KL.
    Re-running the same command continues an interrupted run (data
    generation and training are both resumable).
    """
    from dataclasses import replace

    from .darcy import DarcyConfig
    from .evaluation import evaluate
    from .generate import GenerateConfig, generate_dataset
    from .kle import KLEConfig
    from .training import load_preset, train

    if quick:
        n_train, n_test = min(n_train, 128), min(n_test, 64)
        epochs = epochs or 6
    gen = GenerateConfig(
        kle=KLEConfig(grid=grid, n_modes=2),
        darcy=DarcyConfig(),
        distribution="normal",
        n_train=n_train,
        n_test=n_test,
        seed=seed,
    )
    paths = generate_dataset(gen, out / "data", resume=True)

    config = load_preset("quick_hp")
    n_epochs = epochs or config.epochs
    config = replace(
        config,
        seed=seed,
        epochs=n_epochs,
        rec_epochs=min(config.rec_epochs, n_epochs * 2 // 5),
        model=replace(config.model, grid=grid),
    )
    model_dir = out / "model"
    resume = (model_dir / "checkpoint.pt").is_file()
    result = train(
        config, paths["train"], paths["test"], out_dir=model_dir, device=device, resume=resume
    )
    ev = evaluate(
        result.checkpoint,
        paths["test"],
        train_data=paths["train"],
        out_dir=out / "evaluation",
        device=device,
        seed=seed,
    )

    summary = {
        "data": {k: str(v) for k, v in paths.items()},
        "checkpoint": str(result.checkpoint),
        "epochs": result.epochs,
        "over_regularized": ev.over_regularized,
        "train": ev.train.to_dict() if ev.train is not None else None,
        "test": ev.test.to_dict(),
        "figures": {k: str(v) for k, v in ev.figures.items()},
    }
    bound = ev.test.distortion_bound
    train_sd = _fmt(ev.train.s_d if ev.train else None)
    train_skl = _fmt(ev.train.s_kl if ev.train else None)
    lines = [
        (
            f"darcyvae demo: KLE2 (normal), grid {grid}, {n_train} train / {n_test} test "
            f"samples, {result.epochs} epochs"
        ),
        f"  test rate        {ev.test.rate:.4g} nats/sample",
        f"  test distortion  {ev.test.distortion:.6g} nats/sample (Theorem-1 bound {bound:.6g})",
        f"  S_D  train/test  {train_sd} / {_fmt(ev.test.s_d)}",
        f"  S_KL train/test  {train_skl} / {_fmt(ev.test.s_kl)}",
        f"  over-regularised {ev.over_regularized}",
        f"  figures          {out / 'evaluation'}",
    ]
    text = "\n".join(lines) + "\n"
    (out / "summary.txt").write_text(text)
    print(text, end="")
    return summary


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"
