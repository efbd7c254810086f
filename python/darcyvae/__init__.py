"""darcyvae: disentangled latent representations of Darcy flow fields.

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
    DenseVAE and its priors.
training
    Losses, the beta schedule and the training loop.
evaluation
    Rate, distortion, S_D, over-regularisation and the figures of a trained VAE.
metrics
    k-NN KL divergence, S_D, S_KL and standard disentanglement scores.
experiments
    One function per experiment of the paper.
plots
    Figures (matplotlib, imported lazily).
cli
    The ``darcyvae`` command line.
"""

from __future__ import annotations

from ._core import __version__

__all__ = ["__version__"]
