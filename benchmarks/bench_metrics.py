"""Benchmark: k-NN KL divergence and the S_KL search against scipy.spatial.cKDTree.

Two parts, each timing darcyvae and a SciPy baseline side by side in this
process (setup outside the timed region, median of repeats):

1. ``kl``: the Wang-Kulkarni-Verdu estimators (docs/scores.md §5a, fixed k = 1 and the
   adaptive "epsilon" version) at n = m in {512, 4096, 65536, 1000000},
   d = 2. The baseline, written here, is what a user writes with
   ``cKDTree``: two trees, ``query`` for rho and nu, ``query_ball_point``
   counts and re-queries for the adaptive ball sizes. darcyvae runs
   ``kl_divergence`` on 1 and all threads; the baseline on 1 and all
   workers. Values are compared (|diff| must be <= 1e-12).
2. ``s_kl``: one Nelder-Mead search from the moment-matched start (one
   orientation, no restarts, the ``s_kl`` defaults otherwise) at n = 512
   and 16384, d = 2: darcyvae's search (one tree over z, weighted
   queries; the private ``darcyvae._skl.Search`` that ``s_kl`` runs)
   against the same search whose objective rebuilds a cKDTree over
   a o (z - b) at every evaluation (rho and the tree over theta are
   computed once there too). Both report the minimum and the evaluations.
   The last row is the whole cross-fitted ``s_kl`` with the same options
   (the all-sample search, one search on each half and the two held-out
   evaluations, docs/scores.md §5): its ``value`` is the in-sample minimum (the same
   search as the rows above) and ``crossfit`` the reported score; its
   time over the one-search row is the cost of cross-fitting.

``speed-up`` is the baseline's median (1 thread) over the row's median.

    python benchmarks/bench_metrics.py [--quick] [--json PATH] [--repeats R]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

import numpy as np
from _machine import machine
from darcyvae._skl import Search
from darcyvae.metrics import SKLOptions, kl_divergence, s_kl
from scipy.optimize import minimize
from scipy.spatial import cKDTree
from scipy.special import digamma


# -- the cKDTree baseline --------------------------------------------------------------------
def _kth(tree: cKDTree, q: np.ndarray, k: int, workers: int) -> np.ndarray:
    return tree.query(q, k=[k], workers=workers)[0][:, 0]


def _kth_variable(tree: cKDTree, q: np.ndarray, kk: np.ndarray, workers: int) -> np.ndarray:
    """Distance from q[i] to its kk[i]-th neighbour (one query per distinct kk)."""
    out = np.empty(len(q))
    for value in np.unique(kk):
        rows = np.flatnonzero(kk == value)
        out[rows] = _kth(tree, q[rows], int(value), workers)
    return out


class CKDTreeKL:
    """WKV estimators on cKDTree; rho and the tree over x computed once."""

    def __init__(self, x: np.ndarray, k: int, method: str, workers: int) -> None:
        self.x, self.k, self.method, self.workers = x, k, method, workers
        self.xtree = cKDTree(x)
        self.rho = _kth(self.xtree, x, k + 1, workers)  # first neighbour: x_i itself

    def divergence(self, y: np.ndarray, min_ratio: float = 0.0) -> float:
        x, k, w = self.x, self.k, self.workers
        n, d = x.shape
        ytree = cKDTree(y)
        nu = _kth(ytree, x, k, w)
        rho = self.rho
        corr = 0.0
        if self.method == "adaptive":
            eps = np.maximum(rho, nu)
            r = eps * (1.0 + 1e-12)  # closed ball, robust to the r^2 rounding
            li = self.xtree.query_ball_point(x, r, return_length=True, workers=w) - 1
            ki = ytree.query_ball_point(x, r, return_length=True, workers=w)
            rho = np.where(li == k, rho, _kth_variable(self.xtree, x, li + 1, w))
            nu = np.where(ki == k, nu, _kth_variable(ytree, x, ki, w))
            corr = np.mean(digamma(li) - digamma(ki))
        ratio = np.maximum(nu / rho, min_ratio)
        return d * np.mean(np.log(ratio)) + corr + math.log(len(y) / (n - 1))


def ckdtree_kl(x: np.ndarray, y: np.ndarray, k: int, method: str, workers: int) -> float:
    return CKDTreeKL(x, k, method, workers).divergence(y)


def ckdtree_s_kl(z, theta, *, k, method, workers, min_ratio, scale_range, step, xatol, fatol):
    """s_kl's search for one orientation (identity, + signs), cKDTree rebuilt per evaluation."""
    d = theta.shape[1]
    est = CKDTreeKL(theta, k, method, workers)
    a0 = theta.std(axis=0) / z.std(axis=0)
    b0 = z.mean(axis=0) - theta.mean(axis=0) / a0
    sd = z.std(axis=0)
    n_eval = 0

    def objective(p):
        nonlocal n_eval
        n_eval += 1
        a, b = a0 * np.exp(p[:d]), b0 + p[d:] * sd
        return est.divergence(a * (z - b), min_ratio)

    x0 = np.zeros(2 * d)
    objective(x0)  # s_kl scores each orientation's start once
    lr = math.log(scale_range)
    res = minimize(
        objective,
        x0,
        method="Nelder-Mead",
        bounds=[(-lr, lr)] * d + [(-np.inf, np.inf)] * d,
        options={
            "xatol": xatol,
            "fatol": fatol,
            "initial_simplex": np.vstack([x0, x0 + step * np.eye(2 * d)]),
        },
    )
    return float(res.fun), n_eval


# -- data and timing -------------------------------------------------------------------------
def mixture4(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.choice([-1.0, 1.0], size=(n, 2)) + 0.25 * rng.standard_normal((n, 2))


def timed(fn, repeats: int):
    times, value = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), min(times), value


def kl_impls(x: np.ndarray, y: np.ndarray, method: str, cores: int) -> list:
    return [
        ("ckdtree, 1 worker", lambda: ckdtree_kl(x, y, 1, method, 1)),
        (f"ckdtree, {cores} workers", lambda: ckdtree_kl(x, y, 1, method, -1)),
        ("darcyvae, 1 thread", lambda: kl_divergence(x, y, method=method, threads=1)),
        (f"darcyvae, {cores} threads", lambda: kl_divergence(x, y, method=method, threads=cores)),
    ]


SKL_OPTIONS = {"min_ratio": 1e-2, "scale_range": 10.0, "step": 0.5, "xatol": 1e-3, "fatol": 1e-4}


def skl_impls(z: np.ndarray, theta: np.ndarray, method: str, cores: int) -> list:
    opts = SKL_OPTIONS
    options = SKLOptions(
        permutations=False,
        flips=False,
        restarts=0,
        min_ratio=opts["min_ratio"],
        scale_range=opts["scale_range"],
        simplex_step=opts["step"],
        xatol=opts["xatol"],
        fatol=opts["fatol"],
    )

    def one_search(threads: int) -> tuple[float, int]:
        search = Search(
            theta,
            z,
            k=1,
            method=method,
            paired=False,
            options=options,
            threads=threads,
            caller="bench",
        )
        fit = search.fit(np.random.default_rng(0))
        return fit.value, search.n_evaluations

    def cross_fitted(threads: int) -> tuple[float, int, float]:
        r = s_kl(z, theta, method=method, paired=False, options=options, seed=0, threads=threads)
        return r.in_sample, r.n_evaluations, r.score

    return [
        (
            "ckdtree rebuilt, 1 worker",
            lambda: ckdtree_s_kl(z, theta, k=1, method=method, workers=1, **opts),
        ),
        ("darcyvae, 1 thread", lambda: one_search(1)),
        (f"darcyvae, {cores} threads", lambda: one_search(cores)),
        ("s_kl cross-fit, 1 thread", lambda: cross_fitted(1)),
    ]


def run_rows(bench: str, size: int, impls: list, repeats: int) -> list[dict]:
    rows, base = [], None
    for name, fn in impls:
        med, best, out = timed(fn, repeats)
        value, n_eval, crossfit = (*out, None)[:3] if isinstance(out, tuple) else (out, None, None)
        if base is None:
            base = (med, value)
        row = {
            "bench": bench,
            "impl": name,
            "size": size,
            "median_s": med,
            "min_s": best,
            "speedup": base[0] / med,
            "value": value,
            "abs_diff": abs(value - base[1]),
        }
        if n_eval is not None:
            row["evaluations"] = n_eval
            row["per_eval_ms"] = 1e3 * med / n_eval
        if crossfit is not None:
            row["crossfit"] = crossfit
        rows.append(row)
        print_row(row)
    return rows


def bench_kl(sizes, repeats_for, cores) -> list[dict]:
    rows = []
    for n in sizes:
        rng = np.random.default_rng(1234)
        x = rng.standard_normal((n, 2))
        y = 0.3 + 1.2 * rng.standard_normal((n, 2))
        for method in ("fixed", "adaptive"):
            rows += run_rows(f"kl/{method}", n, kl_impls(x, y, method, cores), repeats_for(n))
    return rows


def bench_s_kl(sizes, repeats_for, cores) -> list[dict]:
    rows = []
    for n in sizes:
        rng = np.random.default_rng(1234)
        theta = mixture4(n, rng)
        z = 2.0 * mixture4(n, rng) @ np.array([[1.0, 0.3], [0.0, 1.0]]).T + 1.0
        for method in ("fixed", "adaptive"):
            impls = skl_impls(z, theta, method, cores)
            rows += run_rows(f"s_kl/{method}", n, impls, repeats_for(n))
    return rows


HEADER = (
    f"{'bench':<14} {'impl':<26} {'size':>8} {'median':>11} {'min':>11} {'speed-up':>8} "
    f"{'value':>10} {'|diff|':>8} {'evals':>6} {'ms/eval':>8}"
)


def _t(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f}ms" if seconds < 1 else f"{seconds:9.3f} s"


def print_row(r: dict) -> None:
    evals = f"{r['evaluations']:6d}" if "evaluations" in r else " " * 6
    per = f"{r['per_eval_ms']:8.3f}" if "per_eval_ms" in r else " " * 8
    cross = f" crossfit {r['crossfit']:.4f}" if "crossfit" in r else ""
    print(
        f"{r['bench']:<14} {r['impl']:<26} {r['size']:>8} {_t(r['median_s'])} {_t(r['min_s'])} "
        f"{r['speedup']:8.2f} {r['value']:10.6f} {r['abs_diff']:8.1e} {evals} {per}{cross}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest sizes only (seconds)")
    parser.add_argument("--json", default=None, metavar="PATH", help="write the rows here")
    parser.add_argument("--repeats", type=int, default=None, help="repeats per timing")
    args = parser.parse_args(argv)
    cores = os.cpu_count() or 1
    if args.quick:
        kl_sizes, skl_sizes = [512, 4096], [512]
    else:
        kl_sizes, skl_sizes = [512, 4096, 65536, 1_000_000], [512, 16384]

    def kl_repeats(n):
        return args.repeats or (1 if args.quick else 21 if n <= 4096 else 7 if n <= 65536 else 3)

    def skl_repeats(n):
        return args.repeats or (1 if args.quick else 5 if n <= 512 else 3)

    print(HEADER)
    rows = bench_kl(kl_sizes, kl_repeats, cores)
    rows += bench_s_kl(skl_sizes, skl_repeats, cores)
    bad = [r for r in rows if r["bench"].startswith("kl/") and r["abs_diff"] > 1e-12]
    if bad:
        print(f"VALUE MISMATCH in {len(bad)} k-NN KL rows (> 1e-12)", flush=True)
    if args.json:
        payload = {"benchmark": "metrics", "machine": machine(), "rows": rows}
        tmp = f"{args.json}.tmp"
        with open(tmp, "w") as fh:
            json.dump(payload, fh, indent=2)
        os.replace(tmp, args.json)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
