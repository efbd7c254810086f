"""The exceptions darcyvae raises on purpose (besides ValueError/TypeError for bad input).

The command line prints any of these, and any ``ValueError``, ``TypeError``
or ``OSError``, as one line and exits 2; anything else is reported as a bug
(exit 3; ``--debug`` shows the traceback).
"""

from __future__ import annotations

__all__ = [
    "DarcyvaeError",
    "DataMismatchError",
    "EnsembleMemoryError",
    "FolderLockedError",
    "IntegrityError",
    "MissingDependencyError",
    "SolveAccuracyError",
    "Terminated",
    "TrainingDivergedError",
]


class DarcyvaeError(Exception):
    """Base class of darcyvae's own failure conditions."""


class FolderLockedError(DarcyvaeError, RuntimeError):
    """Another process holds the lock of an output folder (see ``darcyvae._lock``)."""


class IntegrityError(DarcyvaeError, ValueError):
    """A file (checkpoint, dataset chunk, cache) failed its checksum or is truncated."""


class DataMismatchError(DarcyvaeError, ValueError):
    """Data given on resume differ from the data a run was started with."""


class MissingDependencyError(DarcyvaeError, ImportError):
    """An optional package a feature needs is not installed; the message names the extra."""


class SolveAccuracyError(DarcyvaeError, ValueError):
    """A Darcy sample missed the bordered-residual tolerance (or its output is not finite)
    after the core's pivoting fallback (``darcyvae.darcy``, ``on_inaccurate="raise"``)."""


class EnsembleMemoryError(DarcyvaeError, MemoryError):
    """The device ran out of memory for a block of K ensemble members."""


class TrainingDivergedError(DarcyvaeError, RuntimeError):
    """A NaN or inf loss; the last good checkpoint, if one was written, is kept on disk
    (``darcyvae.training``)."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (``kill``, a batch system ending a job): raised in the main thread by
    the command line's handler. A ``KeyboardInterrupt``, so it stops a run exactly as
    Ctrl-C does (partial files and the last checkpoint kept); ``darcyvae`` exits 143."""
