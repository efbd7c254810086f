"""The per-epoch log of a run (docs/api.md, Run folder): one unit, metrics.csv, TensorBoard, exact resume.

Was: ``metrics.jsonl`` mixed ``loss``, the objective as a per-element mean (4.1), with
``test_loss`` in nats per sample (1219), and the progress bar showed them side by side.
"""

from __future__ import annotations

import csv
import functools
import json
import math

import pytest
from _configs import tiny_train_config
from darcyvae import _run
from darcyvae.ensemble import train_ensemble
from darcyvae.ensemble.engine import bar_text as _bar_text
from darcyvae.experiments._common import history as experiment_history
from darcyvae.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")

LOSS_FIELDS = ("loss", "rate", "distortion", "test_loss", "test_rate", "test_distortion")

tiny_config = functools.partial(tiny_train_config, epochs=3, eval_every=1)


def _jsonl(folder) -> list[dict]:
    return [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]


def _csv(folder) -> list[dict]:
    with open(folder / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def _assert_csv_holds_the_records(folder, skip=()):
    """metrics.csv has one row per record of metrics.jsonl, each field the same value."""
    records, rows = _jsonl(folder), _csv(folder)
    assert len(rows) == len(records)
    for row, rec in zip(rows, records, strict=True):
        assert set(rec) <= set(row), set(rec) - set(row)
        for key, cell in row.items():
            if key in skip:
                continue
            value = rec.get(key)
            if value is None:
                assert cell == "", (key, cell)
            elif isinstance(value, str):
                assert cell == value
            elif isinstance(value, int):
                assert int(cell) == value
            else:
                assert float(cell) == value, (key, cell, value)  # repr: exact


def _assert_one_unit(rec: dict) -> None:
    assert rec["units"] == "nats/sample"
    assert rec["loss"] == rec["rate"] + rec["distortion"]  # the negative ELBO per sample
    if rec.get("test_loss") is not None:
        assert rec["test_loss"] == pytest.approx(rec["test_rate"] + rec["test_distortion"])


def test_a_run_logs_every_loss_in_nats_per_sample_and_the_same_records_as_csv(vae_data, tmp_path):
    cfg = tiny_config(n_labeled=4)
    result = train(cfg, *vae_data, out_dir=tmp_path / "run", device="cpu", progress=False)
    records = _jsonl(tmp_path / "run")
    assert records == result.history
    assert [r["epoch"] for r in records] == [0, 1, 2]
    for rec in records:
        _assert_one_unit(rec)
        # the objective the optimiser saw is kept, under its own name (training reduction)
        assert rec["objective"] < 0.1 * abs(rec["loss"])
        assert rec["test_loss"] is not None
    _assert_csv_holds_the_records(tmp_path / "run")
    assert next(iter(_csv(tmp_path / "run")[0])) == "epoch"
    # the readers of the experiments keep their keys
    for rec in experiment_history(tmp_path / "run"):
        assert {"epoch", "phase", "beta", "loss", "rate", "distortion", "test_loss"} <= set(rec)


def test_the_label_loss_is_summed_over_latent_dimensions_whatever_the_reduction(vae_data, tmp_path):
    """One step per epoch: epoch 0's label term is computed before any update, so the
    averaged ("rate") and summed reductions log the same value once both are in nats
    per labelled sample."""
    logged = {}
    for dims in ("rate", "sum"):
        cfg = tiny_config(epochs=1, batch_size=64, n_labeled=6, label_dim_reduction=dims)
        out = tmp_path / dims
        logged[dims] = train(cfg, vae_data.train, out_dir=out, device="cpu", progress=False)
    a, b = (logged[d].history[0]["label_loss"] for d in ("rate", "sum"))
    assert a == pytest.approx(b, rel=1e-6)


def test_the_progress_bar_says_one_unit():
    record = {"loss": 1219.5, "rate": 2.5, "test_loss": 1230.25, "beta": 1e-7}
    text = _bar_text(record)
    assert text == "loss 1219.5, rate 2.5, test loss 1230.25 nats/sample; beta 1e-07"


def test_ensemble_members_log_as_single_runs(vae_data, tmp_path):
    cfg = tiny_config(epochs=2)
    res = train_ensemble(cfg, [2, 5], *vae_data, out_dir=tmp_path / "ens", progress=False)
    alone = train(cfg.replace(seed=5), *vae_data, out_dir=tmp_path / "s5", progress=False)
    for member in res.members:
        records = _jsonl(member.out_dir)
        assert records == member.history
        for rec in records:
            _assert_one_unit(rec)
        _assert_csv_holds_the_records(member.out_dir)
    assert list(_csv(res.member(5).out_dir)[0]) == list(_csv(tmp_path / "s5")[0])
    for a, b in zip(res.member(5).history, alone.history, strict=True):
        assert set(a) == set(b)
        for key in LOSS_FIELDS:
            assert a[key] == pytest.approx(b[key], rel=5e-4)


def _stopped_after_logging_epoch_2(cfg, data, out):
    """A run whose log reaches epoch 2 while its checkpoint holds 2 epochs (it was killed
    after logging epoch 2, before its next checkpoint), with a torn last CSV line."""
    train(cfg.replace(epochs=2), *data, out_dir=out, device="cpu", progress=False)
    saved = (out / "checkpoint.pt").read_bytes()
    train(cfg.replace(epochs=3), *data, out_dir=out, device="cpu", resume=True, progress=False)
    (out / "checkpoint.pt").write_bytes(saved)
    with open(out / "metrics.csv", "a") as fh:
        fh.write("3,adaptive,0.005")


def test_resume_keeps_each_epoch_once_in_jsonl_and_csv(vae_data, tmp_path):
    cfg = tiny_config(epochs=4, deterministic=True, checkpoint_every=2, seed=3)
    full = tmp_path / "full"
    train(cfg, *vae_data, out_dir=full, device="cpu", progress=False)
    part = tmp_path / "part"
    _stopped_after_logging_epoch_2(cfg, vae_data, part)
    assert len(_jsonl(part)) == 3
    train(cfg, *vae_data, out_dir=part, device="cpu", resume=True, progress=False)
    assert [r["epoch"] for r in _jsonl(part)] == [0, 1, 2, 3]
    assert [row["epoch"] for row in _csv(part)] == ["0", "1", "2", "3"]
    _assert_csv_holds_the_records(part)

    def without_seconds(rows):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in rows]

    assert without_seconds(_csv(part)) == without_seconds(_csv(full))  # bit-identical
    assert without_seconds(_jsonl(part)) == without_seconds(_jsonl(full))


def test_resume_converts_an_older_log_to_one_unit(vae_data, tmp_path):
    """A log written before the units were fixed (``loss`` the objective, the label term
    averaged over latent dimensions, no ``units``, no metrics.csv) is rewritten in
    today's units on resume; its records come out as today's code writes them."""
    cfg = tiny_config(epochs=3, n_labeled=4)
    out = tmp_path / "old"
    new = train(cfg.replace(epochs=2), *vae_data, out_dir=out, device="cpu", progress=False)
    old = []
    for rec in new.history:
        rec = dict(rec)
        rec["loss"] = rec.pop("objective")
        rec["label_loss"] /= 2  # latent_dim 2, reduction "mean", no HP: averaged
        del rec["units"]
        old.append(rec)
    (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in old))
    (out / "metrics.csv").unlink()
    assert _run.upgrade_log(old, cfg) == new.history
    resumed = train(cfg, *vae_data, out_dir=out, device="cpu", resume=True, progress=False)
    assert resumed.history[:2] == new.history
    for rec in _jsonl(out):
        _assert_one_unit(rec)
    _assert_csv_holds_the_records(out)


def test_tensorboard_scalars_when_installed(vae_data, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_config(epochs=4, deterministic=True, checkpoint_every=2)
    out = tmp_path / "tb"
    _stopped_after_logging_epoch_2(cfg, vae_data, out)
    train(cfg, *vae_data, out_dir=out, device="cpu", resume=True, progress=False)
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    records = _jsonl(out)
    for key in ("loss", "rate", "distortion", "test_loss", "beta", "objective", "lr"):
        scalars = events.Scalars(key)
        assert [e.step for e in scalars] == [0, 1, 2, 3], key  # each epoch once
        for e, rec in zip(scalars, records, strict=True):
            assert math.isclose(e.value, rec[key], rel_tol=1e-6), (key, e.value, rec[key])
    res = train_ensemble(cfg.replace(epochs=1), [1], vae_data.train, out_dir=tmp_path / "e")
    member = EventAccumulator(str(res.member(1).out_dir / "tensorboard"))
    member.Reload()
    assert [e.step for e in member.Scalars("loss")] == [0]
