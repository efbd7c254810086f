"""The ``darcyvae`` command line: parses arguments and calls the library.

Each verb is one ``_add_<verb>(subparsers)`` function that declares its
arguments and sets ``func`` to a ``_run_<verb>(args)`` function. Verbs only
parse and call; the work lives in the library modules.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import re
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of the ``darcyvae`` command."""
    parser = argparse.ArgumentParser(
        prog="darcyvae",
        description="Darcy flow datasets, disentangling VAEs and their scores.",
    )
    parser.add_argument("--version", action="version", version=f"darcyvae {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (after any verb too)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _VERBS:
        add(sub)
    for verb in sub.choices.values():
        verb.add_argument(
            "--debug", action="store_true", default=argparse.SUPPRESS, help="show tracebacks"
        )
    return parser


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run one of the paper's experiments (or all) and write its report",
        description="Run an experiment of Jacobsen & Duraisamy (2022) at a scale and write its "
        "figures, results.json and report.md (the paper's claim beside the measured value and "
        "a verdict). Rerunning the same command resumes it.",
    )
    p.add_argument("experiment", nargs="?", help="experiment name, or 'all' (see --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and scales, exit")
    p.add_argument(
        "--scale",
        default=None,
        help="smoke (seconds, for tests), cpu (default: 2 CPU cores, the settings chosen by "
        "docs/reproduction.md §7), cpu-fast (the earlier cpu settings) or paper (GPU)",
    )
    p.add_argument("--trials", type=int, default=None, help="trials per arm (default: the scale's)")
    p.add_argument(
        "--out", default=None, help="output folder (default: runs/<experiment>, runs for all)"
    )
    p.add_argument("--overwrite", action="store_true", help="replace earlier results in --out")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA if present), cpu or cuda (default: auto)"
    )
    p.add_argument(
        "--seed", type=int, default=0, help="base seed, trial k uses seed + k (default: 0)"
    )
    p.add_argument("--quick", action="store_true", help="same as --scale smoke")
    p.add_argument(
        "--cells",
        default=None,
        help="sensitivity only: comma-separated cells, e.g. raw-authors-zero,channel-common-zero "
        "(default: all eight)",
    )
    p.add_argument(
        "--compare",
        default=None,
        metavar="DIR",
        help="all only: the folder of an earlier 'reproduce all' run (e.g. at --scale cpu-fast); "
        "the top report's robust? column gives each claim's verdict there (default: none)",
    )
    p.add_argument(
        "--only",
        default=None,
        metavar="NAMES",
        help="all only: comma-separated experiments to run, e.g. gaussian,mixture4 (default: "
        "every experiment)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice); two runs side by side at 1 thread "
        "each do more work on 2 cores than one at 2 (docs/benchmarks.md)",
    )
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="processes at once, --threads (or torch's threads) shared out among them: for "
        "all, N experiments at a time, longest first; for one experiment, each arm's trials "
        "in N blocks at a time, or the arms side by side where they have fewer trials than N "
        "(demo); on 2 cores --jobs 2 does about 1.2x the work (default: 1)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_run_reproduce, _parser=p)


def _run_reproduce(args: argparse.Namespace) -> int:
    from . import experiments

    if args.list:
        for exp in experiments.list_experiments():
            minutes = "" if exp.after_others else f" [~{exp.cpu_minutes:g} min at cpu, 1 core]"
            print(f"{exp.name:16s} {exp.description}{minutes}")
        print(f"{'all':16s} every experiment above, then a top-level report.md")
        print("scales: " + ", ".join(experiments.SCALES))
        return 0
    if not args.experiment:
        args._parser.print_usage(sys.stderr)
        print(
            "darcyvae reproduce: error: name an experiment (or 'all'); --list shows them",
            file=sys.stderr,
        )
        return 2
    _check_out(args.out)
    if args.quick and args.scale not in (None, "smoke"):
        msg = f"--quick means --scale smoke; got --scale {args.scale} as well"
        raise ValueError(msg)
    scale = args.scale or ("smoke" if args.quick else "cpu")
    _set_threads(args.threads, "reproduce")
    overrides = {}
    if args.cells is not None:
        if args.experiment != "sensitivity":
            msg = f"--cells is an option of 'sensitivity' only; got experiment {args.experiment!r}"
            raise ValueError(msg)
        from .experiments.sensitivity import parse_cells

        parse_cells(args.cells)  # a bad name fails before anything is written
        overrides["cells"] = args.cells
    for option, value in (("--compare", args.compare), ("--only", args.only)):
        if value is not None and args.experiment != "all":
            msg = f"{option} is an option of 'all' only; got experiment {args.experiment!r}"
            raise ValueError(msg)
    names = None
    if args.only is not None:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
        if not names:
            msg = f"--only must name at least one experiment; got {args.only!r}"
            raise ValueError(msg)
    kw = {
        "scale": scale,
        "seed": args.seed,
        "trials": args.trials,
        "device": args.device,
        "overwrite": args.overwrite,
        "progress": not args.no_progress,
    }
    if args.experiment == "all":
        out = args.out or "runs"
        results = experiments.run_all(out, **kw, compare=args.compare, names=names, jobs=args.jobs)
        failed = [name for name, res in results.items() if "error" in res]
        print(f"all: wrote {out}/report.md ({len(results)} experiments)")
        for name in failed:
            print(f"darcyvae reproduce: {name} failed: {results[name]['error']}", file=sys.stderr)
        return 1 if failed else 0
    out = args.out or f"runs/{args.experiment}"
    results = experiments.run_experiment(args.experiment, out, **kw, jobs=args.jobs, **overrides)
    print(f"{args.experiment}: wrote {out} ({results['seconds']:.1f} s); report {out}/report.md")
    for c in results["claims"]:
        print(f"  [{c['verdict']}] {c['claim']}: {c['measured']}")
    return 0


_BENCHMARKS = ("darcy", "kle", "metrics", "generate")


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "bench",
        help="run the side-by-side benchmarks of a source checkout (benchmarks/bench_*.py)",
    )
    p.add_argument(
        "names", nargs="*", metavar="NAME", help=f"any of {', '.join(_BENCHMARKS)}; default: all"
    )
    p.add_argument("--quick", action="store_true", help="smallest sizes only (seconds)")
    p.add_argument("--json", default=None, metavar="DIR", help="write bench_<name>.json here")
    p.add_argument(
        "--dir", default="benchmarks", help="folder holding bench_*.py (default: benchmarks)"
    )
    p.set_defaults(func=_run_bench)


def _run_bench(args: argparse.Namespace) -> int:
    import subprocess
    from pathlib import Path

    folder = Path(args.dir)
    if not folder.is_dir():
        msg = f"benchmark folder {folder} not found; run from a darcyvae source checkout or pass --dir"
        raise FileNotFoundError(msg)
    unknown = sorted(set(args.names) - set(_BENCHMARKS))
    if unknown:
        msg = f"unknown benchmark(s) {', '.join(unknown)}; expected any of {', '.join(_BENCHMARKS)}"
        raise ValueError(msg)
    status = 0
    for name in args.names or _BENCHMARKS:
        script = folder / f"bench_{name}.py"
        cmd = [sys.executable, str(script)]
        if args.quick:
            cmd.append("--quick")
        if args.json:
            Path(args.json).mkdir(parents=True, exist_ok=True)
            cmd += ["--json", str(Path(args.json) / f"bench_{name}.json")]
        print(f"== {' '.join(cmd)}", flush=True)
        status = max(status, subprocess.call(cmd))
    return status


def _add_generate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "generate",
        help="generate a Darcy flow dataset (train.h5 and test.h5)",
        description="Draw thetas from p(theta), build K = exp(KLE field) and solve Darcy flow; "
        "write OUT/train.h5 and OUT/test.h5 (docs/data.md §1c layout). Settings and thetas are checked "
        "before any file is written; OUT is locked while the run lasts. Resumable (finished "
        "files are verified against their checksums); Dask optional.",
    )
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--kle", type=int, default=100, metavar="S", help="KLE modes s (default: 100)")
    p.add_argument("--grid", type=int, default=65, metavar="N", help="grid size N (default: 65)")
    p.add_argument(
        "--kernel",
        default="exponential",
        help="KLE covariance kernel: exponential (the paper's) or squared_exponential "
        "(default: exponential)",
    )
    p.add_argument(
        "--length-scale",
        type=float,
        nargs="+",
        default=[0.1],
        metavar="L",
        help="KLE correlation length: one value, or two (lx ly) (default: 0.1)",
    )
    p.add_argument(
        "--variance", type=float, default=1.0, help="KLE field variance sigma^2 (default: 1)"
    )
    p.add_argument(
        "--dist",
        default="normal",
        help="p(theta): normal, gaussian, mixture4, uniform or array (default: normal)",
    )
    for name, what in (
        ("mean", "gaussian mean, 1 or s values (default: 1)"),
        ("sd", "gaussian standard deviations, 1 or s values (default: 0.5)"),
        ("low", "uniform lower bounds, 1 or s values"),
        ("high", "uniform upper bounds, 1 or s values"),
    ):
        p.add_argument(f"--{name}", type=float, nargs="+", default=None, help=what)
    p.add_argument("--loc", type=float, default=None, help="mixture4 mode distance (default: 1)")
    p.add_argument("--scale", type=float, default=None, help="mixture4 mode sd (default: 0.25)")
    p.add_argument("--theta-file", default=None, help="thetas for --dist array (.npy or text)")
    p.add_argument(
        "--n-train", type=int, default=512, help="training samples, train.h5 (default: 512)"
    )
    p.add_argument(
        "--n-test", type=int, default=512, help="test samples, test.h5; 0: none (default: 512)"
    )
    p.add_argument("--scheme", default="fd", help="Darcy scheme: fd (paper) or fv (default: fd)")
    p.add_argument(
        "--well-width",
        type=float,
        default=0.125,
        help="side of the square wells at (0, 0) and (1, 1) (default: 0.125)",
    )
    p.add_argument(
        "--rate",
        type=float,
        default=10.0,
        help="injection rate r: +r in the well at (0, 0), -r at (1, 1) (default: 10)",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the thetas of both splits (default: 0)"
    )
    for split, paper in (("train", "the authors' training sets are lhs"), ("test", "")):
        p.add_argument(
            f"--{split}-sampling",
            choices=("mc", "lhs"),
            default="mc",
            help=f"{split} thetas: Monte Carlo or Latin hypercube"
            + (f"; {paper}" if paper else "")
            + " (default: mc)",
        )
    p.add_argument("--chunk-size", type=int, default=256, help="samples per chunk (default: 256)")
    p.add_argument(
        "--compression",
        choices=("gzip", "lzf", "none"),
        default="none",
        help="HDF5 compression of the datasets (default: none)",
    )
    p.add_argument("--compression-level", type=int, default=4, help="gzip level 0-9 (default: 4)")
    p.add_argument("--threads", type=int, default=None, help="solver threads (default: all)")
    p.add_argument("--dask", default=None, metavar="ADDRESS", help="Dask scheduler address")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue an interrupted run (finished files are verified against their checksums)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="remove existing outputs of both splits first (also a split not written now)",
    )
    p.add_argument(
        "--no-space-check",
        action="store_true",
        help="skip the check that the files fit in the free space of --out's disk "
        "(for storage that does not report it, e.g. a remote mount)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_run_generate)


def _run_generate(args: argparse.Namespace) -> int:
    import os

    # The KLE product per chunk is small; OpenBLAS's worker threads spin after
    # each call and take ~30% of the CPU from the solver threads. Single-threaded
    # BLAS unless the user chose otherwise (effective before numpy is imported).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    _check_out(args.out)
    from .darcy import DarcyConfig
    from .generate import GenerateConfig, generate_dataset
    from .kle import KLEConfig

    ls = args.length_scale
    kle = KLEConfig(
        grid=args.grid,
        n_modes=args.kle,
        kernel=args.kernel,
        length_scale=ls[0] if len(ls) == 1 else tuple(ls),
        variance=args.variance,
    )
    darcy = DarcyConfig(scheme=args.scheme, well_width=args.well_width, rate=args.rate)
    params = {
        k: (v[0] if isinstance(v, list) and len(v) == 1 else v)
        for k in ("mean", "sd", "low", "high", "loc", "scale")
        if (v := getattr(args, k)) is not None
    }
    if args.theta_file is not None:
        import numpy as np

        path = args.theta_file
        params["theta"] = np.load(path) if path.endswith(".npy") else np.loadtxt(path, ndmin=2)
    config = GenerateConfig(
        kle,
        darcy,
        distribution=args.dist,
        dist_params=params,
        n_train=args.n_train,
        n_test=args.n_test,
        seed=args.seed,
        chunk_size=args.chunk_size,
        compression=None if args.compression == "none" else args.compression,
        compression_level=args.compression_level,
        threads=args.threads,
        train_sampling=args.train_sampling,
        test_sampling=args.test_sampling,
    )
    # another run holds the folder, a damaged output, a full disk, no 'distributed'
    # (MissingDependencyError): main() prints the library's message as one line
    paths = generate_dataset(
        config,
        args.out,
        resume=args.resume,
        overwrite=args.overwrite,
        dask_address=args.dask,
        progress=not args.no_progress,
        space_check=not args.no_space_check,
    )
    for split, path in paths.items():
        print(f"{split}: {path} ({config.n_samples(split)} samples)")
    return 0


def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a DenseVAE with the paper's method",
        description="Train a DenseVAE (docs/model.md §4d-§4f) from a TOML configuration or a shipped "
        "preset; writes OUT/config.toml, metrics.jsonl, checkpoint.pt and summary.json.",
    )
    src = p.add_mutually_exclusive_group()
    src.add_argument("--config", help="run configuration (TOML, see darcyvae.config.TrainConfig)")
    src.add_argument("--preset", help="a shipped configuration (see --list)")
    src.add_argument("--list", action="store_true", help="list presets and models and exit")
    p.add_argument("--train", dest="train_data", help="training data (HDF5)")
    p.add_argument("--test", dest="test_data", default=None, help="test data (HDF5)")
    p.add_argument("--out", default=None, help="output folder (default: runs/<config name>)")
    p.add_argument(
        "--device", default="auto", help="auto (CUDA if present), cpu or cuda (default: auto)"
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one setting of the configuration (repeatable), e.g. --set run.seed=3 "
        "--set 'optim.lr_values=[1e-3,1e-4]' --set model.prior=hierarchical "
        "--set model.preset=dense_vae_tiny; VALUE is read as TOML, else as a bare string",
    )
    p.add_argument("--seed", type=int, default=None, help="override the configuration's seed")
    p.add_argument("--epochs", type=int, default=None, help="override the number of epochs")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument(
        "--allow-data-change",
        action="store_true",
        help="with --resume: accept training data that differ from the checkpoint's",
    )
    p.add_argument(
        "--restarts",
        type=int,
        default=None,
        help="restart over-regularised runs with seeds from the restart stream "
        "(OUT/seed_<s>, OUT/seed_<s>.restart_<r>, OUT/ensemble.json)",
    )
    p.add_argument(
        "--seeds",
        default=None,
        metavar="LIST",
        help="train these seeds at once as one batched model, e.g. 0-49 or 3,7,11 "
        "(OUT/seed_<s>/ per member, OUT/ensemble.json)",
    )
    p.add_argument(
        "--seeds-per-block",
        type=int,
        default=None,
        metavar="B",
        help="with --seeds: at most B members per batched model (lower it when memory runs out)",
    )
    p.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="with --seeds: run one block of seeds per worker of this dask scheduler",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        metavar="N",
        help="with --seeds: train the blocks in N local processes at once, the threads shared "
        "out (seeds split into N blocks unless --seeds-per-block); on 2 cores --workers 2 does "
        "about 1.2x the work",
    )
    p.add_argument(
        "--no-progress",
        "--quiet",
        dest="no_progress",
        action="store_true",
        help="no progress bar (--quiet: the same, its older name)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads, at most darcyvae.darcy.MAX_THREADS (default: torch's choice)",
    )
    p.set_defaults(func=_run_train, _parser=p)


def _run_train(args: argparse.Namespace) -> int:
    from pathlib import Path

    from . import config as config_mod
    from . import models, training

    _set_threads(args.threads, "train")
    if args.list:
        print("presets (--preset NAME):")
        for name, description in config_mod.list_presets():
            print(f"  {name:24s} {description}")
        print("models ([model] preset = NAME in a config, or --set model.preset=NAME):")
        for name, description in models.list_models():
            print(f"  {name:24s} {description}")
        return 0
    if not (args.config or args.preset):
        print(args._parser.format_usage(), end="", file=sys.stderr)
        print(
            "darcyvae train: error: one of --config FILE or --preset NAME is required "
            "(--list shows the presets)",
            file=sys.stderr,
        )
        return 2
    _check_out(args.out)
    if not args.train_data:
        msg = "--train DATA.h5 is required"
        raise ValueError(msg)
    if args.config:
        config = config_mod.TrainConfig.from_toml(args.config)
        name = Path(args.config).stem
    else:
        config = config_mod.load_preset(args.preset)
        name = args.preset
    overrides = config_mod.parse_overrides(args.overrides)  # a bad --set fails here
    for flag, section, key in (("--seed", "run", "seed"), ("--epochs", "optim", "epochs")):
        if getattr(args, flag[2:]) is not None and key in overrides.get(section, {}):
            msg = f"{flag} and --set {section}.{key} set the same thing; use one of them"
            raise ValueError(msg)
    if args.seeds is not None and "seed" in overrides.get("run", {}):
        msg = "--set run.seed and --seeds exclude each other; list every seed in --seeds"
        raise ValueError(msg)
    config = config.with_overrides(args.overrides)
    changes = {}
    if args.seed is not None:
        changes["seed"] = args.seed
    if args.epochs is not None:
        changes["epochs"] = args.epochs
    config = config.replace(**changes)
    out = args.out or f"runs/{name}"
    if args.seeds is not None:
        return _run_train_seeds(args, config, out)
    if args.seeds_per_block is not None or args.dask is not None or args.workers is not None:
        msg = "--seeds-per-block, --dask and --workers go with --seeds"
        raise ValueError(msg)
    result = training.run_training(
        config,
        args.train_data,
        args.test_data,
        out_dir=out,
        max_restarts=args.restarts,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
        allow_data_change=args.allow_data_change,
    )
    if result.trials:
        print(
            f"train: {len(result.trials)} attempt(s), {result.restarts} restart(s); "
            f"see {Path(out) / 'ensemble.json'}"
        )
    _print_splits("train", result.splits(), result.over_regularized, result.out_dir)
    return 0


def _run_train_seeds(args: argparse.Namespace, config, out: str) -> int:
    """``darcyvae train --seeds``: the library's ``train_ensemble``, its members printed."""
    from pathlib import Path

    from .ensemble import parse_seeds, train_ensemble

    if args.seed is not None:
        msg = "--seed and --seeds exclude each other; list every seed in --seeds"
        raise ValueError(msg)
    result = train_ensemble(
        config,
        parse_seeds(args.seeds),
        args.train_data,
        args.test_data,
        out_dir=out,
        device=args.device,
        resume=args.resume,
        progress=not args.no_progress,
        seeds_per_block=args.seeds_per_block,
        dask=args.dask,
        workers=args.workers,
        max_restarts=args.restarts,
        allow_data_change=args.allow_data_change,
    )
    for m in result.members:
        if m.status == "done":
            _print_splits(f"seed {m.seed}", m.splits(), m.over_regularized, m.out_dir)
        else:
            print(m.message)
    restarts = sum(m.restarts for m in result.members)
    diverged = [m.seed for m in result.members if m.status == "diverged"]
    n = len(result.members)
    print(
        f"train: {n} seeds: {n - len(diverged)} finished, {len(diverged)} diverged, "
        f"{restarts} restart(s); see {Path(out) / 'ensemble.json'}"
    )
    if len(diverged) == n:  # as the same seed alone: TrainingDivergedError, exit 2
        from .errors import TrainingDivergedError

        msg = (
            f"every member diverged (non-finite loss; seeds {_seed_list(diverged)}); "
            "no model finished: lower the learning rate or change the seeds."
        )
        raise TrainingDivergedError(msg)
    if diverged:
        print(
            f"darcyvae train: {len(diverged)} of {n} members diverged (seeds "
            f"{_seed_list(diverged)}); the others finished (exit code 1)",
            file=sys.stderr,
        )
        return 1
    return 0


def _seed_list(seeds: list[int], most: int = 10) -> str:
    """``0, 1, 2`` (at most ``most`` seeds, then ``... (N in all)``)."""
    text = ", ".join(str(s) for s in seeds[:most])
    return text + (f", ... ({len(seeds)} in all)" if len(seeds) > most else "")


def _check_out(out: str | None) -> None:
    """An empty ``--out`` is an error for every verb (it meant the current folder for
    some and ``runs/<name>`` for others); ``--out .`` names the current folder."""
    if out is not None and not out.strip():
        msg = f"--out must name a folder (use --out . for the current one); got {out!r}"
        raise ValueError(msg)


def _print_splits(verb: str, splits, over_regularized: bool, where) -> None:
    """The one place that prints the metrics of splits (``SplitMetrics.line``)."""
    for split, metrics in splits:
        print(f"{split}: {metrics.line()}")
    verdict = "OVER-REGULARISED" if over_regularized else "not over-regularised"
    print(f"{verb}: {verdict}; wrote {where}")


def _set_threads(threads: int | None, verb: str) -> None:
    """Set torch's CPU threads (on a busy shared CPU, 1 thread avoids OpenMP spin-waits).

    Checked like ``generate``'s threads (``_checks.check_threads``): >= 1, and reduced
    to ``darcyvae.darcy.MAX_THREADS`` before torch sees it.
    """
    if threads is not None:
        import torch

        from ._checks import check_threads

        torch.set_num_threads(check_threads(threads, verb, "--threads"))


def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="rate, distortion, S_D and figures of a trained VAE")
    p.add_argument("checkpoint", help="checkpoint.pt written by 'darcyvae train' (or its folder)")
    p.add_argument("data", help="test data (HDF5)")
    p.add_argument("--out", required=True, help="output folder for results.json and figures")
    p.add_argument(
        "--train",
        dest="train_data",
        default=None,
        help="training data (default: the file recorded in the checkpoint, when it exists)",
    )
    p.add_argument("--device", default="cpu", help="auto, cpu or cuda (default: cpu)")
    p.add_argument(
        "--samples", type=int, default=1, help="latent samples per data sample (default: 1)"
    )
    p.add_argument(
        "--skl-latent",
        choices=("sample", "mean"),
        default="sample",
        help="S_KL on one z ~ q(z|y) per sample (default) or on the encoder means",
    )
    p.add_argument(
        "--seed", type=int, default=0, help="seed of the latent draws and figures (default: 0)"
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads, at most darcyvae.darcy.MAX_THREADS (default: torch's choice)",
    )
    p.set_defaults(func=_run_evaluate)


def _run_evaluate(args: argparse.Namespace) -> int:
    from . import evaluation

    _check_out(args.out)
    _set_threads(args.threads, "evaluate")
    result = evaluation.evaluate(
        args.checkpoint,
        args.data,
        train_data=args.train_data,
        recorded_train=True,
        out_dir=args.out,
        n_latent_samples=args.samples,
        device=args.device,
        seed=args.seed,
        skl_latent=args.skl_latent,
    )
    _print_splits("evaluate", result.splits(), result.over_regularized, args.out)
    return 0


_VERBS: list = [_add_generate, _add_train, _add_evaluate, _add_reproduce, _add_bench]


BUG_REPORT = (
    "the darcyvae issue tracker (see the README, section Development), with the command "
    "and the output of --debug"
)


_PYTHON_THEN_FLAG = re.compile(r"\b([a-z][a-z0-9_]*(?:=[\w.']+)?) \((--[a-z0-9][a-z0-9-]*)\)")
_FLAG_THEN_PYTHON = re.compile(r"(--[a-z0-9][a-z0-9-]*) \([a-z][a-z0-9_]*(?:=[\w.']+)?\)")
_BARE_PYTHON = {
    # a library argument named without its flag
    re.compile(r"(?<![\w/'\".-])resume=True\b"): "--resume",
    re.compile(r"(?<![\w/'\".-])overwrite=True\b"): "--overwrite",
    re.compile(r"(?<![\w/'\".-])allow_data_change=True\b"): "--allow-data-change",
    re.compile(r"(?<![\w/'\".-])space_check=False\b"): "--no-space-check",
    re.compile(r"(?<=another )out_dir(?![\w/'\"-])"): "--out",  # "choose another out_dir"
}


_OPTION_FIELDS: dict[str, dict[str, str]] = {
    # the library's name of each option, per verb, where a message names one alone
    "generate": {
        "n_train": "--n-train",
        "n_test": "--n-test",
        "chunk_size": "--chunk-size",
        "compression_level": "--compression-level",
        "compression": "--compression",
        "n_modes": "--kle",
        "grid": "--grid",
        "kernel": "--kernel",
        "length_scale": "--length-scale",
        "variance": "--variance",
        "distribution": "--dist",
        "scheme": "--scheme",
        "well_width": "--well-width",
        "rate": "--rate",
        "seed": "--seed",
        "train_sampling": "--train-sampling",
        "test_sampling": "--test-sampling",
        "threads": "--threads",
        "mean": "--mean",
        "sd": "--sd",
        "low": "--low",
        "high": "--high",
        "loc": "--loc",
        "scale": "--scale",
    },
    "train": {
        "max_restarts": "--restarts",
        "seeds_per_block": "--seeds-per-block",
        "workers": "--workers",
    },
    "evaluate": {"n_latent_samples": "--samples", "skl_latent": "--skl-latent", "seed": "--seed"},
    "reproduce": {"trials": "--trials", "seed": "--seed", "scale": "--scale", "jobs": "--jobs"},
}


def _option_names(text: str, command: str) -> str:
    """``"GenerateConfig: n_train must be ..."`` -> ``"--n-train must be ..."`` for the
    options of ``command`` that a message names by the library's field alone."""
    for name, option in _OPTION_FIELDS.get(command, {}).items():
        text = re.sub(rf"(?:\b[A-Za-z_][\w.]*: )?(?<![\w.-]){name}(?= must\b)", option, text)
    return text


def _flags_only(text: str) -> str:
    """``text`` with the library's Python names of command-line options left out.

    Library messages name an option both ways, ``overwrite=True (--overwrite)``,
    ``dask_address (--dask)`` or ``--resume (resume=True)``, since the same
    error reaches Python callers; on the command line only the flag is said.
    """

    def flag(match: re.Match[str]) -> str:
        word, option = match.group(1), match.group(2)
        name = word.split("=")[0]
        if "=" in word or "_" in name or name == option[2:].replace("-", "_"):
            return option
        return match.group(0)  # an ordinary word before a flag in parentheses

    text = _FLAG_THEN_PYTHON.sub(r"\1", _PYTHON_THEN_FLAG.sub(flag, text))
    for pattern, option in _BARE_PYTHON.items():
        text = pattern.sub(option, text)
    return text


class _FlagsOnlyFilter(logging.Filter):
    """Log records (warnings of the library) in the command line's words (``_flags_only``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = _flags_only(record.getMessage())
        if text != record.getMessage():
            record.msg, record.args = text, None
        return True


@contextlib.contextmanager
def _flags_only_logging() -> Iterator[None]:
    """While a verb runs, the root handlers show ``_flags_only`` messages."""
    handlers = list(logging.getLogger().handlers)
    flt = _FlagsOnlyFilter()
    for h in handlers:
        h.addFilter(flt)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(flt)


def _one_line(exc: BaseException, command: str = "") -> str:
    """The message of ``exc`` on one line, without a repeated ``darcyvae <command>:`` prefix."""
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and not text:
        text = exc.strerror or type(exc).__name__
    text = text.removeprefix(f"darcyvae {command}: ") if command else text
    return _option_names(_flags_only(text), command) or type(exc).__name__


@contextlib.contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """While a verb runs, SIGTERM raises ``darcyvae.errors.Terminated`` (a
    ``KeyboardInterrupt``) in the main thread, so it takes Ctrl-C's path: the run stops
    cleanly, partial files and the last checkpoint are kept. The previous handler is
    restored afterwards (``main`` may be called more than once in a process)."""
    from .errors import Terminated

    def handler(signum: int, frame: Any) -> None:
        raise Terminated

    try:
        previous = signal.signal(signal.SIGTERM, handler)
    except ValueError:  # not the main thread: leave SIGTERM alone
        yield
        return
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``darcyvae`` console script; returns the exit code.

    Exit codes: 0 success; 2 an error darcyvae reports (bad input, a missing
    or damaged file, a locked folder, different data on resume, a diverged
    run: ``DarcyvaeError`` (``TrainingDivergedError`` among them), ``ValueError``,
    ``TypeError``, ``OSError``), printed as one line; 3 an unexpected
    exception, which is a bug in darcyvae; 130 interrupted (Ctrl-C); 143
    terminated (SIGTERM, handled as Ctrl-C). ``darcyvae train --seeds`` exits
    1 when some members diverged and the others finished (2 when all did).
    ``--debug`` also prints the traceback.
    """
    import traceback

    from .errors import DarcyvaeError, Terminated

    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        with _sigterm_as_interrupt(), _flags_only_logging():
            return int(args.func(args) or 0)
    except Terminated:
        if debug:
            traceback.print_exc()
        print(
            f"darcyvae {args.command}: terminated (SIGTERM); stopped as on Ctrl-C: what was "
            "written is kept, the same command (with --resume for generate and train) continues",
            file=sys.stderr,
        )
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        print(f"darcyvae {args.command}: interrupted", file=sys.stderr)
        return 130
    except (DarcyvaeError, ValueError, TypeError, OSError) as exc:
        if debug:
            traceback.print_exc()
        print(f"darcyvae {args.command}: error: {_one_line(exc, args.command)}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - reported as a bug, see the docstring
        if debug:
            traceback.print_exc()
        where = ""
        tb = traceback.extract_tb(exc.__traceback__)
        if tb:
            where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}"
        print(
            f"darcyvae {args.command}: internal error{where}: {type(exc).__name__}: "
            f"{_one_line(exc)}\nThis is a bug in darcyvae; please report it on {BUG_REPORT}.",
            file=sys.stderr,
        )
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
