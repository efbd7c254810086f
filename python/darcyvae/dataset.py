"""Reading Darcy flow datasets (HDF5) for PyTorch.

The files follow docs/data.md §1c (the authors' layout, :mod:`darcyvae._hdf5_layout`):
datasets ``output`` ``(n, 3, N, N)``, ``generative_params`` ``(n, s)`` and
``permeability`` ``(n, 1, N, N)``, float32, plus file attributes saying how
the file was made. Only ``output`` and ``generative_params`` are read here.

Public names
------------
ChannelStats
    Per-channel mean and standard deviation of a (training) file.
channel_stats
    Compute them, cached atomically in ``<file>.stats.json``.
DarcyDataset
    A ``torch.utils.data.Dataset`` of ``(y, theta)`` pairs, optionally
    normalised per channel and resident on a device.
make_loader, make_loaders
    Seeded DataLoaders over one dataset or a train/test pair.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import BatchSampler, DataLoader, Dataset, RandomSampler, SequentialSampler

from ._device import resolve_device, to_device_async
from ._hdf5_layout import OUTPUT, THETA, decode_attrs, open_dataset_file
from ._io import atomic_write_text

__all__ = ["ChannelStats", "DarcyDataset", "channel_stats", "make_loader", "make_loaders"]

_STATS_SUFFIX = ".stats.json"
_CHUNK = 256  # samples read per HDF5 slab when computing statistics


@dataclass(frozen=True)
class ChannelStats:
    """Per-channel mean and standard deviation of the field data of one file.

    Attributes
    ----------
    mean, std : tuple of float, one per channel
        Over all samples and pixels (population std, ``ddof=0``); a constant
        channel gets ``std = 1`` so that normalising never divides by zero.
    n_samples : int
        Number of samples they were computed from.
    source : str
        The file they were computed from.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    n_samples: int
    source: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "mean", tuple(float(v) for v in self.mean))
        object.__setattr__(self, "std", tuple(float(v) for v in self.std))
        if len(self.mean) != len(self.std) or not self.mean:
            msg = (
                "ChannelStats: mean and std must be non-empty and of equal length; "
                f"got {len(self.mean)} and {len(self.std)}."
            )
            raise ValueError(msg)
        if not all(np.isfinite(self.mean)) or not all(s > 0 and np.isfinite(s) for s in self.std):
            msg = f"ChannelStats: mean must be finite and std finite and > 0; got {self}."
            raise ValueError(msg)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready dict (the inverse of ``ChannelStats(**d)``)."""
        return asdict(self)


def _file_signature(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


def channel_stats(path: str | os.PathLike, *, cache: bool = True) -> ChannelStats:
    """Per-channel mean and standard deviation of the ``output`` of a file.

    Parameters
    ----------
    path : path-like
        An HDF5 file in the docs/data.md §1c layout (normally the training file).
    cache : bool, default=True
        Read and write the statistics in ``<path>.stats.json`` beside the
        file (written atomically; recomputed when the file's size or
        modification time changed). Where the folder is read-only the
        statistics are computed without caching.

    Returns
    -------
    ChannelStats

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Not an HDF5 file of the expected layout, or non-finite data.

    Notes
    -----
    Computed in float64 over slabs of the file, so files larger than memory
    work. Test data must be normalised with the statistics of the TRAINING
    file: pass them as ``DarcyDataset(test, normalize="channel", stats=...)``.
    """
    path = Path(path)
    caller = "channel_stats"
    stats_path = path.with_name(path.name + _STATS_SUFFIX)
    with open_dataset_file(path, caller) as fh:
        signature = _file_signature(path)
        if cache and stats_path.is_file():
            try:
                cached = json.loads(stats_path.read_text())
                if cached.get("signature") == signature:
                    return ChannelStats(**cached["stats"])
            except (ValueError, KeyError, TypeError):
                pass  # unreadable cache: recompute and overwrite
        out = fh[OUTPUT]
        n, c = out.shape[:2]
        total = np.zeros(c)
        total_sq = np.zeros(c)
        count = 0
        for start in range(0, n, _CHUNK):
            block = np.asarray(out[start : start + _CHUNK], dtype=np.float64)
            if not np.all(np.isfinite(block)):
                msg = f"{caller}: {str(path)!r} holds NaN or inf in {OUTPUT!r}."
                raise ValueError(msg)
            total += block.sum(axis=(0, 2, 3))
            total_sq += np.square(block).sum(axis=(0, 2, 3))
            count += block.shape[0] * block.shape[2] * block.shape[3]
    mean = total / count
    var = np.maximum(total_sq / count - mean**2, 0.0)
    std = np.sqrt(var)
    std = np.where(std > 1e-12 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    stats = ChannelStats(mean=tuple(mean), std=tuple(std), n_samples=int(n), source=str(path))
    if cache:
        # A read-only folder only loses the cache; the statistics are still returned.
        with contextlib.suppress(OSError):
            record = {"signature": signature, "stats": stats.to_dict()}
            atomic_write_text(stats_path, json.dumps(record, indent=2, sort_keys=True))
    return stats


class DarcyDataset(Dataset):
    """Darcy flow samples ``(y, theta)`` read from an HDF5 file (docs/data.md §1c).

    The whole ``output`` and ``generative_params`` arrays are read into
    memory at construction (512 samples on the 65 grid are 26 MB), as float32
    tensors, optionally on a device (``device="cuda"`` keeps a small dataset
    resident on the GPU, so batches never cross the bus).

    Parameters
    ----------
    path : path-like
        HDF5 file with ``output`` (n, C, N, N) and ``generative_params`` (n, s).
    normalize : {False, None, "none", "channel"}, default=False
        ``"channel"``: subtract the per-channel mean and divide by the
        per-channel std (``stats``, or those of this file when ``stats`` is
        None).
    stats : ChannelStats, path-like or None, default=None
        Statistics to normalise with; a path means ``channel_stats(path)``.
        Give the TRAINING file's statistics to a test dataset.
    device : str, torch.device or None, default=None
        Where the tensors live (None: CPU; ``"auto"``: CUDA if present).
    indices : sequence of int or None, default=None
        Keep only these samples (in this order).

    Attributes
    ----------
    y : Tensor of shape (n, C, N, N), float32
        The (normalised) fields, channel order (p, u_x, u_y).
    theta : Tensor of shape (n, s), float32
        The generative parameters.
    stats : ChannelStats or None
        The statistics used to normalise, None without normalisation.
    attrs : dict
        The file's attributes (grid, kernel, distribution, seed, ...),
        decoded as by :func:`darcyvae.generate.read_attrs`.

    Raises
    ------
    FileNotFoundError
        No file at ``path``.
    ValueError
        Wrong layout, non-finite values, a bad ``normalize`` or ``indices``,
        statistics with a different number of channels.

    Notes
    -----
    ``dataset[i]`` returns ``(y[i], theta[i])``; a list, slice or 1-D tensor
    of indices returns the stacked batch, which is what ``make_loader``
    uses (one gather per batch instead of one per sample).

    Examples
    --------
    >>> ds = DarcyDataset("train.h5", normalize="channel")  # doctest: +SKIP
    >>> y, theta = ds[0]  # doctest: +SKIP
    """

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        normalize: bool | str | None = False,
        stats: ChannelStats | str | os.PathLike | None = None,
        device: str | torch.device | None = None,
        indices: Sequence[int] | None = None,
    ) -> None:
        caller = "DarcyDataset"
        mode = _normalize_mode(normalize, caller)
        self.path = Path(path)
        self.device = resolve_device(device, caller)
        with open_dataset_file(self.path, caller) as fh:
            y = np.asarray(fh[OUTPUT], dtype=np.float32)
            theta = np.asarray(fh[THETA], dtype=np.float32)
            self.attrs = decode_attrs(fh.attrs)
        theta = theta.reshape(len(theta), -1)
        if indices is not None:
            idx = np.asarray(indices)
            if idx.ndim != 1 or idx.dtype.kind not in "iu" or len(idx) == 0:
                msg = f"{caller}: indices must be a non-empty 1-D sequence of integers; got {indices!r}."
                raise ValueError(msg)
            if idx.min() < -len(y) or idx.max() >= len(y):
                msg = f"{caller}: indices must lie in [0, {len(y)}); got min {idx.min()}, max {idx.max()}."
                raise ValueError(msg)
            y, theta = y[idx], theta[idx]
        if not (np.all(np.isfinite(y)) and np.all(np.isfinite(theta))):
            msg = f"{caller}: {str(self.path)!r} holds NaN or inf values."
            raise ValueError(msg)
        self.stats: ChannelStats | None = None
        if mode == "channel":
            if stats is None:
                stats = channel_stats(self.path)
            elif not isinstance(stats, ChannelStats):
                stats = channel_stats(stats)
            if len(stats.mean) != y.shape[1]:
                msg = (
                    f"{caller}: stats must have one entry per channel ({y.shape[1]}); "
                    f"got {len(stats.mean)}."
                )
                raise ValueError(msg)
            mean = np.asarray(stats.mean, dtype=np.float32)[None, :, None, None]
            std = np.asarray(stats.std, dtype=np.float32)[None, :, None, None]
            y = (y - mean) / std
            self.stats = stats
        self.y: Tensor = torch.from_numpy(np.ascontiguousarray(y)).to(self.device)
        self.theta: Tensor = torch.from_numpy(np.ascontiguousarray(theta)).to(self.device)

    @property
    def grid(self) -> int:
        """Grid size N of the fields."""
        return int(self.y.shape[-1])

    @property
    def channels(self) -> int:
        """Number of field channels C (3: p, u_x, u_y)."""
        return int(self.y.shape[1])

    @property
    def n_params(self) -> int:
        """Number s of generative parameters per sample."""
        return int(self.theta.shape[1])

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def __getitem__(self, index: int | slice | Sequence[int] | Tensor) -> tuple[Tensor, Tensor]:
        if isinstance(index, (list, tuple, np.ndarray)):
            index = torch.as_tensor(np.asarray(index, dtype=np.int64))
        if isinstance(index, Tensor) and index.device != self.device:
            index = to_device_async(index, self.device)
        return self.y[index], self.theta[index]

    def denormalize(self, y: Tensor) -> Tensor:
        """Undo the per-channel normalisation of ``y`` (..., C, N, N); identity without it."""
        if self.stats is None:
            return y
        shape = (-1, 1, 1)
        mean = torch.tensor(self.stats.mean, dtype=y.dtype, device=y.device).view(shape)
        std = torch.tensor(self.stats.std, dtype=y.dtype, device=y.device).view(shape)
        return y * std + mean

    def __repr__(self) -> str:
        norm = "channel" if self.stats is not None else "none"
        return (
            f"DarcyDataset({str(self.path)!r}, n={len(self)}, channels={self.channels}, "
            f"grid={self.grid}, s={self.n_params}, normalize={norm!r}, device={self.device})"
        )


def _same_stats(a: ChannelStats | None, b: ChannelStats | None) -> bool:
    """Whether two normalisations are the same (both none, or equal means and stds)."""
    if a is None or b is None:
        return a is b
    return tuple(a.mean) == tuple(b.mean) and tuple(a.std) == tuple(b.std)


def _normalize_mode(normalize: bool | str | None, caller: str) -> str:
    if normalize is None or normalize is False or normalize == "none":
        return "none"
    if normalize == "channel":
        return "channel"
    msg = f"{caller}: normalize must be one of False, None, 'none', 'channel'; got {normalize!r}."
    raise ValueError(msg)


def make_loader(
    dataset: DarcyDataset,
    *,
    batch_size: int = 64,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    seed: int = 0,
    drop_last: bool = False,
) -> DataLoader:
    """A DataLoader yielding batches ``(y, theta)`` from ``dataset``, one gather each.

    Parameters
    ----------
    dataset : DarcyDataset
    batch_size : int, default=64
    shuffle : bool, default=False
        Draw a new permutation every epoch from ``generator``.
    generator : torch.Generator or None, default=None
        The CPU generator behind the shuffling (its state is what a
        checkpoint saves to resume the exact batch order). None: a new one
        seeded with ``seed``.
    seed : int, default=0
        Seed of the generator made when ``generator`` is None.
    drop_last : bool, default=False
        Drop the last incomplete batch.

    Returns
    -------
    torch.utils.data.DataLoader
        Its ``generator`` attribute is the shuffling generator; no global
        random state is read or changed.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        msg = f"make_loader: batch_size must be an integer >= 1; got {batch_size!r}."
        raise ValueError(msg)
    if generator is None:
        generator = torch.Generator().manual_seed(int(seed))
    sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
    batches = BatchSampler(sampler, batch_size=batch_size, drop_last=drop_last)
    # batch_size=None: every element of ``batches`` (a list of indices) goes to
    # dataset[...] whole; passing the generator keeps DataLoader off the global RNG.
    return DataLoader(dataset, sampler=batches, batch_size=None, generator=generator)


def _loader_dataset(
    data: Any,
    name: str,
    *,
    normalize: bool | str | None,
    stats: ChannelStats | None,
    device: str | torch.device | None,
) -> DarcyDataset:
    """``data`` itself when it is a DarcyDataset, else the file it names (a clear
    ``TypeError`` for anything else)."""
    if isinstance(data, DarcyDataset):
        return data
    if isinstance(data, (str, os.PathLike)):
        return DarcyDataset(data, normalize=normalize, stats=stats, device=device)
    msg = (
        f"make_loaders: {name} must be a path to an HDF5 file or a DarcyDataset; "
        f"got {type(data).__name__} {data!r}."
    )
    raise TypeError(msg)


def make_loaders(
    train_path: str | os.PathLike | DarcyDataset,
    test_path: str | os.PathLike | DarcyDataset | None = None,
    *,
    batch_size: int = 64,
    seed: int = 0,
    device: str | torch.device | None = None,
    normalize: bool | str | None = False,
) -> tuple[DataLoader, DataLoader | None]:
    """Train and test DataLoaders over two files, test normalised with the TRAIN statistics.

    Parameters
    ----------
    train_path, test_path : path-like or DarcyDataset
        HDF5 files (docs/data.md §1c), or datasets already read. ``test_path``
        may be None. A DarcyDataset is used as it is (``normalize`` and
        ``device`` apply to paths); a test file given with a normalised
        training DarcyDataset is normalised with its statistics.
    batch_size : int, default=64
    seed : int, default=0
        Seed of the training loader's shuffling generator.
    device : str, torch.device or None, default=None
        Where the data read from paths live (see ``DarcyDataset``).
    normalize : {False, "channel"}, default=False
        The normalisation of the data read from paths.

    Returns
    -------
    (train_loader, test_loader)
        The training loader shuffles; the test loader keeps file order
        (None without ``test_path``). Their datasets are ``loader.dataset``.

    Raises
    ------
    TypeError
        ``train_path`` or ``test_path`` neither a path nor a DarcyDataset.
    ValueError
        Train and test fields of different shapes; a test DarcyDataset not
        normalised with the training statistics; ``normalize="channel"`` with
        a training DarcyDataset that is not normalised.
    """
    mode = _normalize_mode(normalize, "make_loaders")
    train = _loader_dataset(train_path, "train_path", normalize=mode, stats=None, device=device)
    if isinstance(train_path, DarcyDataset) and mode == "channel" and train.stats is None:
        msg = (
            "make_loaders: normalize='channel' but train_path is a DarcyDataset that is not "
            "normalised; pass DarcyDataset(path, normalize='channel') or its path."
        )
        raise ValueError(msg)
    train_loader = make_loader(train, batch_size=batch_size, shuffle=True, seed=seed)
    if test_path is None:
        return train_loader, None
    test_mode = "channel" if train.stats is not None else mode
    test = _loader_dataset(
        test_path, "test_path", normalize=test_mode, stats=train.stats, device=device
    )
    if not _same_stats(test.stats, train.stats):
        if train.stats is None:
            want, fix = "not normalised, as the training data", "DarcyDataset(test_file)"
        else:
            want = "normalised with the training statistics"
            fix = "DarcyDataset(test_file, normalize='channel', stats=train.stats)"
        got = "not normalised" if test.stats is None else "normalised with other statistics"
        msg = (
            f"make_loaders: the test data must be {want}; got a test DarcyDataset {got}: "
            f"pass {fix} or the test file's path."
        )
        raise ValueError(msg)
    if (test.channels, test.grid) != (train.channels, train.grid):
        msg = (
            "make_loaders: train and test fields must have the same shape; got "
            f"{tuple(train.y.shape[1:])} and {tuple(test.y.shape[1:])}."
        )
        raise ValueError(msg)
    return train_loader, make_loader(test, batch_size=batch_size, shuffle=False)
