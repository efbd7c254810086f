"""Bulk generation of Darcy flow datasets to HDF5 (docs/data.md §1c, 2, 3).

``generate_dataset(config, out_dir)`` draws thetas from p(theta), turns them
into permeability fields with the KLE and solves the Darcy problem for each,
streaming blocks of samples into ``train.h5`` and ``test.h5`` in the layout
the authors' h5py loader reads (:mod:`darcyvae._hdf5_layout`): datasets
``generative_params`` (n, s), ``permeability`` (n, 1, N, N) and ``output``
(n, 3, N, N), float32, plus root attributes recording how the file was made
and a checksum of its data.

A run is planned, checked, then run:

1. plan (:mod:`darcyvae._generate_plan`): the KLE basis, each split's
   attributes, thetas and files; every setting and every theta is validated
   here (e.g. a log-permeability too large for float32), before any file is
   created;
2. check (:func:`_check_outputs`), holding the output folder's lock
   (:func:`darcyvae._lock.folder_lock`) for the rest of the run: existing
   outputs are refused, replaced (``overwrite``) or verified against their
   checksums and kept (``resume``);
3. run (:func:`_write_split`): blocks computed by a pipeline
   (:mod:`darcyvae._pipeline`, local threads or Dask) are written in index
   order to ``<split>.h5.partial`` and logged with their CRCs
   (:mod:`darcyvae._resume_log`); the complete partial gets its checksum and
   is renamed to ``<split>.h5``.

Sample ``i`` of a Monte Carlo split is a pure function of the configuration
and ``i`` (a Latin hypercube split: of the configuration), so a run can be
cut into blocks anywhere: on the local C++ thread pool, on a Dask cluster,
or across an interruption and a resume. The files are byte-identical in all
three cases.

Public names
------------
GenerateConfig
    Everything that defines a dataset (frozen dataclass).
generate_dataset
    Write ``train.h5`` and ``test.h5`` (resumable, local or Dask).
read_attrs
    The attributes of a generated file as a dict (JSON values decoded).
verify_dataset
    Check a generated file against its recorded data checksum.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._checks import check_choice, check_int, check_threads
from ._generate_plan import RunPlan, SplitPlan, plan_run
from ._hdf5_layout import (
    CHECKSUM_ATTR,
    COMPRESSIONS,
    FORMAT,
    SPLITS,
    Chunk,
    decode_attrs,
    open_h5,
    read_attrs,
    to_json,
    verify_checksum,
    write_checksum,
    write_chunk,
)
from ._io import write_error
from ._lock import folder_lock
from ._pipeline import DaskPipeline, Encoding, LocalPipeline, computed_blocks, require_distributed
from ._resume_log import SplitFiles, read_log, replay_partial, start_log
from .darcy import DarcyConfig
from .distributions import (
    SAMPLINGS,
    Distribution,
    ThetaArray,
    get_distribution,
)
from .errors import FolderLockedError, IntegrityError
from .kle import KLEConfig

__all__ = [
    "FORMAT",
    "SPLITS",
    "GenerateConfig",
    "bytes_per_sample",
    "check_free_space",
    "generate_dataset",
    "read_attrs",
    "verify_dataset",
]

logger = logging.getLogger(__name__)

_MIN_GRID = 3
"""The Darcy solver needs N >= 3."""

_MAX_SEED = 2**63 - 1
"""Seeds are stored as 64-bit HDF5 attributes."""


@dataclass(frozen=True)
class GenerateConfig:
    """Everything that defines a generated dataset.

    Parameters
    ----------
    kle : KLEConfig, default=KLEConfig()
        Grid N, number of modes s, kernel, length scale and variance (docs/data.md §2).
    darcy : DarcyConfig, default=DarcyConfig()
        Scheme ("fd" or "fv"), well width and rate (docs/data.md §1).
    distribution : str or Distribution, default="normal"
        A name of :func:`darcyvae.distributions.list_distributions` (built
        with ``dist_params``) or a distribution object, e.g.
        ``ThetaArray(theta)`` for user-supplied thetas.
    dist_params : mapping, default={}
        Parameters of a named distribution (``mean``, ``sd``, ``loc``,
        ``scale``, ``low``, ``high``).
    n_train, n_test : int, default=512
        Samples per split (docs/data.md §3: 512 each). ``n_train >= 1``; ``n_test = 0``
        writes no test file.
    seed : int, default=0
        Seed of p(theta), 0 <= seed < 2**63.
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
        split's n samples (a pure function of (seed, split, n); docs/data.md §3, the
        authors' training sets). Recorded in the ``sampling`` attribute.

    Raises
    ------
    ValueError
        Unknown distribution, bad parameters, a grid the solver cannot take
        (N < 3), ``n_train < 1``, ``n_test < 0``, s of a distribution object
        different from ``kle.n_modes``, too few rows in a ``ThetaArray``,
        ``"lhs"`` for a ``ThetaArray``, a seed out of range, bad chunk size,
        compression, threads or sampling.
    TypeError
        ``kle``, ``darcy`` or ``distribution`` of the wrong type.

    Notes
    -----
    Split k (train: 0, test: 1) takes sample i from stream k of the seed
    (:meth:`Distribution.sample_indices`), so with Monte Carlo sampling the
    training set of n_train samples is a prefix of any larger one and the
    test set does not depend on n_train. A Latin hypercube split is the
    design :meth:`Distribution.sample_lhs` ``(n, seed, stream=k)``. A
    ``ThetaArray`` gives rows ``0..n_train-1`` to train and the next n_test
    rows to test.

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
        if self.kle.grid < _MIN_GRID:
            msg = f"{caller}: the Darcy solver needs grid N >= {_MIN_GRID}; got {self.kle.grid}."
            raise ValueError(msg)
        if not isinstance(self.dist_params, Mapping):
            msg = (
                f"{caller}: dist_params must be a mapping of parameter names to values; "
                f"got {type(self.dist_params).__name__}."
            )
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
        check_int(self.seed, "seed", caller, low=0, high=_MAX_SEED)
        check_int(self.chunk_size, "chunk_size", caller, low=1)
        if self.compression is not None:
            check_choice(self.compression, "compression", caller, COMPRESSIONS)
        check_int(self.compression_level, "compression_level", caller, low=0, high=9)
        if self.threads is not None:  # reduced to darcy.MAX_THREADS before it reaches C++
            object.__setattr__(self, "threads", check_threads(self.threads, caller))
        for split in SPLITS:
            name = f"{split}_sampling"
            check_choice(getattr(self, name), name, caller, SAMPLINGS)
            if getattr(self, name) == "lhs" and isinstance(dist, ThetaArray):
                msg = (
                    f"{caller}: {name} = 'lhs' needs a distribution with a quantile "
                    "function; user-supplied thetas (a ThetaArray) are used as given."
                )
                raise ValueError(msg)
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

    @property
    def write_settings(self) -> dict[str, Any]:
        """What fixes a file's bytes besides its attributes: block size and filter."""
        return {
            "chunk_size": self.chunk_size,
            "compression": self.compression,
            "compression_level": self.compression_level if self.compression == "gzip" else None,
        }


# -- check ---------------------------------------------------------------------------------
def _prepare_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` and check that a file can be written there."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        probe = out_dir / f".darcyvae-write-test-{os.getpid()}"
        probe.touch()
        probe.unlink()
    except OSError as exc:
        msg = f"generate_dataset: cannot write to out_dir {str(out_dir)!r}: {exc.strerror or exc}."
        raise type(exc)(msg) from exc


def _stats_cache(files: SplitFiles) -> Path:
    """The channel statistics cached beside a file (``darcyvae.dataset.channel_stats``)."""
    return files.final.with_name(files.final.name + ".stats.json")


def _check_outputs(plan: RunPlan, *, resume: bool, overwrite: bool) -> list[SplitPlan]:
    """Decide what to do with existing outputs (under the folder lock); returns the splits to write.

    Without ``resume`` or ``overwrite`` any output or partial, of this run's
    splits or of a split this run does not write, is an error. ``overwrite``
    removes them all (and their cached statistics). ``resume`` keeps a
    finished split whose attributes match and whose data pass their checksum,
    and continues a partial made with the same settings.
    """
    caller = "generate_dataset"
    every = [p.files for p in plan.splits] + plan.unused
    if overwrite:
        for files in every:
            for path in (files.final, *files.in_progress, _stats_cache(files)):
                path.unlink(missing_ok=True)
        return list(plan.splits)
    if not resume:
        for files in every:
            for path, what in ((files.final, "output"), (files.partial, "partial output")):
                if path.exists():
                    hint = "resume=True (--resume) continues it, " if path == files.partial else ""
                    msg = (
                        f"{caller}: {what} {str(path)!r} exists; {hint}"
                        "overwrite=True (--overwrite) replaces it."
                    )
                    raise FileExistsError(msg)
        return list(plan.splits)
    for files in plan.unused:
        if files.final.exists() or files.partial.exists():
            logger.warning(
                "%s: left as it is (this run writes no %s split)", files.final, files.final.stem
            )
    todo = []
    for split in plan.splits:
        files = split.files
        if files.final.exists():
            _check_finished(files.final, split.attrs)
            logger.info("%s: complete and verified, kept", files.final)
            continue
        header, _ = read_log(files.progress)
        if files.partial.exists() and header is not None and header != split.header:
            msg = (
                f"{caller}: partial {str(files.partial)!r} was made with other settings; "
                "overwrite=True (--overwrite) starts it again."
            )
            raise ValueError(msg)
        todo.append(split)
    return todo


def _check_finished(path: Path, attrs: Mapping[str, Any]) -> None:
    """A finished file kept by a resume: same attributes, data matching their checksum."""
    caller = "generate_dataset"
    try:
        with open_h5(path, "r", caller=caller) as f:
            stored = decode_attrs(f.attrs)
    except FolderLockedError:
        raise
    except OSError as exc:
        msg = (
            f"{caller}: {str(path)!r} is damaged ({exc}); overwrite=True (--overwrite) "
            "regenerates it."
        )
        raise IntegrityError(msg) from exc
    stored.pop(CHECKSUM_ATTR, None)
    if to_json(stored) != to_json(decode_attrs(attrs)):
        msg = (
            f"{caller}: {str(path)!r} was made with other settings; "
            "overwrite=True (--overwrite) replaces it."
        )
        raise ValueError(msg)
    verify_checksum(path, caller)


# -- run -----------------------------------------------------------------------------------
def _write_split(
    plan: RunPlan,
    split: SplitPlan,
    backend: LocalPipeline | DaskPipeline,
    *,
    resume: bool,
    progress: bool,
    callback: Callable[[str, int, int], None] | None,
) -> None:
    """Compute and write one split into its partial, logging each block; then rename it."""
    from tqdm import tqdm

    files, bounds, n = split.files, split.bounds, split.n_samples
    f = None
    try:
        f, crcs = _open_partial(plan, split, resume=resume)
        done = bounds[len(crcs) - 1][1] if crcs else 0
        bar = tqdm(total=n, initial=done, unit=" samples", desc=split.split, disable=not progress)
        with bar, files.progress.open("a") as log:
            blocks = computed_blocks(backend, bounds, len(crcs), split.thetas, split.encoding)
            for j, chunk in blocks:
                a, b = bounds[j]
                write_chunk(f, a, chunk)
                log.write(f"{j} {chunk.crc}\n")
                log.flush()
                crcs.append(chunk.crc)
                bar.update(b - a)
                if callback is not None:
                    callback(split.split, b, n)
        write_checksum(f, crcs, plan.config.chunk_size)
        f, complete = None, f
        complete.close()
    except BaseException as exc:
        if f is not None:
            with contextlib.suppress(Exception):  # the file may be unusable; the log is not
                f.close()
        if _is_write_error(exc):
            raise _write_error(files.partial, exc) from exc
        logger.warning("%s: interrupted; resume=True (--resume) continues it", files.partial)
        raise
    files.partial.replace(files.final)
    files.progress.unlink(missing_ok=True)


def _open_partial(plan: RunPlan, split: SplitPlan, *, resume: bool) -> tuple[Any, list[int]]:
    """The open partial file and the CRCs of the blocks it holds (a replay, or a new file)."""
    files = split.files
    old_header, crcs = read_log(files.progress) if resume else (None, [])
    if resume and files.partial.exists() and old_header == split.header and crcs:
        f, crcs = replay_partial(
            files,
            split.bounds,
            crcs,
            create=lambda path: plan.create(split, path),
            encode=_encoder(split.encoding),
        )
        logger.info(
            "%s: resuming after %d of %d blocks", files.partial, len(crcs), len(split.bounds)
        )
    else:
        files.progress.unlink(missing_ok=True)
        f, crcs = plan.create(split, files.partial), []
    try:
        start_log(files.progress, split.header, crcs)
    except BaseException:
        f.close()
        raise
    return f, crcs


def _encoder(encoding: Encoding) -> Callable[..., Chunk]:
    """``encode(theta, perm, out)`` for a replay, with a thread pool of its own for gzip."""

    def encode(theta: Any, perm: Any, out: Any) -> Chunk:
        if encoding.compression != "gzip":
            return encoding.encode(theta, perm, out, None)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return encoding.encode(theta, perm, out, pool)

    return encode


def _is_write_error(exc: BaseException) -> bool:
    """An I/O failure: an OSError, or h5py's RuntimeError carrying a C errno (e.g. on close)."""
    if isinstance(exc, FolderLockedError):
        return False
    return isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "errno =" in str(exc))


def _write_error(partial: Path, exc: BaseException) -> OSError:
    """A clear OSError for a failed write (disk full, quota, file size limit, I/O error)."""
    return write_error(
        "generate",
        partial,
        exc,
        "The partial file and its log are kept",
        "run the same command with resume=True (--resume) to continue",
    )


def bytes_per_sample(config: GenerateConfig) -> int:
    """Bytes of one sample in a file, uncompressed: float32 theta (s), permeability
    (N x N) and output (3 x N x N)."""
    return 4 * (config.n_modes + 4 * config.grid**2)


def _size(n: int) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:,.1f} {unit}"
    return f"{n} bytes"


def check_free_space(
    config: GenerateConfig, out_dir: str | os.PathLike, *, reuse: bool = False
) -> int:
    """Refuse a run whose files would not fit on the disk of ``out_dir``.

    The estimate is the files' uncompressed size (``bytes_per_sample`` times the
    samples of both splits, plus 1% and 1 MB for HDF5's own structures), computed
    from the configuration alone: nothing is allocated and no block list is built,
    so ``--n-train 10000000000`` fails at once instead of after minutes of planning
    and a disk filled to the last byte. With ``reuse`` (resume or overwrite) the
    outputs already in ``out_dir`` count as free. A file system that reports no
    size at all (total 0) is not judged. Returns the estimate in bytes. The
    guarantee: docs/safety.md, Generating data, "Free space first".

    Raises
    ------
    OSError
        (errno ENOSPC) Too little free space, naming what is needed and what is
        free, and ``space_check=False`` (``--no-space-check``) for storage whose
        free space the system does not report (e.g. a remote mount).
    """
    out_dir = Path(out_dir)
    n = config.n_train + config.n_test
    per = bytes_per_sample(config)
    needed = n * per
    needed += needed // 100 + 2**20
    probe = out_dir.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    usage = shutil.disk_usage(probe)
    if usage.total == 0:  # a file system that reports no size (e.g. a pseudo or remote one)
        return needed
    free = usage.free
    if reuse and out_dir.is_dir():
        for split in SPLITS:
            files = SplitFiles.of(out_dir, split)
            for path in (files.final, files.partial):
                if path.is_file():
                    free += path.stat().st_size
    if needed > free:
        packed = " (compression may need less)" if config.compression else ""
        msg = (
            f"generate_dataset: the dataset needs about {_size(needed)} "
            f"({config.n_train:,} + {config.n_test:,} samples of {_size(per)} at grid "
            f"{config.grid}, uncompressed{packed}) but the disk of {str(probe)!r} has "
            f"{_size(free)} free; free some space, choose another out_dir, or pass "
            "space_check=False (--no-space-check) if that disk does not report its free "
            "space (e.g. a remote mount)."
        )
        raise OSError(errno.ENOSPC, msg)
    return needed


def _check_arguments(
    config: Any, resume: Any, overwrite: Any, callback: Any, out_dir: Path, dask_address: Any
) -> None:
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
    if out_dir.exists() and not out_dir.is_dir():
        msg = f"{caller}: out_dir {str(out_dir)!r} exists and is not a folder."
        raise NotADirectoryError(msg)
    if dask_address is not None:
        require_distributed()


def generate_dataset(
    config: GenerateConfig,
    out_dir: str | os.PathLike,
    *,
    resume: bool = False,
    overwrite: bool = False,
    dask_address: Any = None,
    progress: bool = True,
    callback: Callable[[str, int, int], None] | None = None,
    space_check: bool = True,
) -> dict[str, Path]:
    """Generate ``train.h5`` and ``test.h5`` in ``out_dir``.

    Parameters
    ----------
    config : GenerateConfig
        What to generate.
    out_dir : path-like
        Output folder (created if missing). It is locked for the whole run:
        a second run into the same folder fails at once with
        :class:`~darcyvae.errors.FolderLockedError`, naming this process.
    resume : bool, default=False
        Continue an interrupted run from its ``<split>.h5.partial`` (its
        logged blocks are checked against their CRCs and copied by the same
        writes as a fresh run, so the result is byte-identical). A finished
        split is kept if its attributes match and its data pass their
        recorded checksum; otherwise it is an error (never silently kept).
    overwrite : bool, default=False
        Remove every existing output, partial and cached statistics of both
        splits first (also of a split this run does not write, e.g. the old
        ``test.h5`` when ``n_test = 0``). Without it (and without
        ``resume``) any existing output is an error.
    dask_address : str or distributed.Client or None, default=None
        Scheduler address or client: blocks are solved on the cluster and
        written here in index order. None: the local C++ thread pool.
    progress : bool, default=True
        Show a tqdm bar (samples/s) per split.
    callback : callable, optional
        ``callback(split, samples_done, n_samples)`` after each block is
        written and logged; an exception raised from it interrupts the run
        like Ctrl-C (the partial is kept for ``resume``).
    space_check : bool, default=True
        Before anything else (no file, no plan, no thetas), refuse a run
        whose files would not fit in the free space of ``out_dir``'s disk
        (``check_free_space``: the uncompressed size). False skips it, for
        storage that does not report its free space (e.g. a remote mount).

    Returns
    -------
    dict
        ``{"train": Path, "test": Path}`` (no "test" when ``n_test = 0``).

    Raises
    ------
    FileExistsError
        An output or a partial exists and neither ``overwrite`` nor
        ``resume`` is set.
    FolderLockedError
        Another process is generating into ``out_dir`` (or holds one of its
        HDF5 files open).
    IntegrityError
        Under ``resume``: a finished split is damaged (truncated, or its
        data do not match the recorded checksum); ``overwrite`` regenerates.
    ValueError
        Settings or thetas the run cannot write (e.g. a log-permeability
        beyond the float32 range of K), found before any file is created;
        ``resume`` with ``overwrite``; under ``resume``, an output or
        partial made with other settings.
    TypeError
        ``config`` is not a GenerateConfig, ``callback`` not callable.
    darcyvae.errors.MissingDependencyError
        ``dask_address`` without the optional package ``distributed`` (an
        ``ImportError``).
    OSError
        ``out_dir`` is not a folder or cannot be written; the files would not
        fit on its disk (``space_check``); a write failed (e.g. the disk is
        full): the message says so, and the partial file and its log are
        kept for ``resume``.

    Notes
    -----
    Blocks of ``chunk_size`` samples stream through three stages (KLE and
    ``exp``, the solve, CRC and encoding; :mod:`darcyvae._pipeline`), so
    memory is bounded by a few blocks whatever n is (a Latin hypercube split
    also holds its n x s thetas). The thetas are rounded to float32 before
    the KLE, so the stored theta reproduces the stored output exactly. With
    OpenBLAS, ``OPENBLAS_NUM_THREADS=1`` (set by ``darcyvae generate``)
    saves its spinning worker threads about 30% of the CPU time per sample.

    Examples
    --------
    >>> import tempfile
    >>> from darcyvae.kle import KLEConfig
    >>> cfg = GenerateConfig(KLEConfig(grid=9, n_modes=2), n_train=4, n_test=2)
    >>> paths = generate_dataset(cfg, tempfile.mkdtemp(), progress=False)
    >>> sorted(paths)
    ['test', 'train']
    """
    out_dir = Path(out_dir)
    _check_arguments(config, resume, overwrite, callback, out_dir, dask_address)
    if space_check:  # before the plan: it builds block lists and checks every theta
        check_free_space(config, out_dir, reuse=resume or overwrite)
    plan = plan_run(config, out_dir)
    _prepare_out_dir(out_dir)
    with folder_lock(out_dir, "darcyvae generate"):
        todo = _check_outputs(plan, resume=resume, overwrite=overwrite)
        if not todo:
            return plan.paths
        start = time.perf_counter()
        backend: LocalPipeline | DaskPipeline
        if dask_address is None:
            backend = LocalPipeline(plan.basis, config.darcy, config.threads, config.compression)
        else:
            backend = DaskPipeline(plan.basis, config.darcy, config.threads, dask_address)
        with backend:
            for split in todo:
                _write_split(
                    plan, split, backend, resume=resume, progress=progress, callback=callback
                )
        logger.info(
            "wrote %s in %.1f s",
            ", ".join(str(s.files.final) for s in todo),
            time.perf_counter() - start,
        )
    return plan.paths


def verify_dataset(path: str | os.PathLike) -> None:
    """Check a generated file's data against the checksum recorded when it was written.

    Parameters
    ----------
    path : path-like
        A ``train.h5`` / ``test.h5`` written by :func:`generate_dataset`.

    Raises
    ------
    IntegrityError
        The file is damaged (truncated, a dataset missing), has no recorded
        checksum, or its data do not match it.
    """
    verify_checksum(path, "verify_dataset")
