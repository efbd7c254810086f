"""What ``train_ensemble`` returns, and where it writes (issue 9, part 3)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import EnsembleMemoryError  # re-exported: its home was this module
from ..evaluation import OverRegularization, SplitMetrics

__all__ = [
    "ENSEMBLE_SUMMARY",
    "EnsembleMemoryError",
    "EnsembleResult",
    "MemberResult",
    "member_dir",
]

ENSEMBLE_SUMMARY = "ensemble.json"
"""Summary of all members, in the ensemble's output folder."""


def member_dir(out_dir: str | os.PathLike, seed: int) -> Path:
    """The folder of the member with ``seed`` (``out_dir/seed_<seed>``)."""
    return Path(out_dir) / f"seed_{int(seed)}"


@dataclass(frozen=True)
class MemberResult:
    """One member of an ensemble (its folder holds what a single run writes).

    Attributes
    ----------
    seed : int
        The member's seed as asked for (its trial).
    out_dir : Path
        The folder of the accepted attempt.
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
    run_seed : int or None
        The seed the accepted attempt ran with (``seed``, or a restart's).
    restarts : int
        Restarts of this member (over-regularised attempts before the accepted one).
    trials : tuple of dict
        Every attempt (``to_dict`` of each), when the member was restarted.
    """

    seed: int
    out_dir: Path
    status: str
    epochs: int
    final: dict[str, Any] | None
    over_regularization: OverRegularization | None
    message: str = ""
    history: list[dict[str, Any]] = field(default_factory=list, repr=False)
    run_seed: int | None = None
    restarts: int = 0
    trials: tuple[dict[str, Any], ...] = field(default=(), repr=False)

    @property
    def over_regularized(self) -> bool:
        """Whether the member ended over-regularised (False if it diverged)."""
        return bool(self.over_regularization and self.over_regularization.over_regularized)

    def splits(self) -> list[tuple[str, SplitMetrics]]:
        """``[("train", SplitMetrics), ("test", ...)]`` as ``TrainResult.splits`` (empty if diverged)."""
        final = self.final or {}
        return [(s, SplitMetrics.from_dict(final[s])) for s in ("train", "test") if s in final]

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
