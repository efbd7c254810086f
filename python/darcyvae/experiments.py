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
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


def _write_json(path: Path, data: dict[str, Any]) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=2, sort_keys=True, default=str)
    os.replace(tmp, path)


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
    _write_json(out / "results.json", results)
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
