"""The configuration of a training run, in sections (docs/model.md §4d-§4f), and the shipped presets.

Public names
------------
TrainConfig
    Frozen run configuration: ``model`` (a ``VAEConfig``) plus four
    sections, ``optim``, ``beta``, ``labels`` and ``run``; read from and
    written to TOML with one table per section.
OptimConfig, BetaConfig, LabelConfig, RunConfig
    The sections.
FLAT_KEYS
    The flat (pre-section) key of every setting and where it lives now;
    old flat TOML files and dicts still load through it.
list_presets, load_preset
    The shipped configurations of the paper's experiments (``configs/*.toml``).
model_from_dict
    The ``[model]`` table, also as ``preset = NAME`` (a registered model) plus overrides.
parse_overrides
    Command-line overrides ``section.key=value`` (``darcyvae train --set``,
    ``TrainConfig.with_overrides``).
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, fields
from importlib import resources
from pathlib import Path
from typing import Any

from . import _toml
from ._checks import check_choice, check_int, check_real, check_sequence_fields, config_kwargs
from .losses import BETA_MODES, LABEL_DIM_REDUCTIONS, LABEL_LOSSES, REDUCTIONS

logger = logging.getLogger(__name__)

LEGACY_KEYS = {("run", "rel_tol"): "margin_tol"}
"""Settings of older files that are read and dropped with a warning, and what replaced them."""
from .models import VAEConfig

__all__ = [
    "FLAT_KEYS",
    "LABEL_FORWARDS",
    "LABEL_SOURCES",
    "NORMALIZATIONS",
    "BetaConfig",
    "LabelConfig",
    "OptimConfig",
    "RunConfig",
    "TrainConfig",
    "list_presets",
    "load_preset",
    "model_from_dict",
    "parse_overrides",
]

NORMALIZATIONS = ("none", "channel")
LABEL_SOURCES = ("train", "test")
"""Where the labelled pairs come from (``LabelConfig.source``, docs/model.md §4f)."""
LABEL_FORWARDS = ("separate", "concat")
"""How the labelled pairs pass through the network (``LabelConfig.forward``, docs/model.md §4f)."""


DEFAULT_LR_VALUES = (5e-4, 1e-4)
DEFAULT_LR_MILESTONES = (5900,)
"""The released no-HP schedule: 5e-4, then 1e-4 from epoch 5900 (docs/model.md §4d)."""


def _default_milestones(values: tuple[float, ...], epochs: int, caller: str) -> tuple[int, ...]:
    """The milestones of ``lr_values`` when ``lr_milestones`` is left out.

    No milestones for one (constant) rate, the released (5900,) for the default pair; any
    other schedule needs its epochs, which cannot be guessed: a ``ValueError``
    names the fix.
    """
    if len(values) == 1:
        return ()
    if values == DEFAULT_LR_VALUES:
        return DEFAULT_LR_MILESTONES
    even = [epochs * i // len(values) for i in range(1, len(values))]  # e.g. equal stretches
    if even[0] < 1 or len(set(even)) < len(even):
        even = list(range(100, 100 * len(values), 100))
    msg = (
        f"{caller}: lr_values {values} has {len(values)} rates but lr_milestones is not set "
        f"(its default {DEFAULT_LR_MILESTONES} goes with the default lr_values "
        f"{DEFAULT_LR_VALUES}); set lr_milestones with len(lr_values) - 1 = {len(values) - 1} "
        f"epochs at which the rate changes, e.g. lr_milestones = {even}."
    )
    raise ValueError(msg)


def _check_bool(value: Any, name: str, caller: str) -> None:
    if not isinstance(value, bool):
        msg = f"{caller}: {name} must be a bool; got {value!r}."
        raise TypeError(msg)


@dataclass(frozen=True)
class OptimConfig:
    """Optimiser and schedule (docs/model.md §4d): Adam, weight decay 0.

    Parameters
    ----------
    epochs : int, default=6500
    batch_size : int, default=64
    lr_values : tuple of float, default=(5e-4, 1e-4)
    lr_milestones : tuple of int or None, default=None
        Piecewise-constant learning rate (``darcyvae.losses.learning_rate``):
        ``lr_values[i]`` from epoch ``lr_milestones[i - 1]`` on, so one more
        value than milestones. The defaults are the released no-HP schedule,
        (5e-4, 1e-4) with milestone 5900; the HP one is (3e-4, 5e-5, 2.5e-5)
        with milestones (6500, 12500) over 14000 epochs. Left out (None), the
        milestones follow ``lr_values``: none for a single (constant) rate,
        (5900,) for the default pair of rates; any other ``lr_values`` need
        their milestones (a ``ValueError`` says so: set ``lr_milestones`` with
        ``len(lr_values) - 1`` epochs), since the epochs at which the rate
        changes cannot be guessed.
    reduction : {"mean", "sum"}, default="mean"
        The objective's reduction (docs/model.md §4b): the released code's ``mean``
        or the true negative ELBO ``sum``.
    """

    epochs: int = 6500
    batch_size: int = 64
    lr_values: tuple[float, ...] = DEFAULT_LR_VALUES
    lr_milestones: tuple[int, ...] | None = None
    reduction: str = "mean"

    def __post_init__(self) -> None:
        c = "TrainConfig.optim"
        check_sequence_fields(self)  # lr_values = "5" is not read character by character
        check_int(self.epochs, "epochs", c, low=0)
        check_int(self.batch_size, "batch_size", c, low=1)
        values = tuple(float(v) for v in self.lr_values)
        if not values:
            msg = f"{c}: lr_values must hold at least one learning rate; got []."
            raise ValueError(msg)
        for v in values:
            check_real(v, "each learning rate", c, low=0.0, low_open=True)
        milestones = (
            _default_milestones(values, self.epochs, c) if self.lr_milestones is None else None
        )
        milestones = tuple(self.lr_milestones) if milestones is None else milestones
        for m in milestones:
            check_int(m, "each lr milestone", c, low=1)
        if list(milestones) != sorted(set(milestones)):
            msg = f"{c}: lr_milestones must be strictly increasing epochs; got {milestones}."
            raise ValueError(msg)
        if len(values) != len(milestones) + 1:
            msg = (
                f"{c}: lr_values must have one more entry than lr_milestones (the epochs at "
                f"which the rate changes); got {len(values)} rates {values} and "
                f"{len(milestones)} milestones {milestones}: set lr_milestones with "
                f"len(lr_values) - 1 = {len(values) - 1} epochs, or lr_values with "
                f"len(lr_milestones) + 1 = {len(milestones) + 1} rates."
            )
            raise ValueError(msg)
        object.__setattr__(self, "lr_values", values)
        object.__setattr__(self, "lr_milestones", tuple(int(m) for m in milestones))
        check_choice(self.reduction, "reduction", c, REDUCTIONS)


@dataclass(frozen=True)
class BetaConfig:
    """The rate weight beta and its two phases (docs/model.md §4d), and beta_p of the HP (docs/model.md §4c).

    Parameters
    ----------
    mode : {"adaptive", "fixed"}, default="adaptive"
        Phase 2: the paper's adaptive rule, or a constant ``value`` (beta-VAE).
    value : float, default=1.0
        The constant beta of ``fixed`` mode (after phase 1).
    beta0 : float, default=1e-7
        Beta of phase 1 and the start of the adaptive rule (released code: 1e-9).
    rec_epochs : int, default=4000
        E_rec: epochs of the reconstruction-only phase 1.
    warmup_rate : bool, default=True
        Keep the rate (weighted by beta0) in phase 1; False drops it, as the
        released code does.
    nu, tau : float, default=0.005, 1.0
        Parameters of the beta rule.
    adaptive_beta_p : bool or None, default=None
        Weight the HP's KL(q_gamma || p(xi)) by beta_p driven by the same
        rule with L = +mean log p_pi(z|xi), not capped at 1 (docs/model.md §4c); None
        means "when ``model.hp_variant == 'full'``" (the released code).
    beta_p0 : float, default=1e-8
        Start of the adaptive beta_p (the released code's).
    phase1_guard : bool, default=False
        The released loop's guard: in phase 1, beta = 1 for any step whose
        batch mean of L_reg exceeds ``guard_threshold`` (docs/model.md §4d). On in the
        presets that reproduce paper figures; steps where it fired are
        counted in ``metrics.jsonl`` (``guard_steps``).
    guard_threshold : float, default=1e10
    """

    mode: str = "adaptive"
    value: float = 1.0
    beta0: float = 1e-7
    rec_epochs: int = 4000
    warmup_rate: bool = True
    nu: float = 0.005
    tau: float = 1.0
    adaptive_beta_p: bool | None = None
    beta_p0: float = 1e-8
    phase1_guard: bool = False
    guard_threshold: float = 1e10

    def __post_init__(self) -> None:
        c = "TrainConfig.beta"
        check_choice(self.mode, "mode", c, BETA_MODES)
        check_real(self.value, "value", c, low=0.0)
        check_real(self.beta0, "beta0", c, low=0.0, low_open=True, high=1.0)
        check_int(self.rec_epochs, "rec_epochs", c, low=0)
        _check_bool(self.warmup_rate, "warmup_rate", c)
        check_real(self.nu, "nu", c, low=0.0)
        check_real(self.tau, "tau", c, low=0.0)
        if self.adaptive_beta_p is not None and not isinstance(self.adaptive_beta_p, bool):
            msg = f"{c}: adaptive_beta_p must be a bool or None; got {self.adaptive_beta_p!r}."
            raise TypeError(msg)
        check_real(self.beta_p0, "beta_p0", c, low=0.0, low_open=True)
        _check_bool(self.phase1_guard, "phase1_guard", c)
        check_real(self.guard_threshold, "guard_threshold", c, low=0.0, low_open=True)


@dataclass(frozen=True)
class LabelConfig:
    """Semi-supervised labels (docs/model.md §4f).

    The defaults are darcyvae's original setup (labels taken out of the
    training set, a separate encoder pass, the term reduced like the rate);
    ``source="test"``, ``forward="concat"``, ``dim_reduction="sum"`` together
    are the authors' semi-supervised code (``configs/kle2_semisupervised.toml``).
    Each is its own option so that the effect of each difference can be
    measured.

    Parameters
    ----------
    n_labeled : int, default=0
        Number of labelled pairs n_l (0: unsupervised).
    loss : {"nll", "mse"}, default="nll"
    weight : float, default=1.0
        lambda.
    seed : int or None, default=None
        Chooses the labelled subset of the training set for
        ``source="train"`` (None: derived from ``run.seed``); unused with
        ``source="test"``.
    batch_size : int, default=64
        Labelled pairs per step, drawn afresh each step from the label
        generator when n_l is larger (all of them when n_l <= batch_size).
    source : {"train", "test"}, default="train"
        ``"train"``: a random subset (``seed``) of the training set;
        ``"test"``: the first n_l samples of the test data passed to
        ``train`` (the released code); the labelled pairs are then extra
        data, not part of the unlabelled set.
    forward : {"separate", "concat"}, default="separate"
        ``"separate"``: a second encoder pass on the labelled batch;
        ``"concat"``: one forward pass per step on [unlabelled batch;
        labelled batch], so BatchNorm normalises them together (the
        released code); L_rec and L_reg are taken over the unlabelled part,
        the label term over the labelled part.
    dim_reduction : {"rate", "sum"}, default="rate"
        Over latent dimensions the label term is reduced like the rate
        (``"rate"``: averaged for ``optim.reduction="mean"`` without HP,
        else summed) or always summed (``"sum"``, the released code).
    """

    n_labeled: int = 0
    loss: str = "nll"
    weight: float = 1.0
    seed: int | None = None
    batch_size: int = 64
    source: str = "train"
    forward: str = "separate"
    dim_reduction: str = "rate"

    def __post_init__(self) -> None:
        c = "TrainConfig.labels"
        check_int(self.n_labeled, "n_labeled", c, low=0)
        check_choice(self.loss, "loss", c, LABEL_LOSSES)
        check_real(self.weight, "weight", c, low=0.0)
        if self.seed is not None:
            check_int(self.seed, "seed", c, low=0)
        check_int(self.batch_size, "batch_size", c, low=1)
        check_choice(self.source, "source", c, LABEL_SOURCES)
        check_choice(self.forward, "forward", c, LABEL_FORWARDS)
        check_choice(self.dim_reduction, "dim_reduction", c, LABEL_DIM_REDUCTIONS)


@dataclass(frozen=True)
class RunConfig:
    """Seed, data normalisation, checkpoints, evaluation and the over-regularisation verdict.

    Parameters
    ----------
    seed : int, default=0
        Seeds initialisation, shuffling, noise and (by default) the labels.
    normalize : {"none", "channel"}, default="none"
        Per-channel normalisation with the training file's statistics.
    deterministic : bool, default=False
        Run under ``torch.use_deterministic_algorithms(True)`` (restored
        afterwards; on CUDA also sets ``CUBLAS_WORKSPACE_CONFIG`` if unset).
    checkpoint_every : int, default=100
        Epochs between checkpoints (one is always written at the end).
    eval_every : int, default=1
        Epochs between test/S_D evaluations (0: only at the end).
    eval_batch_size : int, default=256
    rate_tol : float, default=0.01
        Over-regularisation threshold on the rate, nats per latent dimension.
    margin_tol : float, default=0.05
        Nats per field element (channel x pixel) below the Theorem-1 bound
        that count as trained; within it (and with a rate under
        ``rate_tol``) a run is over-regularised (docs/model.md §4e). Unit-free.
        (It replaced ``rel_tol``, a fraction of |bound| that moved with the
        units of the data; a file that still sets ``rel_tol`` loads with a
        warning and the default margin.)
    max_restarts : int, default=0
        Restarts with a new seed when the run ends over-regularised
        (``train_with_restarts``).
    """

    seed: int = 0
    normalize: str = "none"
    deterministic: bool = False
    checkpoint_every: int = 100
    eval_every: int = 1
    eval_batch_size: int = 256
    rate_tol: float = 0.01
    margin_tol: float = 0.05
    max_restarts: int = 0

    def __post_init__(self) -> None:
        c = "TrainConfig.run"
        check_int(self.seed, "seed", c, low=0)
        check_choice(self.normalize, "normalize", c, NORMALIZATIONS)
        _check_bool(self.deterministic, "deterministic", c)
        check_int(self.checkpoint_every, "checkpoint_every", c, low=1)
        check_int(self.eval_every, "eval_every", c, low=0)
        check_int(self.eval_batch_size, "eval_batch_size", c, low=1)
        check_real(self.rate_tol, "rate_tol", c, low=0.0)
        check_real(self.margin_tol, "margin_tol", c, low=0.0)
        check_int(self.max_restarts, "max_restarts", c, low=0)


_SECTIONS: dict[str, type] = {
    "optim": OptimConfig,
    "beta": BetaConfig,
    "labels": LabelConfig,
    "run": RunConfig,
}


def _flat_keys() -> dict[str, tuple[str, str]]:
    renamed = {
        ("beta", "mode"): "beta_mode",
        ("beta", "value"): "beta",
        ("labels", "loss"): "label_loss",
        ("labels", "weight"): "label_weight",
        ("labels", "seed"): "label_seed",
        ("labels", "batch_size"): "label_batch_size",
        ("labels", "source"): "label_source",
        ("labels", "forward"): "label_forward",
        ("labels", "dim_reduction"): "label_dim_reduction",
    }
    out = {}
    for section, cls in _SECTIONS.items():
        for f in fields(cls):
            out[renamed.get((section, f.name), f.name)] = (section, f.name)
    return out


FLAT_KEYS: dict[str, tuple[str, str]] = _flat_keys()
"""Flat key of the pre-section TrainConfig -> (section, name); e.g. ``"beta_mode"``
-> ``("beta", "mode")``. ``TrainConfig(**flat)``, ``from_dict(flat)``,
``replace(**flat)`` and the read-only attributes ``config.<flat key>`` use it
(except ``beta``, which is the section; its old flat value is ``beta.value``)."""

RUN_LENGTH_KEYS = ("epochs", "checkpoint_every", "eval_every", "max_restarts")
"""Settings (flat keys) that may change when a run is resumed; they do not change its path."""


@dataclass(frozen=True, init=False)
class TrainConfig:
    """Configuration of one training run (docs/model.md §4d-§4f); TOML round-trips it.

    Parameters
    ----------
    model : VAEConfig or dict, default=VAEConfig()
        The network and prior; a dict may name a registered model,
        ``{"preset": "dense_vae_tiny", "latent_dim": 3}`` (``model_from_dict``).
    optim : OptimConfig or dict, default=OptimConfig()
        Epochs, batch size, learning-rate schedule, reduction.
    beta : BetaConfig or dict, default=BetaConfig()
        Phases and rule of beta (and beta_p). A number is the old flat
        ``beta`` (the fixed-mode value).
    labels : LabelConfig or dict, default=LabelConfig()
        Semi-supervised labels.
    run : RunConfig or dict, default=RunConfig()
        Seed, normalisation, determinism, checkpoints, evaluation, restarts.
    **flat
        Any setting by its flat key (``FLAT_KEYS``), e.g. ``epochs=3,
        seed=1, beta_mode="fixed"``; applied on top of the sections.

    Examples
    --------
    >>> cfg = TrainConfig(epochs=10, seed=3)
    >>> cfg.optim.epochs, cfg.run.seed, cfg.epochs
    (10, 3, 10)
    >>> TrainConfig.from_dict({"epochs": 10, "seed": 3}) == cfg
    True
    """

    model: VAEConfig
    optim: OptimConfig
    beta: BetaConfig
    labels: LabelConfig
    run: RunConfig

    def __init__(
        self,
        model: VAEConfig | dict[str, Any] | None = None,
        optim: OptimConfig | dict[str, Any] | None = None,
        beta: BetaConfig | dict[str, Any] | float | None = None,
        labels: LabelConfig | dict[str, Any] | None = None,
        run: RunConfig | dict[str, Any] | None = None,
        **flat: Any,
    ) -> None:
        c = "TrainConfig"
        if isinstance(beta, (int, float)) and not isinstance(beta, bool):
            flat["beta"] = beta
            beta = None
        if model is None:
            model = VAEConfig()
        elif isinstance(model, dict):
            model = model_from_dict(model)
        if not isinstance(model, VAEConfig):
            msg = f"{c}: model must be a VAEConfig or a dict; got {type(model).__name__}."
            raise TypeError(msg)
        given = {"optim": optim, "beta": beta, "labels": labels, "run": run}
        unknown = sorted(set(flat) - set(FLAT_KEYS))
        if unknown:
            msg = (
                f"{c}: unknown settings {unknown}; known: sections {sorted(_SECTIONS)} "
                f"or flat keys {sorted(FLAT_KEYS)}."
            )
            raise TypeError(msg)
        by_section: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
        for key, value in flat.items():
            section, name = FLAT_KEYS[key]
            by_section[section][name] = value
        object.__setattr__(self, "model", model)
        for section, cls in _SECTIONS.items():
            value = given[section]
            if value is None or isinstance(value, dict):
                # the section's own settings and the flat ones together: a setting left
                # out takes its default *for the others* (lr_milestones for lr_values)
                value = cls(**config_kwargs(cls, {**(value or {}), **by_section[section]}))
            elif not isinstance(value, cls):
                msg = (
                    f"{c}: {section} must be a {cls.__name__} or a dict; "
                    f"got {type(value).__name__}."
                )
                raise TypeError(msg)
            elif by_section[section]:
                value = _replace_section(value, by_section[section])
            object.__setattr__(self, section, value)

    def __getattr__(self, name: str) -> Any:
        # Read-only flat access (config.epochs, config.seed, ...), as before the sections.
        if name in FLAT_KEYS and name != "beta":
            section, key = FLAT_KEYS[name]
            return getattr(object.__getattribute__(self, section), key)
        msg = f"'TrainConfig' object has no attribute {name!r}"
        raise AttributeError(msg)

    @property
    def beta_p_adaptive(self) -> bool:
        """Whether beta_p follows the adaptive rule (resolves ``adaptive_beta_p=None``)."""
        if self.beta.adaptive_beta_p is not None:
            return self.beta.adaptive_beta_p and self.model.prior == "hierarchical"
        return self.model.prior == "hierarchical" and self.model.hp_variant == "full"

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``: sections (objects or dicts of changes) or flat keys.

        ``model`` may be a dict of VAEConfig changes (with ``"preset"``: that
        registered model, ``models.model_config``, with the other keys as its
        overrides); a section given as a dict changes only the keys it names.
        New ``lr_values`` without ``lr_milestones`` keep the milestones when
        their counts still fit, else take those left-out milestones get
        (``OptimConfig``).
        """
        kw: dict[str, Any] = {}
        model = changes.pop("model", None)
        if isinstance(model, dict):
            if "preset" in model:
                model = model_from_dict(model)
            else:
                model = dataclasses.replace(
                    self.model, **config_kwargs(VAEConfig, model, error=TypeError)
                )
        kw["model"] = model if model is not None else self.model
        for section in _SECTIONS:
            value = changes.pop(section, None)
            if (
                section == "beta"
                and isinstance(value, (int, float))
                and not isinstance(value, bool)
            ):
                value = {"value": value}  # the old flat ``beta``: the fixed-mode value
            current = getattr(self, section)
            if isinstance(value, dict):
                value = _replace_section(current, value)
            kw[section] = value if value is not None else current
        return TrainConfig(**kw, **changes)

    def with_overrides(self, overrides: Sequence[str]) -> TrainConfig:
        """A copy with command-line overrides ``"section.key=value"`` applied in order.

        The convention of Hydra and similar tools (``darcyvae train --set``):
        ``section`` is ``model``, ``optim``, ``beta``, ``labels`` or ``run``;
        ``value`` is read as a TOML value (``3``, ``1e-3``, ``true``,
        ``[1e-3, 1e-4]``, ``"hierarchical"``), and anything that is not one
        as a bare string (``model.prior=hierarchical``). ``model.preset=NAME``
        starts the model from that registered model (``darcyvae train
        --list``), with the other ``model.*`` overrides on top. A later
        override of the same key wins.

        Raises
        ------
        ValueError
            A malformed override, or an unknown section or key (naming the
            known ones); a value the setting refuses (``TypeError`` for the
            wrong type).

        Examples
        --------
        >>> cfg = TrainConfig().with_overrides(["run.seed=3", "optim.lr_values=[1e-3]"])
        >>> cfg.run.seed, cfg.optim.lr_values, cfg.optim.lr_milestones
        (3, (0.001,), ())
        """
        by_section = parse_overrides(overrides)
        return self.replace(**by_section) if by_section else self

    def to_dict(self) -> dict[str, Any]:
        """Nested plain dict: ``model`` and one dict per section (tuples as lists, None dropped)."""
        out: dict[str, Any] = {"model": self.model.to_dict()}
        for section in _SECTIONS:
            part = {}
            for f in fields(getattr(self, section)):
                value = getattr(getattr(self, section), f.name)
                if isinstance(value, tuple):
                    value = list(value)
                if value is not None:
                    part[f.name] = value
            out[section] = part
        return out

    def to_flat_dict(self) -> dict[str, Any]:
        """The old flat form (``model`` nested, every other setting by its flat key)."""
        nested = self.to_dict()
        out: dict[str, Any] = {"model": nested["model"]}
        for key, (section, name) in FLAT_KEYS.items():
            if name in nested[section]:
                out[key] = nested[section][name]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of ``to_dict``; also reads the old flat form (and a mix of both).

        Raises
        ------
        ValueError
            Unknown keys (naming the known ones), or a setting given both flat
            and in its section.
        TypeError
            Data that is not a dict.
        """
        if not isinstance(data, dict):
            msg = f"TrainConfig.from_dict: expected a dict; got {type(data).__name__}."
            raise TypeError(msg)
        data = _drop_legacy(data)
        kw: dict[str, Any] = {}
        flat: dict[str, Any] = {}
        for key, value in data.items():
            if key == "model" or (key in _SECTIONS and isinstance(value, dict)):
                kw[key] = dict(value) if isinstance(value, dict) else value
            elif key in FLAT_KEYS:
                flat[key] = tuple(value) if isinstance(value, list) else value
            else:
                known = sorted({"model", *_SECTIONS, *FLAT_KEYS})
                msg = f"TrainConfig: unknown key {key!r}; known: {known}."
                raise ValueError(msg)
        for key in flat:
            section, name = FLAT_KEYS[key]
            if isinstance(kw.get(section), dict) and name in kw[section]:
                msg = f"TrainConfig: {key!r} is given both flat and in [{section}]."
                raise ValueError(msg)
        for section, section_cls in _SECTIONS.items():
            if section in kw:
                kw[section] = section_cls(**config_kwargs(section_cls, kw[section]))
        return cls(**kw, **flat)

    @classmethod
    def from_toml(cls, path: str | os.PathLike) -> TrainConfig:
        """Read a TOML file: ``[model]``, ``[optim]``, ``[beta]``, ``[labels]``, ``[run]``
        (or the old top-level flat keys)."""
        return cls.from_dict(_toml.load(path))

    def to_toml(self, path: str | os.PathLike, header: str = "") -> Path:
        """Write the configuration as TOML (one table per section), atomically; returns the path."""
        return _toml.write(path, self.to_dict(), header)


def model_from_dict(data: dict[str, Any]) -> VAEConfig:
    """The ``[model]`` table as a VAEConfig: its keys, or ``preset = NAME`` (a registered
    model, ``darcyvae.models.list_models``) with the other keys as its overrides.

    Raises
    ------
    ValueError
        An unknown preset or key (naming the known ones).
    TypeError
        A preset name that is not a string, or a value of the wrong type.
    """
    from .models import list_models, model_config

    data = dict(data)
    if "preset" not in data:
        return VAEConfig.from_dict(data)
    name = data.pop("preset")
    known = ", ".join(n for n, _ in list_models())
    if not isinstance(name, str):
        msg = (
            f"TrainConfig.model: preset must be the name of a model ({known}); "
            f"got {type(name).__name__} {name!r}."
        )
        raise TypeError(msg)
    if name not in dict(list_models()):
        msg = f"TrainConfig.model: unknown preset {name!r}; known: {known}."
        raise ValueError(msg)
    return model_config(name, **config_kwargs(VAEConfig, data))


def _replace_section(current: Any, changes: dict[str, Any]) -> Any:
    """``current`` (a section) with ``changes``; new ``lr_values`` without
    ``lr_milestones`` keep the milestones when the counts still fit, else the
    milestones are left out and follow the new values (``OptimConfig``)."""
    changes = config_kwargs(type(current), changes, error=TypeError)
    if (
        isinstance(current, OptimConfig)
        and "lr_values" in changes
        and "lr_milestones" not in changes
        and isinstance(changes["lr_values"], (list, tuple))
        and len(changes["lr_values"]) != len(current.lr_milestones) + 1
    ):
        changes["lr_milestones"] = None
    return dataclasses.replace(current, **changes)


def _override_keys() -> dict[str, list[str]]:
    """The keys ``--set`` knows, per section (``model``: VAEConfig's and ``preset``)."""
    out = {"model": sorted([f.name for f in fields(VAEConfig)] + ["preset"])}
    out.update({s: sorted(f.name for f in fields(cls)) for s, cls in _SECTIONS.items()})
    return out


def _toml_value(text: str) -> Any:
    """A TOML value (``3``, ``1e-3``, ``true``, ``[1, 2]``, ``"a"``), or ``text`` itself as a
    bare string; a value that starts like a list, table or quoted string must parse."""
    try:
        return _toml.loads(f"v = {text}")["v"]
    except ValueError:
        if text.lstrip().startswith(("[", "{", '"', "'")):
            raise
        return text.strip()


def parse_overrides(overrides: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["section.key=value", ...]`` -> ``{section: {key: value}}`` (see
    ``TrainConfig.with_overrides``); a later override of the same key wins.

    Raises
    ------
    ValueError
        An override that is not ``SECTION.KEY=VALUE``, an unknown section or
        key (naming the known ones), a value that is not valid TOML although
        it starts like a list, table or quoted string.
    TypeError
        ``overrides`` is a string instead of a list of strings.
    """
    if isinstance(overrides, str) or not isinstance(overrides, (list, tuple)):
        msg = (
            "--set: overrides must be a list of 'section.key=value' strings; got "
            f"{type(overrides).__name__} {overrides!r}."
        )
        raise TypeError(msg)
    known = _override_keys()
    out: dict[str, dict[str, Any]] = {}
    for item in overrides:
        if not isinstance(item, str):
            msg = f"--set: each override must be a string; got {type(item).__name__} {item!r}."
            raise TypeError(msg)
        target, sep, text = item.partition("=")
        section, dot, key = target.strip().partition(".")
        if not sep or not dot or not section or not key:
            msg = (
                f"--set: expected SECTION.KEY=VALUE (e.g. run.seed=3 or "
                f"optim.lr_values=[1e-3,1e-4]); got {item!r}."
            )
            raise ValueError(msg)
        if section not in known:
            msg = (
                f"--set {item}: unknown section {section!r}; known: {', '.join(known)} "
                f"(e.g. run.seed=3)."
            )
            raise ValueError(msg)
        if key not in known[section]:
            msg = (
                f"--set {item}: unknown key {key!r} in [{section}]; known: "
                f"{', '.join(known[section])}."
            )
            raise ValueError(msg)
        if not text.strip():
            msg = f"--set {item}: no value after '='; e.g. {section}.{key}=VALUE."
            raise ValueError(msg)
        try:
            value = _toml_value(text)
        except ValueError as exc:
            msg = f"--set {item}: {text.strip()!r} is not a valid TOML value ({exc})."
            raise ValueError(msg) from None
        out.setdefault(section, {})[key] = value
    return out


def _drop_legacy(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` without the ``LEGACY_KEYS`` (flat or in their section), each named in a warning."""
    out = dict(data)
    for (section, name), new in LEGACY_KEYS.items():
        part = out.get(section)
        found = name in out
        out.pop(name, None)
        if isinstance(part, dict) and name in part:
            out[section] = {k: v for k, v in part.items() if k != name}
            found = True
        if found:
            logger.warning(
                "config: [%s] %s is no longer used (replaced by %s, docs/model.md §4e); ignored",
                section,
                name,
                new,
            )
    return out


def _presets_dir():
    return resources.files("darcyvae") / "configs"


def list_presets() -> list[tuple[str, str]]:
    """``(name, first comment line)`` of each shipped configuration (``configs/*.toml``)."""
    out = []
    for entry in sorted(_presets_dir().iterdir(), key=lambda e: e.name):
        if entry.name.endswith(".toml"):
            lines = entry.read_text().splitlines()
            first = lines[0] if lines else ""
            out.append((entry.name[: -len(".toml")], first.lstrip("# ").strip()))
    return out


def load_preset(name: str) -> TrainConfig:
    """The shipped configuration ``name`` (see ``list_presets``)."""
    entry = _presets_dir() / f"{name}.toml"
    if not isinstance(name, str) or not entry.is_file():
        known = ", ".join(n for n, _ in list_presets())
        msg = f"load_preset: unknown preset {name!r}; known: {known}."
        raise ValueError(msg)
    return TrainConfig.from_dict(_toml.loads(entry.read_text()))
