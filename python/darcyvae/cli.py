"""The ``darcyvae`` command line: parses arguments and calls the library.

Each verb is one ``_add_<verb>(subparsers)`` function that declares its
arguments and sets ``func`` to a ``_run_<verb>(args)`` function. Verbs only
parse and call; the work lives in the library modules.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

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
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in _VERBS:
        add(sub)
    return parser


def _add_reproduce(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("reproduce", help="run one of the paper's experiments")
    p.add_argument("experiment", nargs="?", help="experiment name (omit with --list)")
    p.add_argument("--list", action="store_true", help="list the experiments and exit")
    p.add_argument("--out", default=None, help="output folder (default: runs/<experiment>)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    p.set_defaults(func=_run_reproduce)


def _run_reproduce(args: argparse.Namespace) -> int:
    from . import experiments

    if args.list or not args.experiment:
        for exp in experiments.list_experiments():
            print(f"{exp.name:24s} {exp.description}")
        return 0
    out = args.out or f"runs/{args.experiment}"
    results = experiments.run_experiment(args.experiment, out, seed=args.seed, quick=args.quick)
    print(f"{args.experiment}: wrote {out} ({results['seconds']:.1f} s)")
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
    p.add_argument("--dir", default="benchmarks", help="folder holding bench_*.py")
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


_VERBS: list = [_add_reproduce, _add_bench]


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``darcyvae`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as exc:
        print(f"darcyvae {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"darcyvae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
