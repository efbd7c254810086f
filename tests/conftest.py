from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

import pytest
import torch
from hypothesis import HealthCheck, settings

# Property-based tests: few examples by default (CI), many with
# `pytest --hypothesis-profile=long` for local runs.
settings.register_profile(
    "ci",
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.register_profile(
    "long",
    max_examples=1000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's torch work on one thread, then restore the setting.

    Tiny models gain nothing from two threads, and on a shared, oversubscribed
    machine OpenMP spin-waiting makes them several times slower.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def bench(request) -> Iterator[ModuleType]:
    """The benchmark script named by the test module's ``BENCHMARK``
    (``benchmarks/<BENCHMARK>.py``), loaded as a module with its folder on ``sys.path``
    meanwhile (for its shared helpers)."""
    name = request.module.BENCHMARK
    sys.path.insert(0, str(BENCHMARKS))
    try:
        spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCHMARKS))


# --------------------------------------------------------------------------- VAE test data
# The synthetic docs/data.md §1c files of the VAE tests, as fixtures (the writer itself
# stays in tests/_vae_data.py; tests reach it through these fixtures).


class VAEData(NamedTuple):
    """Paths of the shared synthetic training (64 samples) and test (32) files, grid 17."""

    train: str
    test: str


@pytest.fixture(scope="session")
def synthetic_h5():
    """``synthetic_h5(path, n=64, grid=17, s=2, seed=0, noise=0.01) -> str``: write a file."""
    from _vae_data import write_synthetic_h5

    return write_synthetic_h5


@pytest.fixture(scope="session")
def vae_data(tmp_path_factory, synthetic_h5) -> VAEData:
    """A training file (64 samples, seed 0) and a test file (32, seed 1) on the 17 grid."""
    folder = tmp_path_factory.mktemp("vae_data")
    return VAEData(
        synthetic_h5(folder / "train.h5", n=64, grid=17, seed=0),
        synthetic_h5(folder / "test.h5", n=32, grid=17, seed=1),
    )


@pytest.fixture(
    params=[
        "cpu",
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
            ],
        ),
    ]
)
def device(request) -> str:
    """``"cpu"``, and ``"cuda"`` (marked gpu; skipped without a device)."""
    return request.param
