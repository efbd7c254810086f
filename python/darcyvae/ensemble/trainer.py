"""``train_ensemble``: K seeds of one configuration trained at once (issue 9, part 3).

Each member is the single run ``train(config.replace(seed=s), ...)`` would
make: the same initialisation, batch order, reparameterisation noise, beta
schedule and Adam arithmetic, only computed together in one
``BatchedDenseVAE``. Loss terms come from the single-run functions
(``vae_loss`` vmapped over members), the beta rule from ``BetaSchedule``
holding (K,) tensors, evaluation and the over-regularisation verdict from
the single-run code applied to each member.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .._device import resolve_device
from .._io import atomic_write_text
from .._lock import folder_lock
from ..dataset import DarcyDataset, make_loader
from ..errors import DarcyvaeError
from ..models import DenseVAE, VAEOutput

# --------------------------------------------------------------------------- single-run pieces
# Everything this trainer borrows from the single-run code, in one place (issue 9
# part 1 moves these names between modules; only this block has to follow).
from ..training import (
    _CHECKPOINT_FORMAT,
    CHECKPOINT_NAME,
    CONFIG_NAME,
    LOG_NAME,
    SUMMARY_NAME,
    BetaSchedule,
    OverRegularization,
    TrainConfig,
    _as_dataset,
    _atomic_torch_save,
    _build_model,
    _check_data,
    _check_resume,
    _deterministic_mode,
    _epoch_eval,
    _final_summary,
    _read_log,
    _seeds,
    detect_over_regularization,
    distortion_bound,
    learning_rate,
    vae_loss,
)
from .batched import BatchedDenseVAE, StackedAdam, adam_member_state
from .seeds import check_seeds, split_blocks

__all__ = [
    "ENSEMBLE_CHECKPOINT",
    "ENSEMBLE_SUMMARY",
    "EnsembleMemoryError",
    "EnsembleResult",
    "MemberResult",
    "load_checkpoint_ensemble",
    "member_dir",
    "train_ensemble",
]

log = logging.getLogger(__name__)

ENSEMBLE_SUMMARY = "ensemble.json"
"""Summary of all members, in the ensemble's output folder."""
ENSEMBLE_CHECKPOINT = "ensemble_checkpoint{block}.pt"
"""The one checkpoint of a block of members (``{block}``: empty, or ``_b<i>`` with blocks)."""
_ENSEMBLE_FORMAT = 1


class EnsembleMemoryError(DarcyvaeError, MemoryError):
    """The device ran out of memory for a block of K members."""


def member_dir(out_dir: str | os.PathLike, seed: int) -> Path:
    """The folder of the member with ``seed`` (``out_dir/seed_<seed>``)."""
    return Path(out_dir) / f"seed_{int(seed)}"


@dataclass(frozen=True)
class MemberResult:
    """One member of an ensemble (its folder holds what a single run writes).

    Attributes
    ----------
    seed : int
    out_dir : Path
    status : {"done", "diverged"}
        ``diverged``: a NaN or inf loss stopped this member (see ``message``);
        its folder keeps the log up to the last finite epoch and the last
        ensemble checkpoint's state (if one was written before).
    epochs : int
        Epochs completed.
    final : dict or None
        As ``TrainResult.final`` (None for a diverged member).
    over_regularization : OverRegularization or None
    message : str
    history : list of dict
        The per-epoch records (also in the member's ``metrics.jsonl``).
    """

    seed: int
    out_dir: Path
    status: str
    epochs: int
    final: dict[str, Any] | None
    over_regularization: OverRegularization | None
    message: str = ""
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)

    @property
    def over_regularized(self) -> bool:
        """Whether the member ended over-regularised (False if it diverged)."""
        return bool(self.over_regularization and self.over_regularization.over_regularized)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no history)."""
        return {
            "seed": self.seed,
            "out_dir": str(self.out_dir),
            "status": self.status,
            "epochs": self.epochs,
            "message": self.message,
            "final": self.final,
            "over_regularized": self.over_regularized,
        }


@dataclass(frozen=True)
class EnsembleResult:
    """What ``train_ensemble`` returns (also summarised in ``ensemble.json``)."""

    out_dir: Path
    seeds: list[int]
    members: list[MemberResult]
    seconds: float

    def member(self, seed: int) -> MemberResult:
        """The member trained with ``seed``."""
        for m in self.members:
            if m.seed == seed:
                return m
        msg = f"EnsembleResult.member: no member with seed {seed}; seeds are {self.seeds}."
        raise KeyError(msg)


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
    channels_last: bool | None = None,
) -> EnsembleResult:
    """Train one DenseVAE per seed, all at once, as one batched model.

    Member ``s`` is the run ``train(config.replace(seed=s), ...)`` would
    produce (same initialisation, data order, noise, beta and Adam
    arithmetic; equal to float32 rounding), written to ``out_dir/seed_<s>``
    with the same files (``config.toml``, ``metrics.jsonl``,
    ``checkpoint.pt``, ``summary.json``), so ``darcyvae evaluate`` and
    ``train(..., resume=True)`` work on any member's folder.

    Parameters
    ----------
    config : TrainConfig
        Shared by all members; its ``seed`` is replaced by each member's.
    seeds : list of int or str
        Distinct seeds >= 0, or a string for ``parse_seeds`` (``"0-49"``).
    train_data, test_data : DarcyDataset, path or None
        As in ``train``.
    out_dir : path-like
        Receives one folder per member, ``ensemble.json`` and the ensemble
        checkpoint(s) ``ensemble_checkpoint*.pt``.
    device : str, torch.device or None, default="auto"
    resume : bool, default=False
        Continue from the ensemble checkpoint(s) exactly (bitwise on the
        CPU in deterministic mode); only the run-length fields of
        ``config`` may change.
    progress : bool, default=True
        tqdm bar over epochs (per block).
    seeds_per_block : int or None, default=None
        Train the seeds in consecutive blocks of at most this many members
        (one batched model per block, one after the other, or one per dask
        worker); None: all in one block. Lower it when K members do not fit
        in the device's memory.
    dask : str, distributed.Client or None, default=None
        Scheduler address (or a client): each block runs as one task on a
        worker (one ensemble per worker / GPU); results land in the same
        layout. None: run here.
    channels_last : bool or None, default=None
        Activation layout of the batched model (None: channels last on the
        CPU, where it is faster; see ``BatchedDenseVAE``).

    Returns
    -------
    EnsembleResult

    Raises
    ------
    ValueError, TypeError
        Bad seeds, a config whose model does not fit the data (before any
        training starts), a resumed config that differs, an unsupported
        option (hierarchical prior, semi-supervised labels).
    FileExistsError, FileNotFoundError
        A checkpoint already there without ``resume``; none with it.
    EnsembleMemoryError
        The device ran out of memory; the message names K and suggests a
        smaller ``seeds_per_block``.

    Notes
    -----
    A member whose epoch loss is NaN or inf stops (status ``diverged``,
    logged with its seed and epoch); the others go on. Its parameters are
    still carried in the batched model (they cannot affect the other
    members) but nothing more is logged or saved for it.
    """
    t0 = time.perf_counter()
    if not isinstance(config, TrainConfig):
        msg = f"train_ensemble: config must be a TrainConfig; got {type(config).__name__}."
        raise TypeError(msg)
    seed_list = check_seeds(seeds)
    blocks = split_blocks(seed_list, seeds_per_block)
    _check_supported(config)
    out = Path(out_dir)
    names = [_block_checkpoint_name(i, len(blocks)) for i in range(len(blocks))]
    for name in names:
        path = out / name
        if resume and not path.is_file():
            msg = f"train_ensemble: resume asked for, but {str(path)!r} does not exist."
            raise FileNotFoundError(msg)
        if not resume and path.exists():
            msg = (
                f"train_ensemble: {str(path)!r} already exists; pass resume=True or pick "
                "another out_dir."
            )
            raise FileExistsError(msg)
    if not resume:
        for s in seed_list:
            if (member_dir(out, s) / CHECKPOINT_NAME).exists():
                msg = (
                    f"train_ensemble: {str(member_dir(out, s))!r} already holds a run; "
                    "pick another out_dir."
                )
                raise FileExistsError(msg)
    # Fail on data that do not fit before any training starts.
    dev = resolve_device(device, "train_ensemble")
    train_set = _as_dataset(train_data, config, dev, None, "train_ensemble")
    test_set = (
        None
        if test_data is None
        else _as_dataset(test_data, config, dev, train_set.stats, "train_ensemble")
    )
    _check_data(config.model, train_set, "training")
    if test_set is not None:
        _check_data(config.model, test_set, "test")

    with folder_lock(out, "darcyvae train --seeds"):
        if dask is None:
            members: list[MemberResult] = []
            for i, block in enumerate(blocks):
                members += _train_block(
                    config,
                    block,
                    train_set,
                    test_set,
                    out,
                    names[i],
                    dev,
                    resume,
                    progress,
                    channels_last,
                )
        else:
            members = _run_on_dask(
                dask,
                config,
                blocks,
                names,
                train_data,
                test_data,
                out,
                device,
                resume,
                channels_last,
            )
        result = EnsembleResult(out, seed_list, members, time.perf_counter() - t0)
        _write_summary(result, config, blocks, dev)
    return result


def _check_supported(config: TrainConfig) -> None:
    if config.model.prior == "hierarchical":
        msg = (
            "train_ensemble: the hierarchical prior is not supported in ensembles yet; "
            "train those seeds one by one with train()."
        )
        raise ValueError(msg)
    if config.n_labeled:
        msg = (
            "train_ensemble: semi-supervised training (n_labeled > 0) is not supported in "
            "ensembles yet; train those seeds one by one with train()."
        )
        raise ValueError(msg)


def _block_checkpoint_name(i: int, n_blocks: int) -> str:
    return ENSEMBLE_CHECKPOINT.format(block="" if n_blocks == 1 else f"_b{i}")


def _write_summary(
    result: EnsembleResult, config: TrainConfig, blocks: list[list[int]], dev: torch.device
) -> None:
    done = [m for m in result.members if m.status == "done"]
    summary = {
        "seeds": result.seeds,
        "blocks": blocks,
        "device": str(dev),
        "seconds": result.seconds,
        "n_done": len(done),
        "n_diverged": len(result.members) - len(done),
        "n_over_regularized": sum(m.over_regularized for m in result.members),
        "config": config.to_dict(),
        "members": [m.to_dict() for m in result.members],
    }
    atomic_write_text(
        result.out_dir / ENSEMBLE_SUMMARY, json.dumps(summary, indent=2, sort_keys=True)
    )


# --------------------------------------------------------------------------- dask


def _run_on_dask(
    dask: Any,
    config: TrainConfig,
    blocks: list[list[int]],
    names: list[str],
    train_data: Any,
    test_data: Any,
    out: Path,
    device: Any,
    resume: bool,
    channels_last: bool | None,
) -> list[MemberResult]:
    try:
        from distributed import Client
    except ImportError as exc:  # pragma: no cover - dask is a dependency
        msg = "train_ensemble: dask=... needs the 'distributed' package."
        raise ImportError(msg) from exc
    client = dask if isinstance(dask, Client) else Client(dask)
    try:
        futures = [
            client.submit(
                _dask_block,
                config.to_dict(),
                block,
                _portable(train_data),
                _portable(test_data),
                str(out),
                names[i],
                str(device) if isinstance(device, torch.device) else device,
                resume,
                channels_last,
                pure=False,
                key=f"darcyvae-ensemble-{out.name}-block{i}-{os.getpid()}",
            )
            for i, block in enumerate(blocks)
        ]
        gathered = client.gather(futures)
    finally:
        if client is not dask:
            client.close()
    return [m for block in gathered for m in block]


def _portable(data: Any) -> Any:
    """A path travels as a string; a DarcyDataset as itself."""
    if isinstance(data, (str, os.PathLike)):
        return str(data)
    return data


def _dask_block(
    config: dict[str, Any],
    seeds: list[int],
    train_data: Any,
    test_data: Any,
    out: str,
    name: str,
    device: Any,
    resume: bool,
    channels_last: bool | None,
) -> list[MemberResult]:
    """One block on a dask worker (data read there, on the worker's device)."""
    cfg = TrainConfig.from_dict(config)
    dev = resolve_device(device, "train_ensemble")
    train_set = _as_dataset(train_data, cfg, dev, None, "train_ensemble")
    test_set = (
        None
        if test_data is None
        else _as_dataset(test_data, cfg, dev, train_set.stats, "train_ensemble")
    )
    return _train_block(
        cfg, seeds, train_set, test_set, Path(out), name, dev, resume, False, channels_last
    )


# --------------------------------------------------------------------------- one block


class _Precomputed:
    """Stands in for one member's DenseVAE inside ``vae_loss`` (outputs already computed)."""

    def __init__(self, output: VAEOutput, prior: torch.nn.Module) -> None:
        self._output = output
        self.prior = prior

    def __call__(self, y: Tensor, **_: Any) -> VAEOutput:
        return self._output


def _member_losses(
    prior: torch.nn.Module,
    y: Tensor,
    out: Any,
    beta: Tensor | float,
    beta_p: Tensor | float,
    reduction: str,
    include_rate: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``vae_loss`` of every member, vmapped: (loss, rec, reg, distortion, rate), each (K,)."""

    def one(y, mu, logvar, z, y_mean, y_logvar, beta, beta_p):
        terms = vae_loss(
            _Precomputed(VAEOutput(mu, logvar, z, y_mean, y_logvar), prior),
            y,
            beta=beta,
            beta_p=beta_p,
            reduction=reduction,
            include_rate=include_rate,
        )
        return terms.loss, terms.rec, terms.reg, terms.distortion, terms.rate

    dims = (0,) * 6 + tuple(0 if isinstance(b, Tensor) else None for b in (beta, beta_p))
    return torch.func.vmap(one, in_dims=dims)(y, *out, beta, beta_p)


def _lockstep(loaders: list[Any]) -> Any:
    """Batches of all members' loaders side by side.

    Every iterator is run to its end (unlike ``zip``), so each shuffling
    generator advances exactly as in a single run (the sampler draws once
    more when asked past the last batch).
    """
    iterators = [iter(loader) for loader in loaders]
    while True:
        batches = [next(it, None) for it in iterators]
        if all(b is None for b in batches):
            return
        yield batches


class _Block:
    """State of one block of members during training."""

    def __init__(
        self,
        config: TrainConfig,
        seeds: list[int],
        dev: torch.device,
        channels_last: bool | None,
    ) -> None:
        self.config = config
        self.seeds = seeds
        self.k = len(seeds)
        self.dev = dev
        self.child = [_seeds(s) for s in seeds]
        models = [_build_model(config.model, c["init"], dev) for c in self.child]
        self.prior = models[0].prior
        self.net = BatchedDenseVAE(models, channels_last=channels_last)
        del models
        self.scratch = _build_model(config.model, 0, dev)  # for per-member evaluation
        self.opt = StackedAdam(self.net.parameters(), lr=config.lr_values[0])
        self.schedule = BetaSchedule(
            rec_epochs=config.rec_epochs,
            beta0=config.beta0,
            mode=config.beta_mode,
            fixed_beta=config.beta,
            nu=config.nu,
            tau=config.tau,
            adaptive_beta_p=config.beta_p_adaptive,
            device=dev,
        )
        self.schedule.beta = self.schedule.beta.repeat(self.k)
        self.schedule.beta_p = self.schedule.beta_p.repeat(self.k)
        self.loader_gens = [torch.Generator().manual_seed(c["loader"]) for c in self.child]
        self.noise_gens = [torch.Generator(device=dev).manual_seed(c["noise"]) for c in self.child]
        self.label_gens = [torch.Generator().manual_seed(c["labels"]) for c in self.child]
        self.active = [True] * self.k
        self.stopped: dict[int, dict[str, Any]] = {}  # member -> {"epoch", "message"}
        self.epoch = 0

    def member(self, k: int) -> DenseVAE:
        """Member ``k`` loaded into the scratch model (train mode)."""
        self.scratch.load_state_dict(self.net.member_state_dict(k))
        return self.scratch.train()

    def state(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "format": _ENSEMBLE_FORMAT,
            "kind": "darcyvae-ensemble",
            "config": self.config.to_dict(),
            "seeds": list(self.seeds),
            "epoch": self.epoch,
            "model": self.net.state_dict(),
            "optimizer": self.opt.state_dict(),
            "schedule": {"beta": self.schedule.beta, "beta_p": self.schedule.beta_p},
            "rng": {
                "loader": [g.get_state() for g in self.loader_gens],
                "noise": [g.get_state().cpu() for g in self.noise_gens],
                "labels": [g.get_state() for g in self.label_gens],
            },
            "stopped": {str(k): v for k, v in self.stopped.items()},
            **extra,
        }

    def load(self, ckpt: dict[str, Any], path: Path) -> None:
        if ckpt.get("kind") != "darcyvae-ensemble" or ckpt.get("format") != _ENSEMBLE_FORMAT:
            msg = f"train_ensemble: {str(path)!r} is not a darcyvae ensemble checkpoint."
            raise ValueError(msg)
        _check_resume(ckpt["config"], self.config)
        if list(ckpt["seeds"]) != self.seeds:
            msg = (
                f"train_ensemble: {str(path)!r} holds seeds {list(ckpt['seeds'])}, not "
                f"{self.seeds}; resume with the same seeds and seeds_per_block."
            )
            raise ValueError(msg)
        self.net.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.schedule.beta = ckpt["schedule"]["beta"].to(self.dev)
        self.schedule.beta_p = ckpt["schedule"]["beta_p"].to(self.dev)
        for gens, key in (
            (self.loader_gens, "loader"),
            (self.noise_gens, "noise"),
            (self.label_gens, "labels"),
        ):
            for g, s in zip(gens, ckpt["rng"][key], strict=True):
                g.set_state(s.cpu())
        self.stopped = {int(k): v for k, v in ckpt["stopped"].items()}
        self.active = [k not in self.stopped for k in range(self.k)]
        self.epoch = int(ckpt["epoch"])


def _member_checkpoint(
    state: dict[str, Any], m: int, config: TrainConfig, scratch: DenseVAE
) -> dict[str, Any]:
    """Member ``m`` of an ensemble state (``_Block.state``) in the single-run checkpoint format.

    ``train(config.replace(seed=s), ..., resume=True)`` continues it as a single run.
    """
    scratch.load_state_dict({name: t[m] for name, t in state["model"].items()})
    seed = state["seeds"][m]
    return {
        "format": _CHECKPOINT_FORMAT,
        "config": config.replace(seed=seed).to_dict(),
        "epoch": state["epoch"],
        "model": {n: t.detach().clone() for n, t in scratch.state_dict().items()},
        "optimizer": adam_member_state(state["optimizer"], m, scratch),
        "schedule": {
            "beta": float(state["schedule"]["beta"][m]),
            "beta_p": float(state["schedule"]["beta_p"][m]),
        },
        "rng": {key: state["rng"][key][m] for key in ("loader", "noise", "labels")},
        "labeled_indices": [],
        "normalization": state["normalization"],
        "train_path": state["train_path"],
        "distortion_bound": state["distortion_bound"],
    }


def _train_block(
    config: TrainConfig,
    seeds: list[int],
    train_set: DarcyDataset,
    test_set: DarcyDataset | None,
    out: Path,
    ckpt_name: str,
    dev: torch.device,
    resume: bool,
    progress: bool,
    channels_last: bool | None,
) -> list[MemberResult]:
    k = len(seeds)
    try:
        with _deterministic_mode(config.deterministic, dev):
            return _train_block_locked(
                config,
                seeds,
                train_set,
                test_set,
                out,
                ckpt_name,
                dev,
                resume,
                progress,
                channels_last,
            )
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        text = str(exc).lower()
        if (
            isinstance(exc, torch.OutOfMemoryError)
            or "out of memory" in text
            or ("can't allocate memory" in text)
        ):
            msg = (
                f"train_ensemble: the {dev} device ran out of memory training K = {k} members "
                f"(seeds {seeds[0]}..{seeds[-1]}) at once; pass a smaller seeds_per_block "
                f"(--seeds-per-block), e.g. {max(1, k // 2)}. ({exc})"
            )
            raise EnsembleMemoryError(msg) from exc
        raise


def _train_block_locked(
    config: TrainConfig,
    seeds: list[int],
    train_set: DarcyDataset,
    test_set: DarcyDataset | None,
    out: Path,
    ckpt_name: str,
    dev: torch.device,
    resume: bool,
    progress: bool,
    channels_last: bool | None,
) -> list[MemberResult]:
    from tqdm import tqdm

    k = len(seeds)
    blk = _Block(config, seeds, dev, channels_last)
    ckpt_path = out / ckpt_name
    if resume:
        blk.load(load_checkpoint_ensemble(ckpt_path, dev), ckpt_path)
        log.info("train_ensemble: resuming %s at epoch %d", ckpt_path, blk.epoch)
    start = blk.epoch
    bound = distortion_bound(train_set.y, reduction="sum")
    extra = {
        "normalization": None if train_set.stats is None else train_set.stats.to_dict(),
        "train_path": str(train_set.path),
        "distortion_bound": bound,
    }
    dirs = [member_dir(out, s) for s in seeds]
    histories: list[list[dict[str, Any]]] = []
    for seed, d in zip(seeds, dirs, strict=True):
        d.mkdir(parents=True, exist_ok=True)
        config.replace(seed=seed).to_toml(
            d / CONFIG_NAME, header="darcyvae training run (written by train_ensemble)"
        )
        hist = _read_log(d / LOG_NAME, start)
        atomic_write_text(d / LOG_NAME, "".join(json.dumps(r) + "\n" for r in hist))
        histories.append(hist)

    loaders = [
        make_loader(train_set, batch_size=config.batch_size, shuffle=True, generator=g)
        for g in blk.loader_gens
    ]
    n_latent = config.model.latent_dim
    net, opt, schedule = blk.net, blk.opt, blk.schedule

    def save() -> None:
        _atomic_torch_save(blk.state(extra), ckpt_path)

    bar = tqdm(
        range(start, config.epochs),
        initial=start,
        total=config.epochs,
        disable=not progress,
        desc=f"train {k} seeds",
        unit="epoch",
    )
    log_files = [open(d / LOG_NAME, "a") for d in dirs]  # noqa: SIM115 - closed below
    try:
        for epoch in bar:
            if not any(blk.active):
                break
            t0 = time.perf_counter()
            lr = learning_rate(epoch, config.lr_values, config.lr_milestones)
            opt.lr = lr
            include_rate = config.warmup_rate or epoch >= config.rec_epochs
            net.train()
            acc = torch.zeros(4, k, device=dev)
            for batches in _lockstep(loaders):
                y = torch.stack([b[0] for b in batches]).to(dev, non_blocking=True)
                eps = torch.stack(
                    [
                        torch.randn((y.shape[1], n_latent), generator=g, device=dev, dtype=y.dtype)
                        for g in blk.noise_gens
                    ]
                )
                beta, beta_p = schedule.weights(epoch)
                output = net(y, eps)
                loss, rec, _, distortion, rate = _member_losses(
                    blk.prior, y, output, beta, beta_p, config.reduction, include_rate
                )
                opt.zero_grad()
                loss.sum().backward()
                opt.step()
                schedule.step(epoch, rec, None)
                lab = torch.zeros_like(loss)
                acc += torch.stack([loss, rate, distortion, lab]).detach() * y.shape[1]
            # The epoch's one host sync: losses and weights of every member.
            weights = schedule.weights(epoch)
            parts = [(acc / len(train_set)).flatten()]
            parts += [w.detach().float().expand(k) for w in weights if isinstance(w, Tensor)]
            packed = torch.cat(parts).tolist()
            sums = [packed[i * k : (i + 1) * k] for i in range(4)]
            rest = iter(packed[4 * k :])
            betas, _ = (
                [next(rest) for _ in range(k)] if isinstance(w, Tensor) else [float(w)] * k
                for w in weights
            )
            blk.epoch = epoch + 1
            last = epoch == config.epochs - 1
            do_eval = last or (config.eval_every and (epoch + 1) % config.eval_every == 0)
            seconds = time.perf_counter() - t0
            for m in range(k):
                if not blk.active[m]:
                    continue
                vals = [sums[i][m] for i in range(4)]
                if not all(math.isfinite(v) for v in vals):
                    text = (
                        f"train_ensemble: seed {seeds[m]}: non-finite loss in epoch {epoch} "
                        f"(loss {vals[0]}, rate {vals[1]}, distortion {vals[2]}); this member "
                        "stopped, the others go on."
                    )
                    log.warning(text)
                    blk.active[m] = False
                    blk.stopped[m] = {"epoch": epoch, "message": text}
                    continue
                record: dict[str, Any] = {
                    "epoch": epoch,
                    "phase": schedule.phase(epoch),
                    "lr": lr,
                    "beta": betas[m],
                    "loss": vals[0],
                    "rate": vals[1],
                    "distortion": vals[2],
                }
                if do_eval:
                    record.update(_epoch_eval(blk.member(m), train_set, test_set, config, epoch))
                record["seconds"] = seconds
                histories[m].append(record)
                log_files[m].write(json.dumps(record) + "\n")
                log_files[m].flush()
            bar.set_postfix(active=sum(blk.active), loss=f"{min(sums[0]):.4g}")
            if last or (epoch + 1) % config.checkpoint_every == 0:
                save()
    finally:
        for fh in log_files:
            fh.close()
        bar.close()
    if start >= config.epochs or not any(blk.active):
        save()

    final_state = blk.state(extra)
    saved = None  # the ensemble checkpoint on disk, read once if a member diverged
    results = []
    for m, s in enumerate(seeds):
        d = dirs[m]
        if not blk.active[m]:
            info = blk.stopped[m]
            summary = {"seed": s, "status": "diverged", **info}
            if saved is None and ckpt_path.is_file():
                saved = load_checkpoint_ensemble(ckpt_path, dev)
            if saved is not None and int(saved["epoch"]) <= info["epoch"]:
                # The last checkpoint written before the bad epoch: its state is kept.
                ckpt = _member_checkpoint(saved, m, config, blk.scratch)
                _atomic_torch_save(ckpt, d / CHECKPOINT_NAME)
                summary["checkpoint_epoch"] = int(saved["epoch"])
            atomic_write_text(d / SUMMARY_NAME, json.dumps(summary, indent=2, sort_keys=True))
            results.append(
                MemberResult(
                    s,
                    d,
                    "diverged",
                    blk.stopped[m]["epoch"],
                    None,
                    None,
                    blk.stopped[m]["message"],
                    histories[m],
                )
            )
            continue
        _atomic_torch_save(
            _member_checkpoint(final_state, m, config, blk.scratch), d / CHECKPOINT_NAME
        )
        model = blk.member(m)
        final = _final_summary(model, train_set, test_set, config, bound)
        over = detect_over_regularization(
            final["train"]["rate"],
            final["train"]["distortion"],
            bound,
            latent_dim=config.model.latent_dim,
            rate_tol=config.rate_tol,
            rel_tol=config.rel_tol,
        )
        final["over_regularization"] = over.to_dict()
        final["seed"] = s
        final["epochs"] = max(start, config.epochs)
        atomic_write_text(d / SUMMARY_NAME, json.dumps(final, indent=2, sort_keys=True))
        if over.over_regularized:
            log.warning("train_ensemble: seed %d looks over-regularised", s)
        results.append(MemberResult(s, d, "done", final["epochs"], final, over, "", histories[m]))
    return results


def load_checkpoint_ensemble(path: str | os.PathLike, device: torch.device) -> dict[str, Any]:
    """Read an ensemble checkpoint (``ensemble_checkpoint*.pt``)."""
    path = Path(path)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except Exception as exc:
        msg = f"train_ensemble: {str(path)!r} is not a readable torch checkpoint ({exc})."
        raise ValueError(msg) from exc
