"""What the wrappers of darcyvae's member kernels share (``convolutions``, ``batch_norm``,
``reconstruction``): the one input check they all make and the hand-over to C++."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor


def check_cpu_float32(caller: str, **tensors: Tensor) -> None:
    """Raise ValueError unless every tensor is float32 on the CPU (what the kernels take)."""
    for name, t in tensors.items():
        if t.device.type != "cpu" or t.dtype != torch.float32:
            msg = (
                f"{caller}: {name} must be float32 on the CPU (the member kernels); "
                f"got {t.dtype} on {t.device.type}."
            )
            raise ValueError(msg)


def as_numpy(t: Tensor) -> np.ndarray:
    """The tensor's memory as a numpy array with its strides, no copy."""
    return t.detach().numpy()
