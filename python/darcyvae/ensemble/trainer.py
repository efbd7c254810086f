"""``train_ensemble``: K seeds of one configuration trained at once.

Each member is the single run ``train(config.replace(seed=s), ...)`` would
make: the same initialisation, batch order, reparameterisation noise, beta
schedule and Adam arithmetic, computed together by the one engine
(``darcyvae.ensemble.engine``). This module splits the seeds into blocks,
runs them here or on dask workers, restarts over-regularised members (the
one restart policy: ``train_with_restarts`` is this with one seed) and
writes ``ensemble.json``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import torch

from .._checks import check_choice
from .._device import resolve_device
from .._io import atomic_write_text, is_write_failure
from .._lock import folder_lock
from .._run import check_out_folder, load_datasets, write_failure
from ..checkpoint import CHECKPOINT_NAME, RESTART_DIR, clean_stale_tmp
from ..config import TrainConfig
from ..dataset import DarcyDataset
from ..errors import EnsembleMemoryError, MissingDependencyError
from .engine import ENSEMBLE_CHECKPOINT, BlockSpec, EngineOptions, train_block
from .results import ENSEMBLE_SUMMARY, EnsembleResult, RunResult, member_dir
from .seeds import check_seeds, restart_seed, split_blocks

__all__ = ["PRECISIONS", "started_blocks", "train_ensemble"]

PRECISIONS = ("float32", "bfloat16")
"""Arithmetic of the batched network (``train_ensemble(precision=...)``)."""

log = logging.getLogger(__name__)


# --------------------------------------------------------------------------- public entry


def train_ensemble(
    config: TrainConfig,
    seeds: list[int] | str,
    train_data: DarcyDataset | str | os.PathLike,
    test_data: DarcyDataset | str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike,
    device: str | torch.device | None = "auto",
    resume: bool = False,
    progress: bool = True,
    seeds_per_block: int | None = None,
    dask: str | Any | None = None,
    workers: int | None = None,
    max_restarts: int | None = None,
    channels_last: bool | None = None,
    allow_data_change: bool = False,
    precision: str = "float32",
) -> EnsembleResult:
    """Train one DenseVAE per seed, all at once, as one batched model.

    Member ``s`` is the run ``train(config.replace(seed=s), ...)`` would
    produce (same initialisation, data order, reparameterisation noise,
    beta schedule and Adam arithmetic; equal to float32 rounding), written
    to ``out_dir/seed_<s>`` with the same files (``config.toml``,
    ``metrics.jsonl``, ``checkpoint.pt``, ``summary.json``), so
    ``darcyvae evaluate`` and ``train(..., resume=True)`` work on any
    member's folder.

    Parameters
    ----------
    config : TrainConfig
        Shared by all members; its seed is replaced by each member's.
    seeds : list of int or str
        Distinct seeds >= 0, or a string for ``parse_seeds`` (``"0-49"``).
    train_data, test_data : DarcyDataset, path or None
        As in ``train``.
    out_dir : path-like
        Receives one folder per member, ``ensemble.json`` and the ensemble
        checkpoint(s) ``ensemble_checkpoint*.pt``. Locked while training.
    device : str, torch.device or None, default="auto"
    resume : bool, default=False
        Continue from the ensemble checkpoint(s) exactly (bitwise on the
        CPU in deterministic mode); only the run-length settings of
        ``config`` may change.
    progress : bool, default=True
        tqdm bar over epochs (per block).
    seeds_per_block : int or None, default=None
        Train the seeds in consecutive blocks of at most this many members
        (one batched model per block: one after the other here, or one per
        dask worker); None: all in one block. Lower it when K members do not
        fit in the device's memory.
    dask : str, distributed.Client or None, default=None
        Scheduler address (or a client): each block runs as one task on a
        worker (one ensemble per worker or GPU); results land in the same
        layout. None: run here.
    workers : int or None, default=None
        Local worker processes that train the blocks at once, each at its
        share of torch's threads (``darcyvae._pool``); with ``seeds_per_block``
        None the seeds are split into this many blocks. On a 2-core CPU two
        one-thread processes do about 1.2x the work of one two-thread process
        (docs/benchmarks.md). None or 1: run here. Not with ``dask``. A resumed
        run keeps the blocks it started with, whatever ``workers`` says now.
    max_restarts : int or None, default=None
        Restart each member that ends over-regularised, alone, with a seed
        from the single run's restart stream (``restart_seed(s, r)``), up to
        this many times (None: ``config.run.max_restarts``). Restarts of
        all members run together as one more ensemble; restart ``r`` of seed
        ``s`` is written to ``out_dir/seed_<s>.restart_<r>``. Every restart
        is counted and reported (``ensemble.json``).
    channels_last : bool or None, default=None
        Activation layout of the batched model. None: the fastest measured,
        darcyvae's member convolution kernels on the CPU for K >= 8 in
        float32, else torch's grouped convolutions channels last on the CPU
        and NCHW elsewhere. True / False: torch's grouped convolutions,
        channels last / NCHW (see ``BatchedDenseVAE``).
    allow_data_change : bool, default=False
        As in ``train``: on resume, accept training data whose fingerprint
        differs from the checkpoint's.
    precision : {"float32", "bfloat16"}, default="float32"
        ``"bfloat16"`` (opt-in) runs the network under bfloat16 autocast
        (losses, optimiser and parameters stay float32): faster for large
        models on CPUs with AVX512-BF16 and on GPUs, but the members then
        no longer equal their float32 single runs.

    Returns
    -------
    EnsembleResult

    Raises
    ------
    ValueError, TypeError
        Bad seeds or block size, data that do not fit the model (before any
        training starts), a resumed config that differs.
    FileExistsError, FileNotFoundError
        A checkpoint already there without ``resume``; none with it.
    FolderLockedError
        Another process trains into ``out_dir``.
    DataMismatchError
        Resuming on different training data without ``allow_data_change``.
    EnsembleMemoryError
        The device ran out of memory; the message names K and suggests a
        smaller ``seeds_per_block``.

    Notes
    -----
    A member whose epoch loss is NaN or inf stops (status ``diverged``,
    logged with its seed and epoch; its folder keeps the log up to the last
    finite epoch and the state of the last ensemble checkpoint before it);
    the others go on. Losses accumulate on the device; the host reads all
    members' losses once per epoch. A member's ``metrics.jsonl`` records are
    the single run's; their ``seconds`` is the wall time of the ensemble's
    epoch (all members of the block).
    """
    t0 = time.perf_counter()
    seed_list, _, restarts = _check_arguments(config, seeds, seeds_per_block, max_restarts)
    workers = _check_workers(workers, dask)
    out = Path(out_dir)
    seeds_per_block = _block_size(out, seed_list, seeds_per_block, workers, resume)
    blocks = split_blocks(seed_list, seeds_per_block)
    first = [_block_checkpoint(out, 0, i, len(blocks)) for i in range(len(blocks))]
    _check_outputs(out, first, seed_list, resume)
    # Data that do not fit the model fail here, before any training starts.
    dev = resolve_device(device, "train_ensemble")
    _check_memory(config, max(len(b) for b in blocks), dev)
    train_set, test_set = load_datasets(config, train_data, test_data, dev)
    check_choice(precision, "precision", "train_ensemble", PRECISIONS)
    opts = EngineOptions(dev, resume, progress, channels_last, allow_data_change, precision)

    try:
        with folder_lock(out, "darcyvae train --seeds"):
            for name in (ENSEMBLE_SUMMARY, *(path.name for path in first)):
                clean_stale_tmp(out, name)  # left by an interrupted atomic save
            rounds = _Rounds(out, config, seeds_per_block, restarts, dask, workers)
            trials = rounds.run(seed_list, train_set, test_set, train_data, test_data, opts)
            members = [_accepted(trial, trials[trial]) for trial in seed_list]
            result = EnsembleResult(out, seed_list, members, time.perf_counter() - t0)
            _write_summary(result, config, blocks, dev, precision, restarts)
    except (OSError, RuntimeError) as exc:
        if not is_write_failure(exc):
            raise
        raise _write_failure(out, exc, first) from exc
    return result


def _write_failure(out: Path, exc: BaseException, first: list[Path]) -> OSError:
    """The one-line error of an ensemble whose write failed (a full disk, ``ulimit -f``):
    the ensemble checkpoints written so far are intact (atomic saves) and resume it."""
    saved = [p for p in first if p.is_file()]
    kept = None
    if len(saved) == 1:
        kept = f"The ensemble checkpoint {str(saved[0])!r} written before is kept"
    elif saved:
        kept = f"The {len(saved)} ensemble checkpoints written before are kept"
    return write_failure("train_ensemble", out, exc, kept, what="ensemble checkpoint")


def _check_arguments(
    config: TrainConfig, seeds: Any, seeds_per_block: int | None, max_restarts: int | None
) -> tuple[list[int], list[list[int]], int]:
    """Validated ``(seeds, blocks, restarts)``; a clear error for anything else."""
    if not isinstance(config, TrainConfig):
        msg = f"train_ensemble: config must be a TrainConfig; got {type(config).__name__}."
        raise TypeError(msg)
    seed_list = check_seeds(seeds)
    blocks = split_blocks(seed_list, seeds_per_block)
    restarts = config.run.max_restarts if max_restarts is None else max_restarts
    if isinstance(restarts, bool) or not isinstance(restarts, int) or restarts < 0:
        msg = f"train_ensemble: max_restarts must be an integer >= 0 or None; got {restarts!r}."
        raise ValueError(msg)
    return seed_list, blocks, restarts


MAX_WORKERS = 64
"""Most local worker processes of ``train_ensemble(workers=...)``."""


def _check_workers(workers: Any, dask: Any) -> int:
    if workers is None:
        return 1
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        msg = (
            f"train_ensemble: workers must be an integer in [1, {MAX_WORKERS}] or None; "
            f"got {workers!r}."
        )
        raise ValueError(msg)
    if workers > 1 and dask is not None:
        msg = (
            "train_ensemble: workers (--workers) and dask (--dask) exclude each other (local "
            "processes or a cluster); pass one."
        )
        raise ValueError(msg)
    return workers


def _block_size(
    out: Path, seeds: list[int], seeds_per_block: int | None, workers: int, resume: bool
) -> int | None:
    """The block size to train with: the one a resumed run started with (read from its
    first-round checkpoints), else ``seeds_per_block``, else ``workers`` equal blocks."""
    wanted = seeds_per_block
    if wanted is None and workers > 1:
        wanted = -(-len(seeds) // workers)
    started = _started_block_size(out, seeds) if resume else False
    if started is False:
        return wanted
    if started != wanted:
        log.info(
            "train_ensemble: resuming %s with the blocks it started with (%s seeds each)",
            out,
            "all" if started is None else started,
        )
    return started


def started_blocks(out: str | os.PathLike) -> list[list[int]] | None:
    """The seeds of each first-round block checkpoint in ``out``, in block order (one list
    for a one-block run), or None when there is none or one cannot be read."""
    from .engine import load_ensemble_checkpoint

    out = Path(out)
    one = out / ENSEMBLE_CHECKPOINT.format(block="")
    paths = [one] if one.is_file() else []
    i = 0
    while not paths and (out / ENSEMBLE_CHECKPOINT.format(block=f"_b{i}")).is_file():
        i += 1
    paths = paths or [out / ENSEMBLE_CHECKPOINT.format(block=f"_b{k}") for k in range(i)]
    try:
        return [[int(s) for s in load_ensemble_checkpoint(p)["seeds"]] for p in paths] or None
    except (OSError, ValueError, KeyError):
        return None


def _started_block_size(out: Path, seeds: list[int]) -> int | bool | None:
    """Block size of the first-round checkpoints in ``out`` (None: one block), or False
    when there are none or they hold other seeds (the caller's choice then stands)."""
    blocks = started_blocks(out)
    if blocks is None:
        return False
    if not (out / ENSEMBLE_CHECKPOINT.format(block="_b0")).is_file():
        return None if blocks[0] == seeds else False
    held = [s for b in blocks for s in b]
    return len(blocks[0]) if held == seeds[: len(held)] else False


_BYTES_PER_PARAMETER = 16
"""float32 parameter, gradient and two Adam moments: what a member holds besides activations."""


def _device_memory(dev: torch.device) -> int | None:
    """Total memory of ``dev`` in bytes (physical memory for the CPU), or None if unknown."""
    try:
        if dev.type == "cuda":
            return int(torch.cuda.get_device_properties(dev).total_memory)
        if dev.type == "cpu":
            return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError, RuntimeError):  # pragma: no cover - exotic hosts
        return None
    return None


def _check_memory(config: TrainConfig, k: int, dev: torch.device) -> None:
    """Refuse a block of ``k`` members whose parameters, gradients and Adam moments alone
    exceed the device's memory (a lower bound: activations come on top), before any
    model is built. The count comes from a model on the meta device (nothing allocated)."""
    from ..models import DenseVAE

    with torch.device("meta"):
        n_params = sum(p.numel() for p in DenseVAE(config.model).parameters())
    per_member = _BYTES_PER_PARAMETER * n_params
    total = _device_memory(dev)
    if total is None or k * per_member <= total:
        return
    fit = max(1, total // (2 * per_member))
    msg = (
        f"train_ensemble: a block of K = {k:,} members needs at least "
        f"{k * per_member / 1e9:,.1f} GB for its parameters, gradients and Adam moments alone "
        f"({per_member / 1e6:,.1f} MB per member of {n_params:,} parameters), more than the "
        f"{total / 1e9:,.1f} GB of the {dev.type} device; pass a smaller seeds_per_block "
        f"(--seeds-per-block), e.g. {fit}."
    )
    raise EnsembleMemoryError(msg)


def _check_outputs(out: Path, first: list[Path], seed_list: list[int], resume: bool) -> None:
    """Refuse to overwrite a run, or to resume one that is not there (before any file)."""
    if resume and not any(path.is_file() for path in first):
        msg = f"train_ensemble: resume asked for, but {str(first[0])!r} does not exist."
        raise FileNotFoundError(msg)
    if resume:
        return
    check_out_folder(out, "train --seeds", "train_ensemble")  # nothing foreign replaced
    for path in first:
        if path.exists():
            msg = (
                f"train_ensemble: {str(path)!r} already exists; pass resume=True (--resume) "
                "or pick another out_dir (--out)."
            )
            raise FileExistsError(msg)
    for s in seed_list:
        if (member_dir(out, s) / CHECKPOINT_NAME).exists():
            msg = (
                f"train_ensemble: {str(member_dir(out, s))!r} already holds a run; "
                "pick another out_dir (--out)."
            )
            raise FileExistsError(msg)


@dataclasses.dataclass(frozen=True)
class _Rounds:
    """Round 0 trains every seed; round r > 0 restarts, together, the trials whose
    previous attempt ended over-regularised (seeds from the restart stream)."""

    out: Path
    config: TrainConfig
    seeds_per_block: int | None
    restarts: int
    dask: Any
    workers: int = 1

    def run(
        self,
        seed_list: list[int],
        train_set: DarcyDataset,
        test_set: DarcyDataset | None,
        train_data: Any,
        test_data: Any,
        opts: EngineOptions,
    ) -> dict[int, list[RunResult]]:
        """Every attempt of every trial, in order: ``{trial seed: [RunResult, ...]}``."""
        out = self.out
        trials: dict[int, list[RunResult]] = {s: [] for s in seed_list}
        todo = [(s, s, member_dir(out, s)) for s in seed_list]  # (trial, seed, folder)
        for r in range(self.restarts + 1):
            if not todo:
                break
            blocks = split_blocks(todo, self.seeds_per_block)
            specs = [
                BlockSpec(block, _block_checkpoint(out, r, i, len(blocks)))
                for i, block in enumerate(blocks)
            ]
            if r > 0:
                opts = dataclasses.replace(
                    opts, resume=all(sp.checkpoint.is_file() for sp in specs)
                )
            results = _run_blocks(
                specs,
                self.config,
                (train_set, test_set, train_data, test_data),
                opts,
                self.dask,
                self.workers,
            )
            for (trial, _, _), res in zip(todo, results, strict=True):
                trials[trial].append(res)
            todo = [
                self._restart(trial, r)
                for (trial, _, _), res in zip(todo, results, strict=True)
                if res.over_regularized and r < self.restarts
            ]
        return trials

    def _restart(self, trial: int, r: int) -> tuple[int, int, Path]:
        """Restart r + 1 of ``trial``: (trial, seed from the restart stream, its folder)."""
        seed = restart_seed(trial, r + 1)
        log.warning(
            "train_ensemble: seed %d over-regularised; restart %d with seed %d from the "
            "restart stream",
            trial,
            r + 1,
            seed,
        )
        return trial, seed, self.out / RESTART_DIR.format(seed=trial, restart=r + 1)


def _accepted(trial: int, attempts: list[RunResult]) -> RunResult:
    """The first attempt that is not over-regularised (or the last), with the trial's record."""
    pick = next((a for a in attempts if a.status == "done" and not a.over_regularized), None)
    pick = pick if pick is not None else attempts[-1]
    record = tuple(a.to_dict() for a in attempts)
    return dataclasses.replace(pick, seed=trial, restarts=len(attempts) - 1, trials=record)


def _block_checkpoint(out: Path, round_: int, i: int, n_blocks: int) -> Path:
    tag = ("" if round_ == 0 else f"_r{round_}") + ("" if n_blocks == 1 else f"_b{i}")
    return out / ENSEMBLE_CHECKPOINT.format(block=tag)


def _write_summary(
    result: EnsembleResult,
    config: TrainConfig,
    blocks: list[list[int]],
    dev: torch.device,
    precision: str,
    max_restarts: int,
) -> None:
    members = result.members
    summary = {
        "seeds": result.seeds,
        "blocks": blocks,
        "device": str(dev),
        "precision": precision,
        "seconds": result.seconds,
        "n_members": len(members),
        "n_done": sum(m.status == "done" for m in members),
        "n_diverged": sum(m.status == "diverged" for m in members),
        "n_over_regularized": sum(m.over_regularized for m in members),
        "n_restarts": sum(m.restarts for m in members),
        "max_restarts": max_restarts,
        "config": config.to_dict(),
        "members": [m.to_dict() for m in members],
    }
    atomic_write_text(
        result.out_dir / ENSEMBLE_SUMMARY, json.dumps(summary, indent=2, sort_keys=True)
    )


# --------------------------------------------------------------------------- blocks


def _run_blocks(
    specs: list[BlockSpec],
    config: TrainConfig,
    data: tuple[DarcyDataset, DarcyDataset | None, Any, Any],
    opts: EngineOptions,
    dask: Any,
    workers: int = 1,
) -> list[RunResult]:
    """Train ``specs`` here one after the other, on ``workers`` local processes, or on
    dask; ``data`` is ``(train_set, test_set, train_data, test_data)``: the sets loaded
    here and what a worker loads them from."""
    train_set, test_set, train_data, test_data = data
    if dask is None and (workers == 1 or len(specs) == 1):
        out: list[RunResult] = []
        for spec in specs:
            out += train_block(config, spec, train_set, test_set, _block_options(opts, spec))
        return out
    args = [
        (
            config.to_dict(),
            spec,
            _portable(train_data),
            _portable(test_data),
            str(opts.device),
            _block_options(opts, spec),
        )
        for spec in specs
    ]
    if dask is None:
        from .._pool import process_pool

        with process_pool(min(workers, len(specs))) as pool:
            futures = [pool.submit(_remote_block, *a) for a in args]
            return [m for future in futures for m in future.result()]
    try:
        from distributed import Client
    except ImportError as exc:
        msg = (
            "train_ensemble: dask (--dask) needs the optional package 'distributed', which is "
            "not installed; pip install 'darcyvae[dask]'."
        )
        raise MissingDependencyError(msg) from exc
    client = dask if isinstance(dask, Client) else Client(dask)
    try:
        futures = [client.submit(_remote_block, *a, pure=False) for a in args]
        gathered = client.gather(futures)
    finally:
        if client is not dask:
            client.close()
    return [m for block in gathered for m in block]


def _block_options(opts: EngineOptions, spec: BlockSpec) -> EngineOptions:
    """A block resumes when asked to and its checkpoint exists (an interrupted run may
    not have reached the later blocks); otherwise it starts afresh."""
    return dataclasses.replace(opts, resume=opts.resume and spec.checkpoint.is_file())


def _portable(data: Any) -> Any:
    """A path travels as a string, a DarcyDataset as itself."""
    return str(data) if isinstance(data, (str, os.PathLike)) else data


def _remote_block(
    config: dict[str, Any],
    spec: BlockSpec,
    train_data: Any,
    test_data: Any,
    device: str,
    opts: EngineOptions,
) -> list[RunResult]:
    """One block on a worker process (local or dask): the data are read there, onto the
    worker's device."""
    cfg = TrainConfig.from_dict(config)
    dev = resolve_device("auto" if device.startswith("cuda") else device, "train_ensemble")
    train_set, test_set = load_datasets(cfg, train_data, test_data, dev)
    worker_opts = dataclasses.replace(opts, device=dev, progress=False)
    return train_block(cfg, spec, train_set, test_set, worker_opts)
