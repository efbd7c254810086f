"""The files of a training run: checkpoint (with a checksum), metrics log, names.

A run folder holds ``config.toml``, ``metrics.jsonl`` (one JSON record per
epoch; the same records in ``metrics.csv`` and, when the ``tensorboard``
package is installed, as TensorBoard scalars in ``tensorboard/``),
``checkpoint.pt`` and, when finished, ``summary.json``. Checkpoints
are written atomically and carry a SHA-256 checksum over every tensor and
value they hold; a damaged one is refused with ``IntegrityError``.

Public names
------------
CHECKPOINT_NAME, LOG_NAME, CSV_LOG_NAME, TENSORBOARD_DIR, CONFIG_NAME, SUMMARY_NAME, TRIALS_NAME
    File names inside a run folder.
save_checkpoint, load_checkpoint, checkpoint_checksum
    Write / read (and verify) a checkpoint dict.
load_model
    Rebuild the trained DenseVAE of a checkpoint.
read_log
    The records of ``metrics.jsonl`` before an epoch (a torn last line is dropped).
clean_stale_tmp
    Remove temporary files an interrupted save left behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pickle
import re
from pathlib import Path
from typing import Any

import torch

from ._device import resolve_device
from ._io import atomic_path
from .errors import IntegrityError
from .models import DenseVAE

__all__ = [
    "CHECKPOINT_NAME",
    "CONFIG_NAME",
    "CSV_LOG_NAME",
    "EARLIER_ENSEMBLE_SUMMARY",
    "ENSEMBLE_SEEDS",
    "ENSEMBLE_SUMMARY",
    "LOG_NAME",
    "MEMBER_DIR",
    "RESTART_DIR",
    "SUMMARY_NAME",
    "TENSORBOARD_DIR",
    "TRIALS_NAME",
    "checkpoint_checksum",
    "clean_stale_tmp",
    "load_checkpoint",
    "load_model",
    "read_log",
    "run_checkpoint",
    "save_checkpoint",
]

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "checkpoint.pt"
LOG_NAME = "metrics.jsonl"
CSV_LOG_NAME = "metrics.csv"
"""The records of ``metrics.jsonl`` as CSV (one column per field, empty where a record has none)."""
TENSORBOARD_DIR = "tensorboard"
"""The records as TensorBoard scalars, when the optional ``tensorboard`` package is installed."""
CONFIG_NAME = "config.toml"
SUMMARY_NAME = "summary.json"
TRIALS_NAME = "trials.json"
"""The attempts of a trial with restarts in the older layout (``OUT/attempt_K``); still read."""
ENSEMBLE_SUMMARY = "ensemble.json"
"""The members of ``train_ensemble`` (and of a trial with restarts), in its output folder."""
ENSEMBLE_SEEDS = "ensemble_seeds.json"
"""The seeds of the ensemble an experiment's arm started in its folder, written before it
trains, so that a rerun resumes that ensemble as it started (``experiments._common``)."""
EARLIER_ENSEMBLE_SUMMARY = "ensemble_earlier_{k}.json"
"""The summary of an arm's k-th finished ensemble, kept when more trials of the arm train in
the same folder as a new ensemble."""
MEMBER_DIR = "seed_{seed}"
"""The folder of the run with ``seed`` in an ensemble's (or a trial's) output folder."""
RESTART_DIR = "seed_{seed}.restart_{restart}"
"""The folder of restart ``restart`` of the trial with ``seed``."""
CHECKPOINT_FORMAT = 2
"""2: sectioned config, checksum, data fingerprint. 1 (no checksum) still loads."""
_READABLE_FORMATS = (1, 2)


def _feed(h: Any, obj: Any, where: str) -> None:
    if isinstance(obj, torch.Tensor):
        t = obj.detach().cpu().contiguous()
        h.update(f"T{where}:{t.dtype}:{tuple(t.shape)};".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    elif isinstance(obj, dict):
        h.update(f"D{where}:{len(obj)};".encode())
        for key in sorted(obj, key=lambda k: (type(k).__name__, str(k))):
            _feed(h, obj[key], f"{where}/{key!r}")
    elif isinstance(obj, (list, tuple)):
        h.update(f"L{where}:{len(obj)};".encode())
        for i, v in enumerate(obj):
            _feed(h, v, f"{where}[{i}]")
    else:
        h.update(f"V{where}:{obj!r};".encode())


def checkpoint_checksum(payload: dict[str, Any]) -> str:
    """SHA-256 over every tensor (dtype, shape, bytes) and value of ``payload``,
    except its ``"checksum"`` entry."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in payload.items() if k != "checksum"}, "")
    return h.hexdigest()


class _Sink:
    """The file ``torch.save`` writes to, keeping the ``OSError`` of a failed write.

    torch's zip writer turns a failed write into a ``RuntimeError`` ("unexpected
    pos ..."), losing the reason; writing through Python keeps it (``error``).
    """

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self.fh.write(data)
        except OSError as exc:
            self.error = self.error or exc
            raise

    def flush(self) -> None:
        self.fh.flush()


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``payload`` (plus ``format`` and ``checksum``) to ``path`` atomically.

    The file is written to a temporary file beside ``path``, flushed to the
    disk and renamed; a failed write (a full disk, a file size limit) leaves
    ``path`` as it was and raises the write's ``OSError`` (its errno, naming
    ``path``), never torch's "unexpected pos" ``RuntimeError``.
    """
    path = Path(path)
    body = {**payload, "format": CHECKPOINT_FORMAT}
    body["checksum"] = checkpoint_checksum(body)
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            sink = _Sink(fh)
            try:
                torch.save(body, sink)
            except RuntimeError as exc:
                if sink.error is None:
                    raise
                raise sink.error from exc
            fh.flush()
            os.fsync(fh.fileno())
    except OSError as exc:
        if exc.errno is None or exc.filename == str(path):
            raise
        raise OSError(exc.errno, exc.strerror or str(exc), str(path)) from exc
    return path


def load_checkpoint(path: str | os.PathLike, *, map_location: Any = "cpu") -> dict[str, Any]:
    """Read and verify a checkpoint written by ``train`` (a folder means its ``checkpoint.pt``).

    Raises
    ------
    FileNotFoundError
        No checkpoint there.
    ValueError
        Not a darcyvae checkpoint.
    IntegrityError
        The checksum does not match its contents (a damaged file), or the
        file is truncated.
    """
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_NAME
    if not path.is_file():
        msg = f"load_checkpoint: no checkpoint at {str(path)!r}."
        raise FileNotFoundError(msg)
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:
        if isinstance(exc, pickle.UnpicklingError) or "weights_only" in str(exc):
            # torch's refusal suggests reloading without its safeguard; darcyvae never does.
            raise _refused(path, exc) from None
        if isinstance(exc, (RuntimeError, EOFError)) and (
            "zip archive" in str(exc)
            or "EOF" in type(exc).__name__
            or "central directory" in str(exc)
        ):
            msg = f"load_checkpoint: {str(path)!r} is truncated or damaged ({exc})."
            raise IntegrityError(msg) from exc
        msg = f"load_checkpoint: {str(path)!r} is not a readable torch checkpoint ({exc})."
        raise ValueError(msg) from exc
    if not isinstance(ckpt, dict) or ckpt.get("format") not in _READABLE_FORMATS:
        msg = f"load_checkpoint: {str(path)!r} is not a darcyvae training checkpoint."
        raise ValueError(msg)
    if ckpt["format"] >= 2:
        stored = ckpt.get("checksum")
        if stored != checkpoint_checksum(ckpt):
            msg = (
                f"load_checkpoint: {str(path)!r} failed its checksum (the file was changed or "
                "damaged after it was written); refusing to use it."
            )
            raise IntegrityError(msg)
    return ckpt


def _refused(path: Path, exc: Exception) -> ValueError:
    """darcyvae's own words for a file torch's safe loader refused (never torch's hint
    to load the file unsafely): the object it would have had to build, or what it could
    not read."""
    text = str(exc)
    found = re.search(r"GLOBAL ([\w.]+)", text) or re.search(r"global ([\w.]+)", text)
    if found:
        msg = (
            f"load_checkpoint: {str(path)!r} holds objects other than tensors and plain "
            f"values (e.g. {found.group(1)}); refused, since loading such a file can run "
            "arbitrary code. It was not written by darcyvae train: use a checkpoint that "
            "darcyvae wrote."
        )
        return ValueError(msg)
    lines = [line.strip() for line in text.splitlines()]
    detail = next((x for x in lines if x.startswith(("Unsupported", "Trying"))), "")
    detail = f" ({detail.rstrip('.')})" if detail else ""
    msg = (
        f"load_checkpoint: {str(path)!r} is not a darcyvae checkpoint: torch's safe loader "
        f"cannot read it{detail}."
    )
    return ValueError(msg)


def load_model(
    checkpoint: str | os.PathLike | dict[str, Any], *, device: str | torch.device | None = None
) -> DenseVAE:
    """Rebuild the trained DenseVAE of a checkpoint (in eval mode) on ``device``.

    Raises
    ------
    ValueError
        The stored weights do not fit the stored configuration (e.g. a tensor
        of the wrong shape), naming the checkpoint's problem in one line.
    """
    from .config import TrainConfig

    ckpt = checkpoint if isinstance(checkpoint, dict) else load_checkpoint(checkpoint)
    dev = resolve_device(device, "load_model")
    model = DenseVAE(TrainConfig.from_dict(ckpt["config"]).model)
    load_state(model, ckpt["model"], "load_model")
    return model.to(dev).eval()


def load_state(module: Any, state: dict[str, Any], caller: str) -> None:
    """``module.load_state_dict(state)`` with a one-line ``ValueError`` on mismatch."""
    try:
        module.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:3])
        msg = f"{caller}: the checkpoint does not fit the configured model ({detail})."
        raise ValueError(msg) from exc


def read_log(path: str | os.PathLike, before_epoch: int) -> list[dict[str, Any]]:
    """Records of ``metrics.jsonl`` with ``epoch < before_epoch``.

    A torn last line (a write interrupted by a kill) is dropped: the
    records after the checkpoint are rewritten on resume anyway.

    Raises
    ------
    IntegrityError
        Any other damage (an unreadable line that is not the last, a record
        without ``"epoch"``), naming the file and line.
    """
    path = Path(path)
    if not path.is_file():
        return []
    text = path.read_text()
    lines = text.split("\n")
    records = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        last = i == len(lines) - 1 or all(not rest.strip() for rest in lines[i + 1 :])
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as exc:
            if last:
                log.warning("read_log: dropped a torn last line of %s", path)
                continue
            msg = f"read_log: {str(path)!r} line {i + 1} is not JSON ({exc})."
            raise IntegrityError(msg) from None
        epoch = rec.get("epoch") if isinstance(rec, dict) else None
        if not isinstance(epoch, int) or isinstance(epoch, bool):
            msg = f'read_log: {str(path)!r} line {i + 1} has no integer "epoch".'
            raise IntegrityError(msg)
        if epoch < before_epoch:
            records.append(rec)
    return records


def clean_stale_tmp(folder: str | os.PathLike, name: str = CHECKPOINT_NAME) -> list[Path]:
    """Remove ``.{name}.*.tmp`` files that an interrupted atomic save left in ``folder``.

    Call it only while holding the folder's lock (``darcyvae._lock.folder_lock``).
    """
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for tmp in folder.glob(f".{name}.*.tmp"):
        try:
            tmp.unlink()
            removed.append(tmp)
        except FileNotFoundError:
            pass
    if removed:
        log.info("removed %d stale temporary file(s) in %s", len(removed), folder)
    return removed


def run_checkpoint(path: str | os.PathLike, caller: str) -> Path:
    """The checkpoint a run folder (or checkpoint file) ``path`` means.

    A run folder holds ``checkpoint.pt``. A trial with restarts (one seed
    of ``train_with_restarts`` / ``train_ensemble``: ``ensemble.json`` with
    one member) means its accepted attempt; a trial in the older layout
    (``trials.json``, ``attempt_K``) its last attempt, and the log says it
    read the older layout. A folder of several runs is a ``ValueError``
    naming them.
    """
    path = Path(path)
    if path.is_file():
        return path
    if not path.is_dir():
        msg = f"{caller}: no run folder or checkpoint at {str(path)!r}."
        raise FileNotFoundError(msg)
    if (path / CHECKPOINT_NAME).is_file():
        return path / CHECKPOINT_NAME
    if (path / TRIALS_NAME).is_file():
        return _older_trial_checkpoint(path, caller)
    summary = path / ENSEMBLE_SUMMARY
    members = _ensemble_members(summary) if summary.is_file() else []
    if len(members) == 1:
        accepted = Path(members[0]["out_dir"])
        accepted = accepted if accepted.is_absolute() else path / accepted.name
        log.info("%s: %s is a trial; reading its accepted attempt %s", caller, path, accepted)
        if (accepted / CHECKPOINT_NAME).is_file():
            return accepted / CHECKPOINT_NAME
        msg = f"{caller}: {str(summary)!r} names {str(accepted)!r}, which holds no checkpoint."
        raise FileNotFoundError(msg)
    runs = sorted(p.name for p in path.glob("seed_*") if (p / CHECKPOINT_NAME).is_file())
    if runs:
        shown = ", ".join(runs[:5]) + (", ..." if len(runs) > 5 else "")
        kind = "an ensemble folder" if summary.is_file() else "a folder of runs"
        msg = (
            f"{caller}: {str(path)!r} is {kind} with {len(runs)} runs ({shown}); "
            f"load one of them, e.g. {str(path / runs[0])!r}."
        )
        raise ValueError(msg)
    msg = f"{caller}: {str(path)!r} holds no {CHECKPOINT_NAME}; is it a training run folder?"
    raise FileNotFoundError(msg)


def _ensemble_members(summary: Path) -> list[dict[str, Any]]:
    """The members an ``ensemble.json`` lists (none if it cannot be read: the folder's runs
    are then listed instead)."""
    try:
        members = json.loads(summary.read_text())["members"]
        return [m for m in members if isinstance(m, dict) and "out_dir" in m]
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _older_trial_checkpoint(path: Path, caller: str) -> Path:
    """The last attempt of a trial in the older restart layout (``trials.json``, ``attempt_K``):
    the attempt ``train_with_restarts`` returned (accepted, or the last of the restarts)."""
    trials = path / TRIALS_NAME
    try:
        attempts = json.loads(trials.read_text())["attempts"]
        last = int(attempts[-1]["attempt"])
    except (ValueError, KeyError, IndexError, TypeError) as exc:
        msg = f"{caller}: {str(trials)!r} is not a readable trials record ({exc})."
        raise ValueError(msg) from None
    ckpt = path / f"attempt_{last}" / CHECKPOINT_NAME
    if not ckpt.is_file():
        msg = f"{caller}: {str(trials)!r} names attempt {last}, but {str(ckpt)!r} does not exist."
        raise FileNotFoundError(msg)
    log.info(
        "%s: %s is a trial in the older restart layout (%s, attempt_K); reading its last "
        "attempt %s",
        caller,
        path,
        TRIALS_NAME,
        ckpt.parent.name,
    )
    return ckpt
