"""Many seeds at once: K DenseVAEs trained as one batched model (issue 9, part 3).

Public names
------------
train_ensemble, EnsembleResult, MemberResult, EnsembleMemoryError
    Train one DenseVAE per seed, all at once; member s equals the single run
    with seed s (``darcyvae.ensemble.trainer``, ``results``).
parse_seeds, MAX_SEEDS
    ``"0-49"`` / ``"3,7,11"`` -> list of seeds (what ``darcyvae train --seeds`` takes);
    at most ``MAX_SEEDS`` of them in one run.
BatchedDenseVAE, StackedAdam
    The batched network (grouped convolutions, batched matmuls) and the
    elementwise Adam over stacked parameters (``darcyvae.ensemble.batched``).
load_ensemble_checkpoint, member_dir
    The ensemble checkpoint and the member folder layout.
"""

from __future__ import annotations

from ._engine import ENSEMBLE_CHECKPOINT, load_ensemble_checkpoint
from .batched import BatchedDenseVAE, BatchedOutput, StackedAdam, adam_member_state
from .results import (
    ENSEMBLE_SUMMARY,
    EnsembleMemoryError,
    EnsembleResult,
    MemberResult,
    member_dir,
)
from .seeds import MAX_SEEDS, check_seeds, parse_seeds, split_blocks
from .trainer import train_ensemble

__all__ = [
    "ENSEMBLE_CHECKPOINT",
    "ENSEMBLE_SUMMARY",
    "MAX_SEEDS",
    "BatchedDenseVAE",
    "BatchedOutput",
    "EnsembleMemoryError",
    "EnsembleResult",
    "MemberResult",
    "StackedAdam",
    "adam_member_state",
    "check_seeds",
    "load_ensemble_checkpoint",
    "member_dir",
    "parse_seeds",
    "split_blocks",
    "train_ensemble",
]
