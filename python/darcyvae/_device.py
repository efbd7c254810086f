"""One place that turns a ``device`` argument into a ``torch.device``, and sync-free copies."""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["resolve_device", "to_device_async"]


def resolve_device(device: str | torch.device | None, caller: str = "darcyvae") -> torch.device:
    """Return the ``torch.device`` meant by ``device``.

    Parameters
    ----------
    device : str, torch.device or None
        ``None`` or ``"cpu"``: the CPU; ``"auto"``: CUDA when available, else
        the CPU; anything else torch understands (``"cuda"``, ``"cuda:1"``).
    caller : str
        Prefix of the error message.

    Raises
    ------
    ValueError
        An unknown device string, or CUDA asked for where none is available.
    """
    if device is None:
        return torch.device("cpu")
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        msg = f"{caller}: device must be 'auto', 'cpu', 'cuda' or a torch.device; got {device!r}."
        raise ValueError(msg) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = f"{caller}: device {device!r} asked for, but CUDA is not available."
        raise ValueError(msg)
    return dev


def to_device_async(tensor: Tensor, device: torch.device) -> Tensor:
    """Copy a small host tensor to ``device`` without a host-device sync.

    On CUDA the tensor goes through pinned memory with ``non_blocking=True``
    (a copy from pageable memory would wait for the GPU to drain its queue).
    """
    if device.type == "cuda" and tensor.device.type == "cpu":
        return tensor.pin_memory().to(device, non_blocking=True)
    return tensor.to(device)
