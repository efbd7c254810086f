"""darcyvae.load_run: a trained run's model and normalisation; encode/decode in physical units."""

from __future__ import annotations

import json
import logging
import shutil

import darcyvae
import h5py
import numpy as np
import pytest
import torch
from _configs import tiny_train_config
from darcyvae import runs
from darcyvae.checkpoint import load_checkpoint, load_model, save_checkpoint
from darcyvae.dataset import DarcyDataset
from darcyvae.errors import IntegrityError
from darcyvae.evaluation import evaluate
from darcyvae.models import DenseVAE
from darcyvae.training import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def trained(tmp_path_factory, vae_data, one_torch_thread):
    """A finished 2-epoch run of the tiny model on per-channel normalised fields."""
    out = tmp_path_factory.mktemp("load_run") / "run"
    train(
        tiny_train_config(normalize="channel"),
        vae_data.train,
        vae_data.test,
        out_dir=out,
        device="cpu",
        progress=False,
    )
    return out


@pytest.fixture(scope="module")
def raw_run(tmp_path_factory, trained):
    """The same checkpoint recorded as trained on raw fields (no normalisation)."""
    folder = tmp_path_factory.mktemp("raw_run")
    ckpt = load_checkpoint(trained)
    payload = {k: v for k, v in ckpt.items() if k not in ("format", "checksum")}
    payload["normalization"] = None
    save_checkpoint(payload, folder / "checkpoint.pt")
    return folder


def _fields(path: str, n: int | None = None) -> np.ndarray:
    with h5py.File(path, "r") as fh:
        return np.asarray(fh["output"][:n], dtype=np.float64)


def _close(actual, desired) -> None:
    """Equal up to float32 rounding, which depends on the batch (scale-relative atol)."""
    desired = np.asarray(desired)
    np.testing.assert_allclose(actual, desired, rtol=1e-5, atol=1e-6 * np.abs(desired).max())


def _independent_stats(train_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and population std of the training file, computed here."""
    y = _fields(train_path)
    return y.mean(axis=(0, 2, 3)), y.std(axis=(0, 2, 3))


# --------------------------------------------------------------------------- loading


def test_exported_from_the_package():
    assert darcyvae.load_run is runs.load_run
    assert darcyvae.TrainedRun is runs.TrainedRun
    assert {"load_run", "TrainedRun"} <= set(darcyvae.__all__)
    with pytest.raises(AttributeError, match="no attribute"):
        _ = darcyvae.not_a_name


def test_load_run_restores_model_config_and_normalisation(trained, vae_data):
    run = darcyvae.load_run(trained)
    assert isinstance(run.model, DenseVAE)
    assert not run.model.training
    assert (run.grid, run.channels, run.latent_dim) == (17, 3, 2)
    assert run.normalization == "channel"
    mean, std = _independent_stats(vae_data.train)
    np.testing.assert_allclose(run.stats.mean, mean, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(run.stats.std, std, rtol=1e-10)
    assert run.epoch == 2
    assert run.summary is not None
    assert run.summary["epochs"] == 2
    assert run.distortion_bound == pytest.approx(run.summary["distortion_bound"])
    assert run.path == trained / "checkpoint.pt"
    assert "normalization='channel'" in repr(run)
    # a checkpoint file works as well as its folder
    assert darcyvae.load_run(trained / "checkpoint.pt").path == run.path


def test_an_older_restarts_folder_is_read_and_reported(tmp_path, trained, vae_data, caplog):
    """The older restart layout (trials.json, attempt_K): its last attempt, and the log says so."""
    for k in (0, 1):
        shutil.copytree(trained, tmp_path / f"attempt_{k}")
    record = {"restarts": 1, "attempts": [{"attempt": 0}, {"attempt": 1}]}
    (tmp_path / "trials.json").write_text(json.dumps(record))
    with caplog.at_level(logging.INFO, logger="darcyvae.checkpoint"):
        assert darcyvae.load_run(tmp_path).path == tmp_path / "attempt_1" / "checkpoint.pt"
        ev = evaluate(tmp_path, vae_data.test, n_prior_samples=64)
    said = [r.getMessage() for r in caplog.records if "older restart layout" in r.getMessage()]
    assert len(said) == 2
    assert all("attempt_1" in line for line in said)
    assert said[0].startswith("load_run:")
    assert said[1].startswith("evaluate:")
    direct = evaluate(tmp_path / "attempt_1", vae_data.test, n_prior_samples=64)
    assert ev.test.distortion == direct.test.distortion


def test_a_trial_folder_means_its_accepted_attempt(tmp_path, trained):
    """A trial with restarts (ensemble.json with one member): the attempt it accepted."""
    shutil.copytree(trained, tmp_path / "seed_4")
    shutil.copytree(trained, tmp_path / "seed_4.restart_1")
    accepted = tmp_path / "seed_4.restart_1"
    record = {"members": [{"seed": 4, "out_dir": str(accepted), "restarts": 1}]}
    (tmp_path / "ensemble.json").write_text(json.dumps(record))
    assert darcyvae.load_run(tmp_path).path == accepted / "checkpoint.pt"
    (accepted / "checkpoint.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"seed_4\.restart_1"):
        darcyvae.load_run(tmp_path)


def test_load_run_of_a_folder_of_runs_names_the_members(tmp_path, trained):
    shutil.copytree(trained, tmp_path / "seed_3")
    (tmp_path / "ensemble.json").write_text("{}")
    with pytest.raises(ValueError, match=r"ensemble folder with 1 runs \(seed_3\).*seed_3"):
        darcyvae.load_run(tmp_path)
    assert darcyvae.load_run(tmp_path / "seed_3").epoch == 2


def test_load_run_errors(tmp_path, trained):
    with pytest.raises(FileNotFoundError, match="no run folder or checkpoint"):
        darcyvae.load_run(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match=r"holds no checkpoint\.pt"):
        darcyvae.load_run(tmp_path)
    not_a_checkpoint = tmp_path / "x.pt"
    not_a_checkpoint.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match=r"load_checkpoint: .*x\.pt"):
        darcyvae.load_run(not_a_checkpoint)
    damaged = tmp_path / "damaged"
    shutil.copytree(trained, damaged)
    data = bytearray((damaged / "checkpoint.pt").read_bytes())
    (damaged / "checkpoint.pt").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(IntegrityError):
        darcyvae.load_run(damaged)
    with pytest.raises(ValueError, match="device"):
        darcyvae.load_run(trained, device="nonsense")


# --------------------------------------------------------------------------- encode


def test_encode_equals_the_models_encoder_on_independently_normalised_fields(trained, vae_data):
    run = darcyvae.load_run(trained)
    fields = _fields(vae_data.test)
    mean, std = _independent_stats(vae_data.train)
    normalised = (fields - mean[None, :, None, None]) / std[None, :, None, None]
    model = load_model(trained)  # a second, independent copy of the trained model
    with torch.no_grad():
        mu, logvar = model.encode(torch.as_tensor(normalised, dtype=torch.float32))
    got_mu, got_var = run.encode(fields)
    assert got_mu.shape == got_var.shape == (len(fields), 2)
    assert got_mu.dtype == got_var.dtype == np.float32
    np.testing.assert_allclose(got_mu, mu.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got_var, torch.exp(logvar).numpy(), rtol=1e-4, atol=1e-6)
    assert np.all(got_var > 0)
    # the same as the normalisation training and evaluate apply (DarcyDataset)
    test_set = DarcyDataset(vae_data.test, normalize="channel", stats=vae_data.train)
    with torch.no_grad():
        mu_ds, _ = model.encode(test_set.y)
    np.testing.assert_allclose(got_mu, mu_ds.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        run.normalize(fields).numpy(), test_set.y.numpy(), rtol=1e-5, atol=1e-6
    )


def test_encode_takes_one_field_torch_lists_and_batches_alike(trained, vae_data):
    run = darcyvae.load_run(trained)
    fields = _fields(vae_data.test, 7)
    mu, var = run.encode(fields)
    one_mu, one_var = run.encode(fields[3])
    assert one_mu.shape == one_var.shape == (2,)
    np.testing.assert_allclose(one_mu, mu[3], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(one_var, var[3], rtol=1e-5, atol=1e-7)
    for alike in (
        torch.as_tensor(fields),  # float64 tensor
        torch.as_tensor(fields, dtype=torch.float32).requires_grad_(),
        fields.astype(np.float32),
        fields.tolist(),
    ):
        np.testing.assert_allclose(run.encode(alike)[0], mu, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(run.encode(fields, batch_size=3)[0], mu, rtol=1e-5, atol=1e-6)
    empty_mu, empty_var = run.encode(fields[:0])
    assert empty_mu.shape == empty_var.shape == (0, 2)


def test_raw_run_encodes_the_fields_as_given(raw_run, vae_data):
    run = darcyvae.load_run(raw_run)
    assert run.stats is None
    assert run.normalization == "none"
    fields = _fields(vae_data.test, 5)
    with torch.no_grad():
        mu, _ = run.model.encode(torch.as_tensor(fields, dtype=torch.float32))
    np.testing.assert_allclose(run.encode(fields)[0], mu.numpy(), rtol=1e-5, atol=1e-6)
    z = np.zeros((2, 2))
    with torch.no_grad():
        y, _ = run.model.decode(torch.zeros(2, 2))
    _close(run.decode(z), y.numpy())


# --------------------------------------------------------------------------- decode


def test_decode_maps_back_to_physical_units(trained, vae_data):
    run = darcyvae.load_run(trained)
    mean, std = _independent_stats(vae_data.train)
    z = np.array([[0.0, 0.0], [0.5, -1.0], [-2.0, 1.5]])
    with torch.no_grad():
        y_model, _ = run.model.decode(torch.as_tensor(z, dtype=torch.float32))
    expected = y_model.numpy() * std[None, :, None, None] + mean[None, :, None, None]
    got = run.decode(z)
    assert got.shape == (3, 3, 17, 17)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6 * np.abs(expected).max())
    assert run.decode(z[1]).shape == (3, 17, 17)
    _close(run.decode(z[1]), got[1])
    _close(run.decode(torch.as_tensor(z)), got)


def test_round_trips(trained, vae_data):
    run = darcyvae.load_run(trained)
    fields = _fields(vae_data.test, 6)
    # normalise -> denormalise is the identity (float32)
    back = run.denormalize(run.normalize(fields))
    np.testing.assert_allclose(back, fields, rtol=1e-5, atol=1e-5 * np.abs(fields).max())
    assert run.denormalize(run.normalize(fields[0])[0]).shape == (3, 17, 17)
    # reconstruct is decode of the latent means, in the units of the input
    rec = run.reconstruct(fields)
    _close(rec, run.decode(run.encode(fields)[0]))
    assert rec.shape == fields.shape
    # decode -> normalise gives the model's own output; decode -> encode equals the
    # model's encoder applied to its own decoder output (no unit is lost on the way)
    z = run.encode(fields)[0]
    with torch.no_grad():
        y_model, _ = run.model.decode(torch.as_tensor(z))
        mu_model, _ = run.model.encode(y_model)
    np.testing.assert_allclose(
        run.normalize(run.decode(z)).numpy(), y_model.numpy(), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_allclose(run.encode(run.decode(z))[0], mu_model.numpy(), rtol=1e-4, atol=1e-5)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (
            lambda y: y[:, :2],
            r"must have shape \(n, 3, 17, 17\) or \(3, 17, 17\); got shape \(4, 2, 17, 17\)",
        ),
        (lambda y: y[:, :, :9, :9], r"got shape \(4, 3, 9, 9\)"),
        (lambda y: y[0, 0], r"got shape \(17, 17\)"),
        (lambda y: y[None], r"got shape \(1, 4, 3, 17, 17\)"),
        (lambda y: y.astype(np.complex128), "real numbers .* got dtype complex128"),
        (lambda y: y > 0, "real numbers .* got dtype bool"),
        (lambda y: torch.as_tensor(y) > 0, "real numbers .* got dtype bool"),
        (lambda y: torch.as_tensor(y, dtype=torch.complex64), "got dtype complex64"),
        (lambda y: y.astype(str), "real numbers .* got dtype <U"),
        (lambda y: y.astype(object), "real numbers .* got dtype object"),
        (
            lambda y: np.where(np.arange(y.size).reshape(y.shape) == 5, np.nan, y),
            "finite .* 1 non-finite",
        ),
        (lambda y: np.full_like(y, np.inf), "must be finite"),
        (lambda y: torch.full(y.shape, float("nan")), "must be finite"),
        (lambda y: y * 1e300, "within the range of float32"),
        (lambda y: [[1.0, 2.0], [3.0]], "not array-like"),
        (lambda y: 3.0, r"got shape \(\)"),
    ],
)
def test_encode_rejects_bad_fields(trained, vae_data, make, match):
    run = darcyvae.load_run(trained)
    fields = _fields(vae_data.test, 4)
    with pytest.raises(ValueError, match=match):
        run.encode(make(fields))


@pytest.mark.parametrize(
    ("z", "match"),
    [
        (np.zeros((4, 3)), r"must have shape \(n, 2\) or \(2,\); got shape \(4, 3\)"),
        (np.zeros((2, 4, 2)), r"got shape \(2, 4, 2\)"),
        (np.array([np.nan, 0.0]), "must be finite"),
        (np.zeros(2, dtype=bool), "got dtype bool"),
    ],
)
def test_decode_rejects_bad_codes(trained, z, match):
    run = darcyvae.load_run(trained)
    with pytest.raises(ValueError, match=match):
        run.decode(z)


def test_bad_batch_size(trained, vae_data):
    run = darcyvae.load_run(trained)
    with pytest.raises(ValueError, match="batch_size"):
        run.encode(_fields(vae_data.test, 2), batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        run.decode(np.zeros((1, 2)), batch_size=1.5)
