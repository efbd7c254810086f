"""The training engine and many seeds at once: K DenseVAEs trained as one batched model.

Public names
------------
train_ensemble, EnsembleResult, RunResult, EnsembleMemoryError
    Train one DenseVAE per seed, all at once; member s equals the single run
    with seed s (``darcyvae.ensemble.trainer``, ``results``). ``RunResult`` is
    the one result type of a run (``MemberResult`` is its older name);
    ``darcyvae.training.train`` is the engine (``engine``) with one seed.
parse_seeds, MAX_SEEDS, restart_seed
    ``"0-49"`` / ``"3,7,11"`` -> list of seeds (what ``darcyvae train --seeds`` takes);
    at most ``MAX_SEEDS`` of them in one run. ``restart_seed(s, r)``: the seed of
    restart r of trial s (the restart stream).
BatchedDenseVAE, StackedAdam
    The batched network (grouped convolutions, batched matmuls) and the
    elementwise Adam over stacked parameters (``darcyvae.ensemble.batched``).
load_ensemble_checkpoint, member_dir
    The ensemble checkpoint and the member folder layout.
"""

from __future__ import annotations

from .batched import BatchedDenseVAE, BatchedOutput, StackedAdam, adam_member_state
from .engine import ENSEMBLE_CHECKPOINT, load_ensemble_checkpoint
from .results import (
    ENSEMBLE_SUMMARY,
    EnsembleMemoryError,
    EnsembleResult,
    MemberResult,
    RunResult,
    member_dir,
)
from .seeds import MAX_SEEDS, check_seeds, parse_seeds, restart_seed, split_blocks
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
    "RunResult",
    "StackedAdam",
    "adam_member_state",
    "check_seeds",
    "load_ensemble_checkpoint",
    "member_dir",
    "parse_seeds",
    "restart_seed",
    "split_blocks",
    "train_ensemble",
]
