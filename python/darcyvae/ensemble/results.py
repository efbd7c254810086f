"""What training returns (``RunResult``: one run; ``EnsembleResult``: many), and where it writes."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..checkpoint import CHECKPOINT_NAME, ENSEMBLE_SUMMARY, MEMBER_DIR
from ..errors import EnsembleMemoryError  # re-exported: its home was this module
from ..evaluation import OverRegularization, SplitMetrics

__all__ = [
    "ENSEMBLE_SUMMARY",
    "EnsembleMemoryError",
    "EnsembleResult",
    "MemberResult",
    "RunResult",
    "member_dir",
]


def member_dir(out_dir: str | os.PathLike, seed: int) -> Path:
    """The folder of the member with ``seed`` (``out_dir/seed_<seed>``)."""
    return Path(out_dir) / MEMBER_DIR.format(seed=int(seed))


@dataclass(frozen=True)
class RunResult:
    """One finished or diverged training run: what ``train`` returns, and each member of an
    ensemble (its folder holds the run's files).

    Attributes
    ----------
    seed : int
        The seed asked for (the trial's; a restart runs with another, ``run_seed``).
    out_dir : Path
        The folder of the run (of the accepted attempt, after restarts).
    status : {"done", "diverged"}
        ``diverged``: a NaN or inf loss stopped the run (see ``message``). An
        ensemble member's folder keeps the log up to the last finite epoch and
        the last ensemble checkpoint's state (if one was written before); a
        single run raises ``TrainingDivergedError`` instead.
    epochs : int
        Epochs completed.
    final : dict or None
        ``train`` (and ``test``): ``SplitMetrics.to_dict()`` (rate,
        distortion, loss, the Theorem-1 bound, the margin to it and
        ``trained``, S_D, S_KL, n_samples); ``distortion_bound`` of the
        training split; ``over_regularization``, ``seed``, ``epochs`` (also
        ``summary.json``). None for a diverged run.
    over_regularization : OverRegularization or None
        The verdict on the training split (None for a diverged run).
    message : str
        Why a diverged run stopped.
    history : list of dict
        The per-epoch log records (also in ``metrics.jsonl``).
    run_seed : int or None
        The seed the accepted attempt ran with (``seed``, or a restart's).
    restarts : int
        Restarts before the accepted attempt (over-regularised attempts).
    trials : tuple of dict
        Every attempt (``to_dict`` of each), when the run was restarted.
    metrics : dict of str to SplitMetrics
        ``final``'s splits as ``SplitMetrics`` (``splits()`` lists them).
    """

    seed: int
    out_dir: Path
    status: str
    epochs: int
    final: dict[str, Any] | None = None
    over_regularization: OverRegularization | None = None
    message: str = ""
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    run_seed: int | None = None
    restarts: int = 0
    trials: tuple[dict[str, Any], ...] = field(default=(), repr=False)
    metrics: dict[str, SplitMetrics] = field(default_factory=dict, repr=False)

    @property
    def checkpoint(self) -> Path:
        """The run's ``checkpoint.pt``."""
        return self.out_dir / CHECKPOINT_NAME

    @property
    def over_regularized(self) -> bool:
        """Whether the run ended over-regularised (False if it diverged)."""
        return bool(self.over_regularization and self.over_regularization.over_regularized)

    def splits(self) -> list[tuple[str, SplitMetrics]]:
        """``[("train", SplitMetrics), ("test", ...)]`` for the splits evaluated at the end
        (empty if the run diverged)."""
        final = self.final or {}
        metrics = self.metrics or {
            s: SplitMetrics.from_dict(final[s]) for s in ("train", "test") if s in final
        }
        return [(s, metrics[s]) for s in ("train", "test") if s in metrics]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no history)."""
        out = {
            "seed": self.seed,
            "run_seed": self.seed if self.run_seed is None else self.run_seed,
            "out_dir": str(self.out_dir),
            "status": self.status,
            "epochs": self.epochs,
            "message": self.message,
            "final": self.final,
            "over_regularized": self.over_regularized,
            "restarts": self.restarts,
        }
        if self.trials:
            out["trials"] = list(self.trials)
        return out


MemberResult = RunResult
"""The older name of ``RunResult`` for ensemble members (the same type)."""


@dataclass(frozen=True)
class EnsembleResult:
    """What ``train_ensemble`` returns (also summarised in ``ensemble.json``)."""

    out_dir: Path
    seeds: list[int]
    members: list[RunResult]
    seconds: float

    def member(self, seed: int) -> RunResult:
        """The member trained with ``seed``."""
        for m in self.members:
            if m.seed == seed:
                return m
        msg = f"EnsembleResult.member: no member with seed {seed}; seeds are {self.seeds}."
        raise KeyError(msg)
