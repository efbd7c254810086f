"""darcyvae: disentangled latent representations of Darcy flow fields.

``darcyvae.load_run(folder)`` loads a trained run (``darcyvae.runs``);
everything else lives in the modules below.

A C++/Eigen core (``darcyvae._core``) generates Darcy flow data and scores
latent spaces; PyTorch code learns variational autoencoders on it, after
Jacobsen & Duraisamy, "Disentangling Generative Factors of Physical Fields
Using Variational Autoencoders", Front. Phys. 10:890910 (2022).

Modules
-------
darcy
    The Darcy flow solver (finite differences "fd" and finite volumes "fv").
kle
    Karhunen-Loeve expansion of the log-permeability field.
distributions
    Generative parameter distributions p(theta), Monte Carlo or Latin hypercube.
generate
    Bulk dataset generation to HDF5: resumable, byte-reproducible, checksummed,
    local or Dask.
dataset
    Reading generated HDF5 datasets: the torch dataset, loaders, channel statistics.
models
    DenseVAE and its priors (standard, scaled Gaussian, hierarchical).
losses
    Loss terms per sample, the adaptive beta rule and the schedules.
config
    TrainConfig: the run configuration in sections, presets.
checkpoint
    Checksummed checkpoints, the metrics log and run-folder file names.
runs
    ``load_run``: a trained run's model and normalisation; encode and decode
    one's own fields in physical units.
training
    The training loop of one model (resume, restarts of over-regularised runs).
ensemble
    K seeds trained at once as one batched model.
evaluation
    Rate, distortion, the Theorem-1 bound, S_D, S_KL and the figures of a trained VAE.
metrics
    k-NN KL divergence, S_D, S_KL and standard disentanglement scores.
neighbors
    The exact, scale-free KD-tree behind the k-NN estimators.
experiments
    The paper's experiments (``darcyvae reproduce``), with reports and figures.
plots
    Figures (matplotlib, imported lazily).
errors
    darcyvae's own exception classes.
cli
    The ``darcyvae`` command line.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._core import __version__

if TYPE_CHECKING:
    from .runs import TrainedRun, load_run

__all__ = ["TrainedRun", "__version__", "load_run"]

_LAZY = {"TrainedRun": "runs", "load_run": "runs"}


def __getattr__(name: str) -> Any:
    # ``import darcyvae`` stays light (no torch); the names below import their
    # module on first use (PEP 562).
    module = _LAZY.get(name)
    if module is None:
        msg = f"module 'darcyvae' has no attribute {name!r}"
        raise AttributeError(msg)
    from importlib import import_module

    value = getattr(import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
