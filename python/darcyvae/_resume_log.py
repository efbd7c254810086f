"""The files of one split being generated, and the CRC-checked log that makes it resumable.

A split is written to ``<split>.h5.partial``; after each block of samples is
written and flushed, its CRC-32 is appended to ``<split>.h5.progress``, whose
first line is a JSON header (:func:`log_header`) fingerprinting everything
that fixes the file's bytes. On completion the partial is renamed to
``<split>.h5`` and the log removed.

To resume, :func:`replay_partial` copies the partial's logged blocks whose
data still match their CRC into a fresh file (``<split>.h5.partial.rebuild``)
by the same writes as a fresh run, so the finished file is byte-identical to
an uninterrupted one; the first block that does not match, or cannot be read,
and everything after it are computed again. A torn last log line (a kill
during the append) is ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ._hdf5_layout import DATASETS, Chunk, is_lock_error, open_h5, to_json, write_chunk
from ._io import atomic_write_text

__all__ = ["SplitFiles", "log_header", "read_log", "replay_partial", "start_log"]

logger = logging.getLogger("darcyvae.generate")

LOG_FORMAT = "darcyvae.generate.progress/1"


@dataclass(frozen=True)
class SplitFiles:
    """The paths of one split: the final file, the partial, its log and a replay's rebuild."""

    final: Path
    partial: Path
    progress: Path
    rebuild: Path

    @classmethod
    def of(cls, out_dir: Path, split: str) -> SplitFiles:
        """The files of ``split`` in ``out_dir`` (``<split>.h5`` and its companions)."""
        final = out_dir / f"{split}.h5"
        return cls(
            final,
            final.with_name(final.name + ".partial"),
            final.with_name(final.name + ".progress"),
            final.with_name(final.name + ".partial.rebuild"),
        )

    @property
    def in_progress(self) -> tuple[Path, ...]:
        """The files of an unfinished run (partial, log, rebuild)."""
        return (self.partial, self.progress, self.rebuild)


def log_header(attrs: Mapping[str, Any], write_settings: Mapping[str, Any]) -> dict[str, Any]:
    """The log's first line: the fingerprint of the file's attributes and write settings."""
    text = to_json({"attrs": dict(attrs), **dict(write_settings)})
    return {
        "format": LOG_FORMAT,
        "fingerprint": hashlib.sha256(text.encode()).hexdigest(),
        "n_samples": int(attrs["n_samples"]),
        "chunk_size": int(write_settings["chunk_size"]),
    }


def read_log(path: Path) -> tuple[dict[str, Any] | None, list[int]]:
    """Header and per-block CRCs of a log (None, [] when missing or unreadable)."""
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return None, []
    if not lines:
        return None, []
    try:
        header = json.loads(lines[0])
    except json.JSONDecodeError:
        return None, []
    crcs: list[int] = []
    for k, line in enumerate(lines[1:]):
        parts = line.split()
        if len(parts) != 2 or not all(p.isdigit() for p in parts) or int(parts[0]) != k:
            break  # a torn or foreign line ends the log
        crcs.append(int(parts[1]))
    return header, crcs


def start_log(path: Path, header: Mapping[str, Any], crcs: list[int]) -> None:
    """Write the log afresh (atomically): the header and the CRCs of the blocks kept."""
    lines = [to_json(dict(header))] + [f"{k} {c}" for k, c in enumerate(crcs)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def replay_partial(
    files: SplitFiles,
    bounds: list[tuple[int, int]],
    crcs: list[int],
    *,
    create: Callable[[Path], Any],
    encode: Callable[..., Chunk],
) -> tuple[Any, list[int]]:
    """Rebuild the partial from its verified blocks, by the same writes as a fresh run.

    Parameters
    ----------
    files : SplitFiles
    bounds : list of (start, stop)
        The blocks of the split.
    crcs : list of int
        The logged CRCs of the first blocks.
    create : callable
        ``create(path)`` -> a new, empty, open HDF5 file of the split.
    encode : callable
        ``encode(theta, perm, out)`` -> :class:`Chunk`, as a fresh run encodes.

    Returns
    -------
    (file, kept)
        The open new partial and the CRCs of the blocks it holds.
    """
    files.rebuild.unlink(missing_ok=True)
    f = create(files.rebuild)
    kept: list[int] = []
    try:
        with open_h5(files.partial, "r", caller="generate") as old:
            sets = [old[name] for name in DATASETS]
            for j, crc in enumerate(crcs[: len(bounds)]):
                a, b = bounds[j]
                chunk = encode(*(d[a:b] for d in sets))
                if chunk.crc != crc:
                    logger.warning(
                        "%s: block %d does not match its CRC; recomputing", files.partial, j
                    )
                    break
                write_chunk(f, a, chunk)
                kept.append(crc)
    except (OSError, KeyError, ValueError, TypeError) as exc:
        if is_lock_error(exc) or (exc.__cause__ is not None and is_lock_error(exc.__cause__)):
            f.close()
            files.rebuild.unlink(missing_ok=True)
            raise
        logger.warning(
            "%s: unreadable after %d blocks (%s); recomputing the rest",
            files.partial,
            len(kept),
            exc,
        )
    except BaseException:
        f.close()
        files.rebuild.unlink(missing_ok=True)
        raise
    files.rebuild.replace(files.partial)
    return f, kept
