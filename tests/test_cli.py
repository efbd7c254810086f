"""The ``darcyvae`` command line: train and evaluate, errors as one line, exit codes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from _configs import tiny_train_config
from darcyvae import training
from darcyvae.checkpoint import load_checkpoint, save_checkpoint
from darcyvae.cli import main
from darcyvae.config import TrainConfig
from darcyvae.generate import GenerateConfig, generate_dataset
from darcyvae.kle import KLEConfig

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def setup(tmp_path, vae_data, synthetic_h5):
    train = synthetic_h5(tmp_path / "train.h5", n=32, grid=17, seed=0)
    config = tiny_train_config(epochs=3, eval_every=1, checkpoint_every=100).to_toml(
        tmp_path / "tiny.toml"
    )
    return tmp_path, str(config), train, vae_data.test


def _quick(config, train, out, *extra):
    return [
        "train",
        "--config",
        config,
        "--train",
        train,
        "--out",
        str(out),
        "--device",
        "cpu",
        "--quiet",
        "--threads",
        "1",
        *extra,
    ]


def _one_error_line(err: str) -> str:
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_train_list(capsys):
    assert main(["train", "--list"]) == 0
    out = capsys.readouterr().out
    assert "kle2_mixture4_hp" in out
    assert "dense_vae_paper" in out


def test_train_without_config_or_preset_is_a_usage_error(capsys):
    assert main(["train", "--train", "x.h5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: darcyvae train")
    assert "one of --config FILE or --preset NAME is required" in err


@pytest.mark.slow
def test_train_resume_and_evaluate(setup, capsys):
    tmp, config, train, test = setup
    run = tmp / "run"
    assert main([*_quick(config, train, run, "--epochs", "2", "--seed", "4"), "--test", test]) == 0
    out = capsys.readouterr().out
    assert "over-regularised" in out.lower()
    assert "S_D" in out
    assert "bound" in out
    assert "margin" in out
    ckpt = load_checkpoint(run)
    assert ckpt["epoch"] == 2
    assert ckpt["config"]["run"]["seed"] == 4
    # Running again without --resume refuses to overwrite.
    assert main([*_quick(config, train, run, "--seed", "4"), "--test", test]) == 2
    assert "already exists" in _one_error_line(capsys.readouterr().err)
    assert main([*_quick(config, train, run, "--seed", "4", "--resume"), "--test", test]) == 0
    assert load_checkpoint(run)["epoch"] == 3
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]
    capsys.readouterr()
    ev = tmp / "eval"
    assert main(["evaluate", f"{run}/checkpoint.pt", test, "--out", str(ev)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("train: ")  # the recorded training file was found and evaluated
    results = json.loads((ev / "results.json").read_text())
    assert results["train"]["n_samples"] == 32
    assert results["test"]["n_samples"] == 32
    for key in ("distortion_margin", "trained", "s_kl", "s_kl_in_sample", "skl_latent"):
        assert key in results["test"]
    assert results["test"]["skl_latent"] == "sample"
    assert (ev / "latent_vs_theta.png").is_file()


def test_train_errors(setup, capsys):
    tmp, config, train, _ = setup
    assert main(["train", "--config", config, "--out", str(tmp / "x")]) == 2
    assert "--train" in capsys.readouterr().err
    assert main(["train", "--preset", "nope", "--train", train, "--out", str(tmp / "y")]) == 2
    assert "unknown preset" in capsys.readouterr().err
    # The paper preset expects a 65 grid: a clear error, not a crash.
    assert (
        main(["train", "--preset", "kle2_normal", "--train", train, "--out", str(tmp / "z")]) == 2
    )
    assert "set model.grid" in _one_error_line(capsys.readouterr().err)
    assert main(["evaluate", str(tmp / "none.pt"), train, "--out", str(tmp / "e")]) == 2
    assert "no checkpoint" in _one_error_line(capsys.readouterr().err)
    assert main(["train", "--list", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
    assert main(["reproduce", "fig1", "--threads", "0", "--out", str(tmp / "r")]) == 2
    assert "--threads must be >= 1" in _one_error_line(capsys.readouterr().err)
    assert not (tmp / "r").exists()


def test_resume_errors_are_one_line(setup, capsys, synthetic_h5):
    tmp, config, train, _ = setup
    run = tmp / "run"
    assert main(_quick(config, train, run, "--epochs", "1")) == 0
    capsys.readouterr()
    # Other data: refused unless --allow-data-change.
    other = synthetic_h5(tmp / "other.h5", n=32, grid=17, seed=9)
    assert main(_quick(config, other, run, "--epochs", "2", "--resume")) == 2
    assert "--allow-data-change" in _one_error_line(capsys.readouterr().err)
    assert main(_quick(config, other, run, "--epochs", "2", "--resume", "--allow-data-change")) == 0
    capsys.readouterr()
    # A metrics.jsonl record without "epoch": one line naming the file.
    log = run / "metrics.jsonl"
    log.write_text('{"loss": 1.0}\n' + log.read_text())
    assert main(_quick(config, other, run, "--epochs", "3", "--resume")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "metrics.jsonl" in line
    assert '"epoch"' in line


def test_checkpoint_tensor_of_the_wrong_shape(setup, capsys):
    tmp, config, train, test = setup
    run = tmp / "run"
    assert main(_quick(config, train, run, "--epochs", "1")) == 0
    ckpt = load_checkpoint(run)
    name = next(k for k, v in ckpt["model"].items() if v.ndim == 2)
    ckpt["model"][name] = ckpt["model"][name][:, :3].clone()
    save_checkpoint(
        {k: v for k, v in ckpt.items() if k not in ("format", "checksum")}, run / "checkpoint.pt"
    )
    capsys.readouterr()
    assert main(["evaluate", str(run), test, "--out", str(tmp / "ev")]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "does not fit the configured model" in line
    assert name in line


def test_damaged_checkpoint_exits_2(setup, capsys):
    import torch

    tmp, config, train, test = setup
    run = tmp / "run"
    assert main(_quick(config, train, run, "--epochs", "1")) == 0
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["epoch"] = 7
    torch.save(ckpt, run / "checkpoint.pt")
    capsys.readouterr()
    assert main(["evaluate", str(run), test, "--out", str(tmp / "ev")]) == 2
    assert "checksum" in _one_error_line(capsys.readouterr().err)


def test_unexpected_exception_is_reported_as_a_bug(setup, capsys, monkeypatch):
    tmp, config, train, _ = setup

    def broken(*args, **kwargs):
        return 1 / 0

    monkeypatch.setattr(training, "run_training", broken)
    assert main(_quick(config, train, tmp / "r")) == 3
    err = capsys.readouterr().err
    assert "ZeroDivisionError" in err
    assert "bug in darcyvae" in err
    assert "Traceback" not in err
    assert main(["--debug", *_quick(config, train, tmp / "r")]) == 3
    assert "Traceback" in capsys.readouterr().err
    assert main([*_quick(config, train, tmp / "r"), "--debug"]) == 3  # after the verb too
    assert "Traceback" in capsys.readouterr().err


def test_keyboard_interrupt_exits_130(setup, capsys, monkeypatch):
    tmp, config, train, _ = setup

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(training, "run_training", interrupted)
    assert main(_quick(config, train, tmp / "r")) == 130
    assert "interrupted" in capsys.readouterr().err


# ------------------------------------------------ every failure is one line (docs/safety.md)
# Each scenario prepares its own folder, then `darcyvae ...` runs in a fresh process
# (as a user runs it) through a small wrapper that can limit the file size (a full
# disk) or make `import distributed` fail (the optional package not installed).
_RUNNER = """
import resource, runpy, signal, sys
limit, blocked, *argv = sys.argv[1:]
if limit != "-":
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # writes beyond the limit fail with EFBIG
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limit), int(limit)))
if blocked != "-":
    class Blocked:
        def find_spec(self, name, path=None, target=None):
            if name.partition(".")[0] == blocked:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)
    sys.meta_path.insert(0, Blocked())
sys.argv = ["darcyvae", *argv]
runpy.run_module("darcyvae.cli", run_name="__main__", alter_sys=True)
"""

_GEN = ["generate", "--kle", "2", "--grid", "9", "--n-train", "8", "--n-test", "4"]
_GEN += ["--chunk-size", "4", "--no-progress"]


def _darcyvae(argv, *, limit=None, blocked=None, env=None):
    return subprocess.run(
        [sys.executable, "-c", _RUNNER, str(limit or "-"), blocked or "-", *map(str, argv)],
        check=False,
        capture_output=True,
        text=True,
        timeout=240,
        env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})},
    )


@pytest.fixture(scope="module")
def trained(tmp_path_factory, vae_data):
    """A finished one-epoch run of the tiny model on the shared synthetic data."""
    out = tmp_path_factory.mktemp("trained") / "run"
    cfg = tiny_train_config(epochs=1, batch_size=32, checkpoint_every=100)
    training.train(cfg, vae_data.train, out_dir=out, device="cpu", progress=False)
    cfg.to_toml(out.parent / "tiny.toml")
    return out


def _train_args(trained, run, data):
    config = trained.parent / "tiny.toml"
    return ["train", "--config", config, "--train", data, "--out", run, "--device", "cpu"]


def _copy_run(trained, tmp):
    return Path(shutil.copytree(trained, tmp / "run"))


def _disk_full(tmp, trained, data):
    return {"argv": [*_GEN, "--out", tmp / "out"], "limit": 20_000}


def _truncated_then_resume(tmp, trained, data):
    cfg = GenerateConfig(KLEConfig(grid=9, n_modes=2), n_train=8, n_test=4, chunk_size=4)
    paths = generate_dataset(cfg, tmp / "out", progress=False)
    good = paths["train"].read_bytes()
    paths["train"].write_bytes(good[: len(good) // 2])
    return {"argv": [*_GEN, "--out", tmp / "out", "--resume"]}


def _theta_1e3(tmp, trained, data):
    np.save(tmp / "theta.npy", np.full((12, 2), 1e3))
    argv = [*_GEN, "--dist", "array", "--theta-file", tmp / "theta.npy", "--out", tmp / "out"]
    return {"argv": argv}


def _variance_1e6(tmp, trained, data):
    return {"argv": [*_GEN, "--variance", "1e6", "--out", tmp / "out"]}


def _dask_without_distributed(tmp, trained, data):
    argv = [*_GEN, "--dask", "tcp://127.0.0.1:1", "--out", tmp / "out"]
    return {"argv": argv, "blocked": "distributed"}


def _checkpoint_tensor_of_the_wrong_shape(tmp, trained, data):
    run = _copy_run(trained, tmp)
    ckpt = load_checkpoint(run)
    name = next(k for k, v in ckpt["model"].items() if v.ndim == 2)
    ckpt["model"][name] = ckpt["model"][name][:, :3].clone()
    body = {k: v for k, v in ckpt.items() if k not in ("format", "checksum")}
    save_checkpoint(body, run / "checkpoint.pt")  # a consistent checksum: only the shape is off
    return {"argv": ["evaluate", run, data.test, "--out", tmp / "ev"]}


def _metrics_line_without_epoch(tmp, trained, data):
    run = _copy_run(trained, tmp)
    log = run / "metrics.jsonl"
    log.write_text('{"loss": 1.0}\n' + log.read_text())
    return {"argv": [*_train_args(trained, run, data.train), "--epochs", "2", "--resume"]}


def _output_that_is_a_group(tmp, trained, data):
    bad = Path(shutil.copy(data.train, tmp / "group.h5"))
    with h5py.File(bad, "r+") as f:
        del f["output"]
        f.create_group("output")
    return {"argv": _train_args(trained, tmp / "run", bad)}


@pytest.mark.slow
@pytest.mark.parametrize(
    ("scenario", "names"),
    [
        (_disk_full, ["File too large", "--resume"]),
        (_truncated_then_resume, ["train.h5' is damaged", "--overwrite"]),
        (_theta_1e3, ["theta [1000.0, 1000.0]", "log-permeability"]),
        (_variance_1e6, ["log-permeability", "variance (now 1e+06)"]),
        (_dask_without_distributed, ["'distributed'", "pip install 'darcyvae[dask]'"]),
        (_checkpoint_tensor_of_the_wrong_shape, ["does not fit the configured model"]),
        (_metrics_line_without_epoch, ["metrics.jsonl", 'has no integer "epoch"']),
        (_output_that_is_a_group, ["group.h5", "'output' is a Group"]),
    ],
    ids=lambda v: v.__name__.strip("_") if callable(v) else "",
)
def test_every_failure_is_one_line_and_debug_shows_the_traceback(
    scenario, names, tmp_path, trained, vae_data
):
    """Exit 2, one line on stderr naming the problem; --debug: traceback (docs/safety.md)."""
    for debug in (False, True):
        folder = tmp_path / ("debug" if debug else "plain")
        folder.mkdir()
        case = scenario(folder, trained, vae_data)
        argv = ["--debug", *case.pop("argv")] if debug else case.pop("argv")
        # a fresh KLE cache, as on a new machine: its writes, too, must stay quiet
        proc = _darcyvae(argv, env={"DARCYVAE_CACHE_DIR": str(folder / "cache")}, **case)
        assert proc.returncode == 2, proc.stderr
        verb = str(argv[1] if debug else argv[0])
        if debug:
            assert "Traceback (most recent call last)" in proc.stderr
            last = proc.stderr.strip().splitlines()[-1]
        else:
            last = _one_error_line(proc.stderr)
        assert last.startswith(f"darcyvae {verb}: error: "), last
        assert "internal error" not in last
        for name in names:
            assert name in last, last


def test_train_seeds_runs_an_ensemble_whose_members_match_single_runs(setup, capsys):
    tmp, config, train, _ = setup
    ens = tmp / "ens"
    assert main([*_quick(config, train, ens, "--epochs", "2", "--seeds", "3,5")]) == 0
    out = capsys.readouterr().out
    assert "seed 3" in out
    assert "seed 5" in out
    summary = json.loads((ens / "ensemble.json").read_text())
    assert sorted(m["seed"] for m in summary["members"]) == [3, 5]
    # Each member folder is a run folder: the same seed trained alone gives the
    # same logged losses (the ensemble is K independent models, not one model).
    single = tmp / "single"
    assert main([*_quick(config, train, single, "--epochs", "2", "--seed", "5")]) == 0
    member = [json.loads(x) for x in (ens / "seed_5" / "metrics.jsonl").read_text().splitlines()]
    alone = [json.loads(x) for x in (single / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in member] == [0, 1]
    for a, b in zip(member, alone, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5)
        assert a["distortion"] == pytest.approx(b["distortion"], rel=1e-5)
    assert load_checkpoint(ens / "seed_3")["epoch"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--seeds", "1,1"], "duplicate"),
        (["--seeds", "4-2"], "seeds"),
        (["--seeds", ""], "seeds"),
        (["--seeds", "0,1", "--seed", "3"], "--seed and --seeds"),
        (["--seeds-per-block", "2"], "go with --seeds"),
        (["--workers", "2"], "go with --seeds"),
        (["--seeds", "0,1", "--workers", "0"], "--workers must be an integer in [1, 64]"),
        (["--seeds", "0,1", "--workers", "2", "--dask", "tcp://x:1"], "--workers and --dask"),
    ],
)
def test_train_seeds_bad_input_is_one_line(setup, capsys, extra, message):
    tmp, config, train, _ = setup
    assert main([*_quick(config, train, tmp / "bad", "--epochs", "1", *extra)]) == 2
    assert message in _one_error_line(capsys.readouterr().err).lower()
    assert not (tmp / "bad" / "ensemble.json").exists()


# ------------------------------------------------ --set overrides on the command line (docs/cli.md)
def test_train_set_overrides_the_config_file(setup, capsys):
    tmp, config, train, _ = setup
    run = tmp / "set"
    argv = _quick(config, train, run, "--epochs", "1")
    argv += ["--set", "optim.lr_values=[2e-3]", "--set", "run.seed=3"]
    argv += ["--set", "beta.mode=fixed", "--set", "model.latent_dim=3"]
    assert main(argv) == 0
    saved = TrainConfig.from_toml(run / "config.toml")
    assert saved.optim.lr_values == (2e-3,)
    assert saved.optim.lr_milestones == ()
    assert (saved.run.seed, saved.beta.mode, saved.model.latent_dim) == (3, "fixed", 3)
    assert saved.optim.epochs == 1  # --epochs on top


def test_train_with_a_model_preset_from_the_command_line(tmp_path, vae_data, capsys):
    """The models of ``--list`` are named with ``--set model.preset=NAME``."""
    argv = ["train", "--preset", "quick_hp", "--train", vae_data.train, "--out"]
    argv += [str(tmp_path / "p"), "--device", "cpu", "--no-progress", "--epochs", "1"]
    argv += ["--set", "model.preset=dense_vae_tiny", "--set", "beta.rec_epochs=1"]
    assert main(argv) == 0
    saved = TrainConfig.from_toml(tmp_path / "p" / "config.toml")
    assert (saved.model.grid, saved.model.blocks, saved.model.prior) == (17, (2, 2, 2), "std_norm")


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        (["--set", "optim.lr=1e-3"], ["unknown key 'lr' in [optim]", "lr_values", "epochs"]),
        (["--set", "sections.x=1"], ["unknown section 'sections'", "model, optim, beta"]),
        (["--set", "seed"], ["SECTION.KEY=VALUE"]),
        (["--set", "run.seed=three"], ["seed must be an integer"]),
        (["--set", "run.seed=3", "--seed", "4"], ["--seed and --set run.seed"]),
        (["--set", "optim.epochs=3"], ["--epochs and --set optim.epochs"]),
        (["--set", "run.seed=3", "--seeds", "0,1"], ["--set run.seed and --seeds"]),
        (["--set", "optim.lr_values=[1e-3,1e-4,1e-5]"], ["len(lr_values) - 1 = 2"]),
    ],
)
def test_a_bad_set_is_one_line_naming_what_is_known(setup, capsys, extra, names):
    tmp, config, train, _ = setup
    assert main([*_quick(config, train, tmp / "bad", "--epochs", "1", *extra)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert line.startswith("darcyvae train: error: ")
    for name in names:
        assert name in line
    assert not (tmp / "bad").exists()  # refused before anything was written


# ------------------------------------------------ one flag, help for every option (docs/cli.md)
def test_quiet_is_an_alias_of_no_progress():
    from darcyvae.cli import build_parser

    parser = build_parser()
    for flag in ("--no-progress", "--quiet"):
        assert parser.parse_args(["train", flag]).no_progress is True
    assert parser.parse_args(["train"]).no_progress is False
    for argv in (["generate", "--out", "x"], ["reproduce"]):
        assert parser.parse_args([*argv, "--no-progress"]).no_progress is True


def test_every_option_of_every_verb_has_help_and_says_its_default():
    """Was: generate's --n-train, --n-test, --seed, --rate and --well-width had no help,
    and --dist, --compression and --kernel did not say their defaults."""
    import argparse

    from darcyvae.cli import build_parser

    verbs = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    missing, no_default = [], []
    for verb, parser in verbs.choices.items():
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            name = f"{verb} {'/'.join(action.option_strings) or action.dest}"
            if not action.help or action.help == argparse.SUPPRESS:
                missing.append(name)
                continue
            default = action.default
            if default not in (None, False, [], argparse.SUPPRESS) and "default" not in action.help:
                no_default.append(f"{name} (default {default!r})")
    assert not missing, f"options without help: {missing}"
    assert not no_default, f"options whose help does not say their default: {no_default}"


def test_flags_only_leaves_out_the_python_names():
    from darcyvae.cli._errors import _flags_only

    cases = {
        "x.h5 exists; overwrite=True (--overwrite) replaces it.": "x.h5 exists; --overwrite replaces it.",
        "generate: dask_address (--dask) needs the optional package": "generate: --dask needs the optional package",
        "run the same command with --resume (resume=True) to continue": "run the same command with --resume to continue",
        "pass a smaller seeds_per_block (--seeds-per-block), e.g. 3.": "pass a smaller --seeds-per-block, e.g. 3.",
        "or space_check=False (--no-space-check) if": "or --no-space-check if",
        "train_ensemble: dask (--dask) needs": "train_ensemble: --dask needs",
        "choose another out_dir (--out).": "choose another --out.",
        "free some space, choose another out_dir, or pass": "free some space, choose another --out, or pass",
        "pass resume=True or pick another out_dir.": "pass --resume or pick another --out.",
        # names inside paths stay
        "'runs/out_dir/x' and '/a/resume=True'": "'runs/out_dir/x' and '/a/resume=True'",
        # ordinary words before a flag in parentheses stay
        "with a smaller block (--seeds-per-block)": "with a smaller block (--seeds-per-block)",
        "no flags here: loss (nats) and f(x) = 1": "no flags here: loss (nats) and f(x) = 1",
    }
    for text, expected in cases.items():
        assert _flags_only(text) == expected


def test_cli_errors_name_flags_not_python_keywords(setup, tmp_path, capsys, caplog, synthetic_h5):
    """Was: "overwrite=True (--overwrite)", "pass resume=True or pick another out_dir"."""
    tmp, config, train, _ = setup
    run = tmp / "run"
    assert main(_quick(config, train, run, "--epochs", "1")) == 0
    capsys.readouterr()
    assert main(_quick(config, train, run, "--epochs", "1")) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--resume" in line
    assert "--out" in line
    assert "resume=True" not in line
    assert "out_dir" not in line
    # A library warning printed through logging says the flag only, too.
    other = synthetic_h5(tmp / "other.h5", n=32, grid=17, seed=9)
    argv = _quick(config, other, run, "--epochs", "2", "--resume", "--allow-data-change")
    with caplog.at_level("WARNING"):
        assert main(argv) == 0
    warned = [r.getMessage() for r in caplog.records if "differ" in r.getMessage()]
    assert warned
    assert all("allow_data_change" not in m for m in warned), warned
    assert any("--allow-data-change" in m for m in warned), warned
    out = tmp_path / "data"
    assert main([*_GEN, "--out", str(out)]) == 0
    capsys.readouterr()
    assert main([*_GEN, "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert "--overwrite" in line
    assert "overwrite=True" not in line


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["generate", "--n-train", "-1"], "error: --n-train must be an integer in [1, inf]"),
        (["generate", "--chunk-size", "0"], "error: --chunk-size must be"),
        (["generate", "--kle", "0"], "error: --kle must be an integer in [1, "),
        (["generate", "--well-width", "2"], "error: --well-width must be a finite float"),
        (["generate", "--dist", "gaussian", "--sd", "-1"], "error: --sd must be > 0"),
        (["reproduce", "fig1", "--trials", "0"], "error: --trials must be an integer in [1, 1000]"),
        (
            ["reproduce", "fig1", "--seed", "-1"],
            "error: --seed must be an integer in [0, 4294967295]",
        ),
        (
            ["train", "--preset", "quick_hp", "--train", "x.h5", "--restarts", "-1"],
            "error: --restarts must be",
        ),
        (
            [
                "train",
                "--preset",
                "quick_hp",
                "--train",
                "x.h5",
                "--seeds",
                "0,1",
                "--seeds-per-block",
                "0",
            ],
            "error: --seeds-per-block must be >= 1",
        ),
    ],
)
def test_an_option_is_named_by_its_flag_in_the_error(tmp_path, capsys, argv, expected):
    """Was: "GenerateConfig: n_train must be ...", "run_training: max_restarts must be ..."."""
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    line = _one_error_line(capsys.readouterr().err)
    assert expected in line, line
    assert not out.exists()


def test_train_with_restarts_writes_the_trial_layout_that_evaluate_reads(setup, capsys):
    """``--restarts``: the ensemble's restart policy with one seed (seed_<s>, ensemble.json);
    ``evaluate OUT`` reads the accepted attempt, and the printed numbers are that run's."""
    tmp, config, train, test = setup
    out = tmp / "trial"
    assert main([*_quick(config, train, out, "--restarts", "1", "--seed", "4")]) == 0
    said = capsys.readouterr().out
    assert "1 attempt(s), 0 restart(s)" in said
    record = json.loads((out / "ensemble.json").read_text())
    assert record["max_restarts"] == 1
    assert record["members"][0]["out_dir"] == str(out / "seed_4")
    assert load_checkpoint(out / "seed_4")["config"]["run"]["seed"] == 4
    assert main(["evaluate", str(out), test, "--out", str(tmp / "ev"), "--device", "cpu"]) == 0
    direct = tmp / "ev_direct"
    assert (
        main(["evaluate", str(out / "seed_4"), test, "--out", str(direct), "--device", "cpu"]) == 0
    )
    a = json.loads((tmp / "ev" / "results.json").read_text())
    b = json.loads((direct / "results.json").read_text())
    assert a["test"] == b["test"]


def test_reproduce_threads_sets_torch_threads(tmp_path):
    """--threads reaches torch before the experiment runs (restored afterwards)."""
    import torch

    before = torch.get_num_threads()
    try:
        args = ["reproduce", "fig1", "--quick", "--no-progress", "--threads", "1"]
        assert main([*args, "--out", str(tmp_path / "f")]) == 0
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
