"""Pieces shared by the experiments: context, data, configurations, trials, summaries.

Everything here is private to ``darcyvae.experiments``. The one place that
generates data is ``dataset``, the one place that builds a training
configuration ``train_config``, and the one place that trains several seeds
of one configuration ``train_trials`` (``train_arms`` for every arm of a
study). How a claim is judged is ``claims``.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._checks import config_kwargs
from .._io import atomic_write_text
from ..checkpoint import (
    CHECKPOINT_NAME,
    EARLIER_ENSEMBLE_SUMMARY,
    ENSEMBLE_SEEDS,
    ENSEMBLE_SUMMARY,
    LOG_NAME,
    SUMMARY_NAME,
)
from ..ensemble.results import member_dir
from ..errors import TrainingDivergedError
from ._scales import Scale

log = logging.getLogger(__name__)

SD_DISENTANGLED = 0.9
"""S_D at or above which a trial counts as disentangled (S_D = 1: aligned axes)."""
SD_ROTATED = 0.6
"""S_D at or below which a trial counts as rotated (S_D = 0.5 at a 45 degree rotation)."""

GAUSSIAN_PARAMS = {"mean": [1.0, 1.0], "sd": [0.5, 0.5]}
"""The paper's scaled/translated p(theta): isotropic, mu = (1, 1), sd = (0.5, 0.5) (docs/data.md §3)."""


@dataclass
class Context:
    """What an experiment function receives.

    Attributes
    ----------
    name : str
        The experiment.
    out : Path
        Its output folder.
    root : Path
        The folder holding ``out`` (``skl`` searches it for trained models).
    scale : Scale
    seed : int
        Base seed; trial k of every arm uses seed ``seed + k``.
    trials : int or None
        ``--trials`` (None: the scale's count).
    device : str
    progress : bool
    jobs : int
        Local processes that train an arm's trials at once (``reproduce NAME --jobs``).
    notes : list of str
        Deviations and remarks collected while running (go into the report).
    overrides : dict
        Extra keyword arguments of ``run_experiment``.
    """

    name: str
    out: Path
    root: Path
    scale: Scale
    seed: int
    trials: int | None
    device: str
    progress: bool
    notes: list[str] = field(default_factory=list)
    overrides: dict[str, Any] = field(default_factory=dict)
    seeds_used: dict[str, list[int]] = field(default_factory=dict)
    jobs: int = 1

    def n_trials(self, default: int) -> int:
        """``--trials`` when given, else ``default``."""
        return int(self.trials) if self.trials is not None else int(default)

    def seeds(self, n: int, arm: str = "") -> list[int]:
        """Seeds ``seed .. seed + n - 1`` (the same in every arm: paired trials)."""
        seeds = [self.seed + k for k in range(n)]
        if arm:
            self.seeds_used[arm] = seeds
        return seeds

    def save(self, fig, name: str) -> Path:
        """Write figure ``fig`` as ``out/name`` at the scale's resolution; returns the path."""
        from .. import plots

        path = plots.save_figure(fig, self.out / name, dpi=self.scale.dpi)
        fig.clear()
        return path

    def note(self, text: str) -> None:
        """Record a remark for the report (once)."""
        if text not in self.notes:
            self.notes.append(text)


# --------------------------------------------------------------------------- data


def dataset(
    ctx: Context, distribution: str, params: dict[str, Any] | None = None
) -> dict[str, Path]:
    """Generate (or reuse) KLE2 train/test files of ``distribution`` for this scale.

    Training sets are Latin hypercube samples of p(theta) and test sets Monte
    Carlo samples, as in the authors' released code (docs/reproduction.md,
    "training sets"). The files go to ``ctx.out/data/<distribution>``; a rerun
    keeps finished files and resumes partial ones.
    """
    from ..darcy import DarcyConfig
    from ..generate import GenerateConfig, generate_dataset
    from ..kle import KLEConfig

    config = GenerateConfig(
        kle=KLEConfig(grid=ctx.scale.grid, n_modes=2),
        darcy=DarcyConfig(),
        distribution=distribution,
        dist_params=dict(params or {}),
        n_train=ctx.scale.n_train,
        n_test=ctx.scale.n_test,
        seed=ctx.seed,
        train_sampling="lhs",
        test_sampling="mc",
    )
    return generate_dataset(
        config, ctx.out / "data" / distribution, resume=True, progress=ctx.progress
    )


def load_split(path: Path, config, stats_from: Path | None = None):
    """A DarcyDataset normalised as ``config`` (anything with ``normalize``, e.g. a TrainConfig
    or a Scale) trains, with the statistics of ``stats_from``."""
    from ..dataset import DarcyDataset

    if config.normalize == "channel":
        return DarcyDataset(path, normalize="channel", stats=stats_from or path)
    return DarcyDataset(path)


# --------------------------------------------------------------------------- configurations


def train_config(
    ctx: Context,
    *,
    prior: str = "std_norm",
    schedule: str | None = None,
    mixture: bool = False,
    model: dict[str, Any] | None = None,
    optim: dict[str, Any] | None = None,
    beta: dict[str, Any] | None = None,
    labels: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
    train_path: Path | None = None,
    where: str = "",
):
    """The TrainConfig of this scale: network, schedule, normalisation, by section.

    Parameters
    ----------
    prior : {"std_norm", "hierarchical", "scaled_gaussian"}
        HP models get the released prior decoder (final ReLU, docs/model.md §4c), the one
        the paper's figures used.
    schedule : {"plain", "hp", "ss"} or None
        None: "hp" for the hierarchical prior, else "plain".
    mixture : bool
        Lengthen the reconstruction-only phase by ``scale.mixture_rec_factor``
        (docs/model.md §4d: the mixture4 example needed more of it); the total grows by
        the same number of epochs.
    model : dict
        Extra VAEConfig fields (e.g. ``hp_decoder``, ``prior_variance``).
    optim, beta, labels, run : dict
        Settings of those sections of ``TrainConfig`` (``darcyvae.config``) that replace
        the scale's, e.g. ``beta={"mode": "fixed", "value": 1.0}``.
    train_path : Path or None
        The training file. Where the scale's ``logvar_reach`` is on, the finished
        configuration (overrides included) is checked: a reconstruction-only phase too
        short for its first learning rate to carry the output log-variance from its start
        to the data's is lengthened (``reach_extra``, ``lengthened``) and the report gets
        a note. None: the scale's schedule as it is.
    where : str
        Names the arm in that note (e.g. a sensitivity cell).
    """
    from ..config import BetaConfig, LabelConfig, OptimConfig, RunConfig, TrainConfig
    from ..models import VAEConfig

    s = ctx.scale
    schedule = schedule or ("hp" if prior == "hierarchical" else "plain")
    if schedule == "hp":
        epochs, rec, lrs, miles = s.hp_epochs, s.hp_rec_epochs, s.hp_lr_values, s.hp_lr_milestones
    elif schedule == "ss":
        epochs, rec, lrs, miles = s.ss_epochs, s.ss_rec_epochs, s.ss_lr_values, s.ss_lr_milestones
    else:
        epochs, rec, lrs, miles = s.epochs, s.rec_epochs, s.lr_values, s.lr_milestones
    if mixture:
        extra = round(rec * (s.mixture_rec_factor - 1.0))
        epochs, rec = epochs + extra, rec + extra
        miles = tuple(m + extra for m in miles)
    miles = tuple(m for m in miles if m < epochs) if epochs > 1 else ()
    mkw: dict[str, Any] = {
        "grid": s.grid,
        "latent_dim": 2,
        "blocks": s.blocks,
        "growth_rate": s.growth_rate,
        "init_features": s.init_features,
        "fc_hidden": s.fc_hidden,
        "prior": prior,
        "output_logvar_init": s.output_logvar_init,
    }
    if prior == "hierarchical":
        mkw["hp_decoder"] = "released"
    known = {f.name for f in dataclasses.fields(VAEConfig)}
    for key in model or {}:
        if key not in known:
            msg = f"experiment {ctx.name!r}: VAEConfig has no field {key!r}."
            raise ValueError(msg)
    optim_kw = {
        "epochs": epochs,
        "batch_size": s.batch_size,
        "lr_values": tuple(lrs[: len(miles) + 1]),
        "lr_milestones": miles,
    }
    run_kw = {
        "normalize": s.normalize,
        "eval_every": s.eval_every,
        "checkpoint_every": s.checkpoint_every,
    }
    config = TrainConfig(
        model=VAEConfig(**{**mkw, **(model or {})}),
        optim=OptimConfig(**config_kwargs(OptimConfig, {**optim_kw, **(optim or {})})),
        beta=BetaConfig(
            **config_kwargs(BetaConfig, {"rec_epochs": min(rec, epochs), **(beta or {})})
        ),
        labels=LabelConfig(**config_kwargs(LabelConfig, dict(labels or {}))),
        run=RunConfig(**config_kwargs(RunConfig, {**run_kw, **(run or {})})),
    )
    if not (s.logvar_reach and train_path is not None):
        return config
    extra = reach_extra(config, train_path)
    if not extra:
        return config
    ctx.note(
        f"{prior} prior ({schedule} schedule){f' in {where}' if where else ''} on "
        f"{Path(train_path).parent.name}: reconstruction-only phase lengthened from "
        f"{config.beta.rec_epochs} to {config.beta.rec_epochs + extra} epochs so that its "
        "first learning rate can carry the output log-variance to the data's "
        "(docs/reproduction.md §7)"
    )
    return lengthened(config, extra)


def reach_extra(config, train_path: Path) -> int:
    """Epochs to add to ``config``'s reconstruction-only phase so that its first rate reaches.

    Adam moves a parameter by at most about the learning rate per step, and each pixel of
    the decoder's output log-variance moves with a gradient of one sign until it reaches
    its Theorem-1 optimum, the log of the data's per-pixel variance averaged over the
    channels (docs/model.md §4e; ``evaluation.data_output_logvar``, in the units the model
    sees). ``need`` is the mean over pixels of the distance from the start
    (``config.model.output_logvar_init``: 0, or the optimum itself for "data", which needs
    nothing): the average pixel, which is what the summed distortion follows (the
    deepest pixels take longer; docs/reproduction.md §7 measured that the average is
    what decides whether the HP arm trains). The first rate ``lr_values[0]`` runs until
    the first rate drop (or the end), ``first`` epochs of ``ceil(n_train / batch)``
    steps. Returns ``max(0, ceil(need / (lr * steps)) - first)``; 0 without a
    reconstruction-only phase.
    """
    if config.beta.rec_epochs <= 0 or config.model.output_logvar_init == "data":
        return 0
    path = Path(train_path)
    need, n = _logvar_need(str(path), path.stat().st_mtime_ns, config.normalize)
    steps = math.ceil(n / config.optim.batch_size)
    miles = config.optim.lr_milestones
    first = miles[0] if miles else config.optim.epochs
    return max(0, math.ceil(need / (config.optim.lr_values[0] * steps)) - first)


def lengthened(config, extra: int):
    """``config`` with ``extra`` more reconstruction-only epochs: the rate drops and the end
    move with it, so the phases after it keep their lengths."""
    miles = tuple(m + extra for m in config.optim.lr_milestones)
    return config.replace(
        optim={"epochs": config.optim.epochs + extra, "lr_milestones": miles},
        beta={"rec_epochs": config.beta.rec_epochs + extra},
    )


@functools.lru_cache(maxsize=16)
def _logvar_need(train_path: str, mtime_ns: int, normalize: str) -> tuple[float, int]:
    """(mean over pixels of |data log-variance|, samples) of a training file, normalised as
    ``normalize`` trains (cached per file version: an experiment asks once per arm, and a
    regenerated file is read again)."""
    from types import SimpleNamespace

    from ..evaluation import data_output_logvar

    y = load_split(Path(train_path), SimpleNamespace(normalize=normalize)).y
    return float(data_output_logvar(y).double().abs().mean()), len(y)


# --------------------------------------------------------------------------- training


def _finished(folder: Path, epochs: int) -> bool:
    """A trial that trained all ``epochs``, or an ensemble member that stopped on a
    non-finite loss (its summary says "diverged": a result, which the same seed repeats)."""
    summary = folder / SUMMARY_NAME
    if not summary.is_file() or not (folder / CHECKPOINT_NAME).is_file():
        return False
    try:
        record = json.loads(summary.read_text())
        return record.get("status") == "diverged" or int(record.get("epochs", -1)) >= epochs
    except (OSError, ValueError):
        return False


def _ensemble_under_way(out_dir: Path) -> list[int] | None:
    """The seeds of the ensemble started in ``out_dir`` whose checkpoint is there (as
    ``_start_ensemble`` recorded them, or, in a folder written before that record, as its
    checkpoints hold them), or None when no ensemble checkpoint is there."""
    from ..ensemble.trainer import started_blocks

    blocks = started_blocks(out_dir)
    if blocks is None:
        return None
    try:
        return [int(s) for s in json.loads((out_dir / ENSEMBLE_SEEDS).read_text())["seeds"]]
    except (OSError, ValueError, KeyError):
        return [s for b in blocks for s in b]


def _start_ensemble(out_dir: Path, seeds: list[int]) -> None:
    """Make way for a new ensemble of ``seeds`` in ``out_dir`` and record its seeds. An
    earlier ensemble there has finished (``train_trials`` resumed it first): its
    checkpoints are redundant (each member's folder holds its own final state) and go, its
    summary stays as ``ensemble_earlier_<k>.json``."""
    from ..ensemble import ENSEMBLE_CHECKPOINT

    for p in out_dir.glob(ENSEMBLE_CHECKPOINT.format(block="*")):
        p.unlink()
    summary = out_dir / ENSEMBLE_SUMMARY
    if summary.is_file():
        k = 1
        while (out_dir / EARLIER_ENSEMBLE_SUMMARY.format(k=k)).exists():
            k += 1
        summary.rename(out_dir / EARLIER_ENSEMBLE_SUMMARY.format(k=k))
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out_dir / ENSEMBLE_SEEDS, json.dumps({"seeds": seeds}) + "\n")


def train_trials(
    config,
    seeds: Sequence[int],
    train_path: Path,
    test_path: Path,
    out_dir: Path,
    device: str,
    progress: bool,
    *,
    workers: int = 1,
) -> list[dict[str, Any]]:
    """Train one model per seed of ``config``; return one record per trial, in seed order.

    Trial ``seed`` lives in ``member_dir(out_dir, seed)`` (``out_dir/seed_<seed>``).
    Finished trials are reused (a member that diverged is a finished result),
    interrupted ones resumed: an ensemble that was under way first finishes with
    the seeds and blocks it started with, whatever is asked now; then the seeds
    still left (e.g. more ``--trials`` than before) train together through
    ``train_ensemble`` (a lone one through ``train``), on ``workers`` local
    processes at once (``train_ensemble(workers=...)``, ``reproduce NAME
    --jobs``). No trial is restarted or dropped: over-regularised ones are
    counted.
    """
    from ..ensemble import train_ensemble
    from ..training import train

    out_dir = Path(out_dir)
    seeds = [int(s) for s in seeds]
    folders = {s: member_dir(out_dir, s) for s in seeds}
    todo = [s for s in seeds if not _finished(folders[s], config.epochs)]
    failed: dict[int, str] = {}
    ensemble = functools.partial(
        train_ensemble,
        config,
        train_data=train_path,
        test_data=test_path,
        out_dir=out_dir,
        device=device,
        progress=progress,
        workers=workers,
    )
    under_way = _ensemble_under_way(out_dir) if todo else None
    if under_way is not None and any(
        not _finished(member_dir(out_dir, s), config.epochs) for s in under_way
    ):
        ensemble(seeds=under_way, resume=True)
        todo = [s for s in todo if not _finished(folders[s], config.epochs)]
    if len(todo) > 1:
        _start_ensemble(out_dir, todo)
        ensemble(seeds=todo, resume=False)
    else:
        for s in todo:
            folder = folders[s]
            resume = (folder / CHECKPOINT_NAME).is_file()
            try:
                train(
                    config.replace(run={"seed": s, "max_restarts": 0}),
                    train_path,
                    test_path,
                    out_dir=folder,
                    device=device,
                    resume=resume,
                    progress=progress,
                )
            except TrainingDivergedError as exc:  # counted, not dropped
                log.warning("trial seed %d diverged: %s", s, exc)
                failed[s] = str(exc)
    bound = test_bound(test_path, train_path, config)
    return [trial_record(folders[s], s, bound, failed.get(s)) for s in seeds]


def train_arms(
    ctx: Context,
    arm_configs: dict[str, Any],
    paths: dict[str, Path],
    n_trials: int,
) -> dict[str, list[dict[str, Any]]]:
    """``train_trials`` for every arm of a study: ``n_trials`` seeds of each arm's config.

    Arm ``name`` trains the seeds ``ctx.seeds(n_trials, name)`` in ``ctx.out/<name>``
    (spaces as underscores) on ``paths["train"]`` / ``paths["test"]``; the records come
    back per arm, in the order of ``arm_configs``.

    With ``ctx.jobs`` > 1 the local processes go where they fill the cores: an arm
    with at least ``ctx.jobs`` trials splits its seeds into ``ctx.jobs`` blocks
    trained at once (``train_trials(workers=...)``), arm after arm; arms with fewer
    trials than that (the demo's one model per arm) train side by side instead, one
    arm per process (``_train_arms_side_by_side``). Either way a trial is trained
    by the same code; side by side at one thread each, the records equal an
    in-process run's at one thread (tested; other thread counts round differently).
    """
    args = {
        arm: (
            config,
            ctx.seeds(n_trials, arm),
            paths["train"],
            paths["test"],
            ctx.out / arm.replace(" ", "_"),
            ctx.device,
        )
        for arm, config in arm_configs.items()
    }
    if ctx.jobs > 1 and len(args) > 1 and n_trials < ctx.jobs:
        return _train_arms_side_by_side(args, ctx.jobs)
    return {arm: train_trials(*a, ctx.progress, workers=ctx.jobs) for arm, a in args.items()}


def _train_arms_side_by_side(args: dict[str, tuple], jobs: int) -> dict[str, list[dict[str, Any]]]:
    """``train_trials(*args[arm])`` of every arm at once in ``min(jobs, arms)`` worker
    processes, torch's threads shared out among them (``darcyvae._pool``). Progress
    bars from several processes would interleave, so each arm logs when it is done."""
    from .._pool import process_pool, share_threads

    workers = min(jobs, len(args))
    log.info(
        "training the arms %s side by side in %d processes of %d thread(s) each "
        "(no progress bars; each arm is logged when it finishes)",
        ", ".join(args),
        workers,
        share_threads(workers),
    )
    with process_pool(workers) as pool:
        futures = {arm: pool.submit(train_trials, *a, False) for arm, a in args.items()}
        records = {}
        for arm, future in futures.items():
            records[arm] = future.result()
            log.info("arm %s: %d trial(s) trained", arm, len(records[arm]))
    return records


def test_bound(test_path: Path, train_path: Path, config) -> tuple[float, int]:
    """Theorem-1 bound (docs/model.md §4e) of the test data, normalised as the model sees it,
    and the number of field elements per sample (channels x N x N) it is spread over."""
    from ..evaluation import distortion_bound

    y = load_split(test_path, config, train_path).y
    return distortion_bound(y), int(np.prod(y.shape[1:]))


def trial_record(
    folder: Path,
    seed: int,
    bound_test: tuple[float, int],
    error: str | None = None,
) -> dict[str, Any]:
    """The numbers of one trial (from its summary, ``SUMMARY_NAME``) and its bound margin.

    ``bound_test`` is ``test_bound``'s (bound, elements per sample). The
    verdicts "trained" and "over-regularised" are derived here from the
    stored numbers with the unit-free rule (docs/model.md §4e), so runs
    written under an older rule are judged by today's. A trial that
    diverged (no summary, or an ensemble member's summary saying so) is kept as
    a record that is neither trained nor over-regularised, with ``status``
    "diverged" and the reason under ``error``.
    """
    from ..evaluation import beats_bound, is_over_regularized, margin_per_element

    bound, n_elements = bound_test
    path = Path(folder) / SUMMARY_NAME
    summary = json.loads(path.read_text()) if path.is_file() else {"status": "diverged"}
    if summary.get("status") == "diverged":  # no summary, or an ensemble member's record
        error = error or summary.get("message") or f"no {SUMMARY_NAME}"
        return {
            "seed": int(seed),
            "folder": str(folder),
            "checkpoint": None,
            "epochs": None,
            "status": "diverged",
            "error": error,
            "train": {},
            "test": {},
            "bound_train": None,
            "bound_test": bound,
            "n_elements": n_elements,
            "margin": None,
            "margin_per_element": None,
            "beats_bound": False,
            "over_regularized": False,
            "rate_per_dim": None,
            "s_d": None,
            "disentangled": False,
            "rotated": False,
        }
    test = summary.get("test", {})
    train = summary.get("train", {})
    distortion = test.get("distortion", train.get("distortion"))
    margin = bound - distortion if distortion is not None else None
    per_element = None if margin is None else margin_per_element(distortion, bound, n_elements)
    beats = distortion is not None and beats_bound(distortion, bound, n_elements)
    s_d = test.get("s_d")
    over = summary.get("over_regularization", {})
    # Over-regularised: the run's own (training-split) rate and distortion, judged
    # by the unit-free rule whatever rule wrote the summary.
    or_margin = (
        None
        if over.get("bound") is None or over.get("distortion") is None
        else margin_per_element(over["distortion"], over["bound"], n_elements)
    )
    over_regularized = (
        or_margin is not None
        and over.get("rate_per_dim") is not None
        and is_over_regularized(over["rate_per_dim"], or_margin)
    )
    return {
        "seed": int(seed),
        "folder": str(folder),
        "checkpoint": str(Path(folder) / CHECKPOINT_NAME),
        "epochs": summary.get("epochs"),
        "status": "finished",
        "train": train,
        "test": test,
        "bound_train": summary.get("distortion_bound"),
        "bound_test": bound,
        "n_elements": n_elements,
        "margin": margin,
        "margin_per_element": per_element,
        "beats_bound": bool(beats),
        "over_regularized": over_regularized,
        "rate_per_dim": over.get("rate_per_dim"),
        "s_d": s_d,
        "disentangled": bool(s_d is not None and s_d >= SD_DISENTANGLED),
        "rotated": bool(s_d is not None and s_d <= SD_ROTATED),
    }


def history(folder: str | os.PathLike) -> list[dict[str, Any]]:
    """The per-epoch log of a training run."""
    path = Path(folder) / LOG_NAME
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --------------------------------------------------------------------------- models


def require_finished(records: list[dict[str, Any]], what: str) -> None:
    """Raise a clear error when an experiment needs a model that a diverged trial lacks."""
    bad = [r["seed"] for r in records if r["status"] != "finished"]
    if bad:
        msg = (
            f"{what}: the training run(s) with seed(s) {bad} diverged (non-finite loss), so "
            f"there is no model to evaluate; see their {LOG_NAME}, or rerun with another --seed."
        )
        raise TrainingDivergedError(msg)


def load_trained(record: dict[str, Any]):
    """The trained model of a trial record (eval mode, CPU)."""
    from ..checkpoint import load_model

    return load_model(record["checkpoint"], device="cpu")


def interpolate_state(a: dict, b: dict, alpha: float) -> dict:
    """(1 - alpha) a + alpha b for every floating tensor of two state dicts (else b's)."""
    out = {}
    for key, va in a.items():
        vb = b[key]
        if va.is_floating_point():
            out[key] = (1.0 - alpha) * va + alpha * vb
        else:
            out[key] = vb.clone()
    return out


def losses(model, data, *, n_latent_samples: int = 1, seed: int = 0) -> dict[str, float]:
    """Rate, distortion, loss (negative ELBO) and S_D of ``model`` on ``data``."""
    from ..evaluation import evaluate_losses
    from ..metrics import s_d

    summ = evaluate_losses(model, data, n_latent_samples=n_latent_samples, seed=seed)
    finite = np.all(np.isfinite(summ.z_mean)) and len(summ.z_mean) >= 2
    return {
        "rate": summ.rate,
        "distortion": summ.distortion,
        "loss": summ.loss,
        "s_d": s_d(summ.z_mean, summ.theta) if finite else None,
    }


# --------------------------------------------------------------------------- summaries and verdicts


def spread(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean, sd, min, median, max and n of the finite values."""
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return {"n": 0, "mean": None, "sd": None, "min": None, "median": None, "max": None}
    return {
        "n": len(v),
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
        "min": float(v.min()),
        "median": float(np.median(v)),
        "max": float(v.max()),
    }


def fmt(value: Any, digits: int = 3) -> str:
    """The one number format of reports (results.json stores the same rounded value)."""
    if value is None:
        return "n/a"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.{digits}g}"
    return f"{round(value, digits):.{digits}f}".rstrip("0").rstrip(".") if digits else str(value)


def fmt_spread(sp: dict[str, Any]) -> str:
    """``mean ± sd [min, max] (n)``."""
    if not sp.get("n"):
        return "n/a (no trials)"
    return (
        f"{fmt(sp['mean'])} ± {fmt(sp['sd'])} [min {fmt(sp['min'])}, max {fmt(sp['max'])}] "
        f"(n = {sp['n']})"
    )


def trained_only(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The trials whose test distortion beats the Theorem-1 bound (docs/reproduction.md §6)."""
    return [r for r in records if r["beats_bound"]]


def trial_table(arms: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """Per-trial rows for results.json and the report."""
    rows = []
    for arm, records in arms.items():
        for r in records:
            rows.append(
                {
                    "arm": arm,
                    "seed": r["seed"],
                    "test_rate": r["test"].get("rate"),
                    "test_distortion": r["test"].get("distortion"),
                    "bound_test": r["bound_test"],
                    "margin": r["margin"],
                    "margin_per_element": r.get("margin_per_element"),
                    "beats_bound": r["beats_bound"],
                    "over_regularized": r["over_regularized"],
                    "s_d": r["s_d"],
                    "disentangled": r["disentangled"],
                }
            )
    return rows
