"""The ``darcyvae`` command line: parses arguments and calls the library.

Each verb is one ``_add_<verb>(subparsers)`` function that declares its
arguments and sets ``func`` to a ``_run_<verb>(args)`` function, in the
verb's own module (``generate``, ``train``, ``evaluate``, ``reproduce`` with
``bench``); ``_errors`` turns exceptions into one-line messages. Verbs only
parse and call; the work lives in the library modules.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path

from .. import __version__
from ._errors import flags_only_logging, one_line, sigterm_as_interrupt
from .evaluate import add_evaluate
from .generate import add_generate
from .reproduce import add_bench, add_reproduce
from .train import add_train

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


_VERBS: list = [add_generate, add_train, add_evaluate, add_reproduce, add_bench]


BUG_REPORT = (
    "the darcyvae issue tracker (see the README, section Development), with the command "
    "and the output of --debug"
)


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

    from .._allocator import keep_freed_memory
    from ..errors import DarcyvaeError, Terminated

    keep_freed_memory()  # the command's process is darcyvae's own (darcyvae._allocator)
    parser = build_parser()
    args = parser.parse_args(argv)
    debug = bool(getattr(args, "debug", False))
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    try:
        with sigterm_as_interrupt(), flags_only_logging():
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
        print(f"darcyvae {args.command}: error: {one_line(exc, args.command)}", file=sys.stderr)
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
            f"{one_line(exc)}\nThis is a bug in darcyvae; please report it on {BUG_REPORT}.",
            file=sys.stderr,
        )
        return 3
