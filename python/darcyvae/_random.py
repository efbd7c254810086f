"""One place that turns a ``seed`` argument into a random generator."""

from __future__ import annotations

import numbers

import numpy as np

__all__ = ["check_random_state"]


def check_random_state(seed: int | np.random.Generator | None) -> np.random.Generator:
    """Return a ``numpy.random.Generator`` for ``seed``.

    Parameters
    ----------
    seed : int, numpy.random.Generator or None
        An int seeds a new PCG64 generator (same seed, same stream); a
        Generator is returned as is; None draws fresh OS entropy.
    """
    if seed is None or isinstance(seed, np.random.Generator):
        return np.random.default_rng(seed)
    if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
        if int(seed) < 0:
            msg = f"seed must be a non-negative integer; got {seed}."
            raise ValueError(msg)
        return np.random.default_rng(int(seed))
    msg = f"seed must be an int, a numpy.random.Generator or None; got {type(seed).__name__}."
    raise TypeError(msg)
