"""The edges (docs/safety.md) of ``train``, ``evaluate``, ``generate`` and ``reproduce``.

Each test is the regression test of one item (A2-A10): a full disk while a checkpoint
is written, an ensemble whose members all diverge, unbounded work, a foreign output
folder, settings checked before anything is written, small errors, SIGTERM. Where a
user meets the problem on the command line, the test runs ``darcyvae`` as a user does,
in a fresh process when a file size limit or a signal is involved.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from _configs import tiny_train_config
from darcyvae.checkpoint import load_checkpoint
from darcyvae.cli import main
from darcyvae.ensemble import MAX_SEEDS, load_ensemble_checkpoint
from darcyvae.metrics import s_d
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# ``darcyvae ARGV`` in a fresh process: the package is imported first (an editable
# install may rebuild its core), then an optional file size limit (writes beyond it fail
# with EFBIG, as on a full disk) and an optional hook that sends the process SIGTERM at a
# known point of the run (after the first checkpoint, at the start of an experiment).
_RUNNER = """
import os, resource, signal, sys
import darcyvae.cli
limit, hook, *argv = sys.argv[1:]

def sigterm_after_first(module, name):
    original = getattr(module, name)
    def wrapper(*args, **kwargs):
        out = original(*args, **kwargs)
        os.kill(os.getpid(), signal.SIGTERM)
        return out
    setattr(module, name, wrapper)

if hook == "train":
    import darcyvae._run
    sigterm_after_first(darcyvae._run, "save_run")
elif hook == "ensemble":
    import darcyvae.ensemble.engine
    sigterm_after_first(darcyvae.ensemble.engine, "save_checkpoint")
elif hook == "reproduce":
    import dataclasses
    import darcyvae.experiments as experiments
    fig1 = experiments._EXPERIMENTS["fig1"]
    def started(ctx, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)
        return fig1.fn(ctx, **kwargs)
    experiments._EXPERIMENTS["fig1"] = dataclasses.replace(fig1, fn=started)
if limit != "-":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
sys.exit(darcyvae.cli.main(argv))
"""

LIMIT = 200_000
"""Bytes: more than a config, a log or a summary, less than a tiny model's checkpoint."""


def _darcyvae(argv, *, limit=None, hook=None, cwd=None):
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, str(limit or "-"), hook or "-", *map(str, argv)],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )


def _own_lines(err: str) -> list[str]:
    """The lines darcyvae printed itself (log records start with a time stamp)."""
    return [line for line in err.splitlines() if line.startswith("darcyvae ")]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture(scope="module")
def files(tmp_path_factory, synthetic_h5):
    """Training data, data on which every model diverges, and a tiny run's config."""
    folder = tmp_path_factory.mktemp("edges")
    train = synthetic_h5(folder / "train.h5", n=32, grid=17, seed=0)
    diverging = synthetic_h5(folder / "diverging.h5", n=32, grid=17, seed=0)
    with h5py.File(diverging, "r+") as f:
        f["output"][3] = 3e38  # finite, but its square overflows float32: a NaN loss
    config = folder / "tiny.toml"
    tiny_train_config(epochs=2, checkpoint_every=1).to_toml(config)
    return {"train": train, "diverging": diverging, "config": config, "folder": folder}


def _train(files, out, *extra, data=None):
    args = ["train", "--config", files["config"], "--train", data or files["train"]]
    return [*map(str, args), "--out", str(out), "--device", "cpu", "--quiet", *extra]


def _tmp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*.tmp"))


# ------------------------------------------------ A2: a full disk while a checkpoint is written
@pytest.mark.slow
def test_disk_full_while_train_writes_a_checkpoint_exits_2_and_keeps_the_last_one(files, tmp_path):
    """Was exit 3 ("internal error at serialization.py ... unexpected pos")."""
    run = tmp_path / "run"
    # No checkpoint yet: one line, nothing to resume, and the same command runs again.
    proc = _darcyvae(_train(files, run, "--epochs", "1"), limit=LIMIT)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert line.startswith("darcyvae train: error:"), line
    assert "checkpoint.pt' failed: File too large" in line
    assert "No checkpoint had been written yet" in line
    assert not (run / "checkpoint.pt").exists()
    assert _tmp_files(run) == []
    assert main(_train(files, run, "--epochs", "1")) == 0
    before = (run / "checkpoint.pt").read_bytes()
    # A checkpoint on disk: the failed save leaves it intact, --resume continues.
    proc = _darcyvae(_train(files, run, "--epochs", "2", "--resume"), limit=LIMIT)
    assert proc.returncode == 2, proc.stderr
    line = _own_lines(proc.stderr)
    assert len(line) == 1, proc.stderr
    assert "File too large" in line[0]
    assert "epoch 1) is kept" in line[0]
    assert "--resume" in line[0]
    assert "internal error" not in proc.stderr
    assert (run / "checkpoint.pt").read_bytes() == before
    assert load_checkpoint(run)["epoch"] == 1
    assert _tmp_files(run) == []
    assert main(_train(files, run, "--epochs", "2", "--resume")) == 0
    assert load_checkpoint(run)["epoch"] == 2


@pytest.mark.slow
def test_disk_full_while_an_ensemble_writes_its_checkpoint_exits_2(files, tmp_path):
    ens = tmp_path / "ens"
    proc = _darcyvae(_train(files, ens, "--epochs", "1", "--seeds", "0,1"), limit=LIMIT)
    assert proc.returncode == 2, proc.stderr
    line = _one_error_line(proc.stderr)
    assert "train_ensemble: writing" in line
    assert "File too large" in line
    assert "No ensemble checkpoint had been written yet" in line
    assert main(_train(files, ens, "--epochs", "1", "--seeds", "0,1")) == 0
    before = (ens / "ensemble_checkpoint.pt").read_bytes()
    proc = _darcyvae(_train(files, ens, "--epochs", "2", "--seeds", "0,1", "--resume"), limit=LIMIT)
    assert proc.returncode == 2, proc.stderr
    (line,) = _own_lines(proc.stderr)
    assert "File too large" in line
    assert "is kept" in line
    assert "--resume" in line
    assert (ens / "ensemble_checkpoint.pt").read_bytes() == before
    assert _tmp_files(ens) == []
    assert main(_train(files, ens, "--epochs", "2", "--seeds", "0,1", "--resume")) == 0
    assert load_ensemble_checkpoint(ens / "ensemble_checkpoint.pt")["epoch"] == 2


# ------------------------------------------------ A3: every member of an ensemble diverges
def test_an_ensemble_whose_members_all_diverge_exits_2_and_says_so(files, tmp_path, capsys):
    """Was exit 0 with "4 seeds, 0 restart(s)"; the same seed alone exits 2."""
    ens = tmp_path / "ens"
    args = _train(files, ens, "--seeds", "0-3", data=files["diverging"])
    assert main(args) == 2
    captured = capsys.readouterr()
    last = captured.out.strip().splitlines()[-1]
    assert last.startswith("train: 4 seeds: 0 finished, 4 diverged, 0 restart(s)"), last
    line = _one_error_line(captured.err)
    assert line.startswith("darcyvae train: error: every member diverged"), line
    assert "seeds 0, 1, 2, 3" in line
    summary = json.loads((ens / "ensemble.json").read_text())
    assert summary["n_diverged"] == 4
    # The same seed alone: also exit 2.
    assert main(_train(files, tmp_path / "one", "--seed", "0", data=files["diverging"])) == 2
    assert "non-finite loss" in _one_error_line(capsys.readouterr().err)


# ------------------------------------------------ A5: unbounded work
@pytest.mark.parametrize("threads", ["100000", "5000", str(2**70)])
def test_thread_counts_beyond_the_machine_are_reduced(threads, files, tmp_path):
    """--threads 100000 exited 3 (ImportError), 5000 made 3 s take minutes, 2**70
    overflowed; train and evaluate now reduce them, as generate does (one check)."""
    from darcyvae.darcy import MAX_THREADS

    try:
        assert main(["train", "--list", "--threads", threads]) == 0
        assert torch.get_num_threads() == MAX_THREADS
        run = tmp_path / "run"
        assert main(_train(files, run, "--epochs", "1", "--threads", threads)) == 0
        assert torch.get_num_threads() == MAX_THREADS
        ev = ["evaluate", str(run), files["train"], "--out", str(tmp_path / "ev")]
        assert main([*ev, "--threads", threads]) == 0
    finally:
        torch.set_num_threads(1)


def test_thread_counts_below_one_are_one_line_errors(capsys):
    assert main(["train", "--list", "--threads", "0"]) == 2
    assert "--threads must be >= 1; got 0" in _one_error_line(capsys.readouterr().err)
    assert main(["evaluate", "x.pt", "y.h5", "--out", "z", "--threads", "-3"]) == 2
    assert "--threads must be >= 1" in _one_error_line(capsys.readouterr().err)


def test_too_many_seeds_are_refused_before_anything_starts(files, tmp_path, capsys):
    """--seeds 0-100000 ran with no limit; the list is not even built for 0-10**18."""
    for seeds in ("0-100000", f"0-{10**18}"):
        assert main(_train(files, tmp_path / "ens", "--seeds", seeds)) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert f"at most {MAX_SEEDS:,} train in one run" in line
    assert not (tmp_path / "ens").exists()


def test_a_block_that_cannot_fit_in_memory_is_refused_with_a_block_size(files, tmp_path, capsys):
    """10,000 members of the paper's model hold 1.3 TB of parameters and Adam moments:
    refused at once (before any model is built), naming a --seeds-per-block that fits."""
    ens = tmp_path / "ens"
    args = ["train", "--preset", "kle2_normal", "--train", files["train"], "--out", str(ens)]
    assert main([*args, "--device", "cpu", "--seeds", f"0-{MAX_SEEDS - 1}"]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert f"K = {MAX_SEEDS:,} members" in line
    assert "--seeds-per-block" in line
    assert not (ens / "ensemble.json").exists()


# ------------------------------------------------ A6: a folder darcyvae did not write
@pytest.mark.parametrize("extra", [(), ("--seeds", "0,1"), ("--restarts", "1")])
def test_train_into_a_foreign_folder_is_refused_and_touches_nothing(extra, files, tmp_path, capsys):
    """Was: its config.toml, summary.json and metrics.jsonl silently replaced."""
    out = tmp_path / "mine"
    out.mkdir()
    for name, text in (("config.toml", "my = 1\n"), ("metrics.jsonl", "{}\n"), ("a.txt", "x")):
        (out / name).write_text(text)
    assert main(_train(files, out, "--epochs", "1", *extra)) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "is not empty and was not written by darcyvae train" in line
    assert "choose another --out" in line
    assert "out_dir" not in line
    assert sorted(p.name for p in out.iterdir()) == ["a.txt", "config.toml", "metrics.jsonl"]
    assert (out / "config.toml").read_text() == "my = 1\n"


def test_a_run_that_stopped_before_its_first_checkpoint_can_be_started_again(files, tmp_path):
    """Its folder (darcyvae's config.toml and log, no checkpoint) is darcyvae's own."""
    run = tmp_path / "run"
    assert main(_train(files, run, data=files["diverging"])) == 2
    assert (run / "config.toml").is_file()
    assert not (run / "checkpoint.pt").exists()
    assert main(_train(files, run)) == 0
    assert load_checkpoint(run)["epoch"] == 2


# ------------------------------------------------ A7: reproduce checks before it writes
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seed", str(2**70)], r"seed must be an integer in [0, 4294967295]"),
        (["--trials", str(10**6)], r"trials must be an integer in [1, 1000]"),
        (["--device", "abacus"], "device must be 'auto', 'cpu', 'cuda'"),
        (["--scale", "galactic"], "unknown scale 'galactic'"),
    ],
)
def test_reproduce_checks_every_setting_before_writing(extra, message, tmp_path, capsys):
    """--seed 2**70 wrote experiment.json and then failed, so the corrected rerun
    needed --overwrite; now nothing is written."""
    for name in ("fig1", "all"):
        out = tmp_path / name
        assert main(["reproduce", name, "--out", str(out), "--no-progress", *extra]) == 2
        assert message in _one_error_line(capsys.readouterr().err)
        assert not out.exists()


@pytest.mark.slow
def test_reproduce_after_a_refused_seed_needs_no_overwrite(tmp_path, capsys):
    out = tmp_path / "fig1"
    base = ["reproduce", "fig1", "--scale", "smoke", "--out", str(out), "--no-progress"]
    assert main([*base, "--seed", str(2**70)]) == 2
    assert main([*base, "--seed", "1"]) == 0
    assert json.loads((out / "experiment.json").read_text())["seed"] == 1


# ------------------------------------------------ A9: smaller errors
@pytest.mark.parametrize("verb", ["generate", "train", "evaluate", "reproduce"])
def test_an_empty_out_is_an_error_for_every_verb(verb, files, tmp_path, monkeypatch, capsys):
    """--out "" meant the current folder for generate and evaluate, runs/<name> for train."""
    here = tmp_path / "cwd"
    here.mkdir()
    monkeypatch.chdir(here)
    argv = {
        "generate": ["generate", "--kle", "2", "--grid", "9", "--n-train", "4", "--n-test", "0"],
        "train": ["train", "--config", str(files["config"]), "--train", str(files["train"])],
        "evaluate": ["evaluate", "run", str(files["train"])],
        "reproduce": ["reproduce", "fig1", "--scale", "smoke", "--no-progress"],
    }[verb]
    assert main([*argv, "--out", ""]) == 2
    assert "--out must name a folder" in _one_error_line(capsys.readouterr().err)
    assert list(here.iterdir()) == []


def test_a_refused_checkpoint_gets_darcyvaes_message_not_torchs_hint(tmp_path, files, capsys):
    """torch's refusal suggests retrying with weights_only=False (running the file's
    code); darcyvae's message names what was refused and never suggests that."""

    class Payload:
        def __reduce__(self):
            return (os.system, ("echo this must never run",))

    bad = tmp_path / "checkpoint.pt"
    torch.save({"format": 2, "model": Payload()}, bad)
    assert main(["evaluate", str(bad), str(files["train"]), "--out", str(tmp_path / "ev")]) == 2
    captured = capsys.readouterr()
    line = _one_error_line(captured.err)
    assert "refused, since loading such a file can run arbitrary code" in line
    assert "system" in line
    assert "weights_only" not in line
    assert "this must never run" not in captured.out
    bad.write_bytes(bytes(range(128, 256)) * 8)  # not a pickle torch's safe loader reads
    assert main(["evaluate", str(bad), str(files["train"]), "--out", str(tmp_path / "ev")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "is not a darcyvae checkpoint: torch's safe loader cannot read it" in line
    assert "weights_only" not in line


_ROWS = st.integers(min_value=0, max_value=1)
_WIDTH = st.integers(min_value=0, max_value=3)


@given(n=_ROWS, dz=_WIDTH, dt=_WIDTH, flat=st.booleans())
def test_s_d_of_fewer_than_two_samples_says_so(n, dz, dt, flat):
    """s_d on empty arrays failed with numpy's "cannot reshape array of size 0"."""
    z = np.zeros(n) if flat else np.zeros((n, dz))
    with pytest.raises(ValueError, match="s_d: need at least 2 samples") as info:
        s_d(z, np.zeros((n, dt)))
    assert "reshape" not in str(info.value)


# ------------------------------------------------ A10: SIGTERM is handled like Ctrl-C
def _terminated(proc, verb: str) -> None:
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr
    (line,) = _own_lines(proc.stderr)
    assert line.startswith(f"darcyvae {verb}: terminated (SIGTERM)"), line


@pytest.mark.slow
def test_sigterm_stops_train_keeping_its_checkpoint_and_resume_continues(files, tmp_path):
    run = tmp_path / "run"
    proc = _darcyvae(_train(files, run, "--epochs", "3"), hook="train")
    _terminated(proc, "train")
    assert load_checkpoint(run)["epoch"] == 1  # the checkpoint written before SIGTERM
    assert _tmp_files(run) == []
    assert main(_train(files, run, "--epochs", "3", "--resume")) == 0
    log = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [0, 1, 2]


@pytest.mark.slow
def test_sigterm_stops_an_ensemble_keeping_its_checkpoint(files, tmp_path):
    ens = tmp_path / "ens"
    proc = _darcyvae(_train(files, ens, "--epochs", "3", "--seeds", "0,1"), hook="ensemble")
    _terminated(proc, "train")
    assert load_ensemble_checkpoint(ens / "ensemble_checkpoint.pt")["epoch"] == 1
    assert main(_train(files, ens, "--epochs", "3", "--seeds", "0,1", "--resume")) == 0
    assert load_checkpoint(ens / "seed_1")["epoch"] == 3


@pytest.mark.slow
def test_sigterm_stops_reproduce_and_the_same_command_continues(tmp_path):
    out = tmp_path / "fig1"
    argv = ["reproduce", "fig1", "--scale", "smoke", "--out", str(out), "--no-progress"]
    proc = _darcyvae(argv, hook="reproduce")
    _terminated(proc, "reproduce")
    assert (out / "experiment.json").is_file()
    assert not (out / "results.json").exists()
    assert main(argv) == 0  # no --overwrite needed
    assert (out / "results.json").is_file()
