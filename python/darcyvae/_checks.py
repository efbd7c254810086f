"""Input checks shared by the public functions (one message template).

Messages read ``"<caller>: <name> must be <what>; got <value>."`` so a user
sees what was wrong, what was expected and what was passed.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = [
    "as_float_array",
    "check_choice",
    "check_int",
    "check_real",
    "check_sequence_fields",
    "check_threads",
    "config_kwargs",
    "core_threads",
]


def _fail(caller: str, name: str, what: str, got: object) -> ValueError:
    msg = f"{caller}: {name} must be {what}; got {got}."
    return ValueError(msg)


def check_int(
    value: Any,
    name: str,
    caller: str,
    *,
    low: int | None = None,
    high: int | None = None,
) -> int:
    """Return ``value`` as ``int`` after checking it is an integer in [low, high]."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"{caller}: {name} must be an integer; got {type(value).__name__} {value!r}."
        raise TypeError(msg)
    value = int(value)
    if (low is not None and value < low) or (high is not None and value > high):
        lo = "-inf" if low is None else str(low)
        hi = "inf" if high is None else str(high)
        raise _fail(caller, name, f"an integer in [{lo}, {hi}]", value)
    return value


def check_threads(value: Any, caller: str, name: str = "threads") -> int:
    """A thread count: an integer >= 1, reduced to ``darcyvae.darcy.MAX_THREADS``.

    The one check of every ``threads`` setting (the solver's, ``generate``'s and
    torch's ``--threads`` of ``train`` and ``evaluate``), made in Python before
    any value reaches C++ or OpenMP. ``MAX_THREADS`` is 4 x the hardware threads
    (in [4, 256]): more threads only add switching (``--threads 5000`` made a
    3 s run take minutes) or fail to start (``--threads 100000``), so a larger
    request is reduced to it, with a warning, as the solver does.

    Raises
    ------
    TypeError
        Not an integer (``bool`` included).
    ValueError
        Below 1.
    """
    import logging

    from .darcy import MAX_THREADS

    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        msg = f"{caller}: {name} must be an integer >= 1; got {type(value).__name__} {value!r}."
        raise TypeError(msg)
    value = int(value)
    if value < 1:
        msg = f"{caller}: {name} must be >= 1; got {value}."
        raise ValueError(msg)
    if value > MAX_THREADS:
        logging.getLogger("darcyvae").warning(
            "%s: %s = %d is more than this machine uses (%d: 4 x its hardware threads); using %d",
            caller,
            name,
            value,
            MAX_THREADS,
            MAX_THREADS,
        )
        return int(MAX_THREADS)
    return value


def core_threads(value: Any, caller: str) -> int:
    """The ``threads`` argument of a call that goes straight to the C++ core.

    ``None`` means all cores (``_core.resolve_threads(0)``); anything else must
    be an integer >= 1 and is passed on as is (the core caps it at
    ``_core.max_threads()``). Used by the k-NN estimators of
    :mod:`darcyvae.metrics` and by :class:`darcyvae.neighbors.KDTree`.
    """
    if value is None:
        from . import _core

        return _core.resolve_threads(0)
    return check_int(value, "threads", caller, low=1)


def check_real(
    value: Any,
    name: str,
    caller: str,
    *,
    low: float | None = None,
    high: float | None = None,
    low_open: bool = False,
    high_open: bool = False,
) -> float:
    """Return ``value`` as a finite ``float`` in the given (open or closed) interval."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        msg = f"{caller}: {name} must be a real number; got {type(value).__name__} {value!r}."
        raise TypeError(msg)
    value = float(value)
    too_low = low is not None and (value <= low if low_open else value < low)
    too_high = high is not None and (value >= high if high_open else value > high)
    if not np.isfinite(value) or too_low or too_high:
        lo = "-inf" if low is None else repr(low)
        hi = "inf" if high is None else repr(high)
        left = "(" if (low_open or low is None) else "["
        right = ")" if (high_open or high is None) else "]"
        raise _fail(caller, name, f"a finite float in {left}{lo}, {hi}{right}", value)
    return value


def check_choice(value: Any, name: str, caller: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` after checking it is one of ``choices``."""
    if value not in choices:
        options = ", ".join(repr(c) for c in choices)
        raise _fail(caller, name, f"one of {options}", repr(value))
    return str(value)


def as_float_array(
    value: Any,
    name: str,
    caller: str,
    *,
    ndim: int | tuple[int, ...] | None = None,
    finite: bool = True,
    positive: bool = False,
    dtype: type = np.float64,
) -> NDArray[np.floating]:
    """Convert to a C-contiguous float array and check its rank and values.

    No copy is made when ``value`` already is a C-contiguous array of
    ``dtype``. Complex input raises ``TypeError``; a wrong rank, NaN or inf
    (when ``finite``) or a non-positive entry (when ``positive``) raises
    ``ValueError``.
    """
    arr = np.asarray(value)
    if arr.dtype.kind == "c":
        msg = f"{caller}: {name} must be real-valued; got dtype {arr.dtype}."
        raise TypeError(msg)
    if arr.dtype.kind not in "biuf":
        msg = f"{caller}: {name} must be a numeric array; got dtype {arr.dtype}."
        raise TypeError(msg)
    # np.asarray(order="C"), not np.ascontiguousarray: the latter turns 0-d input
    # into shape (1,), and the error below would report the wrong shape.
    arr = np.asarray(arr, dtype=dtype, order="C")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else ndim
        if arr.ndim not in allowed:
            what = " or ".join(f"{d}-D" for d in allowed)
            raise _fail(caller, name, f"a {what} array", f"shape {arr.shape}")
    if finite and not np.all(np.isfinite(arr)):
        raise _fail(
            caller,
            name,
            "finite (no NaN or inf)",
            f"{int(np.sum(~np.isfinite(arr)))} non-finite entries",
        )
    if positive and arr.size and not np.all(arr > 0):
        raise _fail(caller, name, "> 0 everywhere", f"minimum {arr.min()!r}")
    return arr


def config_kwargs(
    cls: type, data: dict[str, Any], *, error: type[Exception] = ValueError
) -> dict[str, Any]:
    """Keyword arguments for the dataclass ``cls`` from a plain dict (JSON/TOML or ``**kwargs``).

    Unknown keys raise ``error`` (``ValueError`` for file contents; pass
    ``TypeError`` for keyword arguments, as Python does) naming the known
    ones; lists become tuples (TOML and JSON have no tuples).
    """
    from dataclasses import fields

    declared = {f.name: f.type for f in fields(cls) if f.init}
    unknown = sorted(set(data) - set(declared))
    if unknown:
        msg = f"{cls.__name__}: unknown keys {unknown}; known: {sorted(declared)}."
        raise error(msg)
    for key, value in data.items():
        _check_sequence_field(cls.__name__, key, str(declared[key]), value)
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


_ELEMENT_TYPES = {
    "int": ("integers", lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool)),
    "float": ("numbers", lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool)),
    "str": ("strings", lambda v: isinstance(v, str)),
}


def _alternatives(annotation: str) -> list[str]:
    """The top-level ``|`` alternatives of a type annotation written as a string."""
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(annotation):
        depth += ch == "["
        depth -= ch == "]"
        if ch == "|" and depth == 0:
            parts.append(annotation[start:i].strip())
            start = i + 1
    parts.append(annotation[start:].strip())
    return parts


def check_sequence_fields(obj: Any) -> None:
    """Check every tuple-typed field of the dataclass instance ``obj`` (see ``config_kwargs``):
    for ``__post_init__``, so a constructor call or ``dataclasses.replace`` is checked too."""
    from dataclasses import fields

    for f in fields(obj):
        if f.init:
            _check_sequence_field(type(obj).__name__, f.name, str(f.type), getattr(obj, f.name))


def _check_sequence_field(owner: str, name: str, annotation: str, value: Any) -> None:
    """A field declared as a tuple (``tuple[int, ...]``, ``tuple[float, ...] | None``) gets a
    list or tuple of the declared element type, not a string or a number.

    A string would otherwise be read character by character (``lr_values = "5"``
    silently becoming ``(5.0,)``) and a number fail deep inside ("'int' object is
    not iterable"). Raises ``TypeError``: "<owner>: <name> must be a list of ...; got ...".
    """
    alternatives = _alternatives(annotation)
    sequences = [a for a in alternatives if a.startswith(("tuple[", "list["))]
    if not sequences:
        return
    if value is None and "None" in alternatives:
        return
    scalars = {a for a in alternatives if a in _ELEMENT_TYPES}
    if any(_ELEMENT_TYPES[a][1](value) for a in scalars):
        return  # e.g. KLEConfig.length_scale: a float or a (lx, ly) pair
    inner = _alternatives(sequences[0][sequences[0].index("[") + 1 : -1].replace(",", "|"))
    element = next((t for t in inner if t in _ELEMENT_TYPES), None)
    what = f"a list of {_ELEMENT_TYPES[element][0]}" if element else "a list"
    if scalars:
        what = " or ".join([*(f"a single {_ELEMENT_TYPES[a][0][:-1]}" for a in scalars), what])
    if "None" in alternatives:
        what += " (or left out)"
    if not isinstance(value, (list, tuple)):
        hint = f"a list in brackets: {name} = [...]"
        if isinstance(value, str):
            words = value.replace(",", " ").split()
            convert = int if element == "int" else float
            try:
                items = ", ".join(str(convert(w)) for w in words)
                hint = f"a list without quotes: {name} = [{items}]"
            except ValueError:
                pass
        got = f"{type(value).__name__} {value!r}"
        msg = f"{owner}: {name} must be {what}; got {got} (write {hint})."
        raise TypeError(msg)
    if element is not None:
        ok = _ELEMENT_TYPES[element][1]
        bad = [v for v in value if not ok(v)]
        if bad:
            msg = (
                f"{owner}: {name} must be {what}; got {list(value)!r} "
                f"(e.g. {type(bad[0]).__name__} {bad[0]!r})."
            )
            raise TypeError(msg)


def paired_samples(z: Any, theta: Any, caller: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, d_z) latents and (n, d_theta) factors of the same n >= 2 samples, as float64."""
    z = as_float_array(z, "z", caller, ndim=(1, 2))
    theta = as_float_array(theta, "theta", caller, ndim=(1, 2))
    # sample counts first: reshape(0, -1) of an empty array cannot infer the width
    if len(z) != len(theta):
        msg = f"{caller}: z and theta must have the same number of samples; got {len(z)} and {len(theta)}."
        raise ValueError(msg)
    if len(z) < 2:
        msg = f"{caller}: need at least 2 samples; got {len(z)} (z of shape {z.shape})."
        raise ValueError(msg)
    z = z.reshape(len(z), -1)
    theta = theta.reshape(len(theta), -1)
    for name, arr in (("z", z), ("theta", theta)):
        if arr.shape[1] < 1:
            msg = f"{caller}: {name} must have at least one coordinate; got shape {arr.shape}."
            raise ValueError(msg)
    return z, theta
