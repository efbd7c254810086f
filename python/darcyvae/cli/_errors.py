"""How the command line reports errors: one line, flags instead of Python names; SIGTERM as Ctrl-C."""

from __future__ import annotations

import contextlib
import logging
import re
import signal
from collections.abc import Iterator
from typing import Any

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
def flags_only_logging() -> Iterator[None]:
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


def one_line(exc: BaseException, command: str = "") -> str:
    """The message of ``exc`` on one line, without a repeated ``darcyvae <command>:`` prefix."""
    text = " ".join(str(exc).split())
    if isinstance(exc, OSError) and not text:
        text = exc.strerror or type(exc).__name__
    text = text.removeprefix(f"darcyvae {command}: ") if command else text
    return _option_names(_flags_only(text), command) or type(exc).__name__


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While a verb runs, SIGTERM raises ``darcyvae.errors.Terminated`` (a
    ``KeyboardInterrupt``) in the main thread, so it takes Ctrl-C's path: the run stops
    cleanly, partial files and the last checkpoint are kept. The previous handler is
    restored afterwards (``main`` may be called more than once in a process)."""
    from ..errors import Terminated

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
