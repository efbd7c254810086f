"""The paper's experiments (docs/reproduction.md §6), one registered function each, and their reports.

``darcyvae reproduce NAME`` calls ``run_experiment``: it checks and locks the
output folder, runs the experiment at a scale (``smoke``, ``cpu`` or
``paper``, see ``darcyvae.experiments._scales``), and writes
``results.json`` (every number) and ``report.md`` (the paper's claim beside
the measured value, a verdict by a stated rule, the exact command, scale
and seeds) next to the experiment's figures. ``run_all`` runs every
experiment into one folder and writes a top-level ``report.md``.

An experiment is a function ``fn(ctx: Context, **overrides) -> dict`` that
writes its figures into ``ctx.out`` and returns its numbers, with the
report rows under ``"claims"`` (each judged by a rule of ``claims``:
``Claim(id, text, rule).judge(measured, values, ...)``) and the written
figures under ``"figures"``. The experiments share one path
(``_common``): ``dataset`` generates the data, ``train_config`` builds the
configurations, ``train_trials`` / ``train_arms`` train them; each then
judges its claims and draws its figures in functions of their own. Adding one is one module in this package: decorate the
function with ``@register_experiment(name, description, order=N)``; the
package imports its public modules itself, and ``order`` places it in
``reproduce all``.

Public names
------------
Experiment, register_experiment, list_experiments, run_experiment, run_all
SCALES, Scale, get_scale
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .._checks import check_int
from .._io import atomic_write_text
from ._common import Context, fmt
from ._scales import SCALES, Scale, get_scale
from .claims import VERDICTS

__all__ = [
    "SCALES",
    "Experiment",
    "Scale",
    "get_scale",
    "list_experiments",
    "register_experiment",
    "run_all",
    "run_experiment",
]

log = logging.getLogger(__name__)

MARKER = "experiment.json"
"""File that says which experiment, scale and seed an output folder holds."""


@dataclass(frozen=True)
class Experiment:
    """A registered experiment: its name, a one-line description and the function."""

    name: str
    description: str
    fn: Callable[..., dict[str, Any]]
    order: int = 0
    cpu_minutes: float = 1.0
    after_others: bool = False


_EXPERIMENTS: dict[str, Experiment] = {}
"""Registry of experiments by name (filled by ``@register_experiment``)."""


def register_experiment(
    name: str,
    description: str,
    *,
    order: int,
    cpu_minutes: float = 1.0,
    after_others: bool = False,
) -> Callable:
    """Decorator adding an experiment function to the registry under ``name``.

    ``order`` places it in ``reproduce all`` (ascending; ``skl``, which scores the
    models the others trained, comes last). ``cpu_minutes`` is its measured wall time
    at ``--scale cpu`` on one core, rounded: ``reproduce all --jobs N`` starts the
    longest first. ``after_others`` makes it wait, under ``--jobs``, until every other
    experiment has finished (it reads their folders). A module of this package that
    defines experiments is found by itself (``_discover``): adding an experiment is one
    module.
    """

    def decorate(fn: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
        if name in _EXPERIMENTS or name == "all":
            msg = f"register_experiment: an experiment named {name!r} already exists."
            raise ValueError(msg)
        check_int(order, "order", "register_experiment")
        if not cpu_minutes > 0:
            msg = f"register_experiment: cpu_minutes must be > 0; got {cpu_minutes!r}."
            raise ValueError(msg)
        _EXPERIMENTS[name] = Experiment(name, description, fn, order, cpu_minutes, after_others)
        return fn

    return decorate


def list_experiments() -> list[Experiment]:
    """Return the registered experiments in the order ``reproduce all`` runs them."""
    return sorted(_EXPERIMENTS.values(), key=lambda e: (e.order, e.name))


def _check_name(name: str) -> Experiment:
    if name not in _EXPERIMENTS:
        known = ", ".join(e.name for e in list_experiments())
        msg = f"unknown experiment {name!r}; expected one of: {known} (or all)."
        raise ValueError(msg)
    return _EXPERIMENTS[name]


MAX_SEED = 2**32 - 1
"""Largest base seed: every seed an experiment derives from it (``seed + k`` per trial,
``10_000 + 100 seed + k`` for the landscape's initialisations) then fits what numpy,
torch (< 2**64) and the datasets' 64-bit seed attribute (< 2**63) accept."""

MAX_TRIALS = 1000
"""Most trials per arm (``--trials``): 20 times the paper's 50."""

MAX_JOBS = 64
"""Most processes of ``reproduce --jobs`` (experiments at once, or an arm's blocks)."""


def _check_trials(trials: Any) -> int | None:
    if trials is None:
        return None
    return check_int(trials, "trials", "reproduce", low=1, high=MAX_TRIALS)


def _check_settings(scale: str, seed: Any, trials: Any, device: Any) -> tuple[Any, int, Any]:
    """Every setting of a run checked before anything is written: a
    rejected ``--seed 2**70`` leaves no ``experiment.json``, so the corrected rerun
    needs no ``--overwrite``. Returns ``(Scale, seed, trials)``."""
    from .._device import resolve_device

    sc = get_scale(scale)
    seed = check_int(seed, "seed", "reproduce", low=0, high=MAX_SEED)
    trials = _check_trials(trials)
    resolve_device(device, "reproduce")  # an unknown device, or CUDA where there is none
    return sc, seed, trials


def _command(name: str, out: Path, scale: str, seed: int, trials: int | None) -> str:
    cmd = f"darcyvae reproduce {name} --scale {scale} --seed {seed} --out {out}"
    return cmd + (f" --trials {trials}" if trials is not None else "")


def _entries(folder: Path) -> list[Path]:
    from .._lock import LOCK_NAME

    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.name != LOCK_NAME]


def _prepare(
    out: Path, name: str, scale: str, seed: int, overwrite: bool, allowed: set[str] = frozenset()
) -> None:
    """Refuse a folder holding other results; clear it under ``overwrite`` (ours only)."""
    marker = out / MARKER
    if out.exists() and not out.is_dir():
        msg = f"output {str(out)!r} exists and is not a folder."
        raise NotADirectoryError(msg)
    if marker.is_file():
        try:
            info = json.loads(marker.read_text())
        except ValueError:
            info = {"experiment": "?"}
        same = (info.get("experiment"), info.get("scale"), info.get("seed")) == (name, scale, seed)
        if same and not overwrite:
            return  # resume
        if not overwrite:
            if info.get("experiment") != name:
                what = f"results of experiment {info.get('experiment')!r}"
            else:
                what = f"a run at scale {info.get('scale')!r} with seed {info.get('seed')!r}"
            msg = (
                f"output folder {str(out)!r} holds {what}; rerun with those settings to "
                "resume, choose another --out, or pass --overwrite to replace it."
            )
            raise FileExistsError(msg)
    else:
        foreign = [p for p in _entries(out) if p.name not in allowed]
        if foreign:
            msg = (
                f"output folder {str(out)!r} is not empty and was not written by darcyvae "
                f"reproduce (e.g. {foreign[0].name!r}); choose another --out."
            )
            raise FileExistsError(msg)
        if not overwrite or not _entries(out):
            return
    for p in _entries(out):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def run_experiment(
    name: str,
    out_dir: str | os.PathLike,
    *,
    scale: str | None = None,
    seed: int = 0,
    trials: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    quick: bool | None = None,
    command: str | None = None,
    jobs: int = 1,
    **overrides: Any,
) -> dict[str, Any]:
    """Run experiment ``name`` into ``out_dir``: figures, ``results.json``, ``report.md``.

    Parameters
    ----------
    name : str
        A registered experiment (see ``list_experiments``).
    out_dir : path-like
        Output folder. A folder holding another experiment's results, or the
        same experiment at another scale or seed, is refused unless
        ``overwrite``; a folder with the same settings is resumed (finished
        data and trials are reused, interrupted ones continued).
    scale : {"smoke", "cpu", "paper"} or None, default=None
        Sizes (``darcyvae.experiments.SCALES``); None means "cpu", or
        "smoke" with ``quick=True``.
    seed : int, default=0
        Base seed of every random choice, in [0, ``MAX_SEED``] (2**32 - 1).
    trials : int or None, default=None
        Trials per arm (None: the scale's number), at most ``MAX_TRIALS``.
    device : str, default="auto"
        Checked, with every other setting, before anything is written.
    overwrite : bool, default=False
        Replace the folder's earlier results (only a folder darcyvae wrote).
    progress : bool, default=True
        tqdm bars.
    quick : bool or None, default=None
        Old name of ``scale="smoke"``.
    command : str or None
        The command line recorded in the report (default: the equivalent
        ``darcyvae reproduce`` call).
    jobs : int, default=1
        Local processes that train an arm's trials at once, the threads shared
        out (``train_ensemble(workers=...)``); a resumed arm keeps the blocks it
        started with.
    **overrides
        Passed to the experiment function (e.g. ``grid`` of ``fig1``).

    Returns
    -------
    dict
        What ``results.json`` holds.
    """
    exp = _check_name(name)
    if scale is None:
        scale = "smoke" if quick else "cpu"
    sc, seed, trials = _check_settings(scale, seed, trials, device)
    jobs = check_int(jobs, "jobs", "reproduce", low=1, high=MAX_JOBS)
    out = Path(out_dir)
    from .._lock import folder_lock

    with folder_lock(out, "darcyvae reproduce"):
        _prepare(out, name, scale, seed, overwrite)
        atomic_write_text(
            out / MARKER,
            json.dumps({"experiment": name, "scale": scale, "seed": seed}, indent=2) + "\n",
        )
        ctx = Context(
            name=name,
            out=out,
            root=out.parent,
            scale=sc,
            seed=seed,
            trials=trials,
            device=device,
            progress=progress,
            overrides=dict(overrides),
            jobs=jobs,
        )
        start = time.perf_counter()
        results = dict(exp.fn(ctx, **overrides))
        results.setdefault("claims", [])
        results.setdefault("figures", [])
        results.update(
            experiment=name,
            description=exp.description,
            scale=scale,
            scale_settings=sc.to_dict(),
            seed=seed,
            trials=trials,
            seeds=ctx.seeds_used,
            quick=scale == "smoke",
            device=device,
            command=command
            or _command(name, out, scale, seed, trials) + (f" --jobs {jobs}" if jobs > 1 else ""),
            notes=list(ctx.notes) + list(results.get("notes", [])),
            seconds=time.perf_counter() - start,
        )
        results["figures"] = [os.path.relpath(f, out) for f in results["figures"]]
        atomic_write_text(
            out / "results.json",
            json.dumps(results, indent=2, sort_keys=True, default=_json_default) + "\n",
        )
        atomic_write_text(out / "report.md", _report(results))
    return results


def _json_default(value: Any) -> Any:
    import numpy as np

    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return str(value)


def _report(res: dict[str, Any]) -> str:
    """report.md of one experiment."""
    lines = [
        f"# `{res['experiment']}`: {res['description']}",
        "",
        f"- command: `{res['command']}`",
        f"- scale: `{res['scale']}` ({'; '.join(res['scale_settings'].get('notes', []))})",
        f"- base seed {res['seed']}; seeds per arm: "
        + (
            ", ".join(f"{arm}: {_seed_range(s)}" for arm, s in res["seeds"].items())
            or "(no trials)"
        ),
        f"- wall time {res['seconds']:.1f} s on device `{res['device']}`",
        "",
        "## The paper's claims and what we measured",
        "",
    ]
    if res["claims"]:
        lines += [
            "| # | the paper's claim | measured here | verdict | rule |",
            "|---|---|---|---|---|",
        ]
        for i, c in enumerate(res["claims"], 1):
            lines.append(
                f"| {i} | {cell(c['claim'])} | {cell(c['measured'])} | **{c['verdict']}** | "
                f"{cell(c['rule'])} |"
            )
    else:
        lines.append("This experiment makes no claim of the paper's to judge (a demonstration).")
    for table in res.get("tables", []):
        lines += ["", f"## {table['title']}", ""]
        lines.append("| " + " | ".join(cell(h) for h in table["header"]) + " |")
        lines.append("|" + "---|" * len(table["header"]))
        lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table["rows"]]
    if res.get("notes"):
        lines += ["", "## Notes and deviations", ""] + [f"- {n}" for n in res["notes"]]
    if res.get("trial_table"):
        lines += [
            "",
            "## Every trial (none dropped, none restarted)",
            "",
            (
                "Margin = Theorem-1 bound minus test distortion, in nats per sample and per "
                "field element; above 0.05 nats per element the model beats the bound and "
                "counts as trained (a unit-free rule, docs/model.md §4e)."
            ),
            "",
            (
                "| arm | seed | test rate | test distortion | bound | margin | margin/element | "
                "trained | over-regularised | S_D |"
            ),
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in res["trial_table"]:
            lines.append(
                f"| {r['arm']} | {r['seed']} | {fmt(r['test_rate'])} | "
                f"{fmt(r['test_distortion'], 1)} | {fmt(r['bound_test'], 1)} | "
                f"{fmt(r['margin'], 1)} | {fmt(r.get('margin_per_element'))} | "
                f"{r['beats_bound']} | {r['over_regularized']} | "
                f"{fmt(r['s_d'])} |"
            )
    if res["figures"]:
        lines += ["", "## Figures", ""]
        lines += [f"![{f}]({f})" for f in res["figures"]]
    return "\n".join(lines) + "\n"


def cell(text: str) -> str:
    """``text`` as one Markdown table cell (pipes escaped, no line breaks)."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _seed_range(seeds: list[int]) -> str:
    if not seeds:
        return "none"
    if seeds == list(range(seeds[0], seeds[0] + len(seeds))) and len(seeds) > 2:
        return f"{seeds[0]}..{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def run_all(
    out_dir: str | os.PathLike,
    *,
    scale: str | None = None,
    seed: int = 0,
    trials: int | None = None,
    device: str = "auto",
    overwrite: bool = False,
    progress: bool = True,
    quick: bool | None = None,
    names: list[str] | None = None,
    compare: str | os.PathLike | None = None,
    jobs: int = 1,
) -> dict[str, Any]:
    """Run every experiment (``skl`` last) into ``out_dir/<name>``; write ``out_dir/report.md``.

    Parameters are those of ``run_experiment``; ``names`` restricts the run
    to some experiments (in the registry's order). An experiment that fails
    is recorded (``{"error": message}``) and the others still run. ``jobs``
    > 1 runs that many experiments at once, each in a process of its own with
    torch's threads shared out among them (``_run_parallel``); the results and
    the report are the same as one after the other. ``compare``
    is the folder of another ``reproduce all`` run (e.g. at the ``cpu-fast``
    scale): the report's "robust?" column then gives each claim's verdict
    there beside this run's, and for the ``mixture4`` claims whether the
    ``sensitivity`` grid of this run found the verdict robust
    (docs/reproduction.md §7). Returns ``{name: results}``.
    """
    if scale is None:
        scale = "smoke" if quick else "cpu"
    _, seed, trials = _check_settings(scale, seed, trials, device)
    jobs = check_int(jobs, "jobs", "reproduce all", low=1, high=MAX_JOBS)
    _load_compare(compare)  # a folder that holds no run fails here, before anything runs
    out = Path(out_dir)
    chosen = [e.name for e in list_experiments()]
    if names is not None:
        for n in names:
            _check_name(n)  # before anything is written
        chosen = [n for n in chosen if n in names]
    from .._lock import folder_lock

    with folder_lock(out, "darcyvae reproduce all"):
        # under --only, --overwrite clears the named experiments' folders, not the others
        clear = overwrite and names is None
        _prepare(out, "all", scale, seed, clear, allowed={*_EXPERIMENTS, "report.md", MARKER})
        atomic_write_text(
            out / MARKER,
            json.dumps({"experiment": "all", "scale": scale, "seed": seed}, indent=2) + "\n",
        )
    settings = {
        "scale": scale,
        "seed": seed,
        "trials": trials,
        "device": device,
        "overwrite": overwrite,
        "progress": progress,
    }
    if jobs > 1 and len(chosen) > 1:
        done = _run_parallel(chosen, out, settings, jobs)
    else:
        done = {name: _run_recorded(name, out, settings) for name in chosen}
    results = {name: done[name] for name in chosen}  # the registry's order, however they ran
    only = chosen if names is not None else None
    other = _load_compare(compare)  # read now: the compared run may have gone on meanwhile
    atomic_write_text(
        out / "report.md", _all_report(results, out, scale, seed, trials, other, only, jobs)
    )
    return results


def _run_recorded(name: str, out: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """``run_experiment(name, out / name, **settings)``, a failure recorded as
    ``{"error": message}`` so that the other experiments still run."""
    try:
        return run_experiment(
            name,
            out / name,
            **settings,
            command=_command(
                name, out / name, settings["scale"], settings["seed"], settings["trials"]
            ),
        )
    except Exception as exc:
        log.exception("reproduce all: %s failed", name)
        return _failed(f"{type(exc).__name__}: {exc}")


def _run_parallel(
    chosen: list[str], out: Path, settings: dict[str, Any], jobs: int
) -> dict[str, dict[str, Any]]:
    """Run ``chosen`` in ``jobs`` worker processes, longest first (``cpu_minutes``); the
    experiments that read the others' folders (``after_others``) start when all the others
    have finished. Each worker gets ``torch.get_num_threads() // jobs`` threads (at least
    one): two one-thread processes do about 1.2x the work of one two-thread process on two
    cores (docs/benchmarks.md). Progress bars from several processes would interleave, so
    each finished experiment is logged instead."""
    from .._pool import process_pool, share_threads

    threads = share_threads(jobs)
    later = [n for n in chosen if _EXPERIMENTS[n].after_others]
    first = sorted(
        (n for n in chosen if n not in later), key=lambda n: -_EXPERIMENTS[n].cpu_minutes
    )
    quiet = dict(settings, progress=False)
    log.info(
        "reproduce all: %d experiments in %d processes of %d thread(s) each, longest first: %s",
        len(chosen),
        jobs,
        threads,
        ", ".join(first + later),
    )
    done: dict[str, dict[str, Any]] = {}
    with process_pool(jobs) as pool:
        for batch in (first, later):
            for name, res in _finished(pool, batch, out, quiet):
                done[name] = res
                verdicts = ", ".join(c["verdict"] for c in res["claims"]) or "no claims"
                log.info(
                    "reproduce all: %s finished (%s)",
                    name,
                    "FAILED: " + res["error"] if "error" in res else verdicts,
                )
    return done


def _finished(pool, batch: list[str], out: Path, settings: dict[str, Any]):
    """Yield ``(name, results)`` of ``batch`` run on ``pool`` as each finishes; an
    experiment whose worker process died (e.g. killed for memory), which also breaks the
    pool for the rest, is recorded as failed like any other failure."""
    from concurrent.futures import as_completed
    from concurrent.futures.process import BrokenProcessPool

    futures = {}
    for name in batch:
        try:
            futures[pool.submit(_run_recorded, name, out, settings)] = name
        except BrokenProcessPool as exc:
            yield name, _failed(f"no worker process left to run it ({exc})")
    for future in as_completed(futures):
        try:
            yield futures[future], future.result()
        except BrokenProcessPool as exc:
            yield futures[future], _failed(f"its worker process died ({exc})")


def _failed(message: str) -> dict[str, Any]:
    return {"error": message, "claims": [], "figures": []}


def _load_compare(folder: str | os.PathLike | None) -> dict[str, Any] | None:
    """``{"scale": ..., "folder": ..., "results": {name: results.json}}`` of an earlier
    ``reproduce all`` run, or None; a folder that holds none is a clear error."""
    if folder is None:
        return None
    root = Path(folder)
    marker = root / MARKER
    try:
        info = json.loads(marker.read_text())
    except (OSError, ValueError):
        msg = f"--compare {str(root)!r} holds no 'reproduce all' run (no readable {MARKER})."
        raise ValueError(msg) from None
    if info.get("experiment") != "all":
        msg = f"--compare {str(root)!r} holds experiment {info.get('experiment')!r}, not 'all'."
        raise ValueError(msg)
    found = {}
    for path in sorted(root.glob("*/results.json")):
        try:
            found[path.parent.name] = json.loads(path.read_text())
        except ValueError:
            log.warning("reproduce all: %s is unreadable; left out of the comparison", path)
    return {"scale": info.get("scale"), "folder": str(root), "results": found}


def _robust(name: str, c: dict[str, Any], results: dict[str, Any], other) -> str:
    """The "robust?" cell of one claim: its verdict in the compared run, and for the
    mixture4 claims the sensitivity grid's answer (docs/reproduction.md §7)."""
    parts = []
    grid = results.get("sensitivity", {})
    if name == "mixture4" and grid.get("claims"):
        rc = next((x for x in grid["claims"] if x["id"] == f"robust-{c['id']}"), None)
        if rc is not None:
            per = rc["values"].get("verdicts", {})
            if not per:
                parts.append("grid: no cell trains enough")
            else:
                parts.append(
                    f"grid: {'robust' if rc['values'].get('robust') else 'depends'}"
                    f" ({len(per)} cells)"
                )
    if other is not None:
        prev = other["results"].get(name, {})
        verdict = next(
            (x["verdict"] for x in prev.get("claims", []) if x.get("id") == c.get("id")), None
        )
        scale = other["scale"]
        if verdict is None:
            parts.append(f"{scale}: not run")
        else:
            parts.append(f"{scale}: {verdict}" + (" (same)" if verdict == c["verdict"] else ""))
    return "; ".join(parts) or "n/a"


def _all_report(
    results: dict[str, Any],
    out: Path,
    scale: str,
    seed: int,
    trials: int | None,
    other: dict[str, Any] | None = None,
    only: list[str] | None = None,
    jobs: int = 1,
) -> str:
    cmd = f"darcyvae reproduce all --scale {scale} --seed {seed} --out {out}"
    cmd += f" --trials {trials}" if trials is not None else ""
    cmd += f" --compare {other['folder']}" if other is not None else ""
    cmd += f" --only {','.join(only)}" if only is not None else ""
    cmd += f" --jobs {jobs}" if jobs > 1 else ""
    lines = [
        "# Reproducing Jacobsen & Duraisamy (2022): all experiments",
        "",
        f"- command: `{cmd}`",
        f"- scale: `{scale}`, base seed {seed}",
        "",
        "| experiment | verdicts | report | figures |",
        "|---|---|---|---|",
    ]
    for name, res in results.items():
        if "error" in res:
            lines.append(f"| `{name}` | FAILED: {res['error']} | | |")
            continue
        counts = {v: 0 for v in VERDICTS}
        for c in res["claims"]:
            counts[c["verdict"]] += 1
        verdicts = ", ".join(f"{k} {v}" for k, v in counts.items() if v) or "no claims"
        figs = " ".join(f"[{f}]({name}/{f})" for f in res["figures"])
        lines.append(f"| `{name}` | {verdicts} | [report]({name}/report.md) | {figs} |")
    lines += [
        "",
        "## Every claim",
        "",
        (
            "The robust? column: the claim's verdict in the compared run (`--compare`) and, for the "
            "mixture4 claims, whether the sensitivity grid finds the same verdict in every cell "
            "where the models train (docs/reproduction.md §7)."
        ),
        "",
        "| experiment | claim | measured | verdict | robust? |",
        "|---|---|---|---|---|",
    ]
    for name, res in results.items():
        for c in res["claims"]:
            lines.append(
                f"| `{name}` | {cell(c['claim'])} | {cell(c['measured'])} | **{c['verdict']}** | "
                f"{cell(_robust(name, c, results, other))} |"
            )
    return "\n".join(lines) + "\n"


def _discover() -> None:
    """Import every public module of this package, so their ``@register_experiment``
    run: the registry, not a list kept by hand, knows the experiments."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(__path__):
        if not info.name.startswith("_"):
            importlib.import_module(f"{__name__}.{info.name}")


_discover()
