from __future__ import annotations

import pytest
import torch
from darcyvae._device import resolve_device, to_device_async


def test_resolve_device():
    assert resolve_device(None) == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    with pytest.raises(ValueError, match="device must be"):
        resolve_device("gpu please")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_cuda_is_a_clear_error():
    with pytest.raises(ValueError, match="CUDA is not available"):
        resolve_device("cuda", "train")


def test_to_device_async_keeps_values():
    t = torch.arange(5)
    assert torch.equal(to_device_async(t, torch.device("cpu")), t)
    if torch.cuda.is_available():
        moved = to_device_async(t, torch.device("cuda"))
        assert moved.is_cuda
        assert torch.equal(moved.cpu(), t)
