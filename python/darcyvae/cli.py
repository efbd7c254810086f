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


_VERBS: list = [_add_reproduce]


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
