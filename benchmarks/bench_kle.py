"""Benchmark: the KLE eigendecomposition, darcyvae against SciPy.

darcyvae: ``darcyvae.kle.kle_basis`` (symmetry blocks, thick-restart Lanczos,
matrix-free products). SciPy: the dense covariance by
``scipy.spatial.distance.cdist`` and ``exp`` (in place), then
``scipy.sparse.linalg.eigsh`` for the top ``s`` eigenpairs.

Both run in this process for the timings (medians of repeats, interleaved);
the peak memory of each case is measured in a fresh subprocess (its
``ru_maxrss``, and the increase over the interpreter with everything imported).

Usage::

    python benchmarks/bench_kle.py                # full table
    python benchmarks/bench_kle.py --quick        # smallest sizes, seconds
    python benchmarks/bench_kle.py --json out.json
    python benchmarks/bench_kle.py --solvers      # Krylov solvers on the same blocks
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse.linalg as sla
from _machine import machine
from _table import text_table
from darcyvae.kle import KLEConfig, kle_basis
from scipy.spatial.distance import cdist

FULL = [
    ("darcyvae", 65, 10),
    ("scipy", 65, 10),
    ("darcyvae", 65, 100),
    ("scipy", 65, 100),
    ("darcyvae", 65, 1000),
    ("scipy", 65, 1000),
    ("darcyvae", 129, 100),
    ("scipy", 129, 100),
    ("darcyvae", 257, 100),
]
QUICK = [
    ("darcyvae", 33, 10),
    ("scipy", 33, 10),
    ("darcyvae", 33, 100),
    ("scipy", 33, 100),
    ("darcyvae", 65, 100),
]


def scipy_covariance(n: int, length: float = 0.1) -> np.ndarray:
    h = 1.0 / (n - 1)
    iy, ix = np.divmod(np.arange(n * n), n)
    pts = np.c_[ix * h, iy * h] / length
    c = cdist(pts, pts)
    np.negative(c, out=c)
    np.exp(c, out=c)
    return c


def run_scipy(n: int, s: int) -> np.ndarray:
    c = scipy_covariance(n)
    w = sla.eigsh(c, k=s, which="LA", return_eigenvectors=True, v0=np.ones(n * n))[0]
    return np.sort(w)[::-1]


def run_darcyvae(n: int, s: int) -> np.ndarray:
    return kle_basis(KLEConfig(grid=n, n_modes=s), cache=False).eigenvalues


RUNNERS = {"darcyvae": run_darcyvae, "scipy": run_scipy}


def _status_kb(field: str) -> int | None:
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def _worker(spec: str) -> None:
    """Subprocess: one run of one case; prints seconds and memory as JSON.

    The peak is the resident-set high-water mark (VmHWM), reset after the
    imports where Linux allows it (``/proc/self/clear_refs``), else
    ``ru_maxrss``; ``base_kb`` is the resident set just before the run.
    """
    impl, n, s = json.loads(spec)
    run_darcyvae(9, 2)  # load everything the run needs before the baseline
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
    except OSError:
        pass
    base = _status_kb("VmRSS") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    start = time.perf_counter()
    RUNNERS[impl](n, s)
    seconds = time.perf_counter() - start
    peak = max(_status_kb("VmHWM") or 0, 0) or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"seconds": seconds, "peak_kb": peak, "base_kb": base}))


def peak_memory(impl: str, n: int, s: int) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--_worker", json.dumps([impl, n, s])],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def time_case(
    impl: str, n: int, s: int, repeats: int, budget: float
) -> tuple[list[float], np.ndarray]:
    times, values = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        values = RUNNERS[impl](n, s)
        times.append(time.perf_counter() - start)
        if sum(times) > budget:
            break
    return times, values


def benchmark(cases, repeats: int, budget: float, memory: bool) -> list[dict]:
    rows = []
    reference: dict[tuple[int, int], np.ndarray] = {}
    for impl, n, s in cases:
        times, values = time_case(impl, n, s, repeats, budget)
        row = {
            "impl": impl,
            "grid": n,
            "n_modes": s,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "repeats": len(times),
        }
        if impl == "scipy":
            reference[(n, s)] = values
        if memory:
            mem = peak_memory(impl, n, s)
            row["peak_mb"] = mem["peak_kb"] / 1024
            row["increase_mb"] = (mem["peak_kb"] - mem["base_kb"]) / 1024
        rows.append(row)
        print(f"  {impl:8s} N={n:<4d} s={s:<5d} {row['median_s']:.3f} s", file=sys.stderr)
    for row in rows:  # speed-up and agreement against SciPy on the same case
        ref = [
            r
            for r in rows
            if r["impl"] == "scipy" and r["grid"] == row["grid"] and r["n_modes"] == row["n_modes"]
        ]
        if ref:
            row["speedup"] = ref[0]["median_s"] / row["median_s"]
        if row["impl"] == "darcyvae" and (row["grid"], row["n_modes"]) in reference:
            ours = run_darcyvae(row["grid"], row["n_modes"])
            theirs = reference[(row["grid"], row["n_modes"])]
            row["max_eig_diff_rel"] = float(np.abs(ours - theirs).max() / theirs[0])
    return rows


def _optional(key: str, spec: str, suffix: str = "") -> Callable[[dict], str]:
    """Cell text of an optional row key: formatted with ``spec``, or "-" when absent."""
    return lambda r: f"{r[key]:{spec}}{suffix}" if key in r else "-"


def table(rows: list[dict]) -> str:
    return text_table(
        [
            ("impl", "9", lambda r: r["impl"]),
            ("N", ">4", lambda r: f"{r['grid']}"),
            ("s", ">5", lambda r: f"{r['n_modes']}"),
            ("median s", ">10", lambda r: f"{r['median_s']:.4f}"),
            ("min s", ">10", lambda r: f"{r['min_s']:.4f}"),
            ("speed-up", ">9", _optional("speedup", ".1f", "x")),
            ("peak MB", ">9", _optional("peak_mb", ".0f")),
            ("+MB", ">8", _optional("increase_mb", ".0f")),
            ("eig diff", ">9", _optional("max_eig_diff_rel", ".0e")),
        ],
        rows,
    )


# ---------------------------------------------------------------------------
# Which Krylov method: products needed on the same symmetry sectors.


def _sector_basis(n: int, parity: int) -> np.ndarray:
    cols = []
    for i in range((n + 1) // 2):
        j = n - 1 - i
        v = np.zeros(n)
        if i == j:
            if parity == 1:
                v[i] = 1.0
                cols.append(v)
        else:
            v[i], v[j] = 1.0, parity
            cols.append(v / np.sqrt(2))
    return np.array(cols).T


def compare_solvers(n: int = 65, s: int = 100, length=(0.1, 0.05)) -> list[dict]:
    """Products to the top eigenpairs of the 4 parity sectors (anisotropic kernel)."""
    h = 1.0 / (n - 1)
    iy, ix = np.divmod(np.arange(n * n), n)
    pts = np.c_[ix * h / length[0], iy * h / length[1]]
    c = np.exp(-cdist(pts, pts))
    start = time.perf_counter()
    basis = kle_basis(KLEConfig(grid=n, n_modes=s, length_scale=length), cache=False)
    ours = {
        "solver": "darcyvae thick-restart Lanczos",
        "products": basis.info["matvecs"],
        "seconds": time.perf_counter() - start,
    }
    totals = {"arpack": 0, "lobpcg": 0}
    secs = {"arpack": 0.0, "lobpcg": 0.0}
    for px in (1, -1):
        for py in (1, -1):
            p = np.kron(_sector_basis(n, py), _sector_basis(n, px))
            cs = p.T @ c @ p
            k = int(np.ceil(1.1 * s * cs.shape[0] / (n * n))) + 4  # darcyvae's share
            count = [0]

            def mv(x, cs=cs, count=count):
                count[0] += x.shape[1] if x.ndim == 2 else 1
                return cs @ x

            op = sla.LinearOperator(cs.shape, matvec=mv, matmat=mv, dtype=float)
            t0 = time.perf_counter()
            sla.eigsh(op, k=k, tol=1e-12, v0=np.ones(cs.shape[0]))
            secs["arpack"] += time.perf_counter() - t0
            totals["arpack"] += count[0]
            count[0] = 0
            x0 = np.random.default_rng(1234).standard_normal((cs.shape[0], k + 8))
            lam1 = np.linalg.eigvalsh(cs)[-1]
            t0 = time.perf_counter()
            sla.lobpcg(op, x0, tol=1e-12 * lam1, maxiter=3000, largest=True)
            secs["lobpcg"] += time.perf_counter() - t0
            totals["lobpcg"] += count[0]
    # the same solver on the whole covariance, without the symmetry split
    count = [0]

    def mv_full(x):
        count[0] += x.shape[1] if x.ndim == 2 else 1
        return c @ x

    op = sla.LinearOperator(c.shape, matvec=mv_full, matmat=mv_full, dtype=float)
    t0 = time.perf_counter()
    sla.eigsh(op, k=int(np.ceil(1.1 * s)) + 4, tol=1e-12, v0=np.ones(n * n))
    full = {
        "solver": "ARPACK eigsh, whole C (no split)",
        "products": count[0],
        "seconds": time.perf_counter() - t0,
    }
    return [
        ours,
        {
            "solver": "ARPACK eigsh (implicit restarts)",
            "products": totals["arpack"],
            "seconds": secs["arpack"],
        },
        {
            "solver": "LOBPCG (block k+8, no preconditioner)",
            "products": totals["lobpcg"],
            "seconds": secs["lobpcg"],
        },
        full,
    ]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smallest sizes only")
    parser.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--budget", type=float, default=60.0, help="stop repeating a case after this many seconds"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the subprocess runs")
    parser.add_argument(
        "--solvers",
        action="store_true",
        help="compare Krylov solvers on the symmetry sectors (N=65, s=100)",
    )
    parser.add_argument("--_worker", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._worker:
        _worker(args._worker)
        return 0
    result = {"benchmark": "kle", "machine": machine()}
    if args.solvers:
        rows = compare_solvers()
        print(f"{'solver':40s} {'products':>9s} {'seconds':>9s}")
        for r in rows:
            print(f"{r['solver']:40s} {r['products']:>9d} {r['seconds']:>9.3f}")
        print(
            "(anisotropic l = (0.1, 0.05), N = 65, s = 100, 4 reflection sectors of ~N^2/4;\n"
            " darcyvae: products of its C++ sector operator; the SciPy solvers: products\n"
            " with dense numpy sector matrices (last row: with the whole N^2 x N^2 C);\n"
            " residual tolerance 1e-12 lambda_1)"
        )
        result["solvers"] = rows
    else:
        cases = QUICK if args.quick else FULL
        rows = benchmark(cases, args.repeats, args.budget, memory=not args.no_memory)
        print(table(rows))
        result["rows"] = rows
    if args.json:
        folder = os.path.dirname(os.path.abspath(args.json))
        fd, tmp = tempfile.mkstemp(prefix=".bench_kle.", suffix=".json", dir=folder)
        with os.fdopen(fd, "w") as fh:
            json.dump(result, fh, indent=2)
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
