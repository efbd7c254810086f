"""The training loop of the paper's method (docs/model.md §4d-§4f) and the trial runner (docs/model.md §4e).

Public names
------------
train, TrainResult, TrainingDivergedError
    One run: checkpoints, exact resume, logs, the final metrics.
train_with_restarts, restart_seed
    The trial runner that restarts over-regularised runs with seeds from a
    separate restart stream, counting and reporting every restart.
run_training
    What ``darcyvae train`` calls: ``train`` or ``train_with_restarts``
    (the restart decision lives here, not in the command line).

The loss terms, beta rule and schedules live in ``darcyvae.losses``, the
configuration in ``darcyvae.config``, checkpoint I/O in
``darcyvae.checkpoint`` and whole-dataset losses, the Theorem-1 bound, the
verdicts and scores in ``darcyvae.evaluation``; their public names are
re-exported here for older imports (``from darcyvae.training import
TrainConfig, vae_loss, ...``).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from . import _run
from ._checks import check_int
from ._device import resolve_device, to_device_async
from ._io import atomic_write_text, is_write_failure
from ._lock import folder_lock
from ._run import build_model, child_seeds
from .checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    CSV_LOG_NAME,
    LOG_NAME,
    SUMMARY_NAME,
    TRIALS_NAME,
    clean_stale_tmp,
    load_checkpoint,
    load_model,
    load_state,
    read_log,
)
from .config import TrainConfig, list_presets, load_preset
from .dataset import DarcyDataset, make_loader
from .errors import TrainingDivergedError
from .evaluation import (
    LossSummary,
    OverRegularization,
    SplitMetrics,
    detect_over_regularization,
    distortion_bound,
    evaluate_losses,
)
from .losses import (
    BetaSchedule,
    HierarchicalTerms,
    LossTerms,
    gaussian_kl,
    gaussian_log_prob,
    guarded_loss,
    hierarchical_bound_terms,
    label_loss,
    learning_rate,
    reconstruction_loss,
    update_beta,
    vae_loss,
)
from .models import DenseVAE

__all__ = [
    # re-exported from darcyvae.losses, .config, .checkpoint, .evaluation
    "BetaSchedule",
    "HierarchicalTerms",
    "LossSummary",
    "LossTerms",
    "OverRegularization",
    "SplitMetrics",
    "TrainConfig",
    "TrainResult",
    "TrainingDivergedError",
    "build_model",
    "child_seeds",
    "detect_over_regularization",
    "distortion_bound",
    "evaluate_losses",
    "gaussian_kl",
    "gaussian_log_prob",
    "hierarchical_bound_terms",
    "label_loss",
    "learning_rate",
    "list_presets",
    "load_checkpoint",
    "load_model",
    "load_preset",
    "reconstruction_loss",
    "restart_seed",
    "run_training",
    "train",
    "train_with_restarts",
    "update_beta",
    "vae_loss",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainResult:
    """What ``train`` returns (also written to ``summary.json``).

    Attributes
    ----------
    out_dir : Path
    checkpoint : Path
    epochs : int
        Epochs completed.
    seed : int
    history : list of dict
        The per-epoch log records (also in ``metrics.jsonl``).
    final : dict
        ``train`` (and ``test``): ``SplitMetrics.to_dict()`` (rate,
        distortion, loss, the Theorem-1 bound, the margin to it and
        ``trained``, S_D, S_KL, n_samples); ``distortion_bound`` of the
        training split.
    over_regularization : OverRegularization
        The verdict on the training split.
    restarts : int, default=0
        Restarts before this run (``train_with_restarts``).
    trials : tuple of dict, default=()
        Every attempt of ``train_with_restarts`` (empty for a single run).
    metrics : dict of str to SplitMetrics
        ``final``'s splits as ``SplitMetrics`` (``splits()`` lists them).
    """

    out_dir: Path
    checkpoint: Path
    epochs: int
    seed: int
    history: list[dict[str, Any]] = field(repr=False)
    final: dict[str, Any]
    over_regularization: OverRegularization
    restarts: int = 0
    trials: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    metrics: dict[str, SplitMetrics] = field(default_factory=dict, repr=False)

    @property
    def over_regularized(self) -> bool:
        """Whether the run ended over-regularised."""
        return self.over_regularization.over_regularized

    def splits(self) -> list[tuple[str, SplitMetrics]]:
        """``[("train", SplitMetrics), ("test", ...)]`` for the splits evaluated at the end."""
        metrics = self.metrics or {
            s: SplitMetrics.from_dict(self.final[s]) for s in ("train", "test") if s in self.final
        }
        return [(s, metrics[s]) for s in ("train", "test") if s in metrics]


# --------------------------------------------------------------------------- pieces of a run


def _restore(run: _run.RunState, path: Path, *, allow_data_change: bool) -> int:
    """Load the checkpoint at ``path`` into ``run``; return the epoch to continue from."""
    ckpt = load_checkpoint(path, map_location=run.device)
    _run.check_resume_config(ckpt["config"], run.config)
    _run.check_resume_data(ckpt, run, path, who="train", allow_data_change=allow_data_change)
    load_state(run.model, ckpt["model"], "train (resume)")
    load_state(run.optimizer, ckpt["optimizer"], "train (resume)")
    run.schedule.load_state_dict(ckpt["schedule"])
    run.loader_gen.set_state(ckpt["rng"]["loader"].cpu())
    run.noise_gen.set_state(ckpt["rng"]["noise"].cpu())
    run.label_gen.set_state(ckpt["rng"]["labels"].cpu())
    return int(ckpt["epoch"])


def _label_batch(
    labeled: tuple[Tensor, Tensor], config: TrainConfig, generator: torch.Generator
) -> tuple[Tensor, Tensor]:
    """This step's labelled pairs: all of them, or ``labels.batch_size`` drawn from ``generator``."""
    y_l, theta_l = labeled
    if len(y_l) > config.labels.batch_size:
        pick = torch.randperm(len(y_l), generator=generator)[: config.labels.batch_size]
        pick = to_device_async(pick, y_l.device)
        y_l, theta_l = y_l[pick], theta_l[pick]
    return y_l, theta_l


def _label_term(
    model: DenseVAE,
    labeled: tuple[Tensor, Tensor],
    config: TrainConfig,
    generator: torch.Generator,
) -> Tensor:
    """``labels.forward="separate"``: a second encoder pass on the labelled batch."""
    y_l, theta_l = _label_batch(labeled, config, generator)
    mu, logvar = model.encode(y_l)
    return _run.label_term(mu, logvar, theta_l, config, hierarchical=model.hierarchical)


class _ConcatForward:
    """``labels.forward="concat"`` (docs/model.md §4f): stands in for the model in ``vae_loss``.

    Calling it runs the model once on [y; y_l] (so BatchNorm normalises the
    unlabelled and the labelled fields together, and one reparameterisation
    draw of shape (len(y) + n_l, n) comes from the generator) and returns the
    unlabelled part of the output, on which ``vae_loss`` takes L_rec and
    L_reg; the encoder outputs of the labelled part are kept in ``labeled``.
    """

    def __init__(self, model: DenseVAE, y_l: Tensor) -> None:
        self.model = model
        self.prior = model.prior
        self.y_l = y_l
        self.labeled: tuple[Tensor, Tensor] | None = None

    def __call__(
        self, y: Tensor, *, generator: torch.Generator | None = None, noise: Any = None
    ) -> Any:
        """The ``VAEOutput`` of the unlabelled part of one forward pass on [y; y_l]."""
        if noise is not None:  # pragma: no cover - the training loop never passes noise
            msg = "train: the concatenated forward draws its own noise."
            raise ValueError(msg)
        out = self.model(torch.cat([y, self.y_l]), generator=generator)
        b = len(y)
        self.labeled = (out.mu[b:], out.logvar[b:])
        return out._replace(
            mu=out.mu[:b], logvar=out.logvar[:b], z=out.z[:b], y_mean=out.y_mean[:b]
        )


def _train_epoch(
    run: _run.RunState, loader: Any, epoch: int, labeled: tuple[Tensor, Tensor] | None
) -> list[float]:
    """One epoch of optimiser steps.

    Returns the epoch means of loss, rate, distortion and label loss, and
    the number of steps where the phase-1 guard fired. Losses accumulate on
    the device; this is the epoch's one host sync.
    """
    config, model, schedule, dev = run.config, run.model, run.schedule, run.device
    phase1 = epoch < config.beta.rec_epochs
    include_rate = config.beta.warmup_rate or not phase1
    guard = config.beta.phase1_guard and phase1
    model.train()
    acc = torch.zeros(4, device=dev)
    fired = torch.zeros(1, device=dev)
    for y, _ in loader:
        y = y.to(dev, non_blocking=True)
        beta, beta_p = schedule.weights(epoch)
        concat = None
        if labeled is not None and config.labels.forward == "concat":
            y_l, theta_l = _label_batch(labeled, config, run.label_gen)
            concat = _ConcatForward(model, y_l)
        terms = vae_loss(
            model if concat is None else concat,  # type: ignore[arg-type]
            y,
            beta=beta,
            beta_p=beta_p,
            reduction=config.optim.reduction,
            include_rate=include_rate,
            generator=run.noise_gen,
        )
        loss = terms.loss
        if guard:
            loss, triggered = guarded_loss(terms, config.beta.guard_threshold)
            fired += triggered
        lab = torch.zeros((), device=dev)
        if concat is not None and concat.labeled is not None:
            lab = _run.label_term(*concat.labeled, theta_l, config, hierarchical=model.hierarchical)
            loss = loss + config.labels.weight * lab
        elif labeled is not None and config.labels.weight > 0:
            lab = _label_term(model, labeled, config, run.label_gen)
            loss = loss + config.labels.weight * lab
        run.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        run.optimizer.step()
        schedule.step(epoch, terms.rec, terms.prior_nll)
        acc += torch.stack([loss, terms.rate, terms.distortion, lab]).detach() * len(y)
    return torch.cat([acc / len(run.train_set), fired]).tolist()


# --------------------------------------------------------------------------- train


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
) -> TrainResult:
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
    TrainResult

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
    Each epoch: the learning rate of the released schedule, then per batch
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
    run = None
    try:
        with folder_lock(out, "darcyvae train"):
            for name in (CHECKPOINT_NAME, LOG_NAME, CSV_LOG_NAME, CONFIG_NAME, SUMMARY_NAME):
                clean_stale_tmp(out, name)
            with _run.deterministic_mode(config.run.deterministic, dev):
                run = _run.RunState.build(config, train_set, test_set, dev)
                if resume:
                    start = _restore(run, ckpt_path, allow_data_change=allow_data_change)
                    run.saved_epoch = start
                else:
                    start = 0
                # the log is checked before any file of the run is rewritten
                history = _run.upgrade_log(read_log(out / LOG_NAME, start), config)
                if resume:
                    log.info("train: resuming %s at epoch %d", out, start)
                history = _loop(run, out, start, history, progress)
                final_metrics = _run.final_metrics(run)
        final: dict[str, Any] = {"distortion_bound": run.bound}
        final.update({name: m.to_dict() for name, m in final_metrics.items()})
        over = final_metrics["train"].over_regularization
        final["over_regularization"] = over.to_dict()
        final["seed"] = config.run.seed
        final["epochs"] = max(start, config.optim.epochs)
        atomic_write_text(out / SUMMARY_NAME, json.dumps(final, indent=2, sort_keys=True))
    except (OSError, RuntimeError) as exc:
        if not is_write_failure(exc):
            raise
        saved = None if run is None else run.saved_epoch
        failure = _run.write_failure("train", out, exc, _run.checkpoint_kept(ckpt_path, saved))
        raise failure from exc
    if over.over_regularized:
        log.warning(
            "train: %s looks over-regularised (rate %.3g nats/dim, distortion %.6g vs bound %.6g)",
            out,
            over.rate_per_dim,
            over.distortion,
            over.bound,
        )
    return TrainResult(
        out,
        ckpt_path,
        final["epochs"],
        config.run.seed,
        history,
        final,
        over,
        metrics=final_metrics,
    )


def _loop(
    run: _run.RunState, out: Path, start: int, history: list[dict[str, Any]], progress: bool
) -> list[dict[str, Any]]:
    """Epochs ``start .. epochs - 1``: train, log, evaluate, checkpoint.

    ``history`` holds the log records of the epochs before ``start``; returns
    it with the new epochs appended.
    """
    from tqdm import tqdm

    config = run.config
    epochs = config.optim.epochs
    ckpt_path = out / CHECKPOINT_NAME
    config.to_toml(out / CONFIG_NAME, header="darcyvae training run (written by train)")
    columns = _run.log_columns(config, run.test_set is not None, history)
    loader = make_loader(
        run.train_set, batch_size=config.optim.batch_size, shuffle=True, generator=run.loader_gen
    )
    labeled = run.labeled()
    metrics_log = _run.MetricsLog(out, history, columns, start)
    bar = tqdm(
        range(start, epochs),
        initial=start,
        total=epochs,
        disable=not progress,
        desc=f"train {out.name}",
        unit="epoch",
    )
    try:
        for epoch in bar:
            t0 = time.perf_counter()
            lr = learning_rate(epoch, config.optim.lr_values, config.optim.lr_milestones)
            for group in run.optimizer.param_groups:
                group["lr"] = lr
            sums = _train_epoch(run, loader, epoch, labeled)
            if not all(math.isfinite(v) for v in sums[:4]):
                if run.saved_epoch is not None:
                    kept = (
                        f"The last good checkpoint ({str(ckpt_path)!r}, epoch "
                        f"{run.saved_epoch}) is kept."
                    )
                else:  # diverged before the first checkpoint: there is none to keep
                    kept = (
                        "No checkpoint had been written yet (one is written every "
                        f"{config.run.checkpoint_every} epoch(s)), so there is none to keep."
                    )
                msg = (
                    f"train: non-finite loss in epoch {epoch} (objective {sums[0]}, rate "
                    f"{sums[1]}, distortion {sums[2]}); stopped. {kept}"
                )
                raise TrainingDivergedError(msg)
            beta_now, beta_p_now = run.schedule.current(epoch)
            guarded = config.beta.phase1_guard and epoch < config.beta.rec_epochs
            record = _run.log_record(
                config,
                epoch=epoch,
                phase=run.schedule.phase(epoch),
                lr=lr,
                beta=beta_now,
                beta_p=beta_p_now,
                objective=sums[0],
                rate=sums[1],
                distortion=sums[2],
                label=sums[3] if labeled is not None else None,
                guard_steps=sums[4] if guarded else None,
            )
            last = epoch == epochs - 1
            every = config.run.eval_every
            if last or (every and (epoch + 1) % every == 0):
                record.update(_run.epoch_eval(run, epoch))
            record["seconds"] = time.perf_counter() - t0
            record["units"] = _run.LOG_UNITS
            history.append(record)
            metrics_log.write(record)
            bar.set_postfix_str(_bar_text(record))
            if last or (epoch + 1) % config.run.checkpoint_every == 0:
                _run.save_run(run, ckpt_path, epoch + 1)
                metrics_log.flush()
    finally:
        metrics_log.close()
        bar.close()
    return history


def _bar_text(record: dict[str, Any]) -> str:
    """The progress bar's postfix: the losses in their unit, then beta."""
    text = f"loss {record['loss']:.6g}, rate {record['rate']:.3g}"
    if record.get("test_loss") is not None:
        text += f", test loss {record['test_loss']:.6g}"
    return f"{text} {_run.LOG_UNITS}; beta {record['beta']:.3g}"


# --------------------------------------------------------------------------- restarts


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
) -> tuple[TrainResult, list[dict[str, Any]]]:
    """Train, and restart with a new seed while the run ends over-regularised (docs/model.md §4e).

    Attempt 0 runs ``config`` in ``out_dir/attempt_0``; attempt k >= 1 runs
    with seed ``restart_seed(config.run.seed, k)`` in ``out_dir/attempt_k``.
    ``out_dir/trials.json`` lists every attempt (seed, verdict, margin,
    folder) and the number of restarts; each restart is logged as a warning.

    Parameters
    ----------
    config : TrainConfig
    train_data, test_data : see ``train``
    out_dir : path-like
    max_restarts : int or None, default=None
        None uses ``config.run.max_restarts``.
    device, progress, allow_data_change : see ``train``
    resume : bool, default=False
        Continue an interrupted trial: the attempts in ``trials.json`` are
        kept, the unfinished attempt resumes from its checkpoint.

    Returns
    -------
    (TrainResult, list of dict)
        The first attempt that is not over-regularised (or the last one),
        with ``restarts`` and ``trials`` filled in, and the record of all
        attempts (as before the reshape).
    """
    restarts = config.run.max_restarts if max_restarts is None else max_restarts
    check_int(restarts, "max_restarts", "train_with_restarts", low=0)
    out = Path(out_dir)
    trials: list[dict[str, Any]] = []
    if not resume:
        _run.check_out_folder(out, "train (restarts)", "train_with_restarts")
    with folder_lock(out, "darcyvae train (restarts)"):
        trials_path = out / TRIALS_NAME
        if resume and trials_path.is_file():
            trials = list(json.loads(trials_path.read_text()).get("attempts", []))
        elif not resume and trials_path.exists():
            msg = f"train_with_restarts: {str(trials_path)!r} already exists; resume or pick another out_dir."
            raise FileExistsError(msg)
        result = None
        first = len(trials)
        if trials and (not trials[-1]["over_regularized"] or first > restarts):
            # Accepted, or no restarts left: resume the last attempt (e.g. more epochs).
            first = len(trials) - 1
            trials = trials[:-1]
        for k in range(first, max(restarts, first) + 1):
            seed = config.run.seed if k == 0 else restart_seed(config.run.seed, k)
            cfg = config.replace(seed=seed)
            folder = out / f"attempt_{k}"
            again = resume and (folder / CHECKPOINT_NAME).is_file()
            result = train(
                cfg,
                train_data,
                test_data,
                out_dir=folder,
                device=device,
                progress=progress,
                resume=again,
                allow_data_change=allow_data_change,
            )
            over = result.over_regularization
            train_m = result.final["train"]
            trials.append(
                {
                    "attempt": k,
                    "seed": seed,
                    "restart": k > 0,
                    "out_dir": str(result.out_dir),
                    "over_regularized": result.over_regularized,
                    "rate_per_dim": over.rate_per_dim,
                    "margin_per_element": over.margin_per_element,
                    "distortion_margin": train_m["distortion_margin"],
                    "trained": train_m["trained"],
                }
            )
            record = {"restarts": len(trials) - 1, "max_restarts": restarts, "attempts": trials}
            atomic_write_text(trials_path, json.dumps(record, indent=2))
            if not result.over_regularized:
                break
            if k < restarts:
                log.warning(
                    "train_with_restarts: attempt %d (seed %d) over-regularised; restart %d "
                    "with seed %d from the restart stream",
                    k,
                    seed,
                    k + 1,
                    restart_seed(config.run.seed, k + 1),
                )
            else:
                log.warning(
                    "train_with_restarts: attempt %d over-regularised and no restarts left", k
                )
    if result is None:  # pragma: no cover - restarts >= 0 always runs one attempt
        msg = "train_with_restarts: no attempt ran."
        raise RuntimeError(msg)
    final = dataclasses.replace(result, restarts=len(trials) - 1, trials=tuple(trials))
    return final, trials


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
) -> TrainResult:
    """One run (``train``) or a trial with restarts (``train_with_restarts``).

    With ``max_restarts`` (default ``config.run.max_restarts``) > 0 the run
    goes through ``train_with_restarts`` (``out_dir/attempt_k``); a folder
    that already holds such a trial is resumed as one. Otherwise ``train``.
    """
    restarts = config.run.max_restarts if max_restarts is None else max_restarts
    check_int(restarts, "max_restarts", "run_training", low=0)
    out = Path(out_dir)
    trial = (out / TRIALS_NAME).is_file() or (out / "attempt_0").is_dir()
    kw = {"device": device, "progress": progress, "allow_data_change": allow_data_change}
    if restarts > 0 or (resume and trial and not (out / CHECKPOINT_NAME).is_file()):
        result, _ = train_with_restarts(
            config, train_data, test_data, out_dir=out, max_restarts=restarts, resume=resume, **kw
        )
        return result
    return train(config, train_data, test_data, out_dir=out, resume=resume, **kw)
