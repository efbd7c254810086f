"""Bulk generation of Darcy flow datasets to HDF5 (SPEC 1c, 2, 3).

``generate_dataset(config, out_dir)`` draws thetas from p(theta), turns them
into permeability fields with the KLE and solves the Darcy problem for each,
streaming chunks of samples into ``train.h5`` and ``test.h5`` in the layout
the authors' h5py loader reads: datasets ``generative_params`` (n, s),
``permeability`` (n, 1, N, N) and ``output`` (n, 3, N, N), float32, plus
root attributes recording how the file was made.

Sample ``i`` of a split is a pure function of the configuration and ``i``,
so a run can be cut into chunks anywhere: on the local C++ thread pool, on
a Dask cluster, or across an interruption and a resume. The files are
byte-identical in all three cases.

Public names
------------
GenerateConfig
    Everything that defines a dataset (frozen dataclass).
generate_dataset
    Write ``train.h5`` and ``test.h5`` (resumable, local or Dask).
read_attrs
    The attributes of a generated file as a dict (JSON values decoded).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from . import __version__
from ._checks import check_choice, check_int
from .darcy import DarcyConfig, solve_batch
from .distributions import (
    BLOCK_SIZE,
    LHS_KEY,
    SAMPLINGS,
    Distribution,
    ThetaArray,
    get_distribution,
)
from .kle import KLEBasis, KLEConfig, kle_basis

__all__ = ["FORMAT", "SPLITS", "GenerateConfig", "generate_dataset", "read_attrs"]

logger = logging.getLogger(__name__)

FORMAT = "darcyvae.generate/1"
"""Value of the ``format`` attribute of every generated file."""

SPLITS = ("train", "test")
"""The splits, in the order they are written; split k draws from stream k of the seed."""

_PROGRESS_FORMAT = "darcyvae.generate.progress/1"
_COMPRESSIONS = ("gzip", "lzf")


@dataclass(frozen=True)
class GenerateConfig:
    """Everything that defines a generated dataset.

    Parameters
    ----------
    kle : KLEConfig, default=KLEConfig()
        Grid N, number of modes s, kernel, length scale and variance (SPEC 2).
    darcy : DarcyConfig, default=DarcyConfig()
        Scheme ("fd" or "fv"), well width and rate (SPEC 1).
    distribution : str or Distribution, default="normal"
        A name of :func:`darcyvae.distributions.list_distributions` (built
        with ``dist_params``) or a distribution object, e.g.
        ``ThetaArray(theta)`` for user-supplied thetas.
    dist_params : mapping, default={}
        Parameters of a named distribution (``mean``, ``sd``, ``loc``,
        ``scale``, ``low``, ``high``).
    n_train, n_test : int, default=512
        Samples per split (SPEC 3: 512 each). ``n_train >= 1``; ``n_test = 0``
        writes no test file.
    seed : int, default=0
        Non-negative seed of p(theta).
    chunk_size : int, default=256
        Samples computed and written at a time (bounds the memory: about
        five chunks, 26 MB each at N = 65; the unit of progress and
        resumption; also the HDF5 chunk of ``generative_params``).
    compression : {"gzip", "lzf"} or None, default=None
        HDF5 filter of the datasets (with byte shuffling), or none. gzip
        chunks are encoded in parallel where they are computed (threads,
        Dask workers); lzf runs in HDF5 in the writing thread. gzip and
        none give byte-identical files run after run; lzf identical data
        (its compressor reads uninitialised memory, so its bytes may vary).
    compression_level : int, default=4
        gzip level, 0-9 (ignored by lzf); 1 is about twice as fast as 4.
    threads : int or None, default=None
        Solver threads of the local run (None: all cores). On Dask, None
        gives each task ``cores // worker threads``.
    train_sampling, test_sampling : {"mc", "lhs"}, default="mc"
        How the split's thetas are drawn: Monte Carlo (sample i is a pure
        function of (seed, split, i)) or a Latin hypercube design of the
        split's n samples (a pure function of (seed, split, n); SPEC 3, the
        authors' training sets). Recorded in the ``sampling`` attribute.

    Raises
    ------
    ValueError
        Unknown distribution, bad parameters, ``n_train < 1``, ``n_test < 0``,
        s of a distribution object different from ``kle.n_modes``, too few
        rows in a ``ThetaArray``, bad chunk size, compression or threads.

    Notes
    -----
    Split k (train: 0, test: 1) takes sample i from stream k of the seed
    (:meth:`Distribution.sample_indices`), so with Monte Carlo sampling the
    training set of n_train samples is a prefix of any larger one and the
    test set does not depend on n_train. A Latin hypercube split is the
    design :meth:`Distribution.sample_lhs` ``(n, seed, stream=k)``. A ``ThetaArray`` gives rows ``0..n_train-1`` to train and
    the next n_test rows to test.

    Examples
    --------
    >>> from darcyvae.kle import KLEConfig
    >>> cfg = GenerateConfig(KLEConfig(grid=17, n_modes=2), distribution="mixture4")
    >>> cfg.n_train, cfg.dist.name
    (512, 'mixture4')
    """

    kle: KLEConfig = field(default_factory=KLEConfig)
    darcy: DarcyConfig = field(default_factory=DarcyConfig)
    distribution: str | Distribution = "normal"
    dist_params: Mapping[str, Any] = field(default_factory=dict, hash=False)
    n_train: int = 512
    n_test: int = 512
    seed: int = 0
    chunk_size: int = 256
    compression: str | None = None
    compression_level: int = 4
    threads: int | None = None
    train_sampling: str = "mc"
    test_sampling: str = "mc"
    dist: Distribution = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        caller = "GenerateConfig"
        if not isinstance(self.kle, KLEConfig):
            msg = f"{caller}: kle must be a KLEConfig; got {type(self.kle).__name__}."
            raise TypeError(msg)
        if not isinstance(self.darcy, DarcyConfig):
            msg = f"{caller}: darcy must be a DarcyConfig; got {type(self.darcy).__name__}."
            raise TypeError(msg)
        s = self.kle.n_modes
        if isinstance(self.distribution, Distribution):
            if self.dist_params:
                msg = f"{caller}: dist_params must be empty with a distribution object."
                raise ValueError(msg)
            dist = self.distribution
            if dist.n_modes != s:
                msg = (
                    f"{caller}: the distribution has n_modes = {dist.n_modes} but the KLE "
                    f"has n_modes = {s}; they must match."
                )
                raise ValueError(msg)
        elif isinstance(self.distribution, str):
            dist = get_distribution(self.distribution, s, **dict(self.dist_params))
        else:
            msg = (
                f"{caller}: distribution must be a name or a Distribution; "
                f"got {type(self.distribution).__name__}."
            )
            raise TypeError(msg)
        object.__setattr__(self, "dist", dist)
        object.__setattr__(self, "dist_params", dict(self.dist_params))
        check_int(self.n_train, "n_train", caller, low=1)
        check_int(self.n_test, "n_test", caller, low=0)
        check_int(self.seed, "seed", caller, low=0)
        check_int(self.chunk_size, "chunk_size", caller, low=1)
        if self.compression is not None:
            check_choice(self.compression, "compression", caller, (*_COMPRESSIONS, None))
        check_int(self.compression_level, "compression_level", caller, low=0, high=9)
        if self.threads is not None:
            check_int(self.threads, "threads", caller, low=1)
        for split in SPLITS:
            name = f"{split}_sampling"
            check_choice(getattr(self, name), name, caller, SAMPLINGS)
            if getattr(self, name) == "lhs" and isinstance(dist, ThetaArray):
                msg = (
                    f"{caller}: {name} = 'lhs' needs a distribution with a quantile "
                    "function; user-supplied thetas (a ThetaArray) are used as given."
                )
                raise ValueError(msg)
        object.__setattr__(self, "_lhs_designs", {})
        if isinstance(dist, ThetaArray) and len(dist) < self.n_train + self.n_test:
            msg = (
                f"{caller}: the theta array has {len(dist)} rows but n_train + n_test = "
                f"{self.n_train + self.n_test}; it needs at least that many."
            )
            raise ValueError(msg)

    @property
    def grid(self) -> int:
        """Grid size N."""
        return int(self.kle.grid)

    @property
    def n_modes(self) -> int:
        """Number of KLE modes s."""
        return int(self.kle.n_modes)

    @property
    def scheme(self) -> str:
        """Darcy scheme ("fd" or "fv")."""
        return str(self.darcy.scheme)

    def n_samples(self, split: str) -> int:
        """Number of samples of ``split`` ("train" or "test")."""
        check_choice(split, "split", "GenerateConfig.n_samples", SPLITS)
        return self.n_train if split == "train" else self.n_test

    def sampling(self, split: str) -> str:
        """Sampling design of ``split``: "mc" or "lhs"."""
        check_choice(split, "split", "GenerateConfig.sampling", SPLITS)
        return self.train_sampling if split == "train" else self.test_sampling

    def _theta(self, split: str, start: int, stop: int) -> NDArray[np.float32]:
        """Thetas of samples ``start..stop-1`` of ``split``, rounded to float32."""
        stream = SPLITS.index(split)
        if self.sampling(split) == "lhs":
            designs = self._lhs_designs  # type: ignore[attr-defined]
            if split not in designs:
                n = self.n_samples(split)
                designs[split] = self.dist.sample_lhs(n, self.seed, stream=stream)
            return designs[split][start:stop].astype(np.float32)
        if isinstance(self.dist, ThetaArray):
            offset = 0 if split == "train" else self.n_train
            theta = self.dist.sample_indices(np.arange(offset + start, offset + stop))
        else:
            theta = self.dist.sample_indices(np.arange(start, stop), self.seed, stream=stream)
        return theta.astype(np.float32)


def _json(value: Any) -> str:
    def default(obj: Any) -> Any:
        if isinstance(obj, np.ndarray):
            return obj.tolist()
        if isinstance(obj, (np.floating, np.integer)):
            return obj.item()
        return str(obj)

    return json.dumps(value, sort_keys=True, default=default)


_THETA_RNG = {
    "mc": (
        f"sample i = row i of block i // {BLOCK_SIZE} drawn by "
        "PCG64(SeedSequence(seed, spawn_key=(stream, block))); rounded to float32 "
        "before the KLE"
    ),
    "lhs": (
        "Latin hypercube: coordinate k of sample i = F_k^-1((perm_k[i] + (m_ik + 0.5) / 2**32) "
        f"/ n), perm_k and m_ik drawn by PCG64(SeedSequence(seed, spawn_key=(stream, {LHS_KEY}, "
        "n, k))); rounded to float32 before the KLE"
    ),
}


def _attrs(config: GenerateConfig, basis: KLEBasis, split: str) -> dict[str, Any]:
    """Root attributes of a split's file, in the order they are written."""
    kle, darcy, dist = config.kle, config.darcy, config.dist
    stream = SPLITS.index(split)
    first = (0 if split == "train" else config.n_train) if isinstance(dist, ThetaArray) else 0
    return {
        "format": FORMAT,
        "darcyvae_version": __version__,
        "numpy_version": np.__version__,
        "split": split,
        "n_samples": config.n_samples(split),
        "grid": int(kle.grid),
        "n_modes": int(kle.n_modes),
        "kernel": str(kle.kernel),
        "length_scale": np.asarray(kle.length_scale, dtype=np.float64),
        "variance": float(kle.variance),
        "kle_variance_fraction": float(basis.variance_fraction),
        "distribution": dist.name,
        "distribution_params": _json(dist.params()),
        "sampling": config.sampling(split),
        "seed": int(config.seed),
        "stream": stream,
        "first_index": first,
        "theta_rng": _THETA_RNG[config.sampling(split)],
        "scheme": str(darcy.scheme),
        "well_width": float(darcy.well_width),
        "rate": float(darcy.rate),
        "kle_config": _json(asdict(kle)),
        "darcy_config": _json(asdict(darcy)),
    }


def _stored_attrs_json(path: Path) -> str:
    """The root attributes of an HDF5 file as canonical JSON (to compare with ``_attrs``)."""
    import h5py

    with h5py.File(path, "r") as f:
        return _json({k: (v.decode() if isinstance(v, bytes) else v) for k, v in f.attrs.items()})


def read_attrs(path: str | os.PathLike) -> dict[str, Any]:
    """The root attributes of a generated HDF5 file, JSON strings decoded.

    Parameters
    ----------
    path : path-like
        A ``train.h5`` / ``test.h5`` written by :func:`generate_dataset`.

    Returns
    -------
    dict
        Attribute name -> value (numpy scalars as Python scalars; the
        ``*_params`` and ``*_config`` JSON strings as dicts).
    """
    import h5py

    out: dict[str, Any] = {}
    with h5py.File(path, "r") as f:
        for key, value in f.attrs.items():
            if isinstance(value, bytes):
                value = value.decode()
            if isinstance(value, np.generic):
                value = value.item()
            if isinstance(value, str) and key.endswith(("_params", "_config")):
                value = json.loads(value)
            out[key] = value
    return out


# -- workers -----------------------------------------------------------------
@dataclass
class _Chunk:
    """One computed chunk: float32 arrays, the CRC of their bytes, and gzip-encoded HDF5 chunks.

    ``encoded`` is None without gzip; otherwise it holds the bytes of each
    HDF5 chunk exactly as HDF5's shuffle + deflate filters write them
    (``generative_params``: one chunk padded to ``theta_rows``;
    ``permeability`` and ``output``: one chunk per sample), so the writer
    only copies them (``write_direct_chunk``) and compression runs in
    parallel where the chunk was computed.
    """

    theta: NDArray[np.float32]
    perm: NDArray[np.float32] | None
    out: NDArray[np.float32] | None
    crc: int
    encoded: dict[str, list[bytes]] | None = None


_ENCODER: ThreadPoolExecutor | None = None


def _gzip_chunks(arr: NDArray[np.float32], level: int) -> list[bytes]:
    """HDF5 shuffle + deflate of each ``arr[i]`` (one HDF5 chunk each), in parallel threads."""
    global _ENCODER
    if _ENCODER is None:
        _ENCODER = ThreadPoolExecutor(
            max_workers=os.cpu_count() or 1, thread_name_prefix="darcyvae-gzip"
        )

    def one(i: int) -> bytes:
        # H5Z shuffle: byte k of every element, k = 0..3, then zlib (compress2) at `level`
        shuffled = np.ascontiguousarray(arr[i]).view(np.uint8).reshape(-1, 4).T.tobytes()
        return zlib.compress(shuffled, level)

    return list(_ENCODER.map(one, range(len(arr))))


def _make_chunk(
    theta: NDArray[np.float32],
    perm: NDArray[np.float32],
    out: NDArray[np.float32],
    compression: str | None,
    level: int,
    theta_rows: int,
) -> _Chunk:
    """CRC the arrays and, for gzip, encode them (dropping the arrays)."""
    crc = _crc(theta, perm, out)
    if compression != "gzip":
        return _Chunk(theta, perm, out, crc)
    padded = np.zeros((theta_rows, theta.shape[1]), np.float32)
    padded[: len(theta)] = theta  # an edge chunk is padded with the fill value, as HDF5 does
    encoded = {
        "generative_params": _gzip_chunks(padded[None], level),
        "permeability": _gzip_chunks(perm, level),
        "output": _gzip_chunks(out, level),
    }
    return _Chunk(theta, None, None, crc, encoded)


def _permeability(basis: KLEBasis, theta: NDArray[np.float32]) -> NDArray[np.float64]:
    """Stage 1: ``K = exp(G)`` of float32 thetas (float64, shape (m, N, N))."""
    return basis.permeability(theta.astype(np.float64))


def _solve(
    perm: NDArray[np.float64], darcy: DarcyConfig, theta: NDArray[np.float32], threads: int | None
) -> NDArray[np.float32]:
    """Stage 2: the float32 outputs (m, 3, N, N) of a chunk's permeability fields."""
    out = np.empty((len(perm), 3, *perm.shape[1:]), dtype=np.float32)
    solve_batch(perm, darcy, threads=threads, out=out)
    bad = ~np.isfinite(out).all(axis=(1, 2, 3))
    if bad.any():
        msg = (
            f"generate: the solve of {int(bad.sum())} sample(s) is not finite "
            f"(theta {theta[np.argmax(bad)].tolist()})."
        )
        raise FloatingPointError(msg)
    return out


def _finish(
    theta: NDArray[np.float32],
    perm: NDArray[np.float64],
    out: NDArray[np.float32],
    *encoding: Any,
) -> _Chunk:
    """Stage 3: float32 K (m, 1, N, N), the CRC and, for gzip, the encoded HDF5 chunks."""
    return _make_chunk(theta, perm.astype(np.float32)[:, None], out, *encoding)


def _solve_chunk(
    basis: KLEBasis,
    darcy: DarcyConfig,
    theta: NDArray[np.float32],
    threads: int | None,
    *encoding: Any,
) -> _Chunk:
    """The three stages of one chunk in a row (a Dask task)."""
    perm = _permeability(basis, theta)
    return _finish(theta, perm, _solve(perm, darcy, theta, threads), *encoding)


def _dask_solve_chunk(
    basis: KLEBasis, darcy: DarcyConfig, theta: NDArray[np.float32], threads: int | None, *args: Any
) -> _Chunk:
    """:func:`_solve_chunk` on a Dask worker; ``threads=None`` shares the cores among its tasks."""
    if threads is None:
        from distributed import get_worker

        threads = max(1, (os.cpu_count() or 1) // max(1, get_worker().state.nthreads))
    return _solve_chunk(basis, darcy, theta, threads, *args)


def _encoding(config: GenerateConfig, split: str) -> tuple[str | None, int, int]:
    """``(compression, level, theta_rows)`` arguments of :func:`_solve_chunk`."""
    rows = min(config.n_samples(split), config.chunk_size)
    return config.compression, config.compression_level, rows


class _Local:
    """A three-stage pipeline of single threads: KLE, solve (C++ pool), CRC/encode.

    While chunk j is solved, the KLE of chunk j+1 and the CRC of chunk j-1
    run beside it and the caller writes chunk j-2, so no core waits for the
    single-threaded stages.
    """

    def __init__(self, basis: KLEBasis, config: GenerateConfig) -> None:
        self.basis, self.config = basis, config
        self.pools = [
            ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"darcyvae-generate-{name}")
            for name in ("kle", "solve", "finish")
        ]
        self.window = 4

    def submit(self, theta: NDArray[np.float32], split: str) -> Any:
        cfg = self.config
        kle, solve, finish = self.pools
        perm = kle.submit(_permeability, self.basis, theta)
        out = solve.submit(lambda: _solve(perm.result(), cfg.darcy, theta, cfg.threads))
        return finish.submit(
            lambda: _finish(theta, perm.result(), out.result(), *_encoding(cfg, split))
        )

    def close(self) -> None:
        for pool in self.pools:
            pool.shutdown(wait=True, cancel_futures=True)


class _Dask:
    """Chunks computed on a Dask cluster; the basis is broadcast once."""

    def __init__(self, basis: KLEBasis, config: GenerateConfig, dask: Any) -> None:
        from distributed import Client

        self.own = not isinstance(dask, Client)
        self.client = Client(dask) if self.own else dask
        self.config = config
        self.basis = self.client.scatter(basis, broadcast=True, hash=False)
        self.window = max(2, 2 * sum(self.client.nthreads().values()))

    def submit(self, theta: NDArray[np.float32], split: str) -> Any:
        cfg = self.config
        return self.client.submit(
            _dask_solve_chunk,
            self.basis,
            cfg.darcy,
            theta,
            cfg.threads,
            *_encoding(cfg, split),
            pure=False,
        )

    def close(self) -> None:
        if self.own:
            self.client.close()


def _chunks(n: int, size: int) -> list[tuple[int, int]]:
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def _computed(
    backend: _Local | _Dask, config: GenerateConfig, split: str, first_chunk: int
) -> Iterator[tuple[int, _Chunk]]:
    """Yield ``(j, chunk)`` for chunks j >= first_chunk in order, computed a window ahead."""
    bounds = _chunks(config.n_samples(split), config.chunk_size)
    pending: dict[int, Any] = {}
    nxt = first_chunk
    for j in range(first_chunk, len(bounds)):
        while nxt < len(bounds) and nxt < j + backend.window:
            pending[nxt] = backend.submit(config._theta(split, *bounds[nxt]), split)
            nxt += 1
        chunk = pending.pop(j).result()
        yield j, chunk


# -- files -------------------------------------------------------------------
@dataclass
class _SplitFiles:
    final: Path
    partial: Path
    progress: Path
    rebuild: Path

    @classmethod
    def of(cls, out_dir: Path, split: str) -> _SplitFiles:
        final = out_dir / f"{split}.h5"
        return cls(
            final,
            final.with_name(final.name + ".partial"),
            final.with_name(final.name + ".progress"),
            final.with_name(final.name + ".partial.rebuild"),
        )


def _fingerprint(config: GenerateConfig, attrs: Mapping[str, Any]) -> str:
    """Hash of what fixes a file's bytes: its attributes and the write settings."""
    text = _json(
        {
            "attrs": dict(attrs),
            "chunk_size": config.chunk_size,
            "compression": config.compression,
            "compression_level": config.compression_level if config.compression == "gzip" else None,
        }
    )
    return hashlib.sha256(text.encode()).hexdigest()


def _read_progress(path: Path) -> tuple[dict[str, Any] | None, list[int]]:
    """Header and per-chunk CRCs of a progress log (a torn last line is ignored)."""
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
            break
        crcs.append(int(parts[1]))
    return header, crcs


def _write_progress(path: Path, header: Mapping[str, Any], crcs: list[int]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    lines = [_json(header)] + [f"{k} {c}" for k, c in enumerate(crcs)]
    tmp.write_text("\n".join(lines) + "\n")
    os.replace(tmp, path)


def _crc(*arrays: NDArray) -> int:
    crc = 0
    for a in arrays:
        crc = zlib.crc32(np.ascontiguousarray(a).data, crc)
    return crc


def _create(path: Path, config: GenerateConfig, attrs: Mapping[str, Any]) -> Any:
    """A new HDF5 file with the three datasets and the attributes (no timestamps)."""
    import h5py

    n, s, grid = config.n_samples(attrs["split"]), config.n_modes, config.grid
    filters: dict[str, Any] = {}
    if config.compression is not None:
        filters = {"compression": config.compression, "shuffle": True}
        if config.compression == "gzip":
            filters["compression_opts"] = config.compression_level
    # every chunk is written whole, once: no chunk cache (one copy less per sample)
    f = h5py.File(path, "w", track_order=True, rdcc_nbytes=0)
    try:
        for key, value in attrs.items():
            f.attrs[key] = value
        common = {"dtype": np.float32, "track_times": False, **filters}
        f.create_dataset(
            "generative_params", shape=(n, s), chunks=(min(n, config.chunk_size), s), **common
        )
        f.create_dataset(
            "permeability", shape=(n, 1, grid, grid), chunks=(1, 1, grid, grid), **common
        )
        f.create_dataset("output", shape=(n, 3, grid, grid), chunks=(1, 3, grid, grid), **common)
        f.flush()
    except BaseException:
        f.close()
        raise
    return f


def _write_chunk(f: Any, a: int, chunk: _Chunk) -> None:
    """Write a chunk at sample ``a`` (normal writes, or direct copies of gzip chunks), flush."""
    m = len(chunk.theta)
    if chunk.encoded is None:
        f["generative_params"][a : a + m] = chunk.theta
        f["permeability"][a : a + m] = chunk.perm
        f["output"][a : a + m] = chunk.out
    else:
        f["generative_params"].id.write_direct_chunk((a, 0), chunk.encoded["generative_params"][0])
        for key in ("permeability", "output"):
            dset = f[key].id
            for i, data in enumerate(chunk.encoded[key]):
                dset.write_direct_chunk((a + i, 0, 0, 0), data)
    f.flush()


def _replay(
    files: _SplitFiles, config: GenerateConfig, attrs: Mapping[str, Any], crcs: list[int]
) -> tuple[Any, list[int]]:
    """Rebuild the partial from its verified chunks, by the same writes as a fresh run.

    Returns the open new partial and the CRCs of the chunks it holds. A chunk
    whose CRC does not match (or that cannot be read) ends the replay: it
    and the rest are computed again.
    """
    import h5py

    bounds = _chunks(config.n_samples(attrs["split"]), config.chunk_size)
    files.rebuild.unlink(missing_ok=True)
    f = _create(files.rebuild, config, attrs)
    kept: list[int] = []
    try:
        with h5py.File(files.partial, "r") as old:
            for j, crc in enumerate(crcs[: len(bounds)]):
                a, b = bounds[j]
                theta = old["generative_params"][a:b]
                perm = old["permeability"][a:b]
                out = old["output"][a:b]
                chunk = _make_chunk(theta, perm, out, *_encoding(config, attrs["split"]))
                if chunk.crc != crc:
                    logger.warning(
                        "%s: chunk %d does not match its CRC; recomputing", files.partial, j
                    )
                    break
                _write_chunk(f, a, chunk)
                kept.append(crc)
    except (OSError, KeyError, ValueError) as exc:
        logger.warning(
            "%s: unreadable after %d chunks (%s); recomputing the rest",
            files.partial,
            len(kept),
            exc,
        )
    except BaseException:
        f.close()
        files.rebuild.unlink(missing_ok=True)
        raise
    os.replace(files.rebuild, files.partial)
    return f, kept


def _generate_split(
    split: str,
    files: _SplitFiles,
    config: GenerateConfig,
    basis: KLEBasis,
    backend: _Local | _Dask,
    *,
    resume: bool,
    progress: bool,
    callback: Callable[[str, int, int], None] | None,
) -> None:
    from tqdm import tqdm

    attrs = _attrs(config, basis, split)
    header = {
        "format": _PROGRESS_FORMAT,
        "fingerprint": _fingerprint(config, attrs),
        "n_samples": config.n_samples(split),
        "chunk_size": config.chunk_size,
    }
    n = config.n_samples(split)
    bounds = _chunks(n, config.chunk_size)
    old_header, crcs = _read_progress(files.progress) if resume else (None, [])
    if resume and files.partial.exists() and old_header == header and crcs:
        f, crcs = _replay(files, config, attrs, crcs)
        logger.info("%s: resuming after %d of %d chunks", files.partial, len(crcs), len(bounds))
    else:
        files.progress.unlink(missing_ok=True)
        f = _create(files.partial, config, attrs)
        crcs = []
    _write_progress(files.progress, header, crcs)
    done = bounds[len(crcs) - 1][1] if crcs else 0
    bar = tqdm(total=n, initial=done, unit=" samples", desc=split, disable=not progress, leave=True)
    try:
        with files.progress.open("a") as log:
            for j, chunk in _computed(backend, config, split, len(crcs)):
                a, b = bounds[j]
                _write_chunk(f, a, chunk)
                log.write(f"{j} {chunk.crc}\n")
                log.flush()
                bar.update(b - a)
                if callback is not None:
                    callback(split, b, n)
    except BaseException:
        logger.warning("%s: interrupted; resume=True (--resume) continues it", files.partial)
        raise
    finally:
        bar.close()
        f.close()
    os.replace(files.partial, files.final)
    files.progress.unlink(missing_ok=True)


def _check_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and check that a file can be written there."""
    if out_dir.exists() and not out_dir.is_dir():
        msg = f"generate_dataset: out_dir {str(out_dir)!r} exists and is not a folder."
        raise NotADirectoryError(msg)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".darcyvae-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        msg = f"generate_dataset: cannot write to out_dir {str(out_dir)!r}: {exc.strerror or exc}."
        raise type(exc)(msg) from exc


def generate_dataset(
    config: GenerateConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    dask_address: Any = None,
    progress: bool = True,
    callback: Callable[[str, int, int], None] | None = None,
) -> dict[str, Path]:
    """Generate ``train.h5`` and ``test.h5`` in ``out_dir``.

    Parameters
    ----------
    config : GenerateConfig
        What to generate.
    out_dir : path-like
        Output folder (created if missing).
    resume : bool, default=False
        Continue an interrupted run from its ``<split>.h5.partial`` (its
        completed chunks are checked against their CRCs and copied by the
        same writes as a fresh run, so the result is byte-identical); a
        finished split whose attributes match is kept.
    overwrite : bool, default=False
        Replace existing outputs and partials. Without it (and without
        ``resume``) an existing file is an error.
    dask_address : str or distributed.Client or None, default=None
        Scheduler address or client: chunks are solved on the cluster and
        written here in index order. None: the local C++ thread pool.
    progress : bool, default=True
        Show a tqdm bar (samples/s) per split.
    callback : callable, optional
        ``callback(split, samples_done, n_samples)`` after each chunk is
        written and recorded; an exception raised from it interrupts the
        run like Ctrl-C (the partial is kept for ``resume``).

    Returns
    -------
    dict
        ``{"train": Path, "test": Path}`` (no "test" when ``n_test = 0``).

    Raises
    ------
    FileExistsError
        An output or a partial exists and neither ``overwrite`` nor
        ``resume`` is set.
    ValueError
        ``resume`` with ``overwrite``; a partial or output made with other
        settings (under ``resume``).
    TypeError
        ``config`` is not a GenerateConfig.
    OSError
        ``out_dir`` is not a folder or cannot be written.

    Notes
    -----
    Each split streams chunks of ``chunk_size`` samples: thetas (float32,
    from stream 0 for train and 1 for test), ``K = exp(G)`` by the KLE,
    and the solve (SPEC 1) into ``<split>.h5.partial``, flushed after each
    chunk, whose CRC is then appended to ``<split>.h5.progress``. The
    partial is renamed to ``<split>.h5`` when complete. Memory is bounded
    by a few chunks whatever n is. HDF5 chunks hold one sample of
    ``permeability`` and ``output`` and ``chunk_size`` rows of
    ``generative_params``; no timestamps are stored.

    The thetas are drawn in this process and rounded to float32 before the
    KLE, so the stored theta reproduces the stored output exactly. Locally
    three single-thread stages overlap (the KLE of chunk j+1, the solve of
    chunk j on the C++ thread pool, the CRC / gzip encoding of chunk j-1)
    while this thread writes chunk j-2, so memory holds about five chunks;
    with Dask the basis is broadcast once, chunks are solved on the workers
    (a window of twice their threads in flight) and written here in index
    order. Either way the file bytes are the same. The per-chunk KLE
    product is small: with OpenBLAS, ``OPENBLAS_NUM_THREADS=1`` (set by
    ``darcyvae generate``) saves its spinning worker threads about 30% of
    the CPU time per sample.

    Examples
    --------
    >>> import tempfile
    >>> from darcyvae.kle import KLEConfig
    >>> cfg = GenerateConfig(KLEConfig(grid=9, n_modes=2), n_train=4, n_test=2)
    >>> paths = generate_dataset(cfg, tempfile.mkdtemp(), progress=False)
    >>> sorted(paths)
    ['test', 'train']
    """
    caller = "generate_dataset"
    if not isinstance(config, GenerateConfig):
        msg = f"{caller}: config must be a GenerateConfig; got {type(config).__name__}."
        raise TypeError(msg)
    if resume and overwrite:
        msg = f"{caller}: resume and overwrite are mutually exclusive."
        raise ValueError(msg)
    if callback is not None and not callable(callback):
        msg = f"{caller}: callback must be callable; got {type(callback).__name__}."
        raise TypeError(msg)
    out_dir = Path(out_dir)
    splits = [s for s in SPLITS if config.n_samples(s) > 0]
    files = {s: _SplitFiles.of(out_dir, s) for s in splits}
    for s in splits:
        fs = files[s]
        if overwrite or resume:
            continue
        for path, what in ((fs.final, "output"), (fs.partial, "partial output")):
            if path.exists():
                hint = "resume=True (--resume) continues it, " if path == fs.partial else ""
                msg = (
                    f"{caller}: {what} {str(path)!r} exists; {hint}"
                    "overwrite=True (--overwrite) replaces it."
                )
                raise FileExistsError(msg)

    basis = kle_basis(config.kle)
    todo = []
    for s in splits:
        fs = files[s]
        if resume and fs.final.exists():
            if _stored_attrs_json(fs.final) != _json(_attrs(config, basis, s)):
                msg = (
                    f"{caller}: {str(fs.final)!r} was made with other settings; "
                    "overwrite=True (--overwrite) replaces it."
                )
                raise ValueError(msg)
            logger.info("%s: complete, kept", fs.final)
            continue
        if resume and fs.partial.exists():
            header, _ = _read_progress(fs.progress)
            attrs = _attrs(config, basis, s)
            if header is not None and header.get("fingerprint") != _fingerprint(config, attrs):
                msg = (
                    f"{caller}: partial {str(fs.partial)!r} was made with other settings; "
                    "overwrite=True (--overwrite) starts it again."
                )
                raise ValueError(msg)
        todo.append(s)
    if not todo:
        return {s: files[s].final for s in splits}
    _check_out_dir(out_dir)
    if overwrite:
        for s in todo:
            for path in (files[s].partial, files[s].progress, files[s].rebuild):
                path.unlink(missing_ok=True)

    backend: _Local | _Dask = (
        _Local(basis, config) if dask_address is None else _Dask(basis, config, dask_address)
    )
    start = time.perf_counter()
    try:
        for s in todo:
            _generate_split(
                s,
                files[s],
                config,
                basis,
                backend,
                resume=resume,
                progress=progress,
                callback=callback,
            )
    finally:
        backend.close()
    logger.info(
        "wrote %s in %.1f s",
        ", ".join(str(files[s].final) for s in todo),
        time.perf_counter() - start,
    )
    return {s: files[s].final for s in splits}
