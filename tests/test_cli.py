"""The ``darcyvae`` command line: train and evaluate, errors as one line, exit codes."""

from __future__ import annotations

import json

import pytest
from darcyvae import training
from darcyvae.checkpoint import load_checkpoint, save_checkpoint
from darcyvae.cli import main
from darcyvae.config import TrainConfig
from darcyvae.models import model_config

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def setup(tmp_path, vae_data, synthetic_h5):
    train = synthetic_h5(tmp_path / "train.h5", n=32, grid=17, seed=0)
    cfg = TrainConfig(
        model=model_config("dense_vae_tiny"),
        epochs=3,
        rec_epochs=1,
        batch_size=16,
        lr_values=(5e-3,),
        lr_milestones=(),
        eval_every=1,
    )
    config = cfg.to_toml(tmp_path / "tiny.toml")
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
