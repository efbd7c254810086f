"""Seeds: lists for ensembles (``parse_seeds("0-49")``, ``parse_seeds("3,7,11")``) and the
restart stream (``restart_seed``)."""

from __future__ import annotations

import numbers
import re
from collections.abc import Sequence

import numpy as np

from .._checks import check_int

__all__ = ["MAX_SEEDS", "check_seeds", "parse_seeds", "restart_seed", "split_blocks"]

MAX_SEEDS = 10_000
"""Most seeds one ``train_ensemble`` call (``darcyvae train --seeds``) trains: 200 times the
paper's 50 trials per arm. More is refused up front (``--seeds 0-100000`` would otherwise
start a run of unbounded length); split them over several runs."""

_ITEM = re.compile(r"^(\d+)(?:\s*-\s*(\d+))?$")


def parse_seeds(text: str) -> list[int]:
    """Seeds from a command-line string: ranges ``a-b`` (inclusive) and commas.

    Parameters
    ----------
    text : str
        Comma-separated items, each a seed ``7`` or an inclusive range
        ``0-49``; e.g. ``"0-49"``, ``"3,7,11"``, ``"0-4,10,20-22"``.
        Spaces around items and dashes are allowed.

    Returns
    -------
    list of int
        The seeds in the order given.

    Raises
    ------
    TypeError
        ``text`` is not a string.
    ValueError
        Empty text or item, a malformed item, a negative seed, a range whose
        end is below its start, or a seed given twice.

    Examples
    --------
    >>> parse_seeds("0-3,10")
    [0, 1, 2, 3, 10]
    """
    if not isinstance(text, str):
        msg = f"parse_seeds: seeds must be a string such as '0-49' or '3,7,11'; got {type(text).__name__}."
        raise TypeError(msg)
    if not text.strip():
        msg = "parse_seeds: seeds must name at least one seed (e.g. '0-49' or '3,7,11'); got ''."
        raise ValueError(msg)
    seeds: list[int] = []
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            msg = f"parse_seeds: empty item in {text!r}; expected e.g. '0-49' or '3,7,11'."
            raise ValueError(msg)
        if item.startswith("-"):
            msg = f"parse_seeds: seeds must be integers >= 0; got {item!r} in {text!r}."
            raise ValueError(msg)
        m = _ITEM.match(item)
        if m is None:
            msg = (
                f"parse_seeds: {item!r} in {text!r} is neither a seed (e.g. 7) nor an "
                "inclusive range (e.g. 0-49)."
            )
            raise ValueError(msg)
        lo = int(m.group(1))
        hi = int(m.group(2)) if m.group(2) is not None else lo
        if hi < lo:
            msg = f"parse_seeds: range {item!r} ends below its start; write it as {hi}-{lo}."
            raise ValueError(msg)
        if len(seeds) + (hi - lo + 1) > MAX_SEEDS:  # before the list is built: '0-10**18'
            raise _too_many(len(seeds) + (hi - lo + 1), f"{text!r} names", "parse_seeds")
        seeds.extend(range(lo, hi + 1))
    return check_seeds(seeds, "parse_seeds")


def check_seeds(seeds: Sequence[int] | str, caller: str = "train_ensemble") -> list[int]:
    """``seeds`` as a list of distinct integers >= 0 (a string goes through ``parse_seeds``)."""
    if isinstance(seeds, str):
        return parse_seeds(seeds)
    if not isinstance(seeds, Sequence):
        msg = f"{caller}: seeds must be a sequence of integers or a string; got {type(seeds).__name__}."
        raise TypeError(msg)
    if len(seeds) > MAX_SEEDS:  # before iterating: range(10**18) is a Sequence too
        raise _too_many(len(seeds), "got", caller)
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, numbers.Integral):
            msg = f"{caller}: every seed must be an integer; got {type(s).__name__} {s!r}."
            raise TypeError(msg)
        if s < 0:
            msg = f"{caller}: seeds must be integers >= 0; got {int(s)}."
            raise ValueError(msg)
        out.append(int(s))
    if not out:
        msg = f"{caller}: seeds must name at least one seed; got an empty list."
        raise ValueError(msg)
    seen: set[int] = set()
    dup = sorted({s for s in out if s in seen or seen.add(s)})
    if dup:
        msg = f"{caller}: every seed must appear once; got duplicates {dup}."
        raise ValueError(msg)
    return out


def _too_many(n: int, what: str, caller: str) -> ValueError:
    msg = (
        f"{caller}: {what} {n:,} seeds; at most {MAX_SEEDS:,} train in one run "
        "(darcyvae.ensemble.MAX_SEEDS); split them over several runs, each with its own --out."
    )
    return ValueError(msg)


def split_blocks(seeds: list[int], seeds_per_block: int | None) -> list[list[int]]:
    """Consecutive blocks of at most ``seeds_per_block`` seeds (None: one block)."""
    if seeds_per_block is None:
        return [list(seeds)]
    if isinstance(seeds_per_block, bool) or not isinstance(seeds_per_block, numbers.Integral):
        msg = (
            f"train_ensemble: seeds_per_block must be an integer or None; got {seeds_per_block!r}."
        )
        raise TypeError(msg)
    if seeds_per_block < 1:
        msg = f"train_ensemble: seeds_per_block must be >= 1; got {seeds_per_block}."
        raise ValueError(msg)
    n = int(seeds_per_block)
    return [list(seeds[i : i + n]) for i in range(0, len(seeds), n)]


_RESTART_STREAM = 0x5EED
"""Spawn key of the restart stream: restart seeds never equal a trial's own seed."""


def restart_seed(seed: int, restart: int) -> int:
    """The seed of restart ``restart`` (>= 1) of a trial with seed ``seed``.

    Drawn from a stream derived from ``seed`` (``SeedSequence(seed,
    spawn_key=(0x5EED, restart))``), 63 bits: it never walks into the
    small seeds other trials of a study use (``seed + 1`` would).
    """
    check_int(seed, "seed", "restart_seed", low=0)
    check_int(restart, "restart", "restart_seed", low=1)
    state = np.random.SeedSequence(seed, spawn_key=(_RESTART_STREAM, restart)).generate_state(
        1, dtype=np.uint64
    )
    return int(state[0] >> np.uint64(1))
