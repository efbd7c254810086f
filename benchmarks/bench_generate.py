"""Benchmark: bulk dataset generation (darcyvae.generate) against a SciPy pipeline.

The SciPy pipeline, written here, is what one would write without darcyvae:
the KLE field as a NumPy matrix product, ``exp``, the paper's fd scheme
(docs/data.md §1a) assembled with ``scipy.sparse`` and the bordered system solved by
``splu`` one sample at a time, then the velocities. darcyvae runs
``generate_dataset`` end to end (thetas, KLE, C++ solves, HDF5 writes) with
1 and all solver threads (the KLE, CRC and HDF5 writer stages run in their
own threads beside the solver in both cases). Both run in this process on the same KLE basis; rates
are samples per second (median of repeats) and ``speed-up`` is the ratio of
per-sample times to the SciPy pipeline. A stage table shows where the time
goes, and child processes report the peak resident memory for two sizes
(it should not depend on n: the run streams chunks).

    python benchmarks/bench_generate.py [--quick] [--json PATH]
"""

from __future__ import annotations

import os

# As `darcyvae generate` does: single-threaded BLAS for the small per-chunk KLE
# product (OpenBLAS's spinning workers otherwise take CPU from the solver).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _machine import machine
from darcyvae._generate_plan import new_file
from darcyvae._hdf5_layout import write_chunk
from darcyvae._pipeline import Encoding
from darcyvae.darcy import DarcyConfig, solve_batch
from darcyvae.distributions import Normal
from darcyvae.generate import GenerateConfig, generate_dataset
from darcyvae.kle import KLEConfig, kle_basis

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
import scipy_reference as ref  # tests/scipy_reference.py: the shared SciPy baseline

PLAIN = Encoding(compression=None, level=4, theta_rows=256)
"""The stored encoding of the stage timings (CRC only)."""
GZIP = Encoding(compression="gzip", level=4, theta_rows=256)
"""gzip level 4, as ``generate_dataset``'s default."""

# -- the SciPy pipeline ----------------------------------------------------------------------
# The fd system and its bordered SuperLU solve are tests/scipy_reference.py (ref.solve).


def scipy_pipeline(basis, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Permeability and outputs, float32, of thetas: NumPy KLE field + SciPy solves."""
    s, n = basis.modes.shape[0], basis.modes.shape[1]
    field = (theta * np.sqrt(basis.eigenvalues)) @ basis.modes.reshape(s, -1)
    k = np.exp(field).reshape(-1, n, n)
    out = np.stack([ref.solve(ki, "fd")[0] for ki in k]).astype(np.float32)
    return k.astype(np.float32), out


# -- timing helpers --------------------------------------------------------------------------
_CPU: list[float] = []
"""Process CPU seconds (all threads) of each run of the last ``_median_min``."""


def _median_min(fn, repeats: int) -> tuple[float, float]:
    """Median and minimum wall seconds of ``repeats`` calls (CPU seconds go to ``_CPU``)."""
    times = []
    _CPU.clear()
    for _ in range(repeats):
        c, t = time.process_time(), time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        _CPU.append(time.process_time() - c)
    return statistics.median(times), min(times)


def _child_peak(grid: int, n_modes: int, n: int, threads: int | None, out: str) -> dict:
    """Peak RSS of a fresh process generating n samples (run as ``--child``)."""
    cmd = [sys.executable, __file__, "--child", str(grid), str(n_modes), str(n), str(threads), out]
    res = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def _status_mb(key: str) -> float:
    """A ``/proc/self/status`` memory line (VmRSS, VmHWM) in MB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _child(grid: int, n_modes: int, n: int, threads: int | None, out: str) -> None:
    cfg = GenerateConfig(
        KLEConfig(grid=grid, n_modes=n_modes), n_train=n, n_test=0, threads=threads
    )
    kle_basis(cfg.kle)
    generate_dataset(  # warm-up: lazy imports (h5py, tqdm), allocator pools
        GenerateConfig(cfg.kle, n_train=8, n_test=0),
        out + "-warm-up",
        overwrite=True,
        progress=False,
    )
    before = _status_mb("VmRSS")
    with contextlib.suppress(OSError):  # reset the high-water mark to the current RSS
        Path("/proc/self/clear_refs").write_text("5")
    t = time.perf_counter()
    generate_dataset(cfg, out, overwrite=True, progress=False)
    seconds = time.perf_counter() - t
    print(json.dumps({"seconds": seconds, "peak_mb": _status_mb("VmHWM"), "before_mb": before}))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds)")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--child", nargs=5, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        grid, n_modes, n, threads, out = args.child
        _child(int(grid), int(n_modes), int(n), None if threads == "None" else int(threads), out)
        return 0

    cores = os.cpu_count() or 1
    if args.quick:
        grid, n_modes, n_big, n_mem, n_scipy, n_stage, repeats = (
            33,
            20,
            400,
            (800, 1600),
            20,
            200,
            1,
        )
    else:
        grid, n_modes, n_big, n_mem, n_scipy, n_stage, repeats = (
            65,
            100,
            10_000,
            (2000, 10_000),
            300,
            2000,
            3,
        )
    repeats = args.repeats or repeats
    load_start = os.getloadavg()[0]
    rng = np.random.default_rng(1234)
    basis = kle_basis(KLEConfig(grid=grid, n_modes=n_modes))  # disk cache, outside all timings
    theta = rng.standard_normal((max(n_scipy, n_stage), n_modes))
    rows: list[dict] = []

    def add(impl, n, median, minimum, base_per_sample=None, **extra):
        per = median / n
        rows.append(
            {
                "impl": impl,
                "size": n,
                "median_s": median,
                "min_s": minimum,
                "samples_per_s": n / median,
                "speedup": (base_per_sample / per) if base_per_sample else 1.0,
                **extra,
            }
        )

    # SciPy pipeline (one core: splu is sequential)
    med, mn = _median_min(lambda: scipy_pipeline(basis, theta[:n_scipy]), repeats)
    base = med / n_scipy
    add(
        "scipy pipeline (1 core)",
        n_scipy,
        med,
        mn,
        cpu_us_per_sample=round(statistics.median(_CPU) / n_scipy * 1e6),
    )

    with tempfile.TemporaryDirectory(prefix="bench_generate_") as tmp:
        for threads in (1, cores):
            for compression in (None,) if threads == 1 else (None, "gzip", "lzf"):
                cfg = GenerateConfig(
                    KLEConfig(grid=grid, n_modes=n_modes),
                    n_train=n_big,
                    n_test=0,
                    threads=threads,
                    compression=compression,
                )
                out = Path(tmp) / f"t{threads}_{compression}"

                def run(cfg=cfg, out=out):
                    generate_dataset(cfg, out, overwrite=True, progress=False)

                reps = repeats if compression is None else 1
                med, mn = _median_min(run, reps)
                size_mb = (out / "train.h5").stat().st_size / 2**20
                label = (
                    f"darcyvae generate ({threads} thr{', ' + compression if compression else ''})"
                )
                cpu_us = statistics.median(_CPU) / n_big * 1e6
                add(
                    label,
                    n_big,
                    med,
                    mn,
                    base,
                    file_mb=round(size_mb, 1),
                    cpu_us_per_sample=round(cpu_us),
                    cpu_bound_rate=round(cores / cpu_us * 1e6),
                )

        # where the time goes, per sample (chunks of 256 as generate_dataset does)
        chunks = [(a, min(a + 256, n_stage)) for a in range(0, n_stage, 256)]
        dist = Normal(n_modes)

        def stage(name, fn, threads=None):
            med, mn = _median_min(fn, repeats)
            cpu_us = round(statistics.median(_CPU) / n_stage * 1e6)
            add(f"stage: {name}", n_stage, med, mn, base, threads=threads, cpu_us_per_sample=cpu_us)

        stage("theta draw", lambda: [dist.sample_indices(np.arange(a, b), 0) for a, b in chunks])
        t64 = theta[:n_stage]
        fields = [basis.field(t64[a:b]) for a, b in chunks]
        stage("KLE field (G)", lambda: [basis.field(t64[a:b]) for a, b in chunks])
        stage("exp(G)", lambda: [np.exp(g) for g in fields])
        k = np.concatenate([np.exp(g) for g in fields])
        out32 = np.empty((n_stage, 3, grid, grid), np.float32)
        for threads in (1, cores):
            stage(
                f"solve_batch ({threads} thr)",
                lambda threads=threads: [
                    solve_batch(k[a:b], DarcyConfig(), threads=threads, out=out32[a:b])
                    for a, b in chunks
                ],
                threads,
            )
        stage(
            "float32 K, CRC, finite check",
            lambda: [
                (
                    PLAIN.encode(
                        t64[a:b].astype(np.float32), k[a:b].astype(np.float32), out32[a:b], None
                    ),
                    np.isfinite(out32[a:b]).all(),
                )
                for a, b in chunks
            ],
        )
        t32, k32 = t64.astype(np.float32), k.astype(np.float32)[:, None]
        encoded = {}

        def encode():
            with ThreadPoolExecutor(max_workers=cores) as pool:
                encoded["gzip"] = [
                    GZIP.encode(t32[a:b], k32[a:b], out32[a:b], pool) for a, b in chunks
                ]

        stage(f"gzip encode ({cores} thr)", encode, cores)
        for compression in (None, "gzip", "lzf"):
            cfg = GenerateConfig(
                KLEConfig(grid=grid, n_modes=n_modes),
                n_train=n_stage,
                n_test=0,
                compression=compression,
            )
            if compression == "gzip":
                todo = encoded["gzip"]
            else:
                todo = [PLAIN.encode(t32[a:b], k32[a:b], out32[a:b], None) for a, b in chunks]

            def write(cfg=cfg, todo=todo):
                path = Path(tmp) / "stage.h5"
                f = new_file(cfg, path, cfg.n_samples("train"), {"split": "train"})
                for (a, _), chunk in zip(chunks, todo, strict=True):
                    write_chunk(f, a, chunk)
                f.close()

            label = {None: "none", "gzip": "gzip, pre-encoded", "lzf": "lzf"}[compression]
            stage(f"HDF5 write ({label})", write)

        # peak memory of fresh processes: should not depend on n
        for n in n_mem:
            res = _child_peak(grid, n_modes, n, None, str(Path(tmp) / f"mem{n}"))
            add(
                f"peak RSS, n={n} ({cores} thr)",
                n,
                res["seconds"],
                res["seconds"],
                base,
                peak_mb=round(res["peak_mb"], 1),
                before_mb=round(res["before_mb"], 1),
            )

    load = (load_start, os.getloadavg()[0])
    print(
        f"bench_generate: KLE{n_modes}, N = {grid}, {cores} cores, median of {repeats}; "
        f"1-min load average {load[0]:.1f} at start, {load[1]:.1f} at end"
    )
    print(
        "cpu_us_per_sample: process CPU time (all threads) per sample; "
        f"cpu_bound_rate = {cores} cores / that (the rate on otherwise idle cores); "
        f"OPENBLAS_NUM_THREADS={os.environ['OPENBLAS_NUM_THREADS']}"
    )
    header = f"{'impl':38s} {'size':>6s} {'median s':>9s} {'min s':>9s} {'samples/s':>10s} {'speed-up':>9s}  extra"
    print(header)
    print("-" * len(header))
    for r in rows:
        extra = ", ".join(
            f"{k}={v}"
            for k, v in r.items()
            if k in ("cpu_us_per_sample", "cpu_bound_rate", "file_mb", "peak_mb", "before_mb") and v
        )
        print(
            f"{r['impl']:38s} {r['size']:6d} {r['median_s']:9.3f} {r['min_s']:9.3f} "
            f"{r['samples_per_s']:10.0f} {r['speedup']:9.1f}  {extra}"
        )
    if args.json:
        meta = {
            "benchmark": "generate",
            "grid": grid,
            "n_modes": n_modes,
            "repeats": repeats,
            "quick": args.quick,
            "load_average_1min": {"start": load[0], "end": load[1]},
            "openblas_num_threads": os.environ["OPENBLAS_NUM_THREADS"],
            "machine": machine(),
        }
        Path(args.json).write_text(json.dumps({**meta, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
