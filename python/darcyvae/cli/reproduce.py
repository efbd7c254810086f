"""``darcyvae reproduce`` and ``darcyvae bench``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ._common import check_out, set_threads


def add_reproduce(sub: argparse._SubParsersAction) -> None:
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
    from .. import experiments

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
    check_out(args.out)
    if args.quick and args.scale not in (None, "smoke"):
        msg = f"--quick means --scale smoke; got --scale {args.scale} as well"
        raise ValueError(msg)
    scale = args.scale or ("smoke" if args.quick else "cpu")
    set_threads(args.threads, "reproduce")
    overrides = {}
    if args.cells is not None:
        if args.experiment != "sensitivity":
            msg = f"--cells is an option of 'sensitivity' only; got experiment {args.experiment!r}"
            raise ValueError(msg)
        from ..experiments.sensitivity import parse_cells

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


def add_bench(sub: argparse._SubParsersAction) -> None:
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
