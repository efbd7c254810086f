"""Load a trained run and encode or decode one's own fields in physical units.

A run folder written by ``darcyvae train`` (or by ``darcyvae.training.train``,
an ensemble member ``OUT/seed_<s>``, a ``reproduce`` trial) holds a
checkpoint with the trained model, its configuration and the per-channel
normalisation the model was trained with (None for raw fields).
``load_run`` rebuilds all three; the returned ``TrainedRun`` normalises
fields given in physical units exactly as training did before encoding, and
maps decoded fields back to physical units.

Public names
------------
load_run
    Load the trained model and its normalisation from a run folder or checkpoint.
TrainedRun
    The loaded run: ``encode``, ``decode``, ``reconstruct``, ``normalize``,
    ``denormalize``.

Examples
--------
>>> run = load_run("runs/quick")  # doctest: +SKIP
>>> mu, var = run.encode(fields)  # (n, 3, N, N) in physical units  # doctest: +SKIP
>>> fields_again = run.decode(mu)  # (n, 3, N, N) in physical units  # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from torch import Tensor

from ._checks import check_int
from ._device import resolve_device
from .checkpoint import SUMMARY_NAME, load_checkpoint, load_model, run_checkpoint
from .config import TrainConfig
from .dataset import ChannelStats
from .models import DenseVAE

__all__ = ["TrainedRun", "load_run"]


@dataclass(frozen=True, eq=False)
class TrainedRun:
    """A trained DenseVAE with the normalisation of its training data.

    Made by :func:`load_run`. ``encode``, ``decode`` and ``reconstruct`` take
    and give fields in physical units (the units of the HDF5 ``output``
    dataset, docs/data.md §1c); the run normalises them as training did.
    They take NumPy arrays, torch tensors or nested lists, and return NumPy
    arrays (float32) on the host; they run the model in eval mode without
    gradients.

    Attributes
    ----------
    model : DenseVAE
        The trained model, in eval mode, on ``device``.
    config : TrainConfig
        The run's configuration (``config.model`` is the model's ``VAEConfig``).
    stats : ChannelStats or None
        Per-channel mean and std of the training file, applied to inputs
        (``(y - mean) / std``); None when the run trained on raw fields.
    path : Path
        The checkpoint file.
    epoch : int
        Epochs trained when the checkpoint was written.
    distortion_bound : float or None
        The Theorem-1 bound of the training data (nats per sample, in the
        model's units; docs/model.md §4e), as recorded by training.
    summary : dict or None
        The run's ``summary.json`` (final metrics), when the run finished.
    device : torch.device
        Where the model lives and the computations run.
    """

    model: DenseVAE
    config: TrainConfig
    stats: ChannelStats | None
    path: Path
    epoch: int
    distortion_bound: float | None = None
    summary: dict[str, Any] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    # ------------------------------------------------------------------ shape
    @property
    def grid(self) -> int:
        """Field size N the model takes."""
        return int(self.config.model.grid)

    @property
    def channels(self) -> int:
        """Field channels C (3: p, u_x, u_y)."""
        return int(self.config.model.channels)

    @property
    def latent_dim(self) -> int:
        """Latent dimension n."""
        return int(self.config.model.latent_dim)

    @property
    def normalization(self) -> str:
        """``"channel"`` when inputs are normalised per channel, else ``"none"``."""
        return "none" if self.stats is None else "channel"

    # ------------------------------------------------------------------ units
    def normalize(self, fields: Any) -> Tensor:
        """Fields in physical units -> the model's units, as training normalised them.

        Parameters
        ----------
        fields : array-like of shape (n, C, N, N) or (C, N, N)
            Real, finite values (NumPy array, torch tensor or nested lists).

        Returns
        -------
        Tensor of shape (n, C, N, N), float32, on ``device``
            A single field comes back with a leading axis of 1.

        Raises
        ------
        ValueError
            Wrong shape, a non-real dtype, or NaN/inf (see ``encode``).
        """
        y, _ = self._fields(fields, "TrainedRun.normalize")
        return y

    def denormalize(self, y: Any) -> NDArray[np.float32]:
        """Fields in the model's units -> physical units (the inverse of ``normalize``).

        Parameters
        ----------
        y : array-like of shape (n, C, N, N) or (C, N, N)

        Returns
        -------
        numpy.ndarray of the same shape, float32
        """
        caller = "TrainedRun.denormalize"
        t, single = self._tensor(
            y, "y", caller, shape=(self.channels, self.grid, self.grid), what=self._field_shape
        )
        out = self._to_physical(t)
        return _to_numpy(out[0] if single else out)

    # ------------------------------------------------------------------ model
    def encode(
        self, fields: Any, *, batch_size: int = 256
    ) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
        """Latent means and variances of q(z|y) for fields in physical units.

        The fields are normalised with the run's training statistics (when
        it trained on normalised fields) and passed through the encoder;
        ``var = exp(logvar)``.

        Parameters
        ----------
        fields : array-like of shape (n, C, N, N) or (C, N, N)
            Channels (p, u_x, u_y) on the model's N x N grid, in physical
            units; NumPy array, torch tensor (any device) or nested lists of
            real numbers (integers, floats); all values finite.
        batch_size : int, default=256
            Fields per forward pass (bounds the memory).

        Returns
        -------
        (mean, var) : numpy.ndarray of shape (n, latent_dim), float32
            One row per field; shape (latent_dim,) for a single (C, N, N) field.

        Raises
        ------
        ValueError
            ``fields`` of the wrong shape (not (n, C, N, N) or (C, N, N) with
            the run's C and N), of a non-real dtype (bool, complex, strings,
            objects), with NaN or inf, or with values beyond float32's range.
        """
        caller = "TrainedRun.encode"
        check_int(batch_size, "batch_size", caller, low=1)
        y, single = self._fields(fields, caller)
        means, variances = [], []
        with torch.inference_mode():
            for start in range(0, len(y), batch_size):
                mu, logvar = self.model.encode(y[start : start + batch_size])
                means.append(mu)
                variances.append(torch.exp(logvar))
        d = self.latent_dim
        mean = torch.cat(means) if means else y.new_zeros((0, d))
        var = torch.cat(variances) if variances else y.new_zeros((0, d))
        if single:
            mean, var = mean[0], var[0]
        return _to_numpy(mean), _to_numpy(var)

    def decode(self, z: Any, *, batch_size: int = 256) -> NDArray[np.float32]:
        """Mean fields of p(y|z) in physical units.

        Parameters
        ----------
        z : array-like of shape (n, latent_dim) or (latent_dim,)
            Latent codes, real and finite.
        batch_size : int, default=256

        Returns
        -------
        numpy.ndarray of shape (n, C, N, N), float32
            The decoder's mean fields, mapped back to physical units; shape
            (C, N, N) for a single (latent_dim,) code.

        Raises
        ------
        ValueError
            ``z`` of the wrong shape, a non-real dtype, NaN or inf.
        """
        caller = "TrainedRun.decode"
        check_int(batch_size, "batch_size", caller, low=1)
        d = self.latent_dim
        z_t, single = self._tensor(z, "z", caller, shape=(d,), what=f"(n, {d}) or ({d},)")
        outs = []
        with torch.inference_mode():
            for start in range(0, len(z_t), batch_size):
                mean, _ = self.model.decode(z_t[start : start + batch_size])
                outs.append(mean)
        y = torch.cat(outs) if outs else z_t.new_zeros((0, self.channels, self.grid, self.grid))
        y = self._to_physical(y)
        return _to_numpy(y[0] if single else y)

    def reconstruct(self, fields: Any, *, batch_size: int = 256) -> NDArray[np.float32]:
        """``decode(encode(fields)[0])``: the fields through the latent means, physical units."""
        mean, _ = self.encode(fields, batch_size=batch_size)
        return self.decode(mean, batch_size=batch_size)

    def __repr__(self) -> str:
        return (
            f"TrainedRun({str(self.path)!r}, epoch={self.epoch}, grid={self.grid}, "
            f"channels={self.channels}, latent_dim={self.latent_dim}, "
            f"prior={self.config.model.prior!r}, normalization={self.normalization!r}, "
            f"device={self.device})"
        )

    # ------------------------------------------------------------------ helpers
    @property
    def _field_shape(self) -> str:
        c, n = self.channels, self.grid
        return f"(n, {c}, {n}, {n}) or ({c}, {n}, {n})"

    def _dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    def _fields(self, fields: Any, caller: str) -> tuple[Tensor, bool]:
        """Validated fields (n, C, N, N) in the model's units, and whether one was given alone."""
        y, single = self._tensor(
            fields,
            "fields",
            caller,
            shape=(self.channels, self.grid, self.grid),
            what=self._field_shape,
        )
        if self.stats is not None:
            mean, std = self._stats_tensors(y)
            y = (y - mean) / std
        return y, single

    def _to_physical(self, y: Tensor) -> Tensor:
        if self.stats is None:
            return y
        mean, std = self._stats_tensors(y)
        return y * std + mean

    def _stats_tensors(self, like: Tensor) -> tuple[Tensor, Tensor]:
        assert self.stats is not None
        shape = (1, -1, 1, 1)
        mean = torch.tensor(self.stats.mean, dtype=like.dtype, device=like.device).view(shape)
        std = torch.tensor(self.stats.std, dtype=like.dtype, device=like.device).view(shape)
        return mean, std

    def _tensor(
        self, value: Any, name: str, caller: str, *, shape: tuple[int, ...], what: str
    ) -> tuple[Tensor, bool]:
        """``value`` as a (n, *shape) tensor of the model's dtype on its device.

        Returns the tensor and whether ``value`` had the shape ``shape``
        itself (one item, given a leading axis here).
        """
        if isinstance(value, Tensor):
            t = value.detach()
            kind = _torch_kind(t.dtype)
            dtype_name = str(t.dtype).replace("torch.", "")
        else:
            try:
                arr = np.asarray(value)
            except (ValueError, TypeError) as exc:
                msg = (
                    f"{caller}: {name} must be an array of shape {what} (a NumPy array, "
                    f"torch tensor or nested lists of numbers); got {type(value).__name__} "
                    f"that is not array-like ({exc})."
                )
                raise ValueError(msg) from None
            kind = arr.dtype.kind
            dtype_name = str(arr.dtype)
            t = None
        if kind not in "iuf":
            msg = (
                f"{caller}: {name} must hold real numbers (a float or integer dtype); got "
                f"dtype {dtype_name}."
            )
            raise ValueError(msg)
        got_shape = tuple(value.shape) if t is not None else tuple(arr.shape)
        if got_shape[-len(shape) :] != shape or len(got_shape) not in (len(shape), len(shape) + 1):
            msg = f"{caller}: {name} must have shape {what}; got shape {got_shape}."
            raise ValueError(msg)
        if t is None:
            if not np.all(np.isfinite(arr)):
                bad = int(np.sum(~np.isfinite(arr)))
                msg = f"{caller}: {name} must be finite (no NaN or inf); got {bad} non-finite entries."
                raise ValueError(msg)
            t = torch.from_numpy(np.ascontiguousarray(arr))
        t = t.to(device=self.device, dtype=self._dtype())
        finite = torch.isfinite(t)
        if not bool(finite.all()):
            bad = int((~finite).sum())
            msg = (
                f"{caller}: {name} must be finite (no NaN or inf) and within the range of "
                f"{str(self._dtype()).replace('torch.', '')}; got {bad} entries that are not."
            )
            raise ValueError(msg)
        single = len(got_shape) == len(shape)
        return (t.unsqueeze(0) if single else t), single


def _torch_kind(dtype: torch.dtype) -> str:
    """The NumPy dtype kind of a torch dtype ('b', 'i', 'u', 'f', 'c')."""
    if dtype == torch.bool:
        return "b"
    if dtype.is_complex:
        return "c"
    if dtype.is_floating_point:
        return "f"
    return "u" if dtype == torch.uint8 else "i"


def _to_numpy(t: Tensor) -> NDArray[np.float32]:
    return t.detach().to("cpu", torch.float32).numpy()


def load_run(path: str | os.PathLike, *, device: str | torch.device | None = None) -> TrainedRun:
    """Load a trained run: its model and the normalisation it was trained with.

    Parameters
    ----------
    path : path-like
        A run folder (holding ``checkpoint.pt``, as ``darcyvae train --out``
        writes; also an ensemble member ``OUT/seed_<s>``), a trial with
        restarts (its accepted attempt; in the older ``trials.json`` layout,
        its last attempt, which the log reports), or a checkpoint file
        (``darcyvae.checkpoint.run_checkpoint``).
    device : str, torch.device or None, default=None
        Where the model runs (None: the CPU; ``"auto"``: CUDA when available).

    Returns
    -------
    TrainedRun
        ``run.encode(fields)`` gives latent means and variances of fields in
        physical units, ``run.decode(z)`` mean fields in physical units.

    Raises
    ------
    FileNotFoundError
        No run folder or checkpoint there.
    ValueError
        Not a darcyvae checkpoint, weights that do not fit the stored
        configuration, or a folder of several runs (the message names them).
    IntegrityError
        A damaged checkpoint (checksum mismatch, truncated file).
    """
    ckpt_path = run_checkpoint(path, "load_run")
    dev = resolve_device(device, "load_run")
    ckpt = load_checkpoint(ckpt_path)
    model = load_model(ckpt, device=dev)
    config = TrainConfig.from_dict(ckpt["config"])
    norm = ckpt.get("normalization")
    stats = ChannelStats(**norm) if norm is not None else None
    summary = None
    summary_path = ckpt_path.parent / SUMMARY_NAME
    if summary_path.is_file():
        try:
            summary = json.loads(summary_path.read_text())
        except ValueError:
            summary = None
    bound = ckpt.get("distortion_bound")
    return TrainedRun(
        model=model,
        config=config,
        stats=stats,
        path=ckpt_path,
        epoch=int(ckpt.get("epoch", 0)),
        distortion_bound=None if bound is None else float(bound),
        summary=summary,
        device=dev,
    )
