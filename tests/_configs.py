"""The training configuration the VAE tests start from (imported like ``scipy_reference``)."""

from __future__ import annotations

from typing import Any

from darcyvae.config import TrainConfig
from darcyvae.models import model_config


def tiny_train_config(**changes: Any) -> TrainConfig:
    """A run of seconds: the tiny model, 2 epochs (1 reconstruction-only), batches of 16,
    a constant learning rate 5e-3, a checkpoint every epoch, no periodic evaluation;
    ``changes`` (flat ``TrainConfig`` keys) override any of these."""
    base = {
        "model": model_config("dense_vae_tiny"),
        "epochs": 2,
        "rec_epochs": 1,
        "batch_size": 16,
        "lr_values": (5e-3,),
        "lr_milestones": (),
        "checkpoint_every": 1,
        "eval_every": 0,
    }
    return TrainConfig(**{**base, **changes})
