"""The HDF5 layout of a Darcy flow dataset (docs/data.md §1c), for its writer and its readers.

One place for what a dataset file holds and how it is encoded:

- the datasets ``generative_params`` (n, s), ``permeability`` (n, 1, N, N)
  and ``output`` (n, 3, N, N), float32, as the authors' h5py loader reads
  them (:data:`THETA`, :data:`PERMEABILITY`, :data:`OUTPUT`);
- the root attributes and their decoding (JSON strings for the nested ones,
  :func:`decode_attrs`, :func:`read_attrs`);
- how ``darcyvae generate`` creates a file (:func:`create_file`): chunks of one
  sample for the fields and ``theta_rows`` rows for theta, optional gzip or
  lzf with byte shuffling, no timestamps, and its own copy of HDF5's shuffle +
  deflate filter so that gzip chunks can be encoded in parallel threads
  (:func:`make_chunk`, :func:`write_chunk`);
- the data checksum: a CRC-32 per block of ``rows_per_chunk`` samples, over
  the float32 bytes of theta, permeability and output, summarised in the
  ``data_checksum`` attribute (:func:`write_checksum`, :func:`verify_checksum`);
- the checks a reader makes (:func:`open_dataset_file`).

Errors: a file that another process holds (HDF5's file lock) raises
:class:`~darcyvae.errors.FolderLockedError`, never a "damaged file" error.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import zlib
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .errors import FolderLockedError, IntegrityError

__all__ = [
    "CHECKSUM_ATTR",
    "DATASETS",
    "FORMAT",
    "OUTPUT",
    "PERMEABILITY",
    "SPLITS",
    "THETA",
    "Chunk",
    "chunk_crc",
    "create_file",
    "decode_attrs",
    "is_lock_error",
    "make_chunk",
    "open_dataset_file",
    "open_h5",
    "read_attrs",
    "to_json",
    "verify_checksum",
    "write_checksum",
    "write_chunk",
]

SPLITS = ("train", "test")
"""The files of a dataset, ``<split>.h5``, in the order they are written; split k
draws its thetas from stream k of the seed."""

FORMAT = "darcyvae.generate/1"
"""Value of the ``format`` attribute of every generated file."""

THETA = "generative_params"
"""Dataset of the generative parameters theta, (n, s) float32."""

PERMEABILITY = "permeability"
"""Dataset of the permeability fields K, (n, 1, N, N) float32."""

OUTPUT = "output"
"""Dataset of the solutions (p, u_x, u_y), (n, 3, N, N) float32."""

DATASETS = (THETA, PERMEABILITY, OUTPUT)
"""The datasets of a generated file, in the order they are created."""

CHECKSUM_ATTR = "data_checksum"
"""Root attribute (JSON) with the checksum of the data; written last, when the file is complete."""

COMPRESSIONS = ("gzip", "lzf")
"""HDF5 filters a generated file may use (always with byte shuffling)."""

_JSON_SUFFIXES = ("_params", "_config", "_checksum")
"""Attributes whose names end so are JSON strings (decoded by :func:`decode_attrs`)."""


# -- attributes --------------------------------------------------------------------------
def to_json(value: Any) -> str:
    """Canonical JSON (sorted keys; numpy arrays and scalars as lists and numbers)."""

    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (np.floating, np.integer)):
            return obj.item()
        return str(obj)

    return json.dumps(value, sort_keys=True, default=default)


def _decode(key: str, value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.ndarray):
        value = value.tolist()
    elif isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, str) and key.endswith(_JSON_SUFFIXES):
        # a foreign file's attribute of that name that is not JSON stays a string
        with contextlib.suppress(json.JSONDecodeError):
            value = json.loads(value)
    return value


def decode_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """HDF5 attributes as plain Python values (JSON strings of nested values decoded)."""
    return {key: _decode(key, value) for key, value in attrs.items()}


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The root attributes of a dataset file, decoded.

    Parameters
    ----------
    path : path-like
        A ``train.h5`` / ``test.h5`` written by ``darcyvae generate`` (or any
        HDF5 file).

    Returns
    -------
    dict
        Attribute name -> value: numpy scalars as Python scalars, arrays as
        lists, the ``*_params``, ``*_config`` and ``data_checksum`` JSON
        strings as dicts.
    """
    with open_h5(path, "r", caller="read_attrs") as f:
        return decode_attrs(f.attrs)


# -- opening files -----------------------------------------------------------------------
def is_lock_error(exc: BaseException) -> bool:
    """Whether an error from h5py means that another process holds the file's lock."""
    return isinstance(exc, BlockingIOError) or "unable to lock file" in str(exc)


def open_h5(path: str | os.PathLike, mode: str = "r", *, caller: str, **kwargs: Any) -> Any:
    """``h5py.File(path, mode)``; a file locked by another process raises FolderLockedError."""
    import h5py

    try:
        return h5py.File(path, mode, **kwargs)
    except OSError as exc:
        if is_lock_error(exc):
            msg = (
                f"{caller}: {str(path)!r} is open in another process (HDF5 file lock); "
                "close it there or wait for that process to finish."
            )
            raise FolderLockedError(msg) from exc
        raise


def open_dataset_file(path: str | os.PathLike, caller: str) -> Any:
    """Open a dataset file read-only and check the layout a reader needs.

    Checks that ``output`` is an (n, C, N, N) floating-point dataset with
    n >= 1 and ``generative_params`` an (n, s) or (n,) one (``permeability``
    is not needed for training and is not checked). Returns the open h5py
    File.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not a readable HDF5 file, or a dataset missing, of the wrong kind
        (e.g. a group), shape or dtype.
    FolderLockedError
        Another process holds the file's lock.
    """
    import h5py

    path = Path(path)
    if not path.is_file():
        msg = f"{caller}: no such dataset file: {str(path)!r}."
        raise FileNotFoundError(msg)
    try:
        fh = open_h5(path, "r", caller=caller)
    except FolderLockedError:
        raise
    except OSError as exc:
        msg = f"{caller}: {str(path)!r} is not a readable HDF5 file ({exc})."
        raise ValueError(msg) from exc
    try:
        for name in (OUTPUT, THETA):
            if not isinstance(fh.get(name), h5py.Dataset):
                got = "missing" if name not in fh else f"a {type(fh[name]).__name__}"
                msg = (
                    f"{caller}: {str(path)!r} must hold the datasets {OUTPUT!r} (n, C, N, N) and "
                    f"{THETA!r} (n, s); {name!r} is {got} (keys: {sorted(fh.keys())})."
                )
                raise ValueError(msg)  # noqa: TRY004 (bad file contents, not a bad argument)
        out, gen = fh[OUTPUT], fh[THETA]
        if out.ndim != 4 or out.shape[2] != out.shape[3] or out.shape[0] < 1:
            msg = f"{caller}: {OUTPUT!r} must have shape (n, C, N, N) with n >= 1; got {out.shape}."
            raise ValueError(msg)
        if gen.ndim not in (1, 2) or gen.shape[0] != out.shape[0]:
            msg = (
                f"{caller}: {THETA!r} must have shape (n, s) with n = {out.shape[0]} "
                f"as in {OUTPUT!r}; got {gen.shape}."
            )
            raise ValueError(msg)
        for name in (OUTPUT, THETA):
            if fh[name].dtype.kind != "f":
                msg = f"{caller}: {name!r} must be floating point; got dtype {fh[name].dtype}."
                raise ValueError(msg)
    except BaseException:
        fh.close()
        raise
    return fh


# -- writing -----------------------------------------------------------------------------
def create_file(
    path: Path,
    *,
    n_samples: int,
    n_modes: int,
    grid: int,
    theta_rows: int,
    compression: str | None,
    compression_level: int,
    attrs: Mapping[str, Any],
) -> Any:
    """A new file with the three datasets and ``attrs`` (no timestamps); returns it open.

    HDF5 chunks: ``theta_rows`` rows of ``generative_params``, one sample of
    ``permeability`` and ``output``. Filters: ``compression`` ("gzip" at
    ``compression_level``, "lzf" or None) with byte shuffling.
    """
    filters: dict[str, Any] = {}
    if compression is not None:
        filters = {"compression": compression, "shuffle": True}
        if compression == "gzip":
            filters["compression_opts"] = compression_level
    # every chunk is written whole, once: no chunk cache (one copy less per sample)
    f = open_h5(path, "w", caller="generate", track_order=True, rdcc_nbytes=0)
    try:
        for key, value in attrs.items():
            f.attrs[key] = value
        common = {"dtype": np.float32, "track_times": False, **filters}
        f.create_dataset(THETA, shape=(n_samples, n_modes), chunks=(theta_rows, n_modes), **common)
        field_chunk = (1, 1, grid, grid)
        f.create_dataset(
            PERMEABILITY, shape=(n_samples, 1, grid, grid), chunks=field_chunk, **common
        )
        f.create_dataset(
            OUTPUT, shape=(n_samples, 3, grid, grid), chunks=(1, 3, grid, grid), **common
        )
        f.flush()
    except BaseException:
        f.close()
        raise
    return f


@dataclass
class Chunk:
    """A block of samples ready to write: float32 arrays, their CRC-32, gzip-encoded HDF5 chunks.

    ``encoded`` is None without gzip; otherwise it holds the bytes of each
    HDF5 chunk exactly as HDF5's shuffle + deflate filters write them
    (``generative_params``: one chunk padded to ``theta_rows``;
    ``permeability`` and ``output``: one chunk per sample), and the arrays
    are dropped, so the writer only copies bytes (``write_direct_chunk``).
    """

    theta: NDArray[np.float32]
    perm: NDArray[np.float32] | None
    out: NDArray[np.float32] | None
    crc: int
    encoded: dict[str, list[bytes]] | None = None


def chunk_crc(*arrays: NDArray) -> int:
    """CRC-32 of the bytes of ``arrays`` in turn (theta, permeability, output of a block)."""
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).data, crc)
    return crc


def shuffle_deflate(arr: NDArray[np.float32], level: int, pool: Executor) -> list[bytes]:
    """HDF5's shuffle + deflate filters applied to each ``arr[i]`` (one HDF5 chunk each).

    H5Z shuffle writes byte k of every 4-byte element, k = 0..3, one after the
    other; deflate is zlib's ``compress2`` at ``level``. The chunks are
    encoded on ``pool`` (zlib releases the GIL).
    """

    def one(i: int) -> bytes:
        shuffled = np.ascontiguousarray(arr[i]).view(np.uint8).reshape(-1, 4).T.tobytes()
        return zlib.compress(shuffled, level)

    return list(pool.map(one, range(len(arr))))


def make_chunk(
    theta: NDArray[np.float32],
    perm: NDArray[np.float32],
    out: NDArray[np.float32],
    *,
    compression: str | None,
    level: int,
    theta_rows: int,
    pool: Executor | None,
) -> Chunk:
    """CRC the arrays and, for gzip, encode them on ``pool`` (dropping the arrays)."""
    crc = chunk_crc(theta, perm, out)
    if compression != "gzip":
        return Chunk(theta, perm, out, crc)
    if pool is None:
        msg = "make_chunk: gzip encoding needs a thread pool."
        raise ValueError(msg)
    padded = np.zeros((theta_rows, theta.shape[1]), np.float32)
    padded[: len(theta)] = theta  # an edge chunk is padded with the fill value, as HDF5 does
    encoded = {
        THETA: shuffle_deflate(padded[None], level, pool),
        PERMEABILITY: shuffle_deflate(perm, level, pool),
        OUTPUT: shuffle_deflate(out, level, pool),
    }
    return Chunk(theta, None, None, crc, encoded)


def write_chunk(f: Any, start: int, chunk: Chunk) -> None:
    """Write ``chunk`` at sample ``start`` (normal writes, or copies of encoded chunks); flush."""
    m = len(chunk.theta)
    if chunk.encoded is None:
        f[THETA][start : start + m] = chunk.theta
        f[PERMEABILITY][start : start + m] = chunk.perm
        f[OUTPUT][start : start + m] = chunk.out
    else:
        f[THETA].id.write_direct_chunk((start, 0), chunk.encoded[THETA][0])
        for key in (PERMEABILITY, OUTPUT):
            dset = f[key].id
            for i, data in enumerate(chunk.encoded[key]):
                dset.write_direct_chunk((start + i, 0, 0, 0), data)
    f.flush()


# -- the data checksum -------------------------------------------------------------------
def _digest(crcs: list[int]) -> str:
    return hashlib.sha256(" ".join(str(c) for c in crcs).encode()).hexdigest()


def write_checksum(f: Any, crcs: list[int], rows_per_chunk: int) -> None:
    """Record the checksum of a complete file (the CRC-32 of each block, summarised)."""
    f.attrs[CHECKSUM_ATTR] = to_json(
        {
            "algorithm": "sha256 of the CRC-32s (decimal, space-separated) of each block of "
            "rows_per_chunk samples over the float32 bytes of generative_params, "
            "permeability and output",
            "rows_per_chunk": int(rows_per_chunk),
            "blocks": len(crcs),
            "sha256": _digest(crcs),
        }
    )
    f.flush()


def verify_checksum(path: str | os.PathLike, caller: str) -> None:
    """Recompute the data checksum of a generated file and compare it with the recorded one.

    Raises
    ------
    IntegrityError
        The file cannot be read (truncated, not HDF5, a dataset missing or
        of the wrong kind), has no recorded checksum, or its data do not
        match it.
    FolderLockedError
        Another process holds the file's lock.
    """
    import h5py

    path = Path(path)
    hint = "overwrite=True (--overwrite) regenerates it"
    try:
        with open_h5(path, "r", caller=caller) as f:
            record = _decode(CHECKSUM_ATTR, f.attrs.get(CHECKSUM_ATTR))
            if not isinstance(record, dict) or "sha256" not in record:
                msg = f"{caller}: {str(path)!r} has no recorded data checksum; {hint}."
                raise IntegrityError(msg)
            sets = [f.get(name) for name in DATASETS]
            if not all(isinstance(d, h5py.Dataset) for d in sets):
                msg = f"{caller}: {str(path)!r} lacks one of the datasets {DATASETS}; {hint}."
                raise IntegrityError(msg)
            rows, n = int(record["rows_per_chunk"]), sets[0].shape[0]
            crcs = [chunk_crc(*(d[a : a + rows] for d in sets)) for a in range(0, n, max(rows, 1))]
    except (IntegrityError, FolderLockedError):
        raise
    except (OSError, KeyError, ValueError, TypeError) as exc:
        msg = f"{caller}: {str(path)!r} is damaged ({exc}); {hint}."
        raise IntegrityError(msg) from exc
    if _digest(crcs) != record["sha256"] or len(crcs) != record.get("blocks", len(crcs)):
        msg = f"{caller}: {str(path)!r} does not match its recorded data checksum; {hint}."
        raise IntegrityError(msg)
