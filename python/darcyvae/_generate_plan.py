"""The plan of a ``generate`` run: what each split's file will hold, checked before any write.

:func:`plan_run` computes (or loads) the KLE basis and, for each split, its
attributes (:func:`file_attrs`), its thetas (:class:`ThetaSource`: Monte
Carlo block by block, or a Latin hypercube design held whole), its blocks,
files and resume-log header. Every theta is checked here
(:func:`check_log_permeability`), so a run that cannot be written fails
before it creates a file.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from . import __version__
from ._hdf5_layout import FORMAT, SPLITS, create_file, to_json
from ._pipeline import Encoding
from ._resume_log import SplitFiles, log_header
from .distributions import BLOCK_SIZE, LHS_KEY, ThetaArray
from .kle import KLEBasis, kle_basis

if TYPE_CHECKING:
    from .generate import GenerateConfig

__all__ = [
    "LOG_K_RANGE",
    "RunPlan",
    "SplitPlan",
    "ThetaSource",
    "blocks",
    "check_log_permeability",
    "file_attrs",
    "new_file",
    "plan_run",
    "theta_rows",
]

LOG_K_RANGE = (
    math.log(float(np.finfo(np.float32).tiny)),
    math.log(float(np.finfo(np.float32).max)),
)
"""K = exp(G) is stored as float32: G must lie in [-87.3, 88.7] (normal, finite K)."""


THETA_RNG = {
    "mc": (
        f"sample i = row i of block i // {BLOCK_SIZE} drawn by "
        "PCG64(SeedSequence(seed, spawn_key=(stream, block))); rounded to float32 "
        "before the KLE"
    ),
    "lhs": (
        "Latin hypercube: coordinate k of sample i = F_k^-1((perm_k[i] + (m_ik + 0.5) / 2**32) "
        f"/ n), perm_k and m_ik drawn by PCG64(SeedSequence(seed, spawn_key=(stream, {LHS_KEY}, "
        "n, k))); rounded to float32 before the KLE"
    ),
}


def file_attrs(config: GenerateConfig, basis: KLEBasis, split: str) -> dict[str, Any]:
    """Root attributes of a split's file, in the order they are written."""
    kle, darcy, dist = config.kle, config.darcy, config.dist
    first = (0 if split == "train" else config.n_train) if isinstance(dist, ThetaArray) else 0
    return {
        "format": FORMAT,
        "darcyvae_version": __version__,
        "numpy_version": np.__version__,
        "split": split,
        "n_samples": config.n_samples(split),
        "grid": int(kle.grid),
        "n_modes": int(kle.n_modes),
        "kernel": str(kle.kernel),
        "length_scale": np.asarray(kle.length_scale, dtype=np.float64),
        "variance": float(kle.variance),
        "kle_variance_fraction": float(basis.variance_fraction),
        "distribution": dist.name,
        "distribution_params": to_json(dist.params()),
        "sampling": config.sampling(split),
        "seed": int(config.seed),
        "stream": SPLITS.index(split),
        "first_index": first,
        "theta_rng": THETA_RNG[config.sampling(split)],
        "scheme": str(darcy.scheme),
        "well_width": float(darcy.well_width),
        "rate": float(darcy.rate),
        "kle_config": to_json(asdict(kle)),
        "darcy_config": to_json(asdict(darcy)),
    }


class ThetaSource:
    """The float32 thetas of one split, block by block (a Latin hypercube design is held)."""

    def __init__(self, config: GenerateConfig, split: str) -> None:
        self.dist, self.seed = config.dist, config.seed
        self.stream = SPLITS.index(split)
        self.offset = config.n_train if split == "test" else 0  # rows of a ThetaArray
        self.design: NDArray[np.float32] | None = None
        if config.sampling(split) == "lhs":
            n = config.n_samples(split)
            design = self.dist.sample_lhs(n, self.seed, stream=self.stream)
            self.design = design.astype(np.float32)

    def __call__(self, start: int, stop: int) -> NDArray[np.float32]:
        """Thetas of samples ``start..stop-1``, rounded to float32."""
        if self.design is not None:
            return self.design[start:stop]
        if isinstance(self.dist, ThetaArray):
            rows = np.arange(self.offset + start, self.offset + stop)
            return self.dist.sample_indices(rows).astype(np.float32)
        idx = np.arange(start, stop)
        return self.dist.sample_indices(idx, self.seed, stream=self.stream).astype(np.float32)


@dataclass
class SplitPlan:
    """What one split's file will be: its samples, blocks, attributes, thetas and files."""

    split: str
    n_samples: int
    bounds: list[tuple[int, int]]
    attrs: dict[str, Any]
    thetas: ThetaSource
    files: SplitFiles
    header: dict[str, Any]
    encoding: Encoding


@dataclass
class RunPlan:
    """A checked run: the basis and the plans of the splits to write (in order)."""

    config: GenerateConfig
    out_dir: Path
    basis: KLEBasis
    splits: list[SplitPlan]
    unused: list[SplitFiles] = field(default_factory=list)

    @property
    def paths(self) -> dict[str, Path]:
        return {p.split: p.files.final for p in self.splits}

    def create(self, plan: SplitPlan, path: Path) -> Any:
        """A new, empty, open file of the split at ``path``."""
        return new_file(self.config, path, plan.n_samples, plan.attrs)


def new_file(config: GenerateConfig, path: Path, n_samples: int, attrs: Mapping[str, Any]) -> Any:
    """A new, empty, open file of ``n_samples`` in ``config``'s layout, with ``attrs``."""
    return create_file(
        path,
        n_samples=n_samples,
        n_modes=config.n_modes,
        grid=config.grid,
        theta_rows=theta_rows(config, n_samples),
        compression=config.compression,
        compression_level=config.compression_level,
        attrs=attrs,
    )


def theta_rows(config: GenerateConfig, n_samples: int) -> int:
    """Rows per HDF5 chunk of ``generative_params`` (one block, at most the whole split)."""
    return min(n_samples, config.chunk_size)


def blocks(n: int, size: int) -> list[tuple[int, int]]:
    """``(start, stop)`` of consecutive blocks of ``size`` samples covering ``0..n-1``."""
    return [(a, min(a + size, n)) for a in range(0, n, size)]


def plan_run(config: GenerateConfig, out_dir: Path) -> RunPlan:
    """The basis and every split's plan; validates every theta. Creates no file."""
    basis = kle_basis(config.kle)
    plans, unused = [], []
    for split in SPLITS:
        n = config.n_samples(split)
        files = SplitFiles.of(out_dir, split)
        if n == 0:
            unused.append(files)
            continue
        attrs = file_attrs(config, basis, split)
        thetas = ThetaSource(config, split)
        check_log_permeability(basis, thetas, n, split)
        plans.append(
            SplitPlan(
                split=split,
                n_samples=n,
                bounds=blocks(n, config.chunk_size),
                attrs=attrs,
                thetas=thetas,
                files=files,
                header=log_header(attrs, config.write_settings),
                encoding=Encoding(
                    config.compression, config.compression_level, theta_rows(config, n)
                ),
            )
        )
    return RunPlan(config, out_dir, basis, plans, unused)


def check_log_permeability(basis: KLEBasis, thetas: ThetaSource, n: int, split: str) -> None:
    """Refuse thetas whose log-permeability G leaves the float32 range of K = exp(G).

    Cheap bounds first: with ``a_i = sqrt(lambda_i) |theta_i|``, ``|G(x)| <=
    sum_i a_i max|phi_i|`` and ``|G(x)| <= ||a||_2 max_x (sum_i phi_i(x)^2)^(1/2)``
    (Cauchy-Schwarz); the field itself is computed only for the samples whose
    bound exceeds the range.
    """
    lo, hi = LOG_K_RANGE
    limit = min(-lo, hi)
    s = basis.n_modes
    modes = basis.modes.reshape(s, -1)
    scale = np.sqrt(np.clip(basis.eigenvalues, 0.0, None))
    peak = np.abs(modes).max(axis=1)
    energy = float(np.sqrt(np.einsum("ij,ij->j", modes, modes).max()))
    for a, b in blocks(n, 1024):  # at most 1024 fields (35 MB at N = 65) computed at once
        theta = thetas(a, b)
        if not np.all(np.isfinite(theta)):
            i = a + int(np.argmax(~np.isfinite(theta).all(axis=1)))
            msg = f"generate: theta of {split} sample {i} is not finite in float32."
            raise ValueError(msg)
        weights = np.abs(theta.astype(np.float64)) * scale
        bound = np.minimum(weights @ peak, energy * np.linalg.norm(weights, axis=1))
        suspects = np.flatnonzero(bound > limit)
        if suspects.size == 0:
            continue
        g = basis.field(theta[suspects].astype(np.float64)).reshape(len(suspects), -1)
        g_min, g_max = g.min(axis=1), g.max(axis=1)
        bad = np.flatnonzero((g_min < lo) | (g_max > hi))
        if bad.size:
            k = int(bad[0])
            i = a + int(suspects[k])
            msg = (
                f"generate: {split} sample {i} (theta {theta[suspects[k]].tolist()}) gives a "
                f"log-permeability G from {g_min[k]:.4g} to {g_max[k]:.4g} ({bad.size} of the "
                f"samples {a}..{b - 1} are out of range); K = exp(G) is stored as float32, so "
                f"G must lie in [{lo:.1f}, {hi:.1f}]. Lower the KLE variance (now "
                f"{basis.config.variance:g}) or the spread of theta."
            )
            raise ValueError(msg)
