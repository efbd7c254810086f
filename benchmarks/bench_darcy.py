"""Darcy solver: darcyvae (1 thread, all threads) against a SciPy baseline, side by side.

Per-sample time at N = 65, 129, 257 on log-normal permeability fields (smooth
Gaussian log-field, unit variance, correlation length 0.1):

- ``scipy``: vectorised scipy.sparse assembly of the "fd" scheme and a direct
  solve (SuperLU, COLAMD) of the bordered system [[A, w], [w^T, 0]], the way
  one would write it in Python; split into assembly / factorisation (splu) /
  solve / velocity.
- ``darcyvae-1t`` / ``darcyvae-<T>t``: ``darcyvae.darcy.solve_batch`` on one
  and on all threads. The stage split of darcyvae comes from the core's own
  timers (``_core.DarcySolver.profile``, one group of samples on one thread);
  "factor" (numeric refactorisation, forward elimination included) alone is
  the lower bound the total is compared with.

Setup (fields, solver caches, warm-up) is outside the timed region; every row
is the median (and min) of repeats, interleaved across implementations so that
they see the same machine load; the speed-up is against ``scipy`` at the same
N and scheme, measured in the same run.

    python benchmarks/bench_darcy.py [--quick] [--json PATH] [--scheme fd fv]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse.linalg as spla
from _machine import machine
from darcyvae import _core
from darcyvae.darcy import DarcyConfig, gauge_weights, solve_batch, source_term

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import scipy_reference as ref  # tests/scipy_reference.py: the shared SciPy baseline

# ---------------------------------------------------------------------------
# SciPy baseline (both schemes): tests/scipy_reference.py, timed by stage.


def scipy_solve(
    k: np.ndarray, scheme: str, f: np.ndarray, w: np.ndarray
) -> tuple[np.ndarray, dict]:
    """One sample the SciPy way; returns (output, seconds per stage)."""
    del w  # the reference builds its own trapezoid weights
    n_side = k.shape[0]
    t0 = time.perf_counter()
    border, rhs = ref.bordered_system(k, scheme, f)
    t1 = time.perf_counter()
    lu = spla.splu(border)
    t2 = time.perf_counter()
    z = lu.solve(rhs)
    t3 = time.perf_counter()
    p = z[:-1].reshape(n_side, n_side)
    out = np.stack([p, *ref.velocities(k, p)])
    t4 = time.perf_counter()
    return out, {"assembly": t1 - t0, "factor": t2 - t1, "solve": t3 - t2, "velocity": t4 - t3}


def lognormal_fields(
    n: int, n_side: int, rng: np.random.Generator, length: float = 0.1
) -> np.ndarray:
    """exp of smooth unit-variance Gaussian fields (spectral filter of white noise)."""
    return ref.lognormal_fields(n, n_side, rng, length=length)


# ---------------------------------------------------------------------------


def _median_min(values: list[float]) -> tuple[float, float]:
    return statistics.median(values), min(values)


def bench(n_side: int, scheme: str, quick: bool) -> list[dict]:
    """Rows for one (N, scheme). Repeats are interleaved (one SciPy sample, then
    each darcyvae batch, then the stage profile) so that all implementations
    see the same machine load."""
    rng = np.random.default_rng(1234)
    threads_all = _core.resolve_threads(0)
    repeats = 3 if quick else {65: 9, 129: 5}.get(n_side, 3)
    n_batch = {65: 64, 129: 16}.get(n_side, 8) * (1 if quick else 2)
    k = lognormal_fields(max(n_batch, repeats), n_side, rng)
    batch = np.ascontiguousarray(k[:n_batch])
    f, w = source_term(n_side), gauge_weights(n_side)
    config = DarcyConfig(scheme=scheme)
    thread_counts = sorted({1, threads_all})
    out = np.empty((n_batch, 3, n_side, n_side))
    solver = _core.DarcySolver(n_side, scheme)
    for threads in thread_counts:  # warm-up: plan, one workspace per thread
        solve_batch(batch, config, threads=threads, out=out)

    scipy_stages, scipy_out = [], []
    times: dict[int, list[float]] = {t: [] for t in thread_counts}
    cpu: dict[int, list[float]] = {t: [] for t in thread_counts}
    profiles = []
    for r in range(repeats):
        y, st = scipy_solve(k[r], scheme, f, w)
        scipy_out.append(y)
        scipy_stages.append(st)
        for threads in thread_counts:
            c0, t0 = time.process_time(), time.perf_counter()
            solve_batch(batch, config, threads=threads, out=out)
            times[threads].append((time.perf_counter() - t0) / n_batch)
            cpu[threads].append((time.process_time() - c0) / n_batch)
        profiles.append(solver.profile(batch[:4], f, 3))

    ours = solve_batch(np.ascontiguousarray(k[:repeats]), config)
    err = float(np.abs(ours - np.array(scipy_out)).max() / np.abs(np.array(scipy_out)).max())
    med_scipy, min_scipy = _median_min([sum(s.values()) for s in scipy_stages])
    rows = [
        {
            "impl": "scipy",
            "scheme": scheme,
            "grid": n_side,
            "threads": 1,
            "median_s": med_scipy,
            "min_s": min_scipy,
            "speedup": 1.0,
            **{key: statistics.median(s[key] for s in scipy_stages) for key in scipy_stages[0]},
        }
    ]
    split = {
        "assembly": statistics.median(p["assembly"] for p in profiles),
        "factor": statistics.median(p["factorization"] for p in profiles),
        "solve": statistics.median(p["solve"] for p in profiles),
        "velocity": statistics.median(p["velocity"] + p["check"] for p in profiles),
    }
    # Lower bound: the numeric refactorisation alone, from the same profiled runs.
    over_factor = statistics.median(p["total"] / p["factorization"] for p in profiles)
    for threads in thread_counts:
        med, mn = _median_min(times[threads])
        rows.append(
            {
                "impl": f"darcyvae-{threads}t",
                "scheme": scheme,
                "grid": n_side,
                "threads": threads,
                "median_s": med,
                "min_s": mn,
                "speedup": med_scipy / med,
                **split,
                "total_over_factor": over_factor if threads == 1 else None,
                # CPU seconds per sample: equal for 1 and T threads means the
                # threads do not slow each other down (scaling is then limited
                # only by free cores).
                "cpu_s_per_sample": statistics.median(cpu[threads]),
                "factor_gflops": solver.factor_flops / split["factor"] / 1e9,
                "max_rel_err_vs_scipy": err,
                "isa": solver.isa,
            }
        )
    return rows


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'impl':<14} {'scheme':<6} {'N':>4} {'median ms':>10} {'min ms':>9} {'speed-up':>9}"
        f" | {'assembly':>9} {'factor':>9} {'solve':>9} {'velocity':>9}  (ms/sample)"
    )
    print(head)
    print("-" * len(head))
    for r in rows:
        print(
            f"{r['impl']:<14} {r['scheme']:<6} {r['grid']:>4} {r['median_s'] * 1e3:>10.3f}"
            f" {r['min_s'] * 1e3:>9.3f} {r['speedup']:>8.1f}x | {r['assembly'] * 1e3:>9.3f}"
            f" {r['factor'] * 1e3:>9.3f} {r['solve'] * 1e3:>9.3f} {r['velocity'] * 1e3:>9.3f}"
        )
    for r in rows:
        if r["impl"].startswith("darcyvae"):
            print(
                f"{r['impl']} {r['scheme']} N={r['grid']}: CPU time per sample"
                f" {r['cpu_s_per_sample'] * 1e3:.3f} ms"
            )
    for r in rows:
        if r.get("total_over_factor"):
            print(
                f"{r['scheme']} N={r['grid']}: total / factorisation-only lower bound ="
                f" {r['total_over_factor']:.2f}; factor at {r['factor_gflops']:.1f} GF/s"
                f" ({r['isa']}); max rel. error vs scipy {r['max_rel_err_vs_scipy']:.1e}"
            )


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(data, fh, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="N = 65 only, few repeats (seconds)")
    parser.add_argument(
        "--json", type=Path, default=None, help="write the rows and machine info here"
    )
    parser.add_argument("--scheme", nargs="+", default=["fd", "fv"], choices=["fd", "fv"])
    parser.add_argument(
        "--grid", nargs="+", type=int, default=None, help="grid sizes (default 65 129 257)"
    )
    args = parser.parse_args(argv)
    grids = args.grid or ([65] if args.quick else [65, 129, 257])
    rows = []
    for scheme in args.scheme:
        for n_side in grids:
            rows.extend(bench(n_side, scheme, args.quick))
    print_table(rows)
    if args.json:
        info = machine(kernel_isa=_core.DarcySolver(3).isa, max_threads=_core.max_threads())
        write_json(args.json, {"benchmark": "darcy", "rows": rows, "machine": info})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
