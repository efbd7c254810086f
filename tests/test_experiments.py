from __future__ import annotations

import json

import pytest
from darcyvae.cli import main
from darcyvae.experiments import list_experiments
from darcyvae.kle import kle_basis


def test_reproduce_fig1_quick_via_cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DARCYVAE_CACHE_DIR", str(tmp_path / "cache"))
    assert "fig1" in [e.name for e in list_experiments()]
    out = tmp_path / "out"
    assert main(["reproduce", "fig1", "--out", str(out), "--quick", "--seed", "3"]) == 0
    assert "fig1: wrote" in capsys.readouterr().out
    for name in ("fig1_kle_samples.png", "eigenvalue_decay.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    res = json.loads((out / "results.json").read_text())
    assert res["experiment"] == "fig1"
    assert res["quick"] is True
    assert res["seed"] == 3
    assert res["grid"] == 33
    assert res["n_modes"] == [2, 10, 100, 1000]
    fractions = [res["variance_fraction"][f"KLE{s}"] for s in res["n_modes"]]
    assert fractions == sorted(fractions)
    assert 0 < fractions[0] < fractions[-1] < 1
    # the numbers are those of the bases, now in the cache of this run
    again = kle_basis(grid=33, n_modes=100)
    assert again.info["source"] == "cache-superset"  # the first 100 of KLE1000
    assert res["variance_fraction"]["KLE100"] == pytest.approx(again.variance_fraction)
    assert set(res["basis_seconds"]) == {"KLE2", "KLE10", "KLE100", "KLE1000"}


def test_reproduce_lists_fig1(capsys):
    assert main(["reproduce", "--list"]) == 0
    assert "fig1" in capsys.readouterr().out


def test_demo_runs_end_to_end_and_resumes(tmp_path):
    from darcyvae.experiments import run_experiment

    out = tmp_path / "demo"
    res = run_experiment("demo", out, seed=0, quick=True, grid=17, n_train=64, n_test=32, epochs=2)
    assert res["epochs"] == 2
    for split in ("train", "test"):
        assert res[split]["rate"] > 0
        assert 0.5 <= res[split]["s_d"] <= 1.0
    assert (out / "summary.txt").read_text().startswith("darcyvae demo")
    assert {"reconstruction", "latent_vs_theta"} <= set(res["figures"])
    # Running again reuses the finished data and checkpoint: the same numbers.
    again = run_experiment("demo", out, seed=0, quick=True, grid=17, n_train=64, n_test=32, epochs=2)
    assert again["test"] == res["test"]
