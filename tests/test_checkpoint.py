"""Run files (docs/safety.md, Training): checksummed checkpoints, data fingerprints, torn
logs, stale temporary files, the folder lock."""

from __future__ import annotations

import errno
import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch
from _configs import tiny_train_config
from darcyvae._lock import folder_lock
from darcyvae.checkpoint import (
    checkpoint_checksum,
    clean_stale_tmp,
    load_checkpoint,
    load_model,
    read_log,
    save_checkpoint,
)
from darcyvae.errors import DataMismatchError, FolderLockedError, IntegrityError
from darcyvae.training import train
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.usefixtures("one_torch_thread")


tiny = functools.partial(tiny_train_config, batch_size=32)


@pytest.fixture(scope="module")
def finished(vae_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny(), vae_data.train, out_dir=out, device="cpu", progress=False)
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def _tamper(path, edit):
    """Change a checkpoint on disk without updating its checksum (bit rot, a bad copy)."""
    ckpt = torch.load(path, weights_only=True)
    edit(ckpt)
    torch.save(ckpt, path)


def test_checksum_covers_every_tensor_and_value(finished):
    ckpt = load_checkpoint(finished)
    assert ckpt["checksum"] == checkpoint_checksum(ckpt)
    name = next(iter(ckpt["model"]))
    changed = {**ckpt, "model": {**ckpt["model"], name: ckpt["model"][name].clone()}}
    changed["model"][name].view(-1)[0] += 1e-6
    assert checkpoint_checksum(changed) != ckpt["checksum"]
    assert checkpoint_checksum({**ckpt, "epoch": 3}) != ckpt["checksum"]


def test_a_changed_weight_is_refused(run_copy, vae_data):
    def flip(ckpt):
        w = next(v for v in ckpt["model"].values() if v.is_floating_point())
        w.view(-1)[0] = -w.view(-1)[0] + 0.5

    _tamper(run_copy / "checkpoint.pt", flip)
    with pytest.raises(IntegrityError, match="checksum"):
        load_checkpoint(run_copy)
    with pytest.raises(IntegrityError, match="checksum"):
        train(
            tiny(epochs=3),
            vae_data.train,
            out_dir=run_copy,
            device="cpu",
            resume=True,
            progress=False,
        )


def test_truncated_checkpoint_is_an_integrity_error(run_copy):
    path = run_copy / "checkpoint.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(IntegrityError, match="truncated or damaged"):
        load_checkpoint(path)


def test_resume_on_other_data_is_refused_unless_allowed(run_copy, vae_data, synthetic_h5):
    other = synthetic_h5(run_copy.parent / "other.h5", n=64, grid=17, seed=5)
    with pytest.raises(DataMismatchError, match="allow_data_change"):
        train(tiny(epochs=3), other, out_dir=run_copy, device="cpu", resume=True, progress=False)
    assert load_checkpoint(run_copy)["epoch"] == 2  # nothing was changed
    result = train(
        tiny(epochs=3),
        other,
        out_dir=run_copy,
        device="cpu",
        resume=True,
        progress=False,
        allow_data_change=True,
    )
    assert result.epochs == 3
    assert load_checkpoint(run_copy)["train_path"] == other
    # The same data resumes without complaint.
    train(tiny(epochs=4), other, out_dir=run_copy, device="cpu", resume=True, progress=False)


def test_torn_last_log_line_is_dropped_on_resume(run_copy, vae_data):
    log = run_copy / "metrics.jsonl"
    log.write_text(log.read_text() + '{"epoch": 2, "loss": 1.2')  # killed mid-write
    assert [r["epoch"] for r in read_log(log, 10)] == [0, 1]
    train(
        tiny(epochs=3), vae_data.train, out_dir=run_copy, device="cpu", resume=True, progress=False
    )
    lines = log.read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ('{"epoch": 0}\n{"epo\n{"epoch": 1}\n', "line 2 is not JSON"),
        ('{"epoch": 0}\n{"loss": 1.0}\n', 'line 2 has no integer "epoch"'),
    ],
)
def test_other_log_damage_names_the_file(tmp_path, text, match):
    log = tmp_path / "metrics.jsonl"
    log.write_text(text)
    with pytest.raises(IntegrityError, match=match) as info:
        read_log(log, 5)
    assert str(log) in str(info.value)


def test_stale_temporary_files_are_cleaned_on_start(run_copy, vae_data):
    stale = [run_copy / ".checkpoint.pt.abc123.tmp", run_copy / ".metrics.jsonl.x1.tmp"]
    for path in stale:
        path.write_bytes(b"half a file")
    # not an atomic save's temporary file of a run file: left as they are
    keep = {
        run_copy / ".other.tmp": b"not ours",
        run_copy / ".checkpoint.pt.tmp": b"no random part",
        run_copy / "checkpoint.pt.abc.tmp": b"not hidden",
    }
    for path, data in keep.items():
        path.write_bytes(data)
    train(
        tiny(epochs=3), vae_data.train, out_dir=run_copy, device="cpu", resume=True, progress=False
    )
    assert not any(p.exists() for p in stale)
    assert {path: path.read_bytes() for path in keep} == keep
    assert load_checkpoint(run_copy)["epoch"] == 3  # the resumed run saved, checksum intact
    assert clean_stale_tmp(run_copy / "missing") == []


def test_clean_stale_tmp_removes_exactly_the_atomic_save_leftovers(tmp_path):
    # the names _io.atomic_path gives its temporary files: mkstemp(".{name}.", ".tmp")
    left = [tempfile.mkstemp(prefix=".checkpoint.pt.", suffix=".tmp", dir=tmp_path) for _ in "ab"]
    for fd, _ in left:
        os.close(fd)
    made = {Path(name) for _, name in left} | {tmp_path / ".checkpoint.pt.x.y.tmp"}
    (tmp_path / ".checkpoint.pt.x.y.tmp").write_bytes(b"")
    others = {
        tmp_path / "checkpoint.pt": b"the checkpoint",
        tmp_path / ".checkpoint.pt.tmp": b"no random part",
        tmp_path / ".metrics.jsonl.q.tmp": b"another file's",
    }
    for path, data in others.items():
        path.write_bytes(data)
    assert set(clean_stale_tmp(tmp_path)) == made  # default name: the checkpoint's
    assert not any(path.exists() for path in made)
    assert {path: path.read_bytes() for path in others} == others
    assert clean_stale_tmp(tmp_path) == []  # nothing left to remove
    assert clean_stale_tmp(tmp_path, "metrics.jsonl") == [tmp_path / ".metrics.jsonl.q.tmp"]
    assert clean_stale_tmp(tmp_path / "checkpoint.pt") == []  # not a folder


def test_train_holds_the_folder_lock(tmp_path, vae_data):
    out = tmp_path / "locked"
    with (
        folder_lock(out, "another darcyvae train"),
        pytest.raises(FolderLockedError, match="in use"),
    ):
        train(tiny(), vae_data.train, out_dir=out, device="cpu", progress=False)
    assert not (out / "checkpoint.pt").exists()


def test_wrong_tensor_shape_is_a_clear_error(run_copy):
    ckpt = load_checkpoint(run_copy)
    name = next(k for k, v in ckpt["model"].items() if v.ndim == 2)
    ckpt["model"][name] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match="does not fit the configured model"):
        load_model(ckpt)


@given(
    epochs=st.lists(st.integers(0, 50), max_size=8),
    tail=st.text(alphabet='{}":,0123456789.epochlsa ', max_size=30),
    before=st.integers(0, 60),
)
def test_read_log_keeps_whole_records_and_drops_any_torn_tail(tmp_path, epochs, tail, before):
    log = tmp_path / "metrics.jsonl"
    records = [{"epoch": e, "loss": e / 7} for e in epochs]
    text = "".join(json.dumps(r) + "\n" for r in records)
    try:
        parsed = json.loads(tail)
    except ValueError:
        parsed = None
    torn = isinstance(tail, str) and tail.strip() and parsed is None
    log.write_text(text + (tail if torn else ""))
    assert read_log(log, before) == [r for r in records if r["epoch"] < before]


def test_a_checkpoint_write_beyond_the_disk_is_an_oserror_and_keeps_the_old_one(tmp_path):
    """Was: torch's writer turned a full disk into RuntimeError("unexpected pos"),
    reported as a bug (exit 3). Now the write's own OSError, the old checkpoint intact."""
    from test_io import file_size_limit

    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"w": torch.zeros(10)}, path)
    before = path.read_bytes()
    with file_size_limit(50_000), pytest.raises(OSError, match="File too large") as info:
        save_checkpoint({"w": torch.randn(100_000)}, path)
    assert not isinstance(info.value, RuntimeError)
    assert info.value.errno == errno.EFBIG
    assert info.value.filename == str(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert load_checkpoint(path)["w"].shape == (10,)
