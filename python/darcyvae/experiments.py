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
