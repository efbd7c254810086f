"""Many seeds at once: K DenseVAEs trained as one batched model (issue 9)."""

from __future__ import annotations

from .batched import BatchedDenseVAE, BatchedOutput, StackedAdam

__all__ = ["BatchedDenseVAE", "BatchedOutput", "StackedAdam"]
