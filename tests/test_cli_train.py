from __future__ import annotations

import json

import pytest
from _vae_data import write_synthetic_h5
from darcyvae.cli import main
from darcyvae.models import VAEConfig
from darcyvae.training import TrainConfig, load_checkpoint

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture
def setup(tmp_path):
    train = write_synthetic_h5(tmp_path / "train.h5", n=32, grid=17, seed=0)
    test = write_synthetic_h5(tmp_path / "test.h5", n=16, grid=17, seed=1)
    cfg = TrainConfig(
        model=VAEConfig(grid=17, blocks=(2, 2, 2)),
        epochs=3,
        rec_epochs=1,
        batch_size=16,
        lr_values=(5e-3,),
        lr_milestones=(),
        eval_every=1,
    )
    config = cfg.to_toml(tmp_path / "tiny.toml")
    return tmp_path, str(config), train, test


def test_train_list(capsys):
    assert main(["train", "--list"]) == 0
    out = capsys.readouterr().out
    assert "kle2_mixture4_hp" in out
    assert "dense_vae_paper" in out


def test_train_resume_and_evaluate(setup, capsys):
    tmp, config, train, test = setup
    run = str(tmp / "run")
    args = ["train", "--config", config, "--train", train, "--test", test, "--out", run]
    assert (
        main(
            [*args, "--device", "cpu", "--epochs", "2", "--seed", "4", "--quiet", "--threads", "1"]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "over-regularised" in out.lower()
    assert "S_D" in out
    ckpt = load_checkpoint(run)
    assert ckpt["epoch"] == 2
    assert ckpt["config"]["run"]["seed"] == 4
    # Running again without --resume refuses to overwrite.
    assert main([*args, "--device", "cpu", "--seed", "4", "--quiet"]) == 2
    assert "already exists" in capsys.readouterr().err
    assert main([*args, "--device", "cpu", "--seed", "4", "--resume", "--quiet"]) == 0
    assert load_checkpoint(run)["epoch"] == 3
    lines = (tmp / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [0, 1, 2]
    capsys.readouterr()
    ev = tmp / "eval"
    assert main(["evaluate", f"{run}/checkpoint.pt", test, "--out", str(ev)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("train: ")  # the recorded training file was found and evaluated
    results = json.loads((ev / "results.json").read_text())
    assert results["train"]["n_samples"] == 32
    assert results["test"]["n_samples"] == 16
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
    assert "set model.grid" in capsys.readouterr().err
    assert main(["evaluate", str(tmp / "none.pt"), train, "--out", str(tmp / "e")]) == 2
    assert main(["train", "--list", "--threads", "0"]) == 2
    assert "--threads must be >= 1" in capsys.readouterr().err
