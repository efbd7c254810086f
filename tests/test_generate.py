"""Tests of darcyvae.generate: layout, contents, determinism, resume, Dask, errors, CLI."""

from __future__ import annotations

import errno
import gc
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import darcyvae
import h5py
import numpy as np
import pytest
from darcyvae._lock import LOCK_NAME
from darcyvae.cli import main
from darcyvae.darcy import DarcyConfig, solve_batch
from darcyvae.distributions import Mixture4, ThetaArray
from darcyvae.errors import FolderLockedError, IntegrityError, MissingDependencyError
from darcyvae.generate import (
    FORMAT,
    GenerateConfig,
    bytes_per_sample,
    check_free_space,
    generate_dataset,
    read_attrs,
    verify_dataset,
)
from darcyvae.kle import KLEConfig, kle_basis
from hypothesis import given, settings
from hypothesis import strategies as st

GRID = 17
KEYS = {"generative_params", "permeability", "output"}


def small(**kw) -> GenerateConfig:
    """40 train + 20 test samples of KLE3 on a 17 grid, chunks of 8 (5 + 3 chunks)."""
    base = {
        "kle": KLEConfig(grid=GRID, n_modes=3),
        "distribution": "mixture4",
        "n_train": 40,
        "n_test": 20,
        "chunk_size": 8,
    }
    base.update(kw)
    return GenerateConfig(**base)


def sha(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def listing(folder: Path) -> list[str]:
    """The files of an output folder, without the lock file every run leaves (darcyvae._lock)."""
    return sorted(name for name in os.listdir(folder) if name != LOCK_NAME)


def datasets(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[k][()] for k in f}


class Interrupt(Exception):
    pass


def stop_after(split: str, samples: int):
    def callback(s, done, n):
        if s == split and done >= samples:
            raise Interrupt

    return callback


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[str, Path]:
    return generate_dataset(small(), tmp_path_factory.mktemp("ref"), progress=False)


@pytest.fixture(scope="module")
def reference_gzip(tmp_path_factory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("ref_gzip")
    return generate_dataset(small(compression="gzip"), out, progress=False)


# -- layout and contents -----------------------------------------------------------------
def test_layout_with_plain_h5py(reference):
    """The authors' loader: three float32 datasets of the documented shapes."""
    for split, n in (("train", 40), ("test", 20)):
        assert reference[split].name == f"{split}.h5"
        with h5py.File(reference[split], "r") as f:
            assert set(f.keys()) == KEYS
            assert f["generative_params"].shape == (n, 3)
            assert f["permeability"].shape == (n, 1, GRID, GRID)
            assert f["output"].shape == (n, 3, GRID, GRID)
            for key in KEYS:
                assert f[key].dtype == np.float32
                assert f[key].compression is None
            assert f["output"].chunks == (1, 3, GRID, GRID)
            assert f["permeability"].chunks == (1, 1, GRID, GRID)
    assert listing(reference["train"].parent) == ["test.h5", "train.h5"]


def test_attributes_record_how_the_file_was_made(reference):
    attrs = read_attrs(reference["train"])
    basis = kle_basis(KLEConfig(grid=GRID, n_modes=3))
    expected = {
        "format": FORMAT,
        "darcyvae_version": darcyvae.__version__,
        "numpy_version": np.__version__,
        "split": "train",
        "n_samples": 40,
        "grid": GRID,
        "n_modes": 3,
        "kernel": "exponential",
        "length_scale": 0.1,
        "variance": 1.0,
        "distribution": "mixture4",
        "distribution_params": {"loc": 1.0, "scale": 0.25},
        "sampling": "mc",
        "seed": 0,
        "stream": 0,
        "first_index": 0,
        "scheme": "fd",
        "well_width": 0.125,
        "rate": 10.0,
    }
    for key, value in expected.items():
        assert attrs[key] == value, key
    assert attrs["kle_variance_fraction"] == pytest.approx(basis.variance_fraction, rel=1e-15)
    assert 0 < attrs["kle_variance_fraction"] < 1
    assert attrs["kle_config"]["grid"] == GRID
    assert attrs["darcy_config"]["scheme"] == "fd"
    assert "PCG64" in attrs["theta_rng"]
    test_attrs = read_attrs(reference["test"])
    assert (test_attrs["split"], test_attrs["stream"], test_attrs["n_samples"]) == ("test", 1, 20)


@pytest.mark.parametrize("split", ["train", "test"])
def test_contents_equal_an_independent_recomputation(reference, split):
    """theta from stream 0 / 1; K = exp(KLE field); output = solve_batch(K)."""
    data = datasets(reference[split])
    n = len(data["generative_params"])
    stream = 0 if split == "train" else 1
    theta = Mixture4(3).sample(n, seed=0, stream=stream).astype(np.float32)
    np.testing.assert_array_equal(data["generative_params"], theta)
    basis = kle_basis(KLEConfig(grid=GRID, n_modes=3))
    pick = [0, 7, 8, n - 1]  # both sides of a chunk boundary and the last sample
    k = basis.permeability(theta[pick].astype(np.float64))
    np.testing.assert_allclose(data["permeability"][pick, 0], k, rtol=1e-6)
    sol = solve_batch(k, DarcyConfig())
    scale = np.abs(sol).max(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(data["output"][pick], sol, rtol=1e-5, atol=1e-6 * scale.max())
    assert np.all(np.abs(data["output"][pick] - sol) <= 1e-5 * scale)
    # train and test are different samples
    other = datasets(reference["test" if split == "train" else "train"])["generative_params"]
    assert not np.isin(data["generative_params"][:, 0], other[:, 0]).any()


def test_train_is_a_prefix_of_a_larger_train(reference, tmp_path):
    """Sample i depends on (seed, i) only: 16 samples are the first 16 of 40."""
    paths = generate_dataset(small(n_train=16, n_test=5), tmp_path, progress=False)
    a, b = datasets(paths["train"]), datasets(reference["train"])
    for key in KEYS:
        np.testing.assert_array_equal(a[key], b[key][:16])
    np.testing.assert_array_equal(
        datasets(paths["test"])["output"], datasets(reference["test"])["output"][:5]
    )


def test_latin_hypercube_training_set(reference, tmp_path):
    """train_sampling="lhs": the design of sample_lhs(n, seed, stream=0); test stays MC."""
    cfg = small(train_sampling="lhs")
    with pytest.raises(Interrupt):
        generate_dataset(cfg, tmp_path, progress=False, callback=stop_after("train", 16))
    paths = generate_dataset(cfg, tmp_path, resume=True, progress=False)
    theta = datasets(paths["train"])["generative_params"]
    np.testing.assert_array_equal(theta, Mixture4(3).sample_lhs(40, 0).astype(np.float32))
    u = Mixture4(3).cdf(theta.astype(np.float64))
    for k in range(3):  # one sample per stratum (float32 rounding is far below 1/40)
        np.testing.assert_array_equal(np.sort(np.floor(u[:, k] * 40)), np.arange(40))
    attrs = read_attrs(paths["train"])
    assert (attrs["sampling"], read_attrs(paths["test"])["sampling"]) == ("lhs", "mc")
    assert "Latin hypercube" in attrs["theta_rng"]
    assert sha(paths["test"]) == sha(reference["test"])
    fresh = generate_dataset(cfg, tmp_path / "fresh", progress=False)
    assert sha(fresh["train"]) == sha(paths["train"])
    # a resumed MC partial is not continued as LHS
    with pytest.raises(ValueError, match="made with other settings"):
        generate_dataset(small(), tmp_path, resume=True, progress=False)


# -- determinism -------------------------------------------------------------------------
def test_same_seed_same_bytes(reference, tmp_path):
    paths = generate_dataset(small(threads=2), tmp_path / "again", progress=False)
    for split in ("train", "test"):
        assert sha(paths[split]) == sha(reference[split])
    other = generate_dataset(small(seed=1), tmp_path / "seed1", progress=False)
    assert sha(other["train"]) != sha(reference["train"])


@pytest.mark.parametrize("compression", [None, "gzip"])
def test_resume_after_interruption_is_byte_identical(
    reference, reference_gzip, tmp_path, compression
):
    ref = reference if compression is None else reference_gzip
    cfg = small(compression=compression)
    with pytest.raises(Interrupt):
        generate_dataset(cfg, tmp_path, progress=False, callback=stop_after("train", 24))
    assert listing(tmp_path) == ["train.h5.partial", "train.h5.progress"]
    # the progress log records the 3 completed chunks
    assert len((tmp_path / "train.h5.progress").read_text().splitlines()) == 1 + 3
    with pytest.raises(FileExistsError, match="resume=True"):
        generate_dataset(cfg, tmp_path, progress=False)
    seen = []
    paths = generate_dataset(
        cfg, tmp_path, resume=True, progress=False, callback=lambda s, d, n: seen.append((s, d))
    )
    assert seen[0] == ("train", 32)  # started after the 3 chunks kept
    assert listing(tmp_path) == ["test.h5", "train.h5"]
    for split in ("train", "test"):
        assert sha(paths[split]) == sha(ref[split])


def test_gzip_chunks_are_what_hdf5_writes(reference, reference_gzip, tmp_path):
    """gzip chunks are encoded in parallel by darcyvae: the bytes equal HDF5's own filters'."""
    for split in ("train", "test"):
        plain, packed = datasets(reference[split]), datasets(reference_gzip[split])
        for key in KEYS:
            np.testing.assert_array_equal(packed[key], plain[key])
        mine = h5py.File(reference_gzip[split], "r")
        with mine, h5py.File(tmp_path / f"{split}.h5", "w") as f:
            for key in KEYS:
                ref = mine[key]
                assert (ref.compression, ref.compression_opts, ref.shuffle) == ("gzip", 4, True)
                theirs = f.create_dataset(
                    key, data=plain[key], chunks=ref.chunks, compression="gzip", shuffle=True
                )
                for k in range(ref.id.get_num_chunks()):
                    offset = ref.id.get_chunk_info(k).chunk_offset
                    assert ref.id.read_direct_chunk(offset) == theirs.id.read_direct_chunk(offset)


def test_resume_with_lzf_gives_identical_datasets(tmp_path):
    """lzf's compressor leaves its hash table uninitialised: same data, not always same bytes."""
    cfg = small(compression="lzf")
    ref = generate_dataset(cfg, tmp_path / "ref", progress=False)
    with pytest.raises(Interrupt):
        generate_dataset(cfg, tmp_path / "run", progress=False, callback=stop_after("test", 8))
    assert (tmp_path / "run" / "train.h5").exists()
    paths = generate_dataset(cfg, tmp_path / "run", resume=True, progress=False)
    for split in ("train", "test"):
        a, b = datasets(paths[split]), datasets(ref[split])
        for key in KEYS:
            np.testing.assert_array_equal(a[key], b[key])
        assert read_attrs(paths[split]) == read_attrs(ref[split])
        with h5py.File(paths[split]) as f:
            assert f["output"].compression == "lzf"


def test_resume_in_the_test_split_keeps_train(reference, tmp_path):
    with pytest.raises(Interrupt):
        generate_dataset(small(), tmp_path, progress=False, callback=stop_after("test", 8))
    train_stat = (tmp_path / "train.h5").stat()
    paths = generate_dataset(small(), tmp_path, resume=True, progress=False)
    assert (tmp_path / "train.h5").stat().st_mtime_ns == train_stat.st_mtime_ns
    assert sha(paths["test"]) == sha(reference["test"])
    # resuming a finished run does nothing
    assert generate_dataset(small(), tmp_path, resume=True, progress=False) == paths


def _signalled_run(out: Path, sig: str, split: str, done: int) -> subprocess.CompletedProcess:
    """``generate_dataset(small())`` in a fresh process that sends itself ``signal.<sig>``
    once ``split`` holds ``done`` samples."""
    return _run_python(
        f"""
        import os, signal
        from darcyvae.generate import GenerateConfig, generate_dataset
        from darcyvae.kle import KLEConfig

        # A shell starts background jobs with SIGINT ignored; Ctrl-C's default is what is tested.
        signal.signal(signal.SIGINT, signal.default_int_handler)

        def interrupt(split, done, n):
            if split == {split!r} and done >= {done}:
                os.kill(os.getpid(), signal.{sig})

        cfg = GenerateConfig(KLEConfig(grid={GRID}, n_modes=3), distribution="mixture4",
                             n_train=40, n_test=20, chunk_size=8)
        generate_dataset(cfg, {str(out)!r}, progress=False, callback=interrupt)
        """
    )


def test_kill_9_then_resume(reference, tmp_path):
    """A run killed by SIGKILL after 2 chunks resumes to the identical file."""
    proc = _signalled_run(tmp_path, "SIGKILL", "train", 16)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert (tmp_path / "train.h5.partial").exists()
    assert not (tmp_path / "train.h5").exists()
    paths = generate_dataset(small(), tmp_path, resume=True, progress=False)
    assert sha(paths["train"]) == sha(reference["train"])


def test_ctrl_c_then_resume(reference, tmp_path):
    """SIGINT (Ctrl-C) mid-run: KeyboardInterrupt leaves a partial that resumes identically."""
    proc = _signalled_run(tmp_path, "SIGINT", "test", 8)
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in proc.stderr
    assert listing(tmp_path) == ["test.h5.partial", "test.h5.progress", "train.h5"]
    paths = generate_dataset(small(), tmp_path, resume=True, progress=False)
    for split in ("train", "test"):
        assert sha(paths[split]) == sha(reference[split])


def test_resume_recomputes_corrupt_chunks(reference, tmp_path):
    """A chunk whose data no longer match their CRC, and a torn log line, are recomputed."""
    with pytest.raises(Interrupt):
        generate_dataset(small(), tmp_path, progress=False, callback=stop_after("train", 32))
    with h5py.File(tmp_path / "train.h5.partial", "r+") as f:
        f["output"][10, 0, 3, 3] += 1.0  # in chunk 1
    with open(tmp_path / "train.h5.progress", "a") as log:
        log.write("4 12")  # torn line (no newline, wrong CRC)
    seen = []
    paths = generate_dataset(
        small(), tmp_path, resume=True, progress=False, callback=lambda s, d, n: seen.append(d)
    )
    assert seen[0] == 16  # only chunk 0 was kept
    assert sha(paths["train"]) == sha(reference["train"])


@pytest.mark.parametrize("damage", ["truncate", "no-log", "stale-rebuild"])
def test_resume_survives_damaged_state(reference, tmp_path, damage):
    """An unreadable partial or a lost log means starting again; a stale rebuild is dropped."""
    with pytest.raises(Interrupt):
        generate_dataset(small(), tmp_path, progress=False, callback=stop_after("train", 24))
    partial = tmp_path / "train.h5.partial"
    if damage == "truncate":
        partial.write_bytes(partial.read_bytes()[:1000])
    elif damage == "no-log":
        (tmp_path / "train.h5.progress").unlink()
    else:
        (tmp_path / "train.h5.partial.rebuild").write_bytes(b"junk")
    seen = []
    paths = generate_dataset(
        small(), tmp_path, resume=True, progress=False, callback=lambda s, d, n: seen.append(d)
    )
    assert seen[0] == (32 if damage == "stale-rebuild" else 8)
    assert listing(tmp_path) == ["test.h5", "train.h5"]
    assert sha(paths["train"]) == sha(reference["train"])


def test_resume_rejects_other_settings(tmp_path):
    with pytest.raises(Interrupt):
        generate_dataset(small(), tmp_path, progress=False, callback=stop_after("train", 8))
    before = sha(tmp_path / "train.h5.partial")
    with pytest.raises(ValueError, match="made with other settings"):
        generate_dataset(small(seed=3), tmp_path, resume=True, progress=False)
    with pytest.raises(ValueError, match="made with other settings"):
        generate_dataset(small(chunk_size=4), tmp_path, resume=True, progress=False)
    assert sha(tmp_path / "train.h5.partial") == before
    paths = generate_dataset(small(seed=3), tmp_path, overwrite=True, progress=False)
    assert read_attrs(paths["train"])["seed"] == 3
    assert listing(tmp_path) == ["test.h5", "train.h5"]
    with pytest.raises(ValueError, match="made with other settings"):
        generate_dataset(small(), tmp_path, resume=True, progress=False)


def test_resume_without_partial_starts_fresh(reference, tmp_path):
    paths = generate_dataset(small(), tmp_path, resume=True, progress=False)
    assert sha(paths["train"]) == sha(reference["train"])


# -- Dask --------------------------------------------------------------------------------
def test_dask_local_cluster_equals_local(reference, reference_gzip, tmp_path):
    distributed = pytest.importorskip("distributed")
    with (
        distributed.LocalCluster(
            n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
        ) as cluster,
        distributed.Client(cluster) as client,
    ):
        paths = generate_dataset(small(), tmp_path, dask_address=client, progress=False)
        packed = generate_dataset(
            small(compression="gzip"), tmp_path / "gzip", dask_address=client, progress=False
        )
        # an address works too (the client is made and closed by generate_dataset)
        again = generate_dataset(
            small(n_train=8, n_test=8),
            tmp_path / "addr",
            dask_address=cluster.scheduler_address,
            progress=False,
        )
    for split in ("train", "test"):
        assert sha(paths[split]) == sha(reference[split])
        assert sha(packed[split]) == sha(reference_gzip[split])
    np.testing.assert_array_equal(
        datasets(again["train"])["output"], datasets(reference["train"])["output"][:8]
    )


# -- outputs are never clobbered, bad arguments leave nothing behind -------------------------
def test_existing_output_is_kept(reference, tmp_path):
    generate_dataset(small(n_train=8, n_test=8), tmp_path, progress=False)
    before = sha(tmp_path / "train.h5")
    with pytest.raises(FileExistsError, match="overwrite=True"):
        generate_dataset(small(), tmp_path, progress=False)
    assert sha(tmp_path / "train.h5") == before
    paths = generate_dataset(small(), tmp_path, overwrite=True, progress=False)
    assert sha(paths["train"]) == sha(reference["train"])


def test_n_test_zero_writes_only_train(tmp_path):
    paths = generate_dataset(small(n_test=0, n_train=5), tmp_path, progress=False)
    assert list(paths) == ["train"]
    assert listing(tmp_path) == ["train.h5"]


def test_theta_array(tmp_path):
    rows = np.random.default_rng(0).uniform(-2, 2, size=(30, 3))
    cfg = small(distribution=ThetaArray(rows), n_train=12, n_test=10, chunk_size=5)
    paths = generate_dataset(cfg, tmp_path, progress=False)
    np.testing.assert_array_equal(
        datasets(paths["train"])["generative_params"], rows[:12].astype(np.float32)
    )
    np.testing.assert_array_equal(
        datasets(paths["test"])["generative_params"], rows[12:22].astype(np.float32)
    )
    attrs = read_attrs(paths["test"])
    assert attrs["distribution"] == "array"
    assert attrs["first_index"] == 12
    assert attrs["distribution_params"]["rows"] == 30


def test_memory_does_not_grow_with_n(tmp_path):
    """Streaming: the peak of traced (numpy) memory hardly changes for 4x the samples.

    Holding all outputs would add 13 kB per sample (5 MB more for n = 512
    than for 128); a chunk of 16 samples is 0.4 MB with its float64 K, and
    one to three chunks are alive at a time depending on thread timing.
    """

    def cfg(n):
        return small(kle=KLEConfig(grid=33, n_modes=3), n_train=n, n_test=1, chunk_size=16)

    generate_dataset(cfg(16), tmp_path / "warm-up", progress=False)
    peaks = []
    for n in (128, 512):
        gc.collect()
        tracemalloc.start()
        generate_dataset(cfg(n), tmp_path / str(n), progress=False)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
    assert peaks[1] - peaks[0] < 1.5e6


def test_progress_bar_shows_samples_per_second(tmp_path, capsys):
    generate_dataset(small(n_train=8, n_test=8), tmp_path, progress=True)
    err = capsys.readouterr().err
    assert "samples/s" in err
    assert "train" in err


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"distribution": "bimodal"}, ValueError, "'array', 'gaussian', 'mixture4'"),
        ({"n_train": 0}, ValueError, "n_train must be an integer in \\[1"),
        ({"n_test": -1}, ValueError, "n_test must be an integer in \\[0"),
        ({"distribution": Mixture4(2)}, ValueError, "n_modes = 2 but the KLE has n_modes = 3"),
        (
            {"distribution": ThetaArray(np.zeros((5, 3)))},
            ValueError,
            "has 5 rows but n_train \\+ n_test = 60",
        ),
        ({"distribution": "gaussian", "dist_params": {"sd": [1.0, 2.0]}}, ValueError, "length"),
        ({"distribution": "normal", "dist_params": {"sd": 1.0}}, TypeError, "unexpected sd"),
        ({"chunk_size": 0}, ValueError, "chunk_size must be"),
        ({"compression": "zip"}, ValueError, "compression must be one of 'gzip', 'lzf'"),
        ({"compression_level": 10}, ValueError, "compression_level must be"),
        ({"threads": 0}, ValueError, "threads must be"),
        ({"seed": -1}, ValueError, "seed must be"),
        ({"train_sampling": "sobol"}, ValueError, "train_sampling must be one of 'mc', 'lhs'"),
        ({"test_sampling": None}, ValueError, "test_sampling must be one of 'mc', 'lhs'"),
        (
            {"distribution": ThetaArray(np.zeros((60, 3))), "train_sampling": "lhs"},
            ValueError,
            "train_sampling = 'lhs' needs a distribution with a quantile function",
        ),
        ({"kle": "KLE2"}, TypeError, "kle must be a KLEConfig"),
        ({"darcy": None}, TypeError, "darcy must be a DarcyConfig"),
        ({"distribution": 3}, TypeError, "distribution must be a name or a Distribution"),
        (
            {"distribution": Mixture4(3), "dist_params": {"loc": 2.0}},
            ValueError,
            "dist_params must be empty with a distribution object",
        ),
    ],
)
def test_bad_config(kwargs, error, match):
    with pytest.raises(error, match=match):
        small(**kwargs)


def test_n_samples_of_an_unknown_split():
    assert small().n_samples("test") == 20
    assert (small().grid, small().n_modes, small().scheme) == (GRID, 3, "fd")
    with pytest.raises(ValueError, match="split must be one of 'train', 'test'"):
        small().n_samples("validation")


def test_bad_call_arguments_leave_no_file(tmp_path):
    out = tmp_path / "new"
    with pytest.raises(ValueError, match="mutually exclusive"):
        generate_dataset(small(), out, resume=True, overwrite=True)
    with pytest.raises(TypeError, match="config must be a GenerateConfig"):
        generate_dataset({"n_train": 4}, out)
    with pytest.raises(TypeError, match="callback must be callable"):
        generate_dataset(small(), out, callback=3)
    assert not out.exists()
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        generate_dataset(small(), a_file, progress=False)
    with pytest.raises(NotADirectoryError, match="cannot write to out_dir"):
        generate_dataset(small(), a_file / "sub", progress=False)
    assert listing(tmp_path) == ["file"]
    assert a_file.read_text() == "x"


@pytest.fixture
def unwritable(tmp_path) -> Path:
    """A folder this process cannot write into (root ignores modes: use /sys then)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o500)
    candidates = [ro / "out", Path("/sys/darcyvae-test-out")]
    for path in candidates:
        try:
            path.mkdir()
        except OSError:
            yield path
            break
        path.rmdir()
    else:
        pytest.skip("no unwritable folder available")
    ro.chmod(0o700)


def test_unwritable_path(unwritable):
    with pytest.raises(OSError, match="cannot write to out_dir"):
        generate_dataset(small(), unwritable, progress=False)
    assert not unwritable.exists()


# -- CLI ---------------------------------------------------------------------------------
def test_cli_generate_matches_the_python_api(reference, tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["generate", "--kle", "3", "--dist", "mixture4", "--n-train", "40", "--n-test", "20"]
    args += ["--grid", str(GRID), "--chunk-size", "8", "--out", str(out), "--no-progress"]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert f"train: {out / 'train.h5'} (40 samples)" in printed
    assert f"test: {out / 'test.h5'} (20 samples)" in printed
    for split in ("train", "test"):
        assert sha(out / f"{split}.h5") == sha(reference[split])
    # an existing output: exit code 2 and a message, file untouched
    assert main(args) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert sha(out / "train.h5") == sha(reference["train"])


def test_cli_distribution_parameters(tmp_path, capsys):
    out = tmp_path / "g"
    args = ["generate", "--kle", "2", "--dist", "gaussian", "--mean", "1", "-1", "--sd", "0.5"]
    args += ["--n-train", "6", "--n-test", "3", "--grid", "9", "--out", str(out), "--no-progress"]
    args += ["--compression", "gzip", "--threads", "1", "--seed", "5"]
    args += ["--train-sampling", "lhs", "--test-sampling", "mc"]
    assert main(args) == 0
    attrs = read_attrs(out / "train.h5")
    assert attrs["distribution_params"] == {"mean": [1.0, -1.0], "sd": [0.5, 0.5]}
    assert attrs["seed"] == 5
    assert (attrs["sampling"], read_attrs(out / "test.h5")["sampling"]) == ("lhs", "mc")
    # the gaussian default is radially symmetric: mean (1, 1), sd (0.5, 0.5) (docs/data.md §3)
    args = ["generate", "--kle", "2", "--dist", "gaussian", "--n-train", "2", "--n-test", "0"]
    assert main([*args, "--grid", "9", "--out", str(tmp_path / "g0"), "--no-progress"]) == 0
    params = read_attrs(tmp_path / "g0" / "train.h5")["distribution_params"]
    assert params == {"mean": [1.0, 1.0], "sd": [0.5, 0.5]}
    with h5py.File(out / "train.h5") as f:
        assert f["output"].compression == "gzip"
    thetas = tmp_path / "theta.npy"
    np.save(thetas, np.arange(10.0).reshape(5, 2))
    args = ["generate", "--kle", "2", "--dist", "array", "--theta-file", str(thetas)]
    args += ["--n-train", "3", "--n-test", "2", "--grid", "9", "--out", str(tmp_path / "a")]
    assert main([*args, "--no-progress"]) == 0
    got = datasets(tmp_path / "a" / "test.h5")["generative_params"]
    np.testing.assert_array_equal(got, [[6.0, 7.0], [8.0, 9.0]])
    # errors: exit code 2, message on stderr, no files
    capsys.readouterr()
    bad = ["generate", "--kle", "3", "--dist", "gaussian", "--mean", "1", "2"]
    assert main([*bad, "--out", str(tmp_path / "bad")]) == 2
    assert "mean must be a scalar or have length n_modes = 3" in capsys.readouterr().err
    assert main(["generate", "--dist", "bimodal", "--out", str(tmp_path / "bad")]) == 2
    assert "'mixture4'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_cli_unwritable(unwritable, capsys):
    assert main(["generate", "--kle", "2", "--grid", "9", "--out", str(unwritable)]) == 2
    assert "cannot write to out_dir" in capsys.readouterr().err


# -- reliability (docs/safety.md): locks, checksums, stale outputs, clear errors -------------
def _run_python(code: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
        **kw,
    )


def _cli(*args: str) -> subprocess.CompletedProcess:
    """``darcyvae generate ...`` in a fresh process (what a user runs)."""
    return subprocess.run(
        [sys.executable, "-m", "darcyvae.cli", "generate", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=180,
    )


SMALL_CLI = ["--kle", "3", "--dist", "mixture4", "--n-train", "40", "--n-test", "20"]
SMALL_CLI += ["--grid", str(GRID), "--chunk-size", "8", "--no-progress"]


@pytest.mark.slow
def test_two_runs_into_one_folder(reference, tmp_path):
    """The second run fails at once naming the first; the first's output equals a solo run."""
    ready, go = tmp_path / "ready", tmp_path / "go"
    out = tmp_path / "out"
    first = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import time
                from pathlib import Path
                from darcyvae.generate import GenerateConfig, generate_dataset
                from darcyvae.kle import KLEConfig

                def pause(split, done, n):
                    if split == "train" and done == 8:  # one block written, the rest to come
                        Path({str(ready)!r}).touch()
                        deadline = time.time() + 120
                        while not Path({str(go)!r}).exists() and time.time() < deadline:
                            time.sleep(0.05)

                cfg = GenerateConfig(KLEConfig(grid={GRID}, n_modes=3), distribution="mixture4",
                                     n_train=40, n_test=20, chunk_size=8)
                generate_dataset(cfg, {str(out)!r}, progress=False, callback=pause)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        for _ in range(1200):
            if ready.exists() or first.poll() is not None:
                break
            time.sleep(0.05)
        assert ready.exists(), first.communicate()[1]
        partial = (out / "train.h5.partial").read_bytes()
        for flags in ([], ["--resume"], ["--overwrite"], ["--seed", "8"]):
            second = _cli(*SMALL_CLI, "--out", str(out), *flags)
            assert second.returncode == 2, second.stderr
            lines = second.stderr.strip().splitlines()
            assert len(lines) == 1, second.stderr  # one clear line, no traceback
            assert f"is in use by pid {first.pid}" in lines[0]
            assert "darcyvae generate" in lines[0]
            assert (out / "train.h5.partial").read_bytes() == partial  # untouched
    finally:
        go.touch()
        _, err = first.communicate(timeout=180)
    assert first.returncode == 0, err
    assert listing(out) == ["test.h5", "train.h5"]
    for split in ("train", "test"):
        assert sha(out / f"{split}.h5") == sha(reference[split])
    # the lock went with the first process: a later run may use the folder
    assert main(["generate", *SMALL_CLI, "--out", str(out), "--resume"]) == 0


def test_resume_verifies_finished_files(reference, tmp_path, capsys):
    """A finished train.h5 with corrupted data bytes, or truncated, is not kept silently."""
    paths = generate_dataset(small(), tmp_path, progress=False)
    assert read_attrs(paths["train"])["data_checksum"]["blocks"] == 5
    verify_dataset(paths["train"])
    good = paths["train"].read_bytes()
    # flip one byte inside the stored data of sample 13 (found through HDF5's chunk index)
    with h5py.File(paths["train"], "r") as f:
        offset = f["output"].id.get_chunk_info_by_coord((13, 0, 0, 0)).byte_offset
    damaged = bytearray(good)
    damaged[offset + 100] ^= 0x40
    paths["train"].write_bytes(bytes(damaged))
    with pytest.raises(IntegrityError, match="does not match its recorded data checksum"):
        generate_dataset(small(), tmp_path, resume=True, progress=False)
    with pytest.raises(IntegrityError, match="does not match"):
        verify_dataset(paths["train"])
    assert paths["train"].read_bytes() == bytes(damaged)  # reported, not replaced
    # truncated: the CLI prints one line and exits 2
    paths["train"].write_bytes(good[: len(good) // 2])
    capsys.readouterr()
    assert main(["generate", *SMALL_CLI, "--out", str(tmp_path), "--resume"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "train.h5' is damaged" in err[0]
    assert "--overwrite" in err[0]
    # --overwrite regenerates it
    paths = generate_dataset(small(), tmp_path, overwrite=True, progress=False)
    assert sha(paths["train"]) == sha(reference["train"])


def test_overwrite_removes_outputs_the_run_does_not_write(tmp_path):
    """--overwrite --n-test 0 leaves no old test.h5 (nor its cached statistics)."""
    generate_dataset(small(), tmp_path, progress=False)
    (tmp_path / "test.h5.stats.json").write_text("{}")
    (tmp_path / "train.h5").unlink()
    with pytest.raises(FileExistsError, match=r"output '.*test\.h5' exists"):
        generate_dataset(small(n_test=0, seed=8), tmp_path, progress=False)
    assert listing(tmp_path) == ["test.h5", "test.h5.stats.json"]
    paths = generate_dataset(small(n_test=0, seed=8), tmp_path, overwrite=True, progress=False)
    assert list(paths) == ["train"]
    assert listing(tmp_path) == ["train.h5"]
    assert read_attrs(paths["train"])["seed"] == 8


def test_resume_does_not_take_a_locked_partial_for_a_damaged_one(tmp_path):
    """A partial held open (HDF5 file lock) by another process: an error, the partial intact."""
    with pytest.raises(Interrupt):
        generate_dataset(small(), tmp_path, progress=False, callback=stop_after("train", 16))
    partial = tmp_path / "train.h5.partial"
    before = sha(partial)
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            (
                f"import sys, h5py; f = h5py.File({str(partial)!r}, 'r+'); "
                "print('open', flush=True); sys.stdin.read()"
            ),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(FolderLockedError, match="is open in another process"):
            generate_dataset(small(), tmp_path, resume=True, progress=False)
    finally:
        holder.communicate("", timeout=60)
    assert sha(partial) == before
    assert listing(tmp_path) == ["train.h5.partial", "train.h5.progress"]


@pytest.mark.slow
def test_disk_full_keeps_the_partial_for_resume(reference, tmp_path):
    """A write failing for lack of space (a file size limit here): one clear line, then resume."""
    out = tmp_path / "out"
    code = f"""
        import resource, signal, sys
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes beyond the limit fail with EFBIG
        resource.setrlimit(resource.RLIMIT_FSIZE, (100_000, 100_000))
        from darcyvae.cli import main
        sys.exit(main(["generate", *{SMALL_CLI!r}, "--out", {str(out)!r}]))
    """
    proc = _run_python(code)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "writing" in lines[0]
    assert "File too large" in lines[0]
    assert "--resume" in lines[0]
    assert listing(out) == ["train.h5.partial", "train.h5.progress"]
    paths = generate_dataset(small(), out, resume=True, progress=False)
    for split in ("train", "test"):
        assert sha(paths[split]) == sha(reference[split])


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--grid", "2"], "needs grid N >= 3; got 2"),
        (["--seed", str(2**70)], r"seed must be an integer in \[0, 9223372036854775807\]"),
        (["--variance", "1e6"], r"log-permeability G from .* must lie in \[-87.3, 88.7\]"),
        (["--dist", "gaussian", "--mean", "1e3"], "K = exp\\(G\\) is stored as float32"),
        (["--variance", "1e300"], r"variance must be a finite float in \(0.0, 1e\+100\]"),
    ],
)
def test_settings_are_checked_before_any_file(tmp_path, capsys, args, match):
    """Rejected settings leave nothing (no .partial asking for --overwrite next time)."""
    out = tmp_path / "out"
    base = ["generate", "--kle", "2", "--grid", "9", "--n-train", "4", "--n-test", "2"]
    assert main([*base, "--out", str(out), "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert re.search(match, err), err
    assert not out.exists()


def test_theta_overflowing_permeability_is_refused_up_front(tmp_path):
    """theta = 1e3: a ValueError naming the sample before any file, not a FloatingPointError."""
    rows = np.zeros((30, 3))
    rows[17] = 1e3
    cfg = small(distribution=ThetaArray(rows), n_train=12, n_test=10)
    with pytest.raises(ValueError, match=r"test sample 5 .* gives a log-permeability"):
        generate_dataset(cfg, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    rows[17] = 20.0  # large, but K = exp(G) stays within float32
    paths = generate_dataset(
        small(distribution=ThetaArray(rows), n_train=12, n_test=10), tmp_path / "ok", progress=False
    )
    assert np.isfinite(datasets(paths["test"])["permeability"]).all()


def test_dask_without_distributed_names_the_extra(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "distributed", None)  # as if not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'darcyvae\[dask\]'") as info:
        generate_dataset(small(), tmp_path / "out", dask_address="tcp://localhost:1")
    assert isinstance(info.value, ImportError)  # what callers catching ImportError expect
    assert main(["generate", *SMALL_CLI, "--out", str(tmp_path / "out"), "--dask", "x:1"]) == 2
    assert "darcyvae[dask]" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


# -- property-based: configuration and thetas at the boundary -----------------------------
_SETTING = st.one_of(
    st.integers(-3, 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["mc", "lhs", "gzip", "lzf", "normal", "mixture4", "", "x"]),
    st.none(),
    st.booleans(),
)


@given(
    kwargs=st.dictionaries(
        st.sampled_from(
            [
                "n_train",
                "n_test",
                "seed",
                "chunk_size",
                "compression",
                "compression_level",
                "threads",
                "train_sampling",
                "test_sampling",
                "distribution",
                "dist_params",
            ]
        ),
        _SETTING,
        max_size=4,
    )
)
def test_config_validation_never_crashes(kwargs):
    """Random settings: a ValueError/TypeError naming the setting, or a consistent config."""
    try:
        cfg = small(**kwargs)
    except (ValueError, TypeError) as exc:
        message = str(exc)
    else:
        message = ""
    if message:  # our template: "<caller>: <name> must be ...; got ..."
        assert message.startswith(("GenerateConfig", "get_distribution", "Gaussian", "Mixture4"))
        return
    assert cfg.n_samples("train") >= 1
    assert 0 <= cfg.seed < 2**63
    assert cfg.sampling("train") in ("mc", "lhs")


@settings(max_examples=10)
@given(
    theta=st.lists(
        st.lists(st.one_of(st.floats(-1e6, 1e6), st.floats(-30, 30)), min_size=3, max_size=3),
        min_size=3,
        max_size=3,
    )
)
def test_user_thetas_are_refused_or_written_finite(tmp_path_factory, theta):
    """Any finite thetas: refused up front (nothing written) or a file of finite values."""
    out = tmp_path_factory.mktemp("hyp") / "out"
    cfg = small(
        kle=KLEConfig(grid=9, n_modes=3), distribution=ThetaArray(theta), n_train=2, n_test=1
    )
    try:
        paths = generate_dataset(cfg, out, progress=False)
    except ValueError as exc:
        msg = str(exc)
        if "log-permeability" in msg:
            assert not out.exists()
        else:  # K within float32 but beyond what the solver resolves: named, partial kept
            assert "Darcy solve" in msg or "not finite" in msg, msg
        return
    for split in ("train", "test"):
        data = datasets(paths[split])
        assert all(np.isfinite(v).all() for v in data.values())
        verify_dataset(paths[split])


# -- edges: impossible sizes, free space, threads, SIGTERM (docs/safety.md) -------------------
def test_impossible_sizes_are_refused_at_once_and_allocate_nothing(tmp_path, capsys):
    """A4: --n-train 10000000000 --grid 33 spent minutes building block lists (1.5 GB) and
    would have written until the disk was full. Now: the size is estimated from the
    settings and compared with the free space first, with nothing built or written."""
    out = tmp_path / "huge"
    cfg = GenerateConfig(KLEConfig(grid=33, n_modes=100), n_train=10_000_000_000)
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(OSError, match="needs about") as info:
            generate_dataset(cfg, out, progress=False)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert time.perf_counter() - start < 10
    assert peak < 20e6, peak  # no block list, no thetas
    assert info.value.errno == errno.ENOSPC
    message = str(info.value)
    assert "10,000,000,000 + 512 samples" in message
    assert "free" in message
    assert "--no-space-check" in message
    assert not out.exists()
    argv = ["generate", "--n-train", "10000000000", "--grid", "33", "--out", str(out)]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("darcyvae generate: error:")
    assert not out.exists()


def test_free_space_check_counts_every_sample_and_can_be_skipped(tmp_path, capsys):
    """The estimate is the uncompressed size of both splits: a run one sample too large
    for the free space is refused, one that fits is accepted; --no-space-check skips it."""
    free = shutil.disk_usage(tmp_path).free
    per = bytes_per_sample(small())
    assert per == 4 * (3 + 4 * GRID**2)
    n_fit = int((free - 2**20) / per / 1.02)  # below the estimate's 1% + 1 MB headroom
    fits = small(n_train=n_fit, n_test=0)
    assert check_free_space(fits, tmp_path / "a") >= n_fit * per
    too_big = small(n_train=free // per + 1, n_test=0)
    with pytest.raises(OSError, match="needs about"):
        check_free_space(too_big, tmp_path / "a")
    out = tmp_path / "small"
    assert main(["generate", *SMALL_CLI, "--out", str(out), "--no-space-check"]) == 0
    assert listing(out) == ["test.h5", "train.h5"]


def test_threads_beyond_the_machine_are_reduced_before_they_reach_cpp(tmp_path, caplog):
    """A5/A9: threads = 2**70 leaked the bindings' multi-line "incompatible function
    arguments" (after creating a partial); the one thread check (_checks.check_threads)
    now reduces it to MAX_THREADS in Python, as the solver does for large counts."""
    from darcyvae.darcy import MAX_THREADS

    cfg = small(n_train=8, n_test=0, threads=2**70)
    assert cfg.threads == MAX_THREADS
    assert "using" in caplog.text
    paths = generate_dataset(cfg, tmp_path / "out", progress=False)
    verify_dataset(paths["train"])
    for bad, error in ((0, ValueError), (True, TypeError), (2.0, TypeError)):
        with pytest.raises(error, match="threads must be"):
            small(threads=bad)


def test_sigterm_stops_like_ctrl_c_and_resume_is_byte_identical(reference, tmp_path):
    """A10: SIGTERM (kill, a batch system) exited -15 with no message. Now it takes
    Ctrl-C's path: one line, exit 143, the partial kept, --resume completes it."""
    out = tmp_path / "out"
    code = f"""
        import os, signal, sys
        import darcyvae.generate as generate
        from darcyvae.cli import main
        write, chunks = generate.write_chunk, []
        def write_chunk(*args, **kwargs):  # the third block of train is never written
            chunks.append(1)
            if len(chunks) == 3:
                os.kill(os.getpid(), signal.SIGTERM)
            return write(*args, **kwargs)
        generate.write_chunk = write_chunk
        sys.exit(main(["generate", *{SMALL_CLI!r}, "--out", {str(out)!r}]))
    """
    proc = _run_python(code)
    assert proc.returncode == 143, proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if "interrupted;" not in line]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("darcyvae generate: terminated (SIGTERM)")
    assert listing(out) == ["train.h5.partial", "train.h5.progress"]
    assert main(["generate", *SMALL_CLI, "--out", str(out), "--resume"]) == 0
    for split in ("train", "test"):
        assert sha(out / f"{split}.h5") == sha(reference[split])
