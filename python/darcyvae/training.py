"""Training one model: the paper's method (docs/model.md §4d-§4f) and the trial runner (§4e).

Public names
------------
train, TrainingDivergedError
    One run: checkpoints, exact resume, logs, the final metrics; a
    ``RunResult`` (``darcyvae.ensemble.RunResult``; ``TrainResult`` is its
    older name here). The run is the training engine
    (``darcyvae.ensemble.engine``) with one seed.
train_with_restarts
    A trial that restarts over-regularised runs with seeds from the restart
    stream (``darcyvae.ensemble.restart_seed``): ``train_ensemble`` with one
    seed, so one restart policy and one folder layout serve both.
run_training
    What ``darcyvae train`` calls: ``train`` or ``train_with_restarts``
    (the restart decision lives here, not in the command line).

Each name lives with its owner: the loss terms, beta rule and schedules in
``darcyvae.losses``, the configuration in ``darcyvae.config``, checkpoint
I/O in ``darcyvae.checkpoint``, whole-dataset losses, the Theorem-1 bound,
the verdicts and scores in ``darcyvae.evaluation``. Importing them from here
still works for older code, with a ``DeprecationWarning`` naming the owner.
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import warnings
from pathlib import Path
from typing import Any

import torch

from . import _run
from ._checks import check_int
from ._device import resolve_device
from ._io import is_write_failure
from ._lock import folder_lock
from .checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    CSV_LOG_NAME,
    LOG_NAME,
    SUMMARY_NAME,
    TRIALS_NAME,
    clean_stale_tmp,
    load_checkpoint,
)
from .config import TrainConfig
from .dataset import DarcyDataset
from .ensemble.engine import BlockSpec, EngineOptions, train_block
from .ensemble.results import ENSEMBLE_SUMMARY, RunResult
from .ensemble.trainer import train_ensemble
from .errors import TrainingDivergedError

__all__ = [
    "RunResult",
    "TrainResult",
    "TrainingDivergedError",
    "run_training",
    "train",
    "train_with_restarts",
]

log = logging.getLogger(__name__)

TrainResult = RunResult
"""The older name of ``RunResult`` (the same type)."""

_MOVED = {
    "BetaSchedule": "losses",
    "HierarchicalTerms": "losses",
    "LossTerms": "losses",
    "gaussian_kl": "losses",
    "gaussian_log_prob": "losses",
    "guarded_loss": "losses",
    "hierarchical_bound_terms": "losses",
    "label_loss": "losses",
    "learning_rate": "losses",
    "reconstruction_loss": "losses",
    "update_beta": "losses",
    "vae_loss": "losses",
    "LossSummary": "evaluation",
    "OverRegularization": "evaluation",
    "SplitMetrics": "evaluation",
    "detect_over_regularization": "evaluation",
    "distortion_bound": "evaluation",
    "evaluate_losses": "evaluation",
    "TrainConfig": "config",
    "list_presets": "config",
    "load_preset": "config",
    "load_checkpoint": "checkpoint",
    "load_model": "checkpoint",
    "build_model": "_run",
    "child_seeds": "_run",
    "restart_seed": "ensemble.seeds",
}
"""Names older code imported from here, and the module that owns each."""


def __getattr__(name: str) -> Any:
    """``from darcyvae.training import vae_loss`` (older code): the owner's name, with a warning."""
    owner = _MOVED.get(name)
    if owner is None:
        msg = f"module 'darcyvae.training' has no attribute {name!r}"
        raise AttributeError(msg)
    warnings.warn(
        f"darcyvae.training.{name} is darcyvae.{owner}.{name}; import it from there.",
        DeprecationWarning,
        stacklevel=2,
    )
    return getattr(importlib.import_module(f"darcyvae.{owner}"), name)


def train(
    config: TrainConfig,
    train_data: DarcyDataset | str | os.PathLike,
    test_data: DarcyDataset | str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike,
    device: str | torch.device | None = "auto",
    resume: bool = False,
    progress: bool = True,
    allow_data_change: bool = False,
) -> RunResult:
    """Train a DenseVAE with the paper's method (docs/model.md §4d), optionally semi-supervised (4f).

    Parameters
    ----------
    config : TrainConfig
    train_data : DarcyDataset or path
        The training set (a path is read with ``config.run.normalize``).
    test_data : DarcyDataset, path or None
        Evaluated every ``config.run.eval_every`` epochs (a path is
        normalised with the training statistics).
    out_dir : path-like
        Receives ``config.toml``, ``metrics.jsonl`` (one JSON record per
        epoch; losses in nats per sample, ``darcyvae._run.log_record``), the
        same records in ``metrics.csv`` (and as TensorBoard scalars in
        ``tensorboard/`` when the ``tensorboard`` package is installed),
        ``checkpoint.pt`` and ``summary.json``. Locked for the whole run
        (``darcyvae._lock.folder_lock``); stale temporary files of an
        interrupted save are removed at the start.
    device : str, torch.device or None, default="auto"
        CUDA when available, else the CPU.
    resume : bool, default=False
        Continue from ``out_dir/checkpoint.pt`` exactly where it stopped
        (same batches, noise and beta); ``config`` may differ only in
        epochs, checkpoint_every, eval_every and max_restarts.
    progress : bool, default=True
        Show a tqdm bar over epochs (loss and rate in nats per sample, beta).
    allow_data_change : bool, default=False
        On resume, accept training data whose fingerprint (file attributes,
        size, normalisation statistics, a digest of theta) differs from the
        checkpoint's.

    Returns
    -------
    RunResult
        ``status`` "done"; ``final``, ``history``, ``over_regularization``,
        ``checkpoint``.

    Raises
    ------
    FileExistsError
        ``out_dir`` already holds a checkpoint and ``resume`` is False, or
        (without ``resume``) it is a non-empty folder that darcyvae did not
        write: its files would be replaced.
    FileNotFoundError
        ``resume`` without a checkpoint.
    FolderLockedError
        Another process trains into ``out_dir``.
    ValueError
        Data that do not fit the model, a resumed config that differs.
    DataMismatchError
        Resuming on different training data without ``allow_data_change``.
    IntegrityError
        A damaged checkpoint.
    TrainingDivergedError
        A NaN or inf loss; the last good checkpoint (if one was written)
        stays on disk.
    OSError
        A write failed (a full disk, a file size limit): one line naming the
        file, the reason and the last checkpoint, which is kept intact
        (``resume=True`` continues from it).

    Notes
    -----
    The run is the training engine (``darcyvae.ensemble.engine``) with one
    member, so it equals member ``config.run.seed`` of ``train_ensemble``
    to float32 rounding. Each epoch: the learning rate of the released schedule, then per batch
    one forward pass, ``vae_loss`` (plus ``labels.weight`` times the label
    term on the labelled subset), an Adam step and, in phase 2, the beta
    rule. Losses accumulate on the device; the host reads them once per
    epoch. Randomness comes from three private generators (shuffling,
    reparameterisation noise, labelled batches) seeded from
    ``config.run.seed``; initialisation runs under a forked global RNG, so
    the caller's global state is unchanged. Checkpoints hold the model,
    optimiser, beta schedule, epoch, all generator states, a fingerprint of
    the training data and a checksum.
    """
    if not isinstance(config, TrainConfig):
        msg = f"train: config must be a TrainConfig; got {type(config).__name__}."
        raise TypeError(msg)
    dev = resolve_device(device, "train")
    out = Path(out_dir)
    ckpt_path = out / CHECKPOINT_NAME
    if resume and not ckpt_path.is_file():
        msg = f"train: resume asked for, but {str(ckpt_path)!r} does not exist."
        raise FileNotFoundError(msg)
    if not resume and ckpt_path.exists():
        msg = (
            f"train: {str(ckpt_path)!r} already exists; pass resume=True (--resume) or pick "
            "another out_dir (--out)."
        )
        raise FileExistsError(msg)
    if not resume:  # a folder of other files would have its config.toml, ... replaced
        _run.check_out_folder(out, "train", "train")
    train_set, test_set = _run.load_datasets(config, train_data, test_data, dev)
    seed = config.run.seed
    spec = BlockSpec([(seed, seed, out)], ckpt_path, single=True)
    opts = EngineOptions(dev, resume, progress, allow_data_change=allow_data_change)
    try:
        with folder_lock(out, "darcyvae train"):
            for name in (CHECKPOINT_NAME, LOG_NAME, CSV_LOG_NAME, CONFIG_NAME, SUMMARY_NAME):
                clean_stale_tmp(out, name)
            (result,) = train_block(config, spec, train_set, test_set, opts)
    except (OSError, RuntimeError) as exc:
        if not is_write_failure(exc):
            raise
        kept = _run.checkpoint_kept(ckpt_path, _checkpoint_epoch(ckpt_path))
        failure = _run.write_failure("train", out, exc, kept)
        raise failure from exc
    if result.status == "diverged":
        raise TrainingDivergedError(result.message)
    return result


def _checkpoint_epoch(path: Path) -> int | None:
    """The epoch of the checkpoint at ``path`` (intact: saves are atomic), or None."""
    if not path.is_file():
        return None
    try:
        return int(load_checkpoint(path)["epoch"])
    except (OSError, ValueError, KeyError, RuntimeError):
        return None


# --------------------------------------------------------------------------- restarts


def train_with_restarts(
    config: TrainConfig,
    train_data: DarcyDataset | str | os.PathLike,
    test_data: DarcyDataset | str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike,
    max_restarts: int | None = None,
    device: str | torch.device | None = "auto",
    progress: bool = True,
    resume: bool = False,
    allow_data_change: bool = False,
) -> tuple[RunResult, list[dict[str, Any]]]:
    """Train, and restart with a new seed while the run ends over-regularised (docs/model.md §4e).

    The one restart policy of ``train_ensemble``, with one seed: attempt 0
    runs ``config`` in ``out_dir/seed_<seed>``; restart r >= 1 runs with seed
    ``restart_seed(seed, r)`` in ``out_dir/seed_<seed>.restart_<r>``.
    ``out_dir/ensemble.json`` lists every attempt (seed, verdict, numbers,
    folder) and counts the restarts; each restart is logged as a warning.

    Parameters
    ----------
    config : TrainConfig
    train_data, test_data : see ``train``
    out_dir : path-like
    max_restarts : int or None, default=None
        None uses ``config.run.max_restarts``.
    device, progress, allow_data_change : see ``train``
    resume : bool, default=False
        Continue an interrupted trial from its checkpoints.

    Returns
    -------
    (RunResult, list of dict)
        The first attempt that is not over-regularised (or the last one),
        with ``restarts`` and ``trials`` filled in, and the record of every
        attempt (``RunResult.to_dict()`` of each).
    """
    restarts = config.run.max_restarts if max_restarts is None else max_restarts
    check_int(restarts, "max_restarts", "train_with_restarts", low=0)
    out = Path(out_dir)
    if (out / TRIALS_NAME).is_file():
        msg = (
            f"train_with_restarts: {str(out)!r} holds a trial in the older layout "
            f"({TRIALS_NAME}, attempt_K); evaluate and load_run still read it, but it cannot be "
            "continued: pick another out_dir (--out)."
        )
        raise FileExistsError(msg)
    result = train_ensemble(
        config,
        [config.run.seed],
        train_data,
        test_data,
        out_dir=out,
        device=device,
        resume=resume,
        progress=progress,
        max_restarts=restarts,
        allow_data_change=allow_data_change,
    )
    member = result.members[0]
    if member.status == "diverged":
        raise TrainingDivergedError(member.message)
    return member, [dict(t) for t in member.trials] or [member.to_dict()]


def run_training(
    config: TrainConfig,
    train_data: DarcyDataset | str | os.PathLike,
    test_data: DarcyDataset | str | os.PathLike | None = None,
    *,
    out_dir: str | os.PathLike,
    max_restarts: int | None = None,
    device: str | torch.device | None = "auto",
    resume: bool = False,
    progress: bool = True,
    allow_data_change: bool = False,
) -> RunResult:
    """One run (``train``) or a trial with restarts (``train_with_restarts``).

    With ``max_restarts`` (default ``config.run.max_restarts``) > 0 the run
    goes through ``train_with_restarts`` (``out_dir/seed_<s>``,
    ``out_dir/ensemble.json``); a folder that already holds such a trial is
    resumed as one. Otherwise ``train``.
    """
    restarts = config.run.max_restarts if max_restarts is None else max_restarts
    check_int(restarts, "max_restarts", "run_training", low=0)
    out = Path(out_dir)
    trial = (out / ENSEMBLE_SUMMARY).is_file() or any(out.glob("ensemble_checkpoint*.pt"))
    if resume and trial and max_restarts is None:  # the trial keeps the budget it started with
        restarts = max(restarts, _recorded_restarts(out / ENSEMBLE_SUMMARY))
    kw = {"device": device, "progress": progress, "allow_data_change": allow_data_change}
    if restarts > 0 or (resume and trial and not (out / CHECKPOINT_NAME).is_file()):
        result, _ = train_with_restarts(
            config, train_data, test_data, out_dir=out, max_restarts=restarts, resume=resume, **kw
        )
        return result
    return train(config, train_data, test_data, out_dir=out, resume=resume, **kw)


def _recorded_restarts(summary: Path) -> int:
    """The restart budget an interrupted or finished trial was run with (0 if unknown)."""
    try:
        record = json.loads(summary.read_text())
    except (OSError, ValueError):
        return 0
    return int(record.get("max_restarts", record.get("n_restarts", 0)))
