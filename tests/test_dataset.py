from __future__ import annotations

import json
import os

import h5py
import numpy as np
import pytest
import torch
from darcyvae.dataset import ChannelStats, DarcyDataset, channel_stats, make_loader, make_loaders


@pytest.fixture
def files(tmp_path, synthetic_h5):
    train = synthetic_h5(tmp_path / "train.h5", n=40, grid=9, seed=0)
    test = synthetic_h5(tmp_path / "test.h5", n=24, grid=9, seed=1)
    return train, test


def test_reads_the_spec_layout(files):
    ds = DarcyDataset(files[0])
    with h5py.File(files[0], "r") as fh:
        y_ref = fh["output"][...]
        theta_ref = fh["generative_params"][...]
    assert len(ds) == 40
    assert (ds.channels, ds.grid, ds.n_params) == (3, 9, 2)
    y, theta = ds[7]
    assert y.dtype == theta.dtype == torch.float32
    assert y.shape == (3, 9, 9)
    assert theta.shape == (2,)
    np.testing.assert_array_equal(y.numpy(), y_ref[7])
    np.testing.assert_array_equal(theta.numpy(), theta_ref[7])
    yb, tb = ds[[3, 1, 2]]
    np.testing.assert_array_equal(yb.numpy(), y_ref[[3, 1, 2]])
    np.testing.assert_array_equal(tb.numpy(), theta_ref[[3, 1, 2]])
    assert ds.attrs["grid"] == 9
    assert ds.attrs["distribution"] == "normal"
    assert "n=40" in repr(ds)


def test_indices_subset(files):
    ds = DarcyDataset(files[0], indices=[5, 2])
    full = DarcyDataset(files[0])
    torch.testing.assert_close(ds.y, full.y[[5, 2]])
    with pytest.raises(ValueError, match="indices must lie in"):
        DarcyDataset(files[0], indices=[40])
    with pytest.raises(ValueError, match="non-empty 1-D sequence of integers"):
        DarcyDataset(files[0], indices=[])


def test_channel_normalisation_uses_train_statistics(files):
    train_path, test_path = files
    train = DarcyDataset(train_path, normalize="channel")
    # Training data: zero mean, unit std per channel (over samples and pixels).
    y = train.y.double()
    np.testing.assert_allclose(y.mean(dim=(0, 2, 3)).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(y.std(dim=(0, 2, 3), unbiased=False).numpy(), 1.0, rtol=1e-5)
    with h5py.File(train_path, "r") as fh:
        raw_train = fh["output"][...].astype(np.float64)
    with h5py.File(test_path, "r") as fh:
        raw_test = fh["output"][...].astype(np.float64)
    mean = raw_train.mean(axis=(0, 2, 3))
    std = raw_train.std(axis=(0, 2, 3))
    np.testing.assert_allclose(train.stats.mean, mean, rtol=1e-10)
    np.testing.assert_allclose(train.stats.std, std, rtol=1e-10)
    test = DarcyDataset(test_path, normalize="channel", stats=train.stats)
    expected = (raw_test - mean[None, :, None, None]) / std[None, :, None, None]
    np.testing.assert_allclose(test.y.numpy(), expected, rtol=1e-5, atol=1e-5)
    # Given as a path, the statistics are those of that (training) file.
    test2 = DarcyDataset(test_path, normalize="channel", stats=train_path)
    torch.testing.assert_close(test2.y, test.y)
    # denormalize inverts.
    np.testing.assert_allclose(test.denormalize(test.y).numpy(), raw_test, rtol=1e-5, atol=1e-5)
    loaders = make_loaders(train_path, test_path, normalize="channel", batch_size=8)
    assert loaders[1].dataset.stats == train.stats
    torch.testing.assert_close(loaders[1].dataset.y, test.y)


def test_statistics_are_cached_next_to_the_data(files, tmp_path):
    train_path = files[0]
    stats = channel_stats(train_path)
    cache = tmp_path / "train.h5.stats.json"
    assert cache.is_file()
    saved = json.loads(cache.read_text())
    assert ChannelStats(**saved["stats"]) == stats
    # A cached file is used as long as the data file is unchanged...
    saved["stats"]["mean"] = [1.0, 2.0, 3.0]
    cache.write_text(json.dumps(saved))
    assert channel_stats(train_path).mean == (1.0, 2.0, 3.0)
    # ... and recomputed once it changes.
    with h5py.File(train_path, "a") as fh:
        fh["output"][0] += 1.0
    st = os.stat(train_path)
    os.utime(train_path, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fresh = channel_stats(train_path)
    assert fresh.mean != (1.0, 2.0, 3.0)
    assert channel_stats(train_path, cache=False) == fresh
    assert not list(tmp_path.glob(".train.h5.stats.json*"))  # no temporary files left


def test_constant_channel_gets_unit_std(tmp_path):
    path = tmp_path / "const.h5"
    with h5py.File(path, "w") as fh:
        y = np.zeros((4, 2, 5, 5), np.float32)
        y[:, 1] = np.arange(4)[:, None, None]
        fh["output"] = y
        fh["generative_params"] = np.zeros((4, 1), np.float32)
    stats = channel_stats(path, cache=False)
    assert stats.std[0] == 1.0
    assert stats.mean[0] == 0.0
    assert stats.std[1] == pytest.approx(np.std(np.arange(4)))


def test_resident_on_device(files, device):
    ds = DarcyDataset(files[0], device=device)
    assert ds.y.device.type == ds.theta.device.type == torch.device(device).type
    loader = make_loader(ds, batch_size=16, shuffle=True, seed=0)
    y, theta = next(iter(loader))
    assert y.device.type == torch.device(device).type
    assert y.shape == (16, 3, 9, 9)
    assert theta.shape == (16, 2)


def test_loaders_are_seeded_and_cover_the_data(files):
    state = torch.get_rng_state()
    a, test_a = make_loaders(*files, batch_size=16, seed=5)
    b, _ = make_loaders(*files, batch_size=16, seed=5)
    c, _ = make_loaders(*files, batch_size=16, seed=6)

    def order(loader):
        return torch.cat([theta[:, 0] for _, theta in loader])

    first = order(a)
    torch.testing.assert_close(first, order(b))
    assert not torch.equal(first, order(c))
    assert not torch.equal(first, order(a))  # a new permutation each epoch
    assert [len(t) for _, t in a] == [16, 16, 8]
    full = a.dataset.theta[:, 0]
    torch.testing.assert_close(torch.sort(first).values, torch.sort(full).values)
    # The test loader keeps file order.
    torch.testing.assert_close(order(test_a), test_a.dataset.theta[:, 0])
    # Global RNG untouched.
    assert torch.equal(torch.get_rng_state(), state)
    train_only, none = make_loaders(files[0])
    assert none is None
    assert len(train_only.dataset) == 40


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such dataset file"):
        DarcyDataset(tmp_path / "absent.h5")
    with pytest.raises(FileNotFoundError, match="no such dataset file"):
        channel_stats(tmp_path / "absent.h5")


def _write(path, **arrays):
    with h5py.File(path, "w") as fh:
        for k, v in arrays.items():
            fh[k] = v


@pytest.mark.parametrize(
    ("arrays", "match"),
    [
        ({"output": np.zeros((2, 3, 5, 5), np.float32)}, "must hold the datasets"),
        (
            {"output": np.zeros((2, 3, 5), np.float32), "generative_params": np.zeros((2, 2))},
            r"shape \(n, C, N, N\)",
        ),
        (
            {"output": np.zeros((2, 3, 5, 4), np.float32), "generative_params": np.zeros((2, 2))},
            r"shape \(n, C, N, N\)",
        ),
        (
            {"output": np.zeros((2, 3, 5, 5), np.float32), "generative_params": np.zeros((3, 2))},
            "generative_params' must have shape",
        ),
        (
            {"output": np.zeros((2, 3, 5, 5), np.int32), "generative_params": np.zeros((2, 2))},
            "floating point",
        ),
        (
            {
                "output": np.full((2, 3, 5, 5), np.nan, np.float32),
                "generative_params": np.zeros((2, 2)),
            },
            "NaN or inf",
        ),
    ],
)
def test_wrong_layout(tmp_path, arrays, match):
    path = tmp_path / "bad.h5"
    _write(path, **arrays)
    with pytest.raises(ValueError, match=match):
        DarcyDataset(path)


def test_output_that_is_a_group(tmp_path):
    """An HDF5 'output' that is a group (not a dataset): a clear ValueError, not a crash."""
    path = tmp_path / "group.h5"
    with h5py.File(path, "w") as fh:
        fh.create_group("output")
        fh["generative_params"] = np.zeros((2, 2))
    for read in (DarcyDataset, channel_stats):
        with pytest.raises(ValueError, match="'output' is a Group"):
            read(path)


def test_attributes_are_decoded_as_read_attrs(tmp_path):
    """DarcyDataset.attrs and generate.read_attrs decode the same way (one layout module)."""
    from darcyvae.generate import GenerateConfig, generate_dataset, read_attrs
    from darcyvae.kle import KLEConfig

    cfg = GenerateConfig(KLEConfig(grid=9, n_modes=2), n_train=3, n_test=0)
    paths = generate_dataset(cfg, tmp_path, progress=False)
    ds = DarcyDataset(paths["train"])
    assert ds.attrs == read_attrs(paths["train"])
    assert ds.attrs["distribution_params"] == {}
    assert ds.attrs["kle_config"]["grid"] == 9


def test_not_hdf5(tmp_path):
    path = tmp_path / "text.h5"
    path.write_text("not hdf5")
    with pytest.raises(ValueError, match="not a readable HDF5 file"):
        DarcyDataset(path)


def test_bad_arguments(files):
    with pytest.raises(ValueError, match="normalize must be one of"):
        DarcyDataset(files[0], normalize="pixel")
    with pytest.raises(ValueError, match="device must be"):
        DarcyDataset(files[0], device="tpu:zero")
    stats = ChannelStats(mean=(0.0,), std=(1.0,), n_samples=1, source="x")
    with pytest.raises(ValueError, match="one entry per channel"):
        DarcyDataset(files[0], normalize="channel", stats=stats)
    with pytest.raises(ValueError, match="std finite and > 0"):
        ChannelStats(mean=(0.0,), std=(0.0,), n_samples=1, source="x")
    with pytest.raises(ValueError, match="batch_size must be an integer"):
        make_loader(DarcyDataset(files[0]), batch_size=0)


def test_train_test_shape_mismatch(tmp_path, synthetic_h5):
    a = synthetic_h5(tmp_path / "a.h5", n=8, grid=9)
    b = synthetic_h5(tmp_path / "b.h5", n=8, grid=17)
    with pytest.raises(ValueError, match="same shape"):
        make_loaders(a, b)


def test_make_loaders_takes_datasets_as_well_as_paths(tmp_path, synthetic_h5):
    """Was: DarcyDataset objects failed with torch's raw "expected str, bytes or
    os.PathLike object"."""
    a = synthetic_h5(tmp_path / "a.h5", n=8, grid=9, seed=0)
    b = synthetic_h5(tmp_path / "b.h5", n=8, grid=9, seed=1)
    train = DarcyDataset(a, normalize="channel")
    test = DarcyDataset(b, normalize="channel", stats=train.stats)
    train_loader, test_loader = make_loaders(train, test, batch_size=4, seed=2)
    assert train_loader.dataset is train
    assert test_loader.dataset is test
    from_paths, _ = make_loaders(a, b, batch_size=4, seed=2, normalize="channel")
    for (y1, t1), (y2, t2) in zip(train_loader, from_paths, strict=True):
        assert torch.equal(y1, y2)
        assert torch.equal(t1, t2)
    # a test file beside a normalised training dataset gets the training statistics
    _, test_loader = make_loaders(train, b)
    assert test_loader.dataset.stats == train.stats
    assert torch.equal(test_loader.dataset.y, test.y)
    assert make_loaders(DarcyDataset(a))[0].dataset.stats is None


def test_make_loaders_names_what_it_accepts(tmp_path, synthetic_h5):
    a = synthetic_h5(tmp_path / "a.h5", n=8, grid=9, seed=0)
    b = synthetic_h5(tmp_path / "b.h5", n=8, grid=9, seed=1)
    with pytest.raises(TypeError, match="train_path must be a path to an HDF5 file or a Darcy"):
        make_loaders(3)
    with pytest.raises(TypeError, match=r"test_path must be a path .* got list"):
        make_loaders(a, [b])
    train = DarcyDataset(a, normalize="channel")
    with pytest.raises(ValueError, match="normalised with the training statistics; got a test"):
        make_loaders(train, DarcyDataset(b, normalize="channel"))  # its own statistics
    with pytest.raises(ValueError, match="not normalised, as the training data"):
        make_loaders(DarcyDataset(a), DarcyDataset(b, normalize="channel"))
    with pytest.raises(ValueError, match="normalize='channel' but train_path is a DarcyDataset"):
        make_loaders(DarcyDataset(a), normalize="channel")
