"""The one training engine: K members (K >= 1) stepped together, checkpointed, summarised.

``darcyvae.training.train`` runs it with one member, ``train_ensemble`` with a
block of seeds; this is the one module that steps the optimiser during
training (docs/model.md §4d-§4f).

Each member starts as the run with its seed (``darcyvae._run.RunState.build``:
model, beta schedule, generators, labelled subset) and is handed back as a
``RunState`` to evaluate, checkpoint and summarise it with the same functions
whatever K is. How the members' networks are held is chosen per K, by
measurement (``benchmarks/bench_training.py``; ``darcyvae.ensemble.members``):
one member runs its own ``DenseVAE`` with ``torch.optim.Adam``; several run
as one ``BatchedDenseVAE`` (grouped convolutions, channels last on the CPU)
with the elementwise ``StackedAdam`` and the loss vmapped over members. Both
compute ``darcyvae.losses.vae_loss`` per member on
the member's own batches and noise, so member s equals the single run with
seed s to float32 rounding.

Where a block writes its state: a single run (``BlockSpec.single``) keeps the
run's own ``checkpoint.pt`` (the single-run format: old checkpoints resume);
an ensemble keeps one ``ensemble_checkpoint*.pt`` for the block and writes
each member's ``checkpoint.pt`` when it finishes.
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
from torch import Tensor

from .. import _run
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
    upgrade_log,
)
from ..checkpoint import (
    CHECKPOINT_NAME,
    CONFIG_NAME,
    CSV_LOG_NAME,
    LOG_NAME,
    SUMMARY_NAME,
    clean_stale_tmp,
    load_checkpoint,
    load_state,
    read_log,
    save_checkpoint,
)
from ..config import TrainConfig
from ..dataset import DarcyDataset, make_loader
from ..errors import EnsembleMemoryError
from ..losses import learning_rate
from .batched import BatchedOutput, adam_member_state
from .members import OneMember, StackedMembers, stack_for
from .results import RunResult

__all__ = [
    "ENSEMBLE_CHECKPOINT",
    "BlockSpec",
    "EngineOptions",
    "load_ensemble_checkpoint",
    "train_block",
]

log = logging.getLogger("darcyvae.ensemble.trainer")

ENSEMBLE_CHECKPOINT = "ensemble_checkpoint{block}.pt"
"""The one checkpoint of a block of members: ``{block}`` is empty for one block, ``_b<i>``
for block i, with ``_r<r>`` in front for the r-th round of restarts."""
_ENSEMBLE_FORMAT = 1
_INIT_LOCK = threading.Lock()
"""Serialises member initialisation between blocks running in threads of one process."""


@dataclass(frozen=True)
class EngineOptions:
    """How a block runs (the same for every block of a call)."""

    device: torch.device
    resume: bool
    progress: bool
    channels_last: bool | None = None
    allow_data_change: bool = False
    precision: str = "float32"


@dataclass(frozen=True)
class BlockSpec:
    """The members of one block and where its state is kept.

    ``members``: (trial seed, run seed, folder) per member. ``checkpoint``: the
    block's checkpoint. ``single``: a single run (``train``): one member, whose
    ``checkpoint`` is its own ``checkpoint.pt`` in the single-run format, and
    whose divergence is reported to the caller rather than written to a summary.
    """

    members: list[tuple[int, int, Path]]
    checkpoint: Path
    single: bool = False


def train_block(
    config: TrainConfig,
    spec: BlockSpec,
    train_set: DarcyDataset,
    test_set: DarcyDataset | None,
    opts: EngineOptions,
) -> list[RunResult]:
    """Train the members of ``spec`` together; one ``RunResult`` per member, in order."""
    k, dev = len(spec.members), opts.device
    try:
        with deterministic_mode(config.run.deterministic, dev):
            return _Block(config, spec, train_set, test_set, opts).train()
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


# --------------------------------------------------------------------------- a block


class _Block:
    """K members trained together: their networks, Adam states, (K,) beta, K generators."""

    def __init__(
        self,
        config: TrainConfig,
        spec: BlockSpec,
        train_set: DarcyDataset,
        test_set: DarcyDataset | None,
        opts: EngineOptions,
    ) -> None:
        self.config = config
        self.spec = spec
        self.single = spec.single
        self.who = "train" if spec.single else "train_ensemble"
        self.trial_seeds = [m[0] for m in spec.members]
        self.seeds = [m[1] for m in spec.members]
        self.dirs = [m[2] for m in spec.members]
        self.k = len(self.seeds)
        if self.single and self.k != 1:  # pragma: no cover - train builds one member
            msg = "train: a single run has exactly one member."
            raise ValueError(msg)
        self.train_set, self.test_set = train_set, test_set
        self.opts = opts
        dev = self.dev = opts.device
        # Each member starts as the single run with its seed (model, beta schedule, generators).
        with _INIT_LOCK:  # initialisation seeds torch's global RNG (forked): one block at a time
            self.runs = [
                RunState.build(config.replace(seed=s), train_set, test_set, dev) for s in self.seeds
            ]
        batched, channels_last = stack_for(self.k, dev, opts.channels_last)
        if not batched:
            self.members: Any = OneMember(self.runs[0])
        else:
            lr = config.optim.lr_values[0]
            self.members = StackedMembers(self.runs, channels_last, lr)
        self.schedule = copy.copy(self.runs[0].schedule)  # the rule on (K,) tensors
        self.schedule.beta = torch.stack([r.schedule.beta for r in self.runs])
        self.schedule.beta_p = torch.stack([r.schedule.beta_p for r in self.runs])
        self.loader_gens = [r.loader_gen for r in self.runs]
        self.noise_gens = [r.noise_gen for r in self.runs]
        self.label_gens = [r.label_gen for r in self.runs]
        self.stopped: dict[int, dict[str, Any]] = {}  # member index -> {"epoch", "message"}
        self.epoch = 0
        self.saved_epoch: int | None = None  # epochs in the last checkpoint written or read
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
        self, m: int, *, state: dict[str, Any] | None = None, with_optimizer: bool = True
    ) -> RunState:
        """Member ``m`` as the single run's ``RunState`` (model, Adam, beta, generators).

        ``state``: a saved ensemble state (``load_ensemble_checkpoint``) instead of the live
        one. ``with_optimizer=False``: no Adam state (enough to evaluate the member).
        """
        if state is None:
            model, optimizer = self.members.member(m, with_optimizer=with_optimizer)
            sched = {"beta": self.schedule.beta, "beta_p": self.schedule.beta_p}
            gens = [self.loader_gens[m], self.noise_gens[m], self.label_gens[m]]
        else:
            model = self.members.scratch()
            model.load_state_dict({n: t[m] for n, t in state["model"].items()})
            model.train()
            opt_state = state["optimizer"]
            optimizer = torch.optim.Adam(model.parameters(), lr=opt_state["lr"], weight_decay=0.0)
            optimizer.load_state_dict(adam_member_state(opt_state, m, model))
            sched = state["schedule"]
            gens = []
            for key in ("loader", "noise", "labels"):
                g = torch.Generator(device=self.dev if key == "noise" else "cpu")
                g.set_state(state["rng"][key][m].cpu())
                gens.append(g)
        schedule = copy.copy(self.runs[m].schedule)
        schedule.beta = sched["beta"][m].clone()
        schedule.beta_p = sched["beta_p"][m].clone()
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
            "model": self.members.state_dict(),
            "optimizer": self.members.optimizer_state(),
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
        """Checkpoint the block: the run's ``checkpoint.pt`` (single), else the ensemble's."""
        if self.single:
            _run.save_run(self.member_run(0), self.spec.checkpoint, self.epoch)
        else:
            save_checkpoint(self.state(), self.spec.checkpoint)
        self.saved_epoch = self.epoch

    def restore(self) -> None:
        if self.single:
            self._restore_run()
        else:
            self._restore_ensemble()
        self.saved_epoch = self.epoch

    def _restore_run(self) -> None:
        """Continue a single run from its ``checkpoint.pt`` (any single-run checkpoint)."""
        path, run = self.spec.checkpoint, self.runs[0]
        ckpt = load_checkpoint(path, map_location=self.dev)
        check_resume_config(ckpt["config"], self.config)
        check_resume_data(
            ckpt, run, path, who="train", allow_data_change=self.opts.allow_data_change
        )
        model, optimizer = self.members.member(0)
        load_state(model, ckpt["model"], "train (resume)")
        load_state(optimizer, ckpt["optimizer"], "train (resume)")
        run.schedule.load_state_dict(ckpt["schedule"])
        self.schedule.beta = run.schedule.beta.reshape(1)
        self.schedule.beta_p = run.schedule.beta_p.reshape(1)
        run.loader_gen.set_state(ckpt["rng"]["loader"].cpu())
        run.noise_gen.set_state(ckpt["rng"]["noise"].cpu())
        run.label_gen.set_state(ckpt["rng"]["labels"].cpu())
        self.epoch = int(ckpt["epoch"])

    def _restore_ensemble(self) -> None:
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
        self.members.load_state_dict(ckpt["model"])
        self.members.load_optimizer_state(ckpt["optimizer"])
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

    def train(self) -> list[RunResult]:
        config, k = self.config, self.k
        if self.opts.resume:
            self.restore()
        start = self.epoch
        epochs = config.optim.epochs
        histories = []
        header = f"darcyvae training run (written by {self.who})"
        for d in self.dirs:
            d.mkdir(parents=True, exist_ok=True)
            for name in (CHECKPOINT_NAME, LOG_NAME, CSV_LOG_NAME, CONFIG_NAME, SUMMARY_NAME):
                clean_stale_tmp(d, name)  # left by an interrupted atomic save
            # every log is checked before any file of the block is rewritten
            histories.append(upgrade_log(read_log(d / LOG_NAME, start), config))
        for seed, d in zip(self.seeds, self.dirs, strict=True):
            config.replace(seed=seed).to_toml(d / CONFIG_NAME, header=header)
        if self.opts.resume:
            log.info("%s: resuming %s at epoch %d", self.who, self._where(), self.epoch)
        loaders = [
            make_loader(
                self.train_set, batch_size=config.optim.batch_size, shuffle=True, generator=g
            )
            for g in self.loader_gens
        ]
        bar = self._bar(start, epochs)
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
                self.members.set_lr(lr)
                sums, betas, beta_ps = self._train_epoch(loaders, epoch)
                self.epoch = epoch + 1
                last = epoch == epochs - 1
                every = config.run.eval_every
                evaluate = last or (every and (epoch + 1) % every == 0)
                evaluations = self._evaluate(epoch) if evaluate else None
                for m in range(k):
                    if m in self.stopped:
                        continue
                    vals = [row[m] for row in sums[:4]]
                    if not all(math.isfinite(v) for v in vals):
                        self._stop(m, epoch, vals)
                        continue
                    rates = (lr, betas[m], beta_ps[m])
                    evaluation = None if evaluations is None else evaluations[m]
                    record = self._record(m, epoch, rates, vals, sums[4][m], evaluation)
                    record["seconds"] = time.perf_counter() - t0
                    record["units"] = LOG_UNITS
                    histories[m].append(record)
                    log_files[m].write(record)
                self._bar_postfix(bar, histories, epoch)
                due = last or (epoch + 1) % config.run.checkpoint_every == 0
                # a diverged single run keeps its last good checkpoint untouched
                if due and (any(self.active) or not self.single):
                    self.save()
                    for fh in log_files:
                        fh.flush()
        finally:
            for fh in log_files:
                fh.close()
            bar.close()
        if not self.single and not any(self.active) and self.epoch < epochs:
            self.save()  # the stopped members are recorded in the ensemble checkpoint
        return [self._finish(m, histories[m], start) for m in range(k)]

    def _record(
        self,
        m: int,
        epoch: int,
        rates: tuple[float, float, float],
        vals: list[float],
        guard_steps: float,
        evaluation: dict[str, Any] | None,
    ) -> dict[str, Any]:
        """Member ``m``'s log record of ``epoch`` (with its evaluation, when one is due).

        ``rates``: the learning rate, beta and beta_p; ``vals``: the epoch means of the
        objective, rate, distortion and label loss."""
        config = self.config
        lr, beta, beta_p = rates
        guarded = config.beta.phase1_guard and epoch < config.beta.rec_epochs
        record = log_record(
            config,
            epoch=epoch,
            phase=self.schedule.phase(epoch),
            lr=lr,
            beta=beta,
            beta_p=beta_p,
            objective=vals[0],
            rate=vals[1],
            distortion=vals[2],
            label=vals[3] if self.labeled is not None else None,
            guard_steps=guard_steps if guarded else None,
        )
        if evaluation is not None:
            record.update(evaluation)
        return record

    def _evaluate(self, epoch: int) -> list[dict[str, Any]]:
        """Every member's evaluation at the end of ``epoch`` (``epoch_eval``): S_D on the
        train and test data and the test losses, eval mode, the epoch as the noise seed;
        a block of members is evaluated in one batched pass (``StackedMembers.evaluate``)."""
        bs = self.config.run.eval_batch_size
        train = self.members.evaluate(self.train_set, batch_size=bs, seed=epoch)
        test = [None] * self.k
        if self.test_set is not None:
            test = self.members.evaluate(self.test_set, batch_size=bs, seed=epoch)
        return [epoch_eval(tr, te) for tr, te in zip(train, test, strict=True)]

    def _where(self) -> str:
        return str(self.dirs[0] if self.single else self.spec.checkpoint)

    def _bar(self, start: int, epochs: int) -> Any:
        from tqdm import tqdm

        desc = f"train {self.dirs[0].name}" if self.single else f"train {self.k} seeds"
        return tqdm(
            range(start, epochs),
            initial=start,
            total=epochs,
            disable=not self.opts.progress,
            desc=desc,
            unit="epoch",
        )

    def _bar_postfix(self, bar: Any, histories: list[list[dict[str, Any]]], epoch: int) -> None:
        if self.single:
            if histories[0] and histories[0][-1]["epoch"] == epoch:
                bar.set_postfix_str(bar_text(histories[0][-1]))
            return
        done = [h[-1]["loss"] for h in histories if h and h[-1]["epoch"] == epoch]
        best = f"{min(done):.6g} {LOG_UNITS}" if done else "-"
        bar.set_postfix(active=sum(self.active), best_loss=best)

    def _train_epoch(
        self, loaders: list[Any], epoch: int
    ) -> tuple[list[list[float]], list[float], list[float]]:
        """One epoch of all members; the epoch's one host sync.

        Returns per-member rows (loss, rate, distortion, label means; guard steps)
        and the weights beta, beta_p after it.
        """
        config, members, schedule, dev = self.config, self.members, self.schedule, self.dev
        phase1 = epoch < config.beta.rec_epochs
        include_rate = config.beta.warmup_rate or not phase1
        guard = config.beta.guard_threshold if config.beta.phase1_guard and phase1 else None
        members.train()
        acc = torch.zeros(4, self.k, device=dev)
        fired = torch.zeros(self.k, device=dev)
        concat = self.labeled is not None and config.labels.forward == "concat"
        for batches in _lockstep(loaders):
            if self.k == 1:
                y = batches[0][0].to(dev, non_blocking=True).unsqueeze(0)
            else:
                y = torch.stack([b[0] for b in batches]).to(dev, non_blocking=True)
            output, eps_z, eps_xi, coded_l = self._forward(y, concat)
            beta, beta_p = schedule.weights(epoch)
            loss, rec, distortion, rate, prior_nll, triggered = members.losses(
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
                    mu_l, logvar_l = members.encode(y_l)
                lab = self._label_losses(mu_l.float(), logvar_l.float(), theta_l)
                loss = loss + config.labels.weight * lab
            members.zero_grad()
            loss.sum().backward()  # members are independent: each gets its own gradient
            members.step()
            schedule.step(epoch, rec, prior_nll if eps_xi is not None else None)
            acc += torch.stack([loss, rate, distortion, lab]).detach() * y.shape[1]
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
            self.members.template.draw_noise(
                b, g, device=self.dev, dtype=y.dtype, labeled=y_l.shape[1]
            )
            for g in self.noise_gens
        ]
        eps_z = torch.stack([n.z for n in noise])
        eps_xi = None if noise[0].xi is None else torch.stack([n.xi for n in noise])
        with self._autocast():
            output = self.members.forward(torch.cat([y, y_l], dim=1) if concat else y, eps_z)
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
        label generator.
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
        """The label term of every member, (K,), from its labelled codes."""
        cfg, hierarchical = self.config, self.members.hierarchical

        def one(mu: Tensor, logvar: Tensor, theta: Tensor) -> Tensor:
            return label_term(mu, logvar, theta, cfg, hierarchical=hierarchical)

        return self.members.label_losses(one, mu, logvar, theta)

    # ------------------------------------------------------------------ the end of a member

    def _stop(self, m: int, epoch: int, vals: list[float]) -> None:
        loss = f"objective {vals[0]}, rate {vals[1]}, distortion {vals[2]}"
        if self.single:
            text = (
                f"train: non-finite loss in epoch {epoch} ({loss}); stopped. {self._kept_single()}"
            )
            self.stopped[m] = {"epoch": epoch, "message": text}
            return
        text = (
            f"train_ensemble: seed {self.seeds[m]}: non-finite loss in epoch {epoch} ({loss}); "
            "this member stopped, the others go on."
        )
        log.warning(text)
        self.stopped[m] = {"epoch": epoch, "message": text}
        # Keep the member's last good state: the ensemble checkpoint on disk is the
        # last one written before this epoch (saving comes after this check).
        saved = self.spec.checkpoint
        if saved.is_file():
            state = load_ensemble_checkpoint(saved, map_location=self.dev)
            if int(state["epoch"]) <= epoch:
                run = self.member_run(m, state=state)
                _run.save_run(run, self.dirs[m] / CHECKPOINT_NAME, int(state["epoch"]))
                self.stopped[m]["checkpoint_epoch"] = int(state["epoch"])

    def _kept_single(self) -> str:
        """What a diverged single run keeps: its last checkpoint, or that there is none."""
        if self.saved_epoch is not None:
            return (
                f"The last good checkpoint ({str(self.spec.checkpoint)!r}, epoch "
                f"{self.saved_epoch}) is kept."
            )
        return (
            "No checkpoint had been written yet (one is written every "
            f"{self.config.run.checkpoint_every} epoch(s)), so there is none to keep."
        )

    def _finish(self, m: int, history: list[dict[str, Any]], start: int) -> RunResult:
        """Member ``m``'s result; its checkpoint and summary written as a run writes them."""
        d, seed, trial = self.dirs[m], self.seeds[m], self.trial_seeds[m]
        if m in self.stopped:
            info = self.stopped[m]
            if not self.single:  # a single run raises instead (train)
                summary = {"seed": seed, "status": "diverged", **info}
                atomic_write_text(d / SUMMARY_NAME, json.dumps(summary, indent=2, sort_keys=True))
            return RunResult(
                seed=trial,
                out_dir=d,
                status="diverged",
                epochs=info["epoch"],
                message=info["message"],
                history=history,
                run_seed=seed,
            )
        run = self.member_run(m)
        if not (self.single and self.saved_epoch == self.epoch):
            _run.save_run(run, d / CHECKPOINT_NAME, self.epoch)
        metrics = final_metrics(run)
        final: dict[str, Any] = {"distortion_bound": self.bound}
        final.update({name: s.to_dict() for name, s in metrics.items()})
        over = metrics["train"].over_regularization
        final["over_regularization"] = over.to_dict()
        final["seed"] = seed
        final["epochs"] = max(start, self.config.optim.epochs)
        atomic_write_text(d / SUMMARY_NAME, json.dumps(final, indent=2, sort_keys=True))
        if over.over_regularized:
            who = self.who if self.single else f"{self.who}: seed {seed}"
            log.warning(
                "%s (%s) looks over-regularised (rate %.3g nats/dim, distortion %.6g vs bound "
                "%.6g)",
                who,
                d,
                over.rate_per_dim,
                over.distortion,
                over.bound,
            )
        return RunResult(
            seed=trial,
            out_dir=d,
            status="done",
            epochs=final["epochs"],
            final=final,
            over_regularization=over,
            history=history,
            run_seed=seed,
            metrics=metrics,
        )


def bar_text(record: dict[str, Any]) -> str:
    """A single run's progress-bar postfix: the losses in their unit, then beta."""
    text = f"loss {record['loss']:.6g}, rate {record['rate']:.3g}"
    if record.get("test_loss") is not None:
        text += f", test loss {record['test_loss']:.6g}"
    return f"{text} {LOG_UNITS}; beta {record['beta']:.3g}"


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
