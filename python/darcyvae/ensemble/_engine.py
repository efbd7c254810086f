"""One block of members trained together: the engine behind ``train_ensemble``.

Each member starts as the single run with its seed (``darcyvae._run.RunState.build``:
model, beta schedule, generators, labelled subset); the block stacks them into a
``BatchedDenseVAE``, a ``StackedAdam`` and (K,) beta tensors, computes every
member's loss with ``darcyvae.losses.vae_loss`` vmapped over members, and hands a
member back as a ``RunState`` (the single run's state) to evaluate, checkpoint and
summarise it with the single run's own functions.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .._device import to_device_async
from .._io import atomic_write_text
from .._run import (
    LOG_UNITS,
    MetricsLog,
    RunState,
    check_resume_config,
    check_resume_data,
    data_record,
    deterministic_mode,
    epoch_eval,
    final_metrics,
    label_term,
    log_columns,
    log_record,
    save_run,
    upgrade_log,
)

# --------------------------------------------------------------------------- single-run pieces
# Everything the ensemble borrows from the single-run code, in one place: a member
# is trained, evaluated, checkpointed and summarised by the same functions as a run.
from ..checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    CSV_LOG_NAME,
    LOG_NAME,
    SUMMARY_NAME,
    clean_stale_tmp,
    load_checkpoint,
    read_log,
    save_checkpoint,
)
from ..config import TrainConfig
from ..dataset import DarcyDataset, make_loader
from ..losses import guarded_loss, learning_rate, vae_loss
from ..models import VAENoise, VAEOutput
from .batched import BatchedDenseVAE, BatchedOutput, StackedAdam, adam_member_state
from .results import EnsembleMemoryError, MemberResult

__all__ = ["ENSEMBLE_CHECKPOINT", "load_ensemble_checkpoint"]

log = logging.getLogger("darcyvae.ensemble.trainer")

ENSEMBLE_CHECKPOINT = "ensemble_checkpoint{block}.pt"
"""The one checkpoint of a block of members: ``{block}`` is empty for one block, ``_b<i>``
for block i, with ``_r<r>`` in front for the r-th round of restarts."""
_ENSEMBLE_FORMAT = 1
_INIT_LOCK = threading.Lock()
"""Serialises member initialisation between blocks running in threads of one process."""


@dataclass(frozen=True)
class _Options:
    device: torch.device
    resume: bool
    progress: bool
    channels_last: bool | None
    allow_data_change: bool
    precision: str = "float32"


@dataclass(frozen=True)
class _BlockSpec:
    members: list[tuple[int, int, Path]]  # (trial seed, run seed, folder)
    checkpoint: Path


def _train_block(
    config: TrainConfig,
    spec: _BlockSpec,
    train_set: DarcyDataset,
    test_set: DarcyDataset | None,
    opts: _Options,
) -> list[MemberResult]:
    k, dev = len(spec.members), opts.device
    try:
        with deterministic_mode(config.run.deterministic, dev):
            return _EnsembleRun(config, spec, train_set, test_set, opts).train()
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        text = str(exc).lower()
        if not isinstance(exc, torch.OutOfMemoryError) and not (
            "out of memory" in text or "can't allocate memory" in text
        ):
            raise
        seeds = [m[1] for m in spec.members]
        msg = (
            f"train_ensemble: the {dev.type} device ran out of memory training K = {k} members "
            f"at once (seeds {seeds[0]}..{seeds[-1]}); pass a smaller seeds_per_block "
            f"(--seeds-per-block), e.g. {max(1, k // 2)}."
        )
        raise EnsembleMemoryError(msg) from exc


# --------------------------------------------------------------------------- one ensemble


class _Precomputed:
    """Stands in for one member's DenseVAE inside ``vae_loss``: its outputs are already computed."""

    def __init__(self, output: VAEOutput, prior: nn.Module) -> None:
        self._output = output
        self.prior = prior

    def __call__(self, y: Tensor, **_: Any) -> VAEOutput:
        return self._output


class _MemberLoss(nn.Module):
    """``vae_loss`` of one member from its outputs; the prior's parameters are swapped in
    per member by ``torch.func.functional_call`` (the hierarchical prior's networks)."""

    def __init__(self, prior: nn.Module) -> None:
        super().__init__()
        self.prior = prior

    def forward(self, y, output, noise, beta, beta_p, reduction, include_rate, guard):
        terms = vae_loss(
            _Precomputed(output, self.prior),
            y,
            beta=beta,
            beta_p=beta_p,
            reduction=reduction,
            include_rate=include_rate,
            noise=noise,
        )
        nll = terms.prior_nll if terms.prior_nll is not None else torch.zeros_like(terms.loss)
        loss, fired = terms.loss, torch.zeros_like(terms.loss)
        if guard is not None:  # the released loop's phase-1 guard (docs/model.md §4d)
            loss, triggered = guarded_loss(terms, guard)
            fired = triggered.to(loss.dtype)
        return loss, terms.rec, terms.distortion, terms.rate, nll, fired


def _member_losses(
    loss_module: _MemberLoss,
    prior_params: dict[str, Tensor],
    y: Tensor,
    output: Any,
    eps_z: Tensor,
    eps_xi: Tensor | None,
    beta: Tensor | float,
    beta_p: Tensor | float,
    reduction: str,
    include_rate: bool,
    guard: float | None,
) -> tuple[Tensor, ...]:
    """(loss, rec, distortion, rate, prior_nll, guard fired) of every member, each (K,).

    ``vae_loss`` (and ``guarded_loss`` with a ``guard`` threshold) vmapped over members.
    """

    def one(params, y, mu, logvar, z, y_mean, y_logvar, eps_z, eps_xi, beta, beta_p):
        out = VAEOutput(mu, logvar, z, y_mean, y_logvar)
        args = (y, out, VAENoise(eps_z, eps_xi), beta, beta_p, reduction, include_rate, guard)
        return torch.func.functional_call(loss_module, params, args)

    tensors = (prior_params, y, *output, eps_z, eps_xi, beta, beta_p)
    dims = tuple(None if t is None or isinstance(t, float) else 0 for t in tensors)
    dims = (0, *dims[1:]) if prior_params else (None, *dims[1:])
    return torch.func.vmap(one, in_dims=dims)(*tensors)


def _lockstep(loaders: list[Any]) -> Any:
    """Batches of all members' loaders side by side.

    Every iterator is run to its end (unlike ``zip``), so each shuffling
    generator advances exactly as in a single run (the sampler draws once
    more when asked past its last batch).
    """
    iterators = [iter(loader) for loader in loaders]
    while True:
        batches = [next(it, None) for it in iterators]
        if all(b is None for b in batches):
            return
        yield batches


class _EnsembleRun:
    """K members trained together: the batched model, stacked Adam, (K,) beta, K generators."""

    def __init__(
        self,
        config: TrainConfig,
        spec: _BlockSpec,
        train_set: DarcyDataset,
        test_set: DarcyDataset | None,
        opts: _Options,
    ) -> None:
        self.config = config
        self.spec = spec
        self.trial_seeds = [m[0] for m in spec.members]
        self.seeds = [m[1] for m in spec.members]
        self.dirs = [m[2] for m in spec.members]
        self.k = len(self.seeds)
        self.train_set, self.test_set = train_set, test_set
        self.opts = opts
        dev = self.dev = opts.device
        # Each member starts as the single run with its seed (model, beta schedule, generators).
        with _INIT_LOCK:  # initialisation seeds torch's global RNG (forked): one block at a time
            self.runs = [
                RunState.build(config.replace(seed=s), train_set, test_set, dev) for s in self.seeds
            ]
        models = [r.model for r in self.runs]
        self.scratch = models[0]  # reloaded with a member's state when one is needed alone
        self.net = BatchedDenseVAE(models, channels_last=opts.channels_last)
        for r in self.runs:  # the batched model holds the parameters now
            r.model = r.optimizer = None
        del models
        self.loss_module = _MemberLoss(copy.deepcopy(self.scratch.prior))
        self.prior_params = {n: t for n, t in self.net.params.items() if n.startswith("prior.")}
        self.opt = StackedAdam(self.net.parameters(), lr=config.optim.lr_values[0])
        self.schedule = copy.copy(self.runs[0].schedule)  # the rule on (K,) tensors
        self.schedule.beta = torch.stack([r.schedule.beta for r in self.runs])
        self.schedule.beta_p = torch.stack([r.schedule.beta_p for r in self.runs])
        self.loader_gens = [r.loader_gen for r in self.runs]
        self.noise_gens = [r.noise_gen for r in self.runs]
        self.label_gens = [r.label_gen for r in self.runs]
        self.stopped: dict[int, dict[str, Any]] = {}  # member index -> {"epoch", "message"}
        self.epoch = 0
        self.bound = self.runs[0].bound
        # Semi-supervised (docs/model.md §4f): each member's labelled pairs, (K, n_l, ...).
        self.labeled = None
        if self.runs[0].label_idx is not None:
            pairs = [r.labeled() for r in self.runs]
            self.labeled = (
                torch.stack([p[0] for p in pairs]),
                torch.stack([p[1] for p in pairs]),
            )

    def _autocast(self) -> Any:
        """bfloat16 autocast of the network (opt-in ``precision="bfloat16"``), else a no-op."""
        enabled = self.opts.precision == "bfloat16"
        return torch.autocast(self.dev.type, dtype=torch.bfloat16, enabled=enabled)

    @property
    def active(self) -> list[bool]:
        return [m not in self.stopped for m in range(self.k)]

    # ------------------------------------------------------------------ one member as a run

    def member_run(
        self, m: int, *, with_optimizer: bool = False, state: dict[str, Any] | None = None
    ) -> RunState:
        """Member ``m`` as the single run's ``RunState`` (the scratch model holds its state).

        ``state``: a saved ensemble state (``load_ensemble_checkpoint``) instead of the live one.
        """
        live = state is None
        model_state = self.net.state_dict() if live else state["model"]
        model = self.scratch
        model.load_state_dict({n: t[m] for n, t in model_state.items()})
        model.train()
        optimizer = None
        if with_optimizer:
            opt_state = self.opt.state_dict(clone=False) if live else state["optimizer"]
            optimizer = torch.optim.Adam(model.parameters(), lr=opt_state["lr"], weight_decay=0.0)
            optimizer.load_state_dict(adam_member_state(opt_state, m, model))
        sched = {"beta": self.schedule.beta, "beta_p": self.schedule.beta_p}
        sched = sched if live else state["schedule"]
        schedule = copy.copy(self.runs[m].schedule)
        schedule.beta = sched["beta"][m].clone()
        schedule.beta_p = sched["beta_p"][m].clone()
        if live:
            gens = [self.loader_gens[m], self.noise_gens[m], self.label_gens[m]]
        else:
            gens = []
            for key in ("loader", "noise", "labels"):
                g = torch.Generator(device=self.dev if key == "noise" else "cpu")
                g.set_state(state["rng"][key][m].cpu())
                gens.append(g)
        return dataclasses.replace(
            self.runs[m],
            model=model,
            optimizer=optimizer,
            schedule=schedule,
            loader_gen=gens[0],
            noise_gen=gens[1],
            label_gen=gens[2],
        )

    # ------------------------------------------------------------------ checkpoint

    def state(self) -> dict[str, Any]:
        stats = self.train_set.stats
        return {
            "kind": "darcyvae-ensemble",
            "ensemble_format": _ENSEMBLE_FORMAT,
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
            "stopped": {str(m): v for m, v in self.stopped.items()},
            "normalization": None if stats is None else stats.to_dict(),
            **data_record(self.runs[0]),
            "distortion_bound": self.bound,
        }

    def save(self) -> None:
        save_checkpoint(self.state(), self.spec.checkpoint)

    def restore(self) -> None:
        path = self.spec.checkpoint
        ckpt = load_ensemble_checkpoint(path, map_location=self.dev)
        check_resume_config(ckpt["config"], self.config)
        if list(ckpt["seeds"]) != self.seeds:
            msg = (
                f"train_ensemble: {str(path)!r} holds seeds {list(ckpt['seeds'])}, not "
                f"{self.seeds}; resume with the same seeds and seeds_per_block."
            )
            raise ValueError(msg)
        # The data of member 0 stand for all: every member trains on the same files.
        check_resume_data(
            ckpt,
            self.runs[0],
            path,
            who="train_ensemble",
            allow_data_change=self.opts.allow_data_change,
        )
        self.net.load_state_dict(ckpt["model"])
        self.opt.load_state_dict(ckpt["optimizer"])
        self.schedule.beta = ckpt["schedule"]["beta"].to(self.dev)
        self.schedule.beta_p = ckpt["schedule"]["beta_p"].to(self.dev)
        for gens, key in (
            (self.loader_gens, "loader"),
            (self.noise_gens, "noise"),
            (self.label_gens, "labels"),
        ):
            for g, state in zip(gens, ckpt["rng"][key], strict=True):
                g.set_state(state.cpu())
        self.stopped = {int(m): v for m, v in ckpt["stopped"].items()}
        self.epoch = int(ckpt["epoch"])

    # ------------------------------------------------------------------ training

    def train(self) -> list[MemberResult]:
        from tqdm import tqdm

        config, k = self.config, self.k
        if self.opts.resume:
            self.restore()
            log.info("train_ensemble: resuming %s at epoch %d", self.spec.checkpoint, self.epoch)
        start = self.epoch
        epochs = config.optim.epochs
        histories = []
        for seed, d in zip(self.seeds, self.dirs, strict=True):
            d.mkdir(parents=True, exist_ok=True)
            for name in (CHECKPOINT_NAME, LOG_NAME, CSV_LOG_NAME, CONFIG_NAME, SUMMARY_NAME):
                clean_stale_tmp(d, name)
            config.replace(seed=seed).to_toml(
                d / CONFIG_NAME, header="darcyvae training run (written by train_ensemble)"
            )
            histories.append(upgrade_log(read_log(d / LOG_NAME, start), config))
        loaders = [
            make_loader(
                self.train_set, batch_size=config.optim.batch_size, shuffle=True, generator=g
            )
            for g in self.loader_gens
        ]
        bar = tqdm(
            range(start, epochs),
            initial=start,
            total=epochs,
            disable=not self.opts.progress,
            desc=f"train {k} seeds",
            unit="epoch",
        )
        log_files: list[MetricsLog] = []
        try:
            for d, hist in zip(self.dirs, histories, strict=True):
                columns = log_columns(config, self.test_set is not None, hist)
                log_files.append(MetricsLog(d, hist, columns, start))
            for epoch in bar:
                if not any(self.active):
                    break
                t0 = time.perf_counter()
                lr = learning_rate(epoch, config.optim.lr_values, config.optim.lr_milestones)
                self.opt.lr = lr
                sums, betas, beta_ps = self._train_epoch(loaders, epoch)
                self.epoch = epoch + 1
                last = epoch == epochs - 1
                every = config.run.eval_every
                evaluate = last or (every and (epoch + 1) % every == 0)
                seconds = time.perf_counter() - t0
                for m in range(k):
                    if m in self.stopped:
                        continue
                    vals = [row[m] for row in sums[:4]]
                    if not all(math.isfinite(v) for v in vals):
                        self._stop(m, epoch, vals)
                        continue
                    guarded = config.beta.phase1_guard and epoch < config.beta.rec_epochs
                    record = log_record(
                        config,
                        epoch=epoch,
                        phase=self.schedule.phase(epoch),
                        lr=lr,
                        beta=betas[m],
                        beta_p=beta_ps[m],
                        objective=vals[0],
                        rate=vals[1],
                        distortion=vals[2],
                        label=vals[3] if self.labeled is not None else None,
                        guard_steps=sums[4][m] if guarded else None,
                    )
                    if evaluate:
                        record.update(epoch_eval(self.member_run(m), epoch))
                    record["seconds"] = seconds
                    record["units"] = LOG_UNITS
                    histories[m].append(record)
                    log_files[m].write(record)
                done = [h[-1]["loss"] for h in histories if h and h[-1]["epoch"] == epoch]
                best = f"{min(done):.6g} {LOG_UNITS}" if done else "-"
                bar.set_postfix(active=sum(self.active), best_loss=best)
                if last or (epoch + 1) % config.run.checkpoint_every == 0:
                    self.save()
                    for fh in log_files:
                        fh.flush()
        finally:
            for fh in log_files:
                fh.close()
            bar.close()
        if not any(self.active) and self.epoch < epochs:
            self.save()
        return [self._finish(m, histories[m], start) for m in range(k)]

    def _train_epoch(
        self, loaders: list[Any], epoch: int
    ) -> tuple[list[list[float]], list[float], list[float]]:
        """One epoch of all members; the epoch's one host sync.

        Returns per-member rows (loss, rate, distortion, label means; guard steps)
        and the weights beta, beta_p after it.
        """
        config, net, opt, schedule, dev = self.config, self.net, self.opt, self.schedule, self.dev
        phase1 = epoch < config.beta.rec_epochs
        include_rate = config.beta.warmup_rate or not phase1
        guard = config.beta.guard_threshold if config.beta.phase1_guard and phase1 else None
        net.train()
        acc = torch.zeros(4, self.k, device=dev)
        fired = torch.zeros(self.k, device=dev)
        concat = self.labeled is not None and config.labels.forward == "concat"
        for batches in _lockstep(loaders):
            y = torch.stack([b[0] for b in batches]).to(dev, non_blocking=True)
            output, eps_z, eps_xi, coded_l = self._forward(y, concat)
            beta, beta_p = schedule.weights(epoch)
            loss, rec, distortion, rate, prior_nll, triggered = _member_losses(
                self.loss_module,
                self.prior_params,
                y,
                output,
                eps_z,
                eps_xi,
                beta,
                beta_p,
                config.optim.reduction,
                include_rate,
                guard,
            )
            fired += triggered.detach()
            lab = torch.zeros_like(loss)
            if coded_l is not None:
                lab = self._label_losses(*coded_l)
                loss = loss + config.labels.weight * lab
            elif self.labeled is not None and config.labels.weight > 0:
                y_l, theta_l = self._label_batches()
                with self._autocast():  # labels.forward="separate": a second encoder pass
                    mu_l, logvar_l = net.encode(y_l)
                lab = self._label_losses(mu_l.float(), logvar_l.float(), theta_l)
                loss = loss + config.labels.weight * lab
            opt.zero_grad()
            loss.sum().backward()  # members are independent: each gets its own gradient
            opt.step()
            schedule.step(epoch, rec, prior_nll if eps_xi is not None else None)
            acc += torch.stack([loss, rate, distortion, lab]).detach() * len(batches[0][0])
        weights = schedule.weights(epoch)
        parts = [(acc / len(self.train_set)).flatten(), fired]
        parts += [w.detach().float().expand(self.k) for w in weights if isinstance(w, Tensor)]
        packed = torch.cat(parts).tolist()
        k = self.k
        sums = [packed[i * k : (i + 1) * k] for i in range(5)]
        rest = iter(packed[5 * k :])
        beta_lists = [
            [next(rest) for _ in range(k)] if isinstance(w, Tensor) else [float(w)] * k
            for w in weights
        ]
        return sums, beta_lists[0], beta_lists[1]

    def _forward(
        self, y: Tensor, concat: bool
    ) -> tuple[BatchedOutput, Tensor, Tensor | None, tuple[Tensor, Tensor, Tensor] | None]:
        """Every member's forward pass on its batch ``y`` (K, batch, ...), with its own noise.

        Returns the output and the noise (eps_z, eps_xi) of the unlabelled
        batch, and with ``concat`` (``labels.forward="concat"``, docs/model.md
        §4f: one forward on [y; y_l], so BatchNorm sees both) the labelled
        part's (mu, logvar, theta) for the label term; else None.
        """
        b = y.shape[1]
        y_l, theta_l = self._label_batches() if concat else (y[:, :0], None)
        noise = [
            self.scratch.draw_noise(b, g, device=self.dev, dtype=y.dtype, labeled=y_l.shape[1])
            for g in self.noise_gens
        ]
        eps_z = torch.stack([n.z for n in noise])
        eps_xi = None if noise[0].xi is None else torch.stack([n.xi for n in noise])
        with self._autocast():
            output = self.net(torch.cat([y, y_l], dim=1) if concat else y, eps_z)
        if self.opts.precision != "float32":  # the losses in float32
            output = type(output)(*(t.float() for t in output))
        if not concat:
            return output, eps_z, eps_xi, None
        coded_l = (output.mu[:, b:], output.logvar[:, b:], theta_l)
        output = output._replace(
            mu=output.mu[:, :b],
            logvar=output.logvar[:, :b],
            z=output.z[:, :b],
            y_mean=output.y_mean[:, :b],
        )
        return output, eps_z[:, :b], eps_xi, coded_l

    def _label_batches(self) -> tuple[Tensor, Tensor]:
        """This step's labelled pairs of every member, (K, batch, ...) each.

        All pairs, or ``labels.batch_size`` of them drawn from each member's own
        label generator (the single run's ``_label_batch``).
        """
        y_l, theta_l = self.labeled
        size = self.config.labels.batch_size
        if y_l.shape[1] > size:
            picks = [
                to_device_async(torch.randperm(y_l.shape[1], generator=g)[:size], self.dev)
                for g in self.label_gens
            ]
            y_l = torch.stack([y_l[m, p] for m, p in enumerate(picks)])
            theta_l = torch.stack([theta_l[m, p] for m, p in enumerate(picks)])
        return y_l, theta_l

    def _label_losses(self, mu: Tensor, logvar: Tensor, theta: Tensor) -> Tensor:
        """The label term of every member, (K,), from its labelled codes (``label_term`` vmapped)."""
        cfg, hierarchical = self.config, self.scratch.hierarchical

        def one(mu: Tensor, logvar: Tensor, theta: Tensor) -> Tensor:
            return label_term(mu, logvar, theta, cfg, hierarchical=hierarchical)

        return torch.func.vmap(one)(mu, logvar, theta)

    def _stop(self, m: int, epoch: int, vals: list[float]) -> None:
        text = (
            f"train_ensemble: seed {self.seeds[m]}: non-finite loss in epoch {epoch} (objective "
            f"{vals[0]}, rate {vals[1]}, distortion {vals[2]}); this member stopped, the "
            "others go on."
        )
        log.warning(text)
        self.stopped[m] = {"epoch": epoch, "message": text}
        # Keep the member's last good state: the ensemble checkpoint on disk is the
        # last one written before this epoch (saving comes after this check).
        saved = self.spec.checkpoint
        if saved.is_file():
            state = load_ensemble_checkpoint(saved, map_location=self.dev)
            if int(state["epoch"]) <= epoch:
                run = self.member_run(m, with_optimizer=True, state=state)
                save_run(run, self.dirs[m] / CHECKPOINT_NAME, int(state["epoch"]))
                self.stopped[m]["checkpoint_epoch"] = int(state["epoch"])

    def _finish(self, m: int, history: list[dict[str, Any]], start: int) -> MemberResult:
        """Write member ``m``'s checkpoint and summary as a single run would."""
        d, seed, trial = self.dirs[m], self.seeds[m], self.trial_seeds[m]
        ckpt_path = d / CHECKPOINT_NAME
        if m in self.stopped:
            info = self.stopped[m]
            summary = {"seed": seed, "status": "diverged", **info}
            atomic_write_text(d / SUMMARY_NAME, json.dumps(summary, indent=2, sort_keys=True))
            return MemberResult(
                trial,
                d,
                "diverged",
                info["epoch"],
                None,
                None,
                info["message"],
                history,
                run_seed=seed,
            )
        run = self.member_run(m, with_optimizer=True)
        save_run(run, ckpt_path, self.epoch)
        metrics = final_metrics(run)
        final: dict[str, Any] = {"distortion_bound": self.bound}
        final.update({name: s.to_dict() for name, s in metrics.items()})
        over = metrics["train"].over_regularization
        final["over_regularization"] = over.to_dict()
        final["seed"] = seed
        final["epochs"] = max(start, self.config.optim.epochs)
        atomic_write_text(d / SUMMARY_NAME, json.dumps(final, indent=2, sort_keys=True))
        if over.over_regularized:
            log.warning(
                "train_ensemble: seed %d (%s) looks over-regularised (rate %.3g nats/dim, "
                "distortion %.6g vs bound %.6g)",
                seed,
                d,
                over.rate_per_dim,
                over.distortion,
                over.bound,
            )
        return MemberResult(
            trial, d, "done", final["epochs"], final, over, "", history, run_seed=seed
        )


def load_ensemble_checkpoint(
    path: str | os.PathLike, *, map_location: Any = "cpu"
) -> dict[str, Any]:
    """Read and verify an ensemble checkpoint (``ensemble_checkpoint*.pt``).

    Raises
    ------
    FileNotFoundError, ValueError, IntegrityError
        As ``darcyvae.checkpoint.load_checkpoint``; ``ValueError`` also for a
        single run's checkpoint.
    """
    ckpt = load_checkpoint(path, map_location=map_location)
    if ckpt.get("kind") != "darcyvae-ensemble" or ckpt.get("ensemble_format") != _ENSEMBLE_FORMAT:
        msg = f"train_ensemble: {str(path)!r} is not a darcyvae ensemble checkpoint."
        raise ValueError(msg)
    return ckpt
