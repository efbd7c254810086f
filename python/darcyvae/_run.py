"""The pieces of one training run that ``darcyvae.training`` and ``darcyvae.ensemble`` share.

A run's state (``RunState``: model, optimiser, beta schedule, generators,
labelled subset, data) is built, checkpointed, evaluated and summarised by
the same functions whether it trains alone (``train``) or as a member of a
batched ensemble (``train_ensemble``), so that a member is the single run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ._io import atomic_write_text, write_error
from ._vaedata import as_dataset, check_fits, data_fingerprint, fingerprint_differences
from .checkpoint import CONFIG_NAME, CSV_LOG_NAME, LOG_NAME, TENSORBOARD_DIR, save_checkpoint
from .config import RUN_LENGTH_KEYS, TrainConfig
from .dataset import DarcyDataset
from .errors import DataMismatchError
from .evaluation import (
    LossSummary,
    SplitMetrics,
    data_output_logvar,
    distortion_bound,
    s_d_or_none,
    split_metrics,
)
from .losses import BetaSchedule, label_loss
from .models import DenseVAE, VAEConfig

log = logging.getLogger(__name__)

__all__ = [
    "LOG_UNITS",
    "MetricsLog",
    "RunState",
    "append_line",
    "build_model",
    "check_out_folder",
    "check_resume_config",
    "child_seeds",
    "deterministic_mode",
    "epoch_eval",
    "final_metrics",
    "label_term",
    "load_datasets",
    "log_columns",
    "log_record",
    "save_run",
    "upgrade_log",
    "write_failure",
]


@contextlib.contextmanager
def deterministic_mode(enabled: bool, device: torch.device) -> Iterator[None]:
    """Deterministic algorithms for the duration of a run; previous settings restored."""
    if not enabled:
        yield
        return
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_bench = torch.backends.cudnn.benchmark
    if device.type == "cuda":
        # cuBLAS needs this for deterministic GEMMs (documented in RunConfig).
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.backends.cudnn.benchmark = prev_bench


RUN_HEADER = "darcyvae training run"
"""First words of the ``config.toml`` header that ``train`` and ``train_ensemble`` write."""

_OURS = {
    # what each kind of run writes at the top of its output folder, besides its
    # lock file and the temporary files of an interrupted atomic save
    "train": re.compile(r"$^"),  # a single run is recognised by its config.toml
    "train --seeds": re.compile(
        r"ensemble(_seeds|_earlier_\d+)?\.json|ensemble_checkpoint[_a-z0-9]*\.pt"
        r"|seed_\d+(\.restart_\d+)?"
    ),
}


def _is_run_config(path: Path) -> bool:
    """Whether ``path`` is a ``config.toml`` that darcyvae wrote (its header says so)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return RUN_HEADER in fh.readline()
    except OSError:
        return False


def check_out_folder(out: Path, kind: str, caller: str) -> None:
    """Refuse to start a run in a non-empty folder that darcyvae did not write (docs/safety.md).

    ``kind`` is ``"train"`` (a single run: a folder holding a ``config.toml``
    with darcyvae's header is a run that stopped before its first checkpoint,
    and may be started again), or ``"train --seeds"``
    (the files and folders those write). Anything else in ``out`` would be
    silently replaced (``config.toml``, ``metrics.jsonl``, ``summary.json``),
    so it is a ``FileExistsError`` naming an example, in the words of
    ``darcyvae reproduce``. Call it before anything is written.
    """
    from ._lock import LOCK_NAME

    if not out.exists():
        return
    if not out.is_dir():
        msg = f"{caller}: output {str(out)!r} exists and is not a folder."
        raise NotADirectoryError(msg)
    if kind == "train" and _is_run_config(out / CONFIG_NAME):
        return
    ours = _OURS[kind]
    foreign = sorted(
        p.name
        for p in out.iterdir()
        if p.name != LOCK_NAME
        and not (p.name.startswith(".") and p.name.endswith(".tmp"))
        and not ours.fullmatch(p.name)
    )
    if foreign:
        msg = (
            f"{caller}: output folder {str(out)!r} is not empty and was not written by "
            f"darcyvae {kind} (e.g. {foreign[0]!r}); choose another out_dir (--out)."
        )
        raise FileExistsError(msg)


def child_seeds(seed: int) -> dict[str, int]:
    """The independent seeds a run with ``seed`` uses: ``init``, ``loader``, ``noise``, ``labels``.

    ``init`` seeds parameter initialisation (``build_model``), ``loader`` the
    shuffling generator, ``noise`` the reparameterisation generator (on the
    training device), ``labels`` the labelled subset and batches. A batched
    ensemble that uses them per member reproduces each member's single run.
    """
    states = np.random.SeedSequence(seed).generate_state(4, dtype=np.uint64)
    s = [int(v >> np.uint64(1)) for v in states]  # torch wants < 2**63
    return {"init": s[0], "loader": s[1], "noise": s[2], "labels": s[3]}


def build_model(config: VAEConfig, seed: int, device: torch.device) -> DenseVAE:
    """The DenseVAE a run initialises from ``child_seeds(seed)["init"]`` (global RNG untouched)."""
    # Parameter initialisation draws from torch's global RNG; fork it so the
    # caller's global state is left exactly as it was.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DenseVAE(config)
    return model.to(device)


def _labeled_indices(config: TrainConfig, n: int, derived_seed: int) -> NDArray[np.int64] | None:
    """Indices of the labelled pairs in their source set (docs/model.md §4f); None without labels.

    ``labels.source="train"``: a sorted random subset of the ``n`` training
    samples (``labels.seed``, else ``derived_seed``); ``"test"``: the first
    n_l samples of the test set, as in the authors' code.
    """
    n_l = config.labels.n_labeled
    if not n_l:
        return None
    if config.labels.source == "test":
        return np.arange(n_l, dtype=np.int64)
    seed = config.labels.seed if config.labels.seed is not None else derived_seed
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=n_l, replace=False)).astype(np.int64)


def _finite(x: float) -> float | None:
    return x if math.isfinite(x) else None


@dataclass
class RunState:
    """The state of a run that a checkpoint holds, and what it is trained on."""

    config: TrainConfig
    model: DenseVAE
    optimizer: torch.optim.Optimizer
    schedule: BetaSchedule
    loader_gen: torch.Generator
    noise_gen: torch.Generator
    label_gen: torch.Generator
    label_idx: NDArray[np.int64] | None
    train_set: DarcyDataset
    test_set: DarcyDataset | None
    device: torch.device
    bound: float
    saved_epoch: int | None = None
    """Epochs in the last checkpoint this run wrote or resumed from (None: none yet)."""

    @classmethod
    def build(
        cls,
        config: TrainConfig,
        train_set: DarcyDataset,
        test_set: DarcyDataset | None,
        device: torch.device,
    ) -> RunState:
        seeds = child_seeds(config.run.seed)
        model = build_model(config.model, seeds["init"], device)
        if config.model.output_logvar_init == "data":
            # The Theorem-1 optimum of s, in the units the model sees (docs/model.md §4a, §4e).
            with torch.no_grad():
                model.decoder.output_logvar.copy_(data_output_logvar(train_set.y))
        optimizer = torch.optim.Adam(
            model.parameters(), lr=config.optim.lr_values[0], weight_decay=0.0
        )
        b = config.beta
        schedule = BetaSchedule(
            rec_epochs=b.rec_epochs,
            beta0=b.beta0,
            mode=b.mode,
            fixed_beta=b.value,
            nu=b.nu,
            tau=b.tau,
            adaptive_beta_p=config.beta_p_adaptive,
            beta_p0=b.beta_p0,
            device=device,
        )
        return cls(
            config=config,
            model=model,
            optimizer=optimizer,
            schedule=schedule,
            loader_gen=torch.Generator().manual_seed(seeds["loader"]),
            noise_gen=torch.Generator(device=device).manual_seed(seeds["noise"]),
            label_gen=torch.Generator().manual_seed(seeds["labels"]),
            label_idx=_labeled_indices(config, len(train_set), seeds["labels"]),
            train_set=train_set,
            test_set=test_set,
            device=device,
            bound=distortion_bound(train_set.y, reduction="sum"),
        )

    def labeled(self) -> tuple[Tensor, Tensor] | None:
        """The labelled pairs (y, theta) on the training device, or None (docs/model.md §4f)."""
        if self.label_idx is None:
            return None
        source = self.test_set if self.config.labels.source == "test" else self.train_set
        if source is None:  # pragma: no cover - load_datasets refuses this before training
            msg = "train: labels.source='test' needs test data."
            raise ValueError(msg)
        idx = torch.as_tensor(self.label_idx, device=source.device)
        return source.y[idx].to(self.device), source.theta[idx].to(self.device)


def save_run(run: RunState, path: Path, epoch_done: int) -> None:
    """Write the checkpoint of ``run`` after ``epoch_done`` epochs (atomic, with checksum)."""
    stats = run.train_set.stats
    payload = {
        "config": run.config.to_dict(),
        "epoch": epoch_done,
        "model": run.model.state_dict(),
        "optimizer": run.optimizer.state_dict(),
        "schedule": run.schedule.state_dict(),
        "rng": {
            "loader": run.loader_gen.get_state(),
            "noise": run.noise_gen.get_state().cpu(),
            "labels": run.label_gen.get_state(),
        },
        "labeled_indices": [] if run.label_idx is None else [int(i) for i in run.label_idx],
        "labeled_source": run.config.labels.source,
        **data_record(run),
        "normalization": None if stats is None else stats.to_dict(),
        "distortion_bound": run.bound,
    }
    save_checkpoint(payload, path)
    run.saved_epoch = epoch_done


def append_line(fh: Any, text: str, path: Path) -> None:
    """Append ``text`` to the open log ``fh`` and flush it; a failed write raises its
    ``OSError`` naming ``path`` (a torn last line is dropped on resume, ``read_log``)."""
    try:
        fh.write(text)
        fh.flush()
    except OSError as exc:
        if exc.errno is None or exc.filename is not None:
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc


def write_failure(
    caller: str, out: Path, exc: BaseException, kept: str | None, what: str = "checkpoint"
) -> OSError:
    """The one-line error of a run whose write failed (a full disk, ``ulimit -f``, ...).

    Names the file, the reason and what is kept: ``kept`` (the atomic saves leave
    the last checkpoint intact) and how to continue from it, or, with ``kept``
    None, that no ``what`` was written yet and the command can simply be run again.
    """
    if kept:
        then = "run the same command with --resume (resume=True) to continue"
    else:
        kept = f"No {what} had been written yet"
        then = "run the same command again"
    where = getattr(exc, "filename", None) or out
    return write_error(caller, where, exc, kept, then)


def checkpoint_kept(checkpoint: Path, saved_epoch: int | None) -> str | None:
    """What ``write_failure`` says a single run keeps: its last checkpoint, if any."""
    if not checkpoint.is_file():
        return None
    epoch = "" if saved_epoch is None else f", epoch {saved_epoch}"
    return f"The last checkpoint ({str(checkpoint)!r}{epoch}) is kept"


def data_record(run: RunState) -> dict[str, Any]:
    """What a checkpoint records of the data ``run`` trains on (checked on resume).

    ``data``: the training set's fingerprint, ``train_path``: its file,
    ``labeled_data``: with ``labels.source="test"`` the fingerprint of the
    test file the labelled pairs come from, else None.
    """
    labeled_from_test = (
        run.label_idx is not None
        and run.config.labels.source == "test"
        and run.test_set is not None
    )
    return {
        "train_path": str(run.train_set.path),
        "data": data_fingerprint(run.train_set),
        "labeled_data": data_fingerprint(run.test_set) if labeled_from_test else None,
    }


def check_resume_data(
    saved: dict[str, Any],
    run: RunState,
    path: Path,
    *,
    who: str,
    allow_data_change: bool,
) -> None:
    """Refuse to resume on data other than ``saved`` (a ``data_record``) records.

    Raises ``DataMismatchError`` naming what changed, unless
    ``allow_data_change`` (then it logs a warning and returns).
    """
    checked = [("training", saved.get("data"), run.train_set, saved.get("train_path"))]
    if saved.get("labeled_data") is not None and run.test_set is not None:
        # labels.source="test": the labelled pairs are the test file's first samples.
        checked.append(("labelled (test)", saved["labeled_data"], run.test_set, None))
    for name, fingerprint, current, old_path in checked:
        if fingerprint is None:
            continue
        differ = fingerprint_differences(fingerprint, data_fingerprint(current))
        if differ:
            was = f"it was {old_path!r}, now " if old_path else "now "
            what = (
                f"{who}: the {name} data differ from the data {str(path)!r} was trained on "
                f"({', '.join(differ)} changed; {was}{str(current.path)!r})"
            )
            if not allow_data_change:
                msg = f"{what}; pass allow_data_change=True (--allow-data-change) to continue."
                raise DataMismatchError(msg)
            log.warning(
                "%s; continuing on the new data, as allow_data_change=True (--allow-data-change) "
                "asks",
                what,
            )


def check_resume_config(saved: dict[str, Any], config: TrainConfig) -> None:
    """Refuse to resume with a configuration that differs beyond ``RUN_LENGTH_KEYS``."""
    old = TrainConfig.from_dict(saved).to_flat_dict()
    now = config.to_flat_dict()
    keys = sorted(set(old) | set(now))
    differ = [k for k in keys if k not in RUN_LENGTH_KEYS and old.get(k) != now.get(k)]
    if differ:
        msg = (
            "train: the checkpoint was written with a different configuration "
            f"(keys {differ}); only {list(RUN_LENGTH_KEYS)} may change on resume. To train "
            "the new configuration, use another output folder or move this run away."
        )
        raise ValueError(msg)


def epoch_eval(train: LossSummary, test: LossSummary | None) -> dict[str, Any]:
    """An epoch's evaluation record: S_D on train and test, the test losses.

    ``train``, ``test``: the member's ``evaluate_losses`` of the epoch (eval mode, the
    epoch's index as the noise seed, ``run.eval_batch_size``)."""
    rec: dict[str, Any] = {"s_d_train": s_d_or_none(train)}
    if test is not None:
        rec.update(
            test_loss=_finite(test.loss),
            test_rate=_finite(test.rate),
            test_distortion=_finite(test.distortion),
            s_d_test=s_d_or_none(test),
        )
    return rec


def final_metrics(run: RunState) -> dict[str, SplitMetrics]:
    """The final ``SplitMetrics`` of the run's model on its train (and test) data."""
    cfg = run.config.run
    out = {}
    for name, data in (("train", run.train_set), ("test", run.test_set)):
        if data is not None:
            out[name] = split_metrics(
                run.model,
                data,
                batch_size=cfg.eval_batch_size,
                seed=0,
                rate_tol=cfg.rate_tol,
                margin_tol=cfg.margin_tol,
            )
    return out


def load_datasets(
    config: TrainConfig,
    train_data: DarcyDataset | str | os.PathLike,
    test_data: DarcyDataset | str | os.PathLike | None,
    device: torch.device,
) -> tuple[DarcyDataset, DarcyDataset | None]:
    """The train (and test) datasets of a run, normalised per ``config`` and checked to fit it."""
    normalize = config.run.normalize == "channel"
    train_set = as_dataset(
        train_data, normalize=normalize, stats=None, device=device, caller="train"
    )
    test_set = None
    if test_data is not None:
        test_set = as_dataset(
            test_data, normalize=normalize, stats=train_set.stats, device=device, caller="train"
        )
    check_fits(config.model, train_set, "training", "train")
    if test_set is not None:
        check_fits(config.model, test_set, "test", "train")
    n_labeled = config.labels.n_labeled
    if n_labeled:
        if config.labels.source == "test":
            if test_set is None:
                msg = (
                    f"train: labels.source='test' takes the {n_labeled} labelled pairs from the "
                    "test data (docs/model.md §4f), but no test data were given; pass test_data or use "
                    "labels.source='train'."
                )
                raise ValueError(msg)
            if n_labeled > len(test_set):
                msg = (
                    f"train: with labels.source='test', n_labeled must be <= {len(test_set)} "
                    f"test samples; got {n_labeled}."
                )
                raise ValueError(msg)
        elif n_labeled > len(train_set):
            msg = f"train: n_labeled must be <= {len(train_set)} training samples; got {n_labeled}."
            raise ValueError(msg)
        if train_set.n_params != config.model.latent_dim:
            msg = (
                f"train: semi-supervised labels need latent_dim == s; got latent_dim "
                f"{config.model.latent_dim} and s = {train_set.n_params}."
            )
            raise ValueError(msg)
    return train_set, test_set


def label_term(
    mu: Tensor, logvar: Tensor, theta: Tensor, config: TrainConfig, *, hierarchical: bool
) -> Tensor:
    """The semi-supervised label loss of a labelled batch's codes under ``config`` (docs/model.md §4f):
    ``label_loss`` of the configured kind and reduction, averaged over the batch."""
    return label_loss(
        mu,
        logvar,
        theta,
        kind=config.labels.loss,
        reduction=config.optim.reduction,
        hierarchical=hierarchical,
        dim_reduction=config.labels.dim_reduction,
    ).mean()


# --------------------------------------------------------------------------- the per-epoch log

LOG_UNITS = "nats/sample"
"""The unit of every loss field of a log record (``loss``, ``rate``, ``distortion``,
``label_loss``, ``test_loss``, ``test_rate``, ``test_distortion``), written in each
record as ``"units"``. Records without it come from older versions, whose ``loss``
was the objective (now ``objective``); ``upgrade_log`` converts them."""

_LOG_ORDER = (
    "epoch",
    "phase",
    "lr",
    "beta",
    "beta_p",
    "loss",
    "rate",
    "distortion",
    "label_loss",
    "objective",
    "guard_steps",
    "s_d_train",
    "test_loss",
    "test_rate",
    "test_distortion",
    "s_d_test",
    "seconds",
    "units",
)
"""Every field a record may hold, in the order of ``metrics.csv``'s columns."""


def _label_scale(config: TrainConfig) -> float:
    """The factor that turns the trained label term into nats per labelled sample (summed
    over latent dimensions): ``latent_dim`` where the term averages over them
    (``labels.dim_reduction="rate"`` under ``optim.reduction="mean"`` without HP), else 1."""
    averaged = (
        config.labels.dim_reduction == "rate"
        and config.optim.reduction == "mean"
        and config.model.prior != "hierarchical"
    )
    return float(config.model.latent_dim) if averaged else 1.0


def log_record(
    config: TrainConfig,
    *,
    epoch: int,
    phase: str,
    lr: float,
    beta: float,
    beta_p: float,
    objective: float,
    rate: float,
    distortion: float,
    label: float | None,
    guard_steps: float | None,
) -> dict[str, Any]:
    """The log record of one training epoch, shared by ``train`` and ``train_ensemble``.

    ``rate`` and ``distortion`` are epoch means in nats per sample; ``loss`` =
    rate + distortion is the negative ELBO per sample (beta = 1), the same
    quantity as ``test_loss``; ``label_loss`` is the label term per labelled
    sample summed over latent dimensions (nats for ``labels.loss="nll"``);
    ``objective`` is what the optimiser minimised (``optim.reduction``, with
    beta, the label term and the phase-1 guard), the one field in other units.
    """
    record: dict[str, Any] = {"epoch": epoch, "phase": phase, "lr": lr, "beta": beta}
    if config.model.prior == "hierarchical":
        record["beta_p"] = beta_p
    record.update(loss=rate + distortion, rate=rate, distortion=distortion)
    if label is not None:
        record["label_loss"] = label * _label_scale(config)
    record["objective"] = objective
    if guard_steps is not None:
        record["guard_steps"] = int(guard_steps)
    return record


def upgrade_log(records: list[dict[str, Any]], config: TrainConfig) -> list[dict[str, Any]]:
    """Records of an older log in today's units (``LOG_UNITS``), the others unchanged.

    An older record (no ``"units"``) logged the objective as ``loss`` and the
    label term in the training reduction: its ``loss`` becomes ``objective``,
    ``loss`` becomes rate + distortion and ``label_loss`` is summed over latent
    dimensions, exactly as a record written now. A resumed run's log is thus
    in one unit throughout.
    """
    out = []
    for rec in records:
        if "units" in rec or not all(
            isinstance(rec.get(k), (int, float)) for k in ("rate", "distortion")
        ):
            out.append(rec)
            continue
        new = dict(rec)
        if "loss" in rec:
            new["objective"] = rec["loss"]
        new["loss"] = rec["rate"] + rec["distortion"]
        if isinstance(rec.get("label_loss"), (int, float)):
            new["label_loss"] = rec["label_loss"] * _label_scale(config)
        new["units"] = LOG_UNITS
        out.append({k: new[k] for k in sorted(new, key=_log_position)})
    return out


def _log_position(key: str) -> tuple[int, str]:
    return (_LOG_ORDER.index(key) if key in _LOG_ORDER else len(_LOG_ORDER), key)


def log_columns(
    config: TrainConfig, has_test: bool, history: list[dict[str, Any]] = ()
) -> list[str]:
    """The columns of ``metrics.csv``: every field a record of this run may hold, in
    ``_LOG_ORDER``, then any other field found in ``history``."""
    skip = set()
    if config.model.prior != "hierarchical":
        skip.add("beta_p")
    if not config.labels.n_labeled:
        skip.add("label_loss")
    if not config.beta.phase1_guard:
        skip.add("guard_steps")
    if not has_test:
        skip.update(("test_loss", "test_rate", "test_distortion", "s_d_test"))
    columns = [k for k in _LOG_ORDER if k not in skip]
    extra = sorted({k for rec in history for k in rec} - set(columns), key=_log_position)
    return columns + extra


def _csv_line(values: list[Any]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(["" if v is None else v for v in values])
    return buf.getvalue()


_TENSORBOARD: list[Any] = []
"""The ``SummaryWriter`` class once looked up (None: not usable here)."""


def _summary_writer_class() -> Any:
    """torch's ``SummaryWriter``, or None when the ``tensorboard`` package is not installed
    (silently) or cannot be imported (a warning, once); looked up once per process."""
    if not _TENSORBOARD:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # its imports warn on some versions
                from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            SummaryWriter = None
        except Exception as exc:  # noqa: BLE001 - a broken install must not stop training
            log.warning(
                "train: tensorboard is installed but could not be imported (%s: %s); "
                "the log is written to metrics.jsonl and metrics.csv only",
                type(exc).__name__,
                exc,
            )
            SummaryWriter = None
        _TENSORBOARD.append(SummaryWriter)
    return _TENSORBOARD[0]


def _tensorboard_writer(folder: Path, history: list[dict[str, Any]], start: int) -> Any:
    """A ``SummaryWriter`` on ``folder/tensorboard``, or None without the ``tensorboard``
    package. A folder without event files first gets the records of ``history``; one
    that has them drops its events from epoch ``start`` on (``purge_step``), so a
    resumed run has each epoch once."""
    summary_writer = _summary_writer_class()
    if summary_writer is None:
        return None
    path = folder / TENSORBOARD_DIR
    fresh = not any(path.glob("events.out.tfevents.*"))
    writer = summary_writer(str(path), purge_step=None if fresh else start)
    if fresh:
        for rec in history:
            _tensorboard_scalars(writer, rec)
    return writer


def _tensorboard_scalars(writer: Any, record: dict[str, Any]) -> None:
    epoch = record["epoch"]
    for key, value in record.items():
        if key != "epoch" and isinstance(value, (int, float)) and not isinstance(value, bool):
            writer.add_scalar(key, float(value), global_step=epoch)


class MetricsLog:
    """The per-epoch log of one run folder: ``metrics.jsonl``, ``metrics.csv`` (the same
    records) and, when ``tensorboard`` is installed, TensorBoard scalars.

    Opening it rewrites both files atomically with ``history`` (the records
    before the epoch a run starts or resumes at), so a resumed run's files
    hold each epoch once; ``write`` appends a record to all three.
    """

    def __init__(
        self, folder: Path, history: list[dict[str, Any]], columns: list[str], start: int
    ) -> None:
        self.paths = (folder / LOG_NAME, folder / CSV_LOG_NAME)
        self.columns = columns
        atomic_write_text(self.paths[0], "".join(json.dumps(r) + "\n" for r in history))
        lines = [_csv_line(columns)] + [_csv_line([r.get(k) for k in columns]) for r in history]
        atomic_write_text(self.paths[1], "".join(lines))
        self._files = [open(path, "a", encoding="utf-8") for path in self.paths]  # noqa: SIM115
        self._tensorboard = _tensorboard_writer(folder, history, start)

    def write(self, record: dict[str, Any]) -> None:
        """Append ``record`` to the log files (flushed) and the TensorBoard scalars."""
        jsonl, table = self._files
        append_line(jsonl, json.dumps(record) + "\n", self.paths[0])
        append_line(table, _csv_line([record.get(k) for k in self.columns]), self.paths[1])
        if self._tensorboard is not None:
            _tensorboard_scalars(self._tensorboard, record)

    def flush(self) -> None:
        """Write out the TensorBoard events so far (the files are flushed on every write)."""
        if self._tensorboard is not None:
            self._tensorboard.flush()

    def close(self) -> None:
        for fh in self._files:
            fh.close()
        if self._tensorboard is not None:
            self._tensorboard.close()
            self._tensorboard = None
