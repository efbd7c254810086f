from __future__ import annotations

import inspect
import json
import math
import re

import numpy as np
import pytest
from darcyvae import experiments
from darcyvae.checkpoint import CHECKPOINT_NAME, CONFIG_NAME, SUMMARY_NAME
from darcyvae.cli import main
from darcyvae.config import TrainConfig
from darcyvae.ensemble.results import member_dir
from darcyvae.experiments import cell, list_experiments, run_all, run_experiment
from darcyvae.experiments._common import fmt
from darcyvae.experiments.claims import VERDICTS
from darcyvae.kle import kle_basis
from hypothesis import given
from hypothesis import strategies as st

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALL = [e.name for e in list_experiments()]
"""Every registered experiment, as the registry finds them (no list kept by hand)."""


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DARCYVAE_CACHE_DIR", str(tmp_path / "cache"))


# --------------------------------------------------------------------------- verdict rules


def test_report_cells_escape_pipes():
    assert cell("|k/n - p| <= 0.2\nnext") == "\\|k/n - p\\| <= 0.2 next"


def test_fmt_is_the_one_number_format():
    assert fmt(0.91234) == "0.912"
    assert fmt(-2074.56, 1) == "-2074.6"
    assert fmt(None) == "n/a"
    assert fmt(3) == "3"
    assert fmt(1.5e-6) == "1.5e-06"


def test_scales_are_data_and_paper_scale_is_the_papers():
    paper = experiments.get_scale("paper")
    assert (paper.grid, paper.blocks, paper.n_train, paper.n_test) == (65, (4, 6, 4), 512, 512)
    assert (paper.epochs, paper.rec_epochs, paper.hp_epochs, paper.hp_rec_epochs) == (
        6500,
        4000,
        14000,
        6500,
    )
    assert paper.trials == 50
    assert paper.betas == (100.0, 10.0, 5.0, 2.0, 1.0, 0.1, 0.01, 0.001)
    cpu = experiments.get_scale("cpu")
    assert cpu.trials >= 20
    with pytest.raises(ValueError, match="unknown scale 'huge'"):
        experiments.get_scale("huge")


# --------------------------------------------------------------------------- command line


def test_list_names_every_experiment_and_scale(capsys):
    assert main(["reproduce", "--list"]) == 0
    out = capsys.readouterr().out
    for name in ALL:
        assert re.search(rf"^{re.escape(name)}\s", out, re.MULTILINE), name
    assert "smoke, cpu, cpu-fast, paper" in out
    # each experiment's declared minutes (what --jobs schedules by); skl waits for the others
    for e in list_experiments():
        line = next(x for x in out.splitlines() if x.startswith(e.name + " "))
        assert (f"[~{e.cpu_minutes:g} min at cpu, 1 core]" in line) != e.after_others


def test_the_registry_finds_every_module_and_orders_skl_last():
    """Each public module of darcyvae.experiments registers its experiments by itself;
    ``reproduce all`` runs them by their declared order, skl (which scores the others'
    models) last."""
    import importlib
    import pkgutil

    modules = {
        i.name: importlib.import_module(f"{experiments.__name__}.{i.name}")
        for i in pkgutil.iter_modules(experiments.__path__)
        if i.name[0] != "_"
    }
    declaring = {n for n, m in modules.items() if "@register_experiment(" in inspect.getsource(m)}
    registered = {e.fn.__module__.rsplit(".", 1)[-1] for e in list_experiments()}
    assert registered == declaring
    assert "claims" in set(modules) - declaring  # public, and an experiment of none
    assert len(ALL) == len(set(ALL)) >= 13
    assert ALL[-1] == "skl"
    orders = [e.order for e in list_experiments()]
    assert orders == sorted(orders)
    assert len(set(orders)) == len(orders)  # the order of ``reproduce all`` is not left to names
    with pytest.raises(ValueError, match="already exists"):
        experiments.register_experiment("fig1", "again", order=1)(lambda ctx: {})


def test_no_name_is_a_usage_error(capsys):
    assert main(["reproduce"]) == 2
    err = capsys.readouterr().err
    assert "usage:" in err
    assert "name an experiment" in err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["reproduce", "nosuch", "--scale", "smoke"], "unknown experiment 'nosuch'"),
        (["reproduce", "fig1", "--scale", "huge"], "unknown scale 'huge'"),
        (["reproduce", "normal", "--scale", "smoke", "--trials", "0"], "trials"),
        (["reproduce", "fig1", "--scale", "cpu", "--quick"], "--quick means --scale smoke"),
    ],
)
def test_bad_input_exits_nonzero_and_writes_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "results.json").exists()


@pytest.mark.slow
def test_folder_of_another_experiment_is_refused_then_overwritten(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "fig1", "--scale", "smoke", "--out", str(out)]) == 0
    before = (out / "results.json").read_bytes()
    capsys.readouterr()
    assert main(["reproduce", "rotation", "--scale", "smoke", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "holds results of experiment 'fig1'" in err
    assert "--overwrite" in err
    assert (out / "results.json").read_bytes() == before  # untouched
    # another seed of the same experiment is refused as well
    assert main(["reproduce", "fig1", "--scale", "smoke", "--seed", "1", "--out", str(out)]) == 2
    assert "seed 0" in capsys.readouterr().err
    # a folder darcyvae did not write is never cleared, not even with --overwrite
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("keep me")
    for extra in ([], ["--overwrite"]):
        assert main(["reproduce", "fig1", "--scale", "smoke", "--out", str(foreign), *extra]) == 2
        assert "not written by darcyvae reproduce" in capsys.readouterr().err
    assert (foreign / "thesis.tex").read_text() == "keep me"
    # --overwrite starts over: the old results go, new ones come
    (out / "stale.txt").write_text("old")
    assert (
        main(["reproduce", "rotation", "--scale", "smoke", "--out", str(out), "--overwrite"]) == 0
    )
    assert not (out / "stale.txt").exists()
    assert not (out / "fig1_kle_samples.png").exists()
    assert json.loads((out / "results.json").read_text())["experiment"] == "rotation"


def test_reproduce_fig1_smoke_via_cli(tmp_path, capsys):
    out = tmp_path / "out"
    assert main(["reproduce", "fig1", "--out", str(out), "--quick", "--seed", "3"]) == 0
    assert "fig1: wrote" in capsys.readouterr().out
    for name in ("fig1_kle_samples.png", "eigenvalue_decay.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    res = json.loads((out / "results.json").read_text())
    assert res["experiment"] == "fig1"
    assert res["scale"] == "smoke"
    assert res["quick"] is True
    assert res["seed"] == 3
    assert res["grid"] == 17
    assert res["n_modes"] == [2, 10, 100, 289]  # KLE1000 capped at all 17 x 17 modes
    fractions = [res["variance_fraction"][f"KLE{s}"] for s in res["n_modes"]]
    assert fractions == sorted(fractions)
    assert 0 < fractions[0] < fractions[-1] == pytest.approx(1.0)
    # the numbers are those of the bases, now in the cache of this run
    again = kle_basis(grid=17, n_modes=100)
    assert again.info["source"] == "cache-superset"  # the first 100 of KLE289
    assert res["variance_fraction"]["KLE100"] == pytest.approx(again.variance_fraction)
    assert set(res["basis_seconds"]) == {"KLE2", "KLE10", "KLE100", "KLE289"}
    assert res["claims"][0]["verdict"] == "reproduced"
    assert "darcyvae reproduce fig1 --scale smoke --seed 3" in (out / "report.md").read_text()


@pytest.mark.slow
def test_demo_runs_end_to_end_and_resumes(tmp_path):
    out = tmp_path / "demo"
    kw = {"scale": "smoke", "seed": 0, "grid": 17, "n_train": 64, "n_test": 32, "epochs": 2}
    res = run_experiment("demo", out, progress=False, **kw)
    assert set(res["arms"]) == {"no HP", "HP"}
    summary = (out / "summary.txt").read_text()
    assert summary.startswith("darcyvae demo: KLE2 (mixture4), grid 17, 64 train / 32 test")
    assert "S_KL: lower is better" in summary
    for arm, a in res["arms"].items():
        assert a["epochs"] == 2
        assert f"{arm} (2 epochs):" in summary
        assert a["test"]["n_samples"] == 32
        assert a["train"]["n_samples"] == 64
        # the summary's verdict is the evaluation's: a 2-epoch model is not trained
        assert not a["trained"]
        assert a["test"]["margin_per_element"] < 0.05
        assert {"reconstruction", "latent_vs_theta", "latent_traversal"} <= set(
            a["evaluation_figures"]
        )
    assert summary.count("trained          NO:") == 2
    assert "latent_vs_theta.png" in " ".join(res["figures"])
    # Running again reuses the finished data and checkpoints: the same numbers.
    again = run_experiment("demo", out, progress=False, **kw)
    assert again["arms"] == res["arms"]


# --------------------------------------------------------------------------- every experiment


def _check_report(out, res):
    report = (out / "report.md").read_text()
    assert f"darcyvae reproduce {res['experiment']} --scale smoke" in report
    if not res["claims"]:
        assert "makes no claim of the paper's to judge" in report
    else:
        assert "| the paper's claim | measured here | verdict | rule |" in report
    for c in res["claims"]:
        assert c["verdict"] in VERDICTS
        assert c["claim"]
        assert c["measured"]
        assert c["rule"]
        row = f"| {cell(c['claim'])} | {cell(c['measured'])} | **{c['verdict']}** | {cell(c['rule'])} |"
        assert row in report  # the report shows exactly the numbers of results.json
    for r in res.get("trial_table", []):
        assert f"| {r['arm']} | {r['seed']} | {fmt(r['test_rate'])} |" in report
        assert (
            f"| {fmt(r['margin'], 1)} | {fmt(r['margin_per_element'])} | "
            f"{r['beats_bound']} | {r['over_regularized']} |"
        ) in report
    for f in res["figures"]:
        assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f
        assert f"![{f}]({f})" in report


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """``smoke_run(name) -> (out, results)``: experiment ``name`` at the smoke scale, run
    once per module in a folder of its own (``skl`` there finds no other models)."""
    done = {}

    def run(name):
        if name not in done:
            out = tmp_path_factory.mktemp("smoke") / name
            done[name] = (out, run_experiment(name, out, scale="smoke", progress=False))
        return done[name]

    return run


@pytest.mark.slow
@pytest.mark.parametrize("name", ALL)
def test_every_experiment_runs_at_smoke_scale(smoke_run, name):
    out, res = smoke_run(name)
    assert res["experiment"] == name
    assert res["scale"] == "smoke"
    assert res["scale_settings"]["grid"] == 9
    _check_report(out, res)
    stored = json.loads((out / "results.json").read_text())
    assert stored["claims"] == json.loads(json.dumps(res["claims"]))
    # an experiment that trains records the seeds of every arm
    trained = sorted(out.rglob(CHECKPOINT_NAME))
    assert bool(res["seeds"]) == bool(trained)
    # every trial is kept and its bound margin recorded (no dropping, no restarts)
    if "trial_table" in res:
        n_arms = len(res["seeds"])
        n_seeds = sum(len(v) for v in res["seeds"].values())
        assert len(res["trial_table"]) == n_seeds >= n_arms
        assert len(trained) >= n_seeds
    for r in res.get("trial_table", []):
        assert r["margin"] == pytest.approx(r["bound_test"] - r["test_distortion"])
        assert r["beats_bound"] == (r["margin_per_element"] > 0.05)
        assert r["margin_per_element"] == pytest.approx(r["margin"] / (3 * 9 * 9))
        # a smoke model does not beat the bound
        assert not r["beats_bound"]
    # so disentanglement is never judged on a smoke model
    judged = [c for c in res["claims"] if "S_D" in c["measured"] and "trained" in c["measured"]]
    assert all(c["verdict"] == "not judged" for c in judged)
    # ... and a count over trained trials says which trials it left out
    for c in res["claims"]:
        if "trained trials" in c["measured"]:
            assert "did not beat the Theorem-1 bound and are left out" in c["measured"]


@pytest.mark.slow
def test_hp_ablation_trains_each_prior_decoder(smoke_run):
    out, res = smoke_run("hp-ablation")
    assert set(res["arms"]) == {"HP released", "HP mlp"}
    for arm, decoder in (("HP released", "released"), ("HP mlp", "mlp")):
        for seed in res["seeds"][arm]:
            folder = member_dir(out / arm.replace(" ", "_"), seed)
            assert TrainConfig.from_toml(folder / CONFIG_NAME).model.hp_decoder == decoder
    fisher = next(c for c in res["claims"] if c["id"] == "decoder-matters")
    assert fisher["verdict"] == "not judged"
    assert fisher["values"]["p_value"] == res["fisher_p"]


def test_an_unknown_model_setting_is_a_clear_error(tmp_path):
    from darcyvae.experiments._common import Context, train_config
    from darcyvae.models import VAEConfig

    ctx = Context("x", tmp_path, tmp_path, experiments.get_scale("smoke"), 0, None, "cpu", False)
    with pytest.raises(ValueError, match="no field 'no_such_field'"):
        train_config(ctx, model={"no_such_field": 1})
    # the paper's HP arms use the released prior decoder (docs/model.md §4c); an HP arm may
    # ask for the other one, and models without HP keep the VAEConfig default
    assert train_config(ctx, prior="hierarchical").model.hp_decoder == "released"
    mlp = train_config(ctx, prior="hierarchical", model={"hp_decoder": "mlp"})
    assert mlp.model.hp_decoder == "mlp"
    assert train_config(ctx).model.hp_decoder == VAEConfig().hp_decoder
    assert train_config(ctx, mixture=True).rec_epochs == 2 * ctx.scale.rec_epochs
    # a section setting that does not exist is refused as well
    with pytest.raises(ValueError, match="unknown keys"):
        train_config(ctx, optim={"no_such_setting": 1})


@pytest.mark.slow
def test_rerun_reuses_and_resumes_trials(tmp_path):
    out = tmp_path / "interpolate"
    res = run_experiment("interpolate", out, scale="smoke", progress=False)
    ckpts = sorted(
        member_dir(out / "trials", s) / CHECKPOINT_NAME for s in res["seeds"]["endpoints"]
    )
    assert len(ckpts) == 2
    mtimes = [p.stat().st_mtime_ns for p in ckpts]
    data = sorted(out.glob("data/*/*.h5"))
    data_mtimes = [p.stat().st_mtime_ns for p in data]
    # a finished rerun trains and generates nothing: the same files, the same numbers
    again = run_experiment("interpolate", out, scale="smoke", progress=False)
    assert [p.stat().st_mtime_ns for p in ckpts] == mtimes
    assert [p.stat().st_mtime_ns for p in data] == data_mtimes
    assert again["trial_table"] == res["trial_table"]
    assert again["points"] == res["points"]
    # an interrupted trial (checkpoint, no summary yet) is resumed from its checkpoint
    (ckpts[1].parent / SUMMARY_NAME).unlink()
    third = run_experiment("interpolate", out, scale="smoke", progress=False)
    assert third["trial_table"] == res["trial_table"]


def test_more_trials_reuse_the_finished_ones(tmp_path):
    from darcyvae.experiments._common import Context, dataset, train_config, train_trials

    ctx = Context(
        "normal", tmp_path, tmp_path.parent, experiments.get_scale("smoke"), 0, None, "cpu", False
    )
    paths = dataset(ctx, "normal")
    config = train_config(ctx, optim={"epochs": 1}, beta={"rec_epochs": 0})
    first = train_trials(config, [0], paths["train"], paths["test"], tmp_path / "t", "cpu", False)
    first_ckpt = member_dir(tmp_path / "t", 0) / CHECKPOINT_NAME
    mtime = first_ckpt.stat().st_mtime_ns
    both = train_trials(config, [0, 1], paths["train"], paths["test"], tmp_path / "t", "cpu", False)
    assert both[0] == first[0]
    assert first_ckpt.stat().st_mtime_ns == mtime
    assert both[1]["seed"] == 1
    assert both[1]["status"] == "finished"
    assert both[0]["test"] != both[1]["test"]  # a different seed, a different model


def test_more_trials_after_an_interrupted_ensemble(tmp_path):
    """An arm's ensemble of seeds 0, 1 stopped early (here: trained 1 of 2 epochs); asking
    for seeds 0-3 finishes that ensemble as it started, then trains 2, 3 as a new one in the
    same folder; the first ensemble's summary is kept. Members that diverged count as
    finished results and are not trained again."""
    from darcyvae.ensemble import train_ensemble
    from darcyvae.experiments._common import Context, dataset, train_config, train_trials

    ctx = Context(
        "normal", tmp_path, tmp_path.parent, experiments.get_scale("smoke"), 0, None, "cpu", False
    )
    paths = dataset(ctx, "normal")
    config = train_config(ctx, optim={"epochs": 2}, beta={"rec_epochs": 0})
    arm = tmp_path / "arm"
    args = (paths["train"], paths["test"], arm, "cpu", False)
    train_trials(config.replace(epochs=1), [0, 1], *args)
    recs = train_trials(config, [0, 1, 2, 3], *args)
    assert [r["epochs"] for r in recs] == [2, 2, 2, 2]
    assert json.loads((arm / "ensemble_earlier_1.json").read_text())["seeds"] == [0, 1]
    assert json.loads((arm / "ensemble.json").read_text())["seeds"] == [2, 3]
    # seeds 0, 1 are the run that was not interrupted
    whole = train_ensemble(
        config, [0, 1], paths["train"], paths["test"], out_dir=tmp_path / "whole", progress=False
    )
    for r in recs[:2]:
        assert r["test"]["distortion"] == pytest.approx(
            whole.member(r["seed"]).final["test"]["distortion"], rel=1e-5
        )
    # two members marked diverged: finished, not trained again
    stamps = {}
    for s in (2, 3):
        summary = member_dir(arm, s) / SUMMARY_NAME
        summary.write_text(json.dumps({"seed": s, "status": "diverged", "epoch": 1}))
        stamps[s] = (member_dir(arm, s) / CHECKPOINT_NAME).stat().st_mtime_ns
    again = train_trials(config, [0, 1, 2, 3], *args)
    assert [r["status"] for r in again] == ["finished", "finished", "diverged", "diverged"]
    assert not again[2]["beats_bound"]
    for s in (2, 3):
        assert (member_dir(arm, s) / CHECKPOINT_NAME).stat().st_mtime_ns == stamps[s]


@pytest.mark.slow
def test_reproduce_all_writes_top_report_and_skl_scores_the_others(tmp_path, capsys):
    out = tmp_path / "all"
    res = run_all(out, scale="smoke", progress=False, names=["fig1", "normal", "skl"])
    assert list(res) == ["fig1", "normal", "skl"]  # skl last
    top = (out / "report.md").read_text()
    for name in res:
        assert f"[report]({name}/report.md)" in top
        for f in res[name]["figures"]:
            assert f"({name}/{f})" in top
            assert (out / name / f).is_file()
    skl = res["skl"]
    assert len(skl["models"]) == 2  # the two normal trials
    for m in skl["models"]:
        assert m["experiment"] == "normal"
        assert np.isfinite(m["s_kl"])
        assert 0.5 <= m["s_d"] <= 1.0
        assert m["trained"] is False  # smoke models do not beat the bound
    assert skl["claims"][0]["verdict"] == "not judged"
    # the root holds 'all': a single experiment may not take it over
    assert main(["reproduce", "fig1", "--scale", "smoke", "--out", str(out)]) == 2
    assert "holds results of experiment 'all'" in capsys.readouterr().err


@pytest.mark.slow
def test_reproduce_all_jobs_gives_the_results_of_one_after_the_other(tmp_path, caplog):
    """--jobs 2: the experiments run in two worker processes of one thread each, and give
    what a one-thread run gives one after the other: the same claims, the same trained
    models (skl's scores of normal's two trials), the same report rows. skl reads the
    others' folders, so it waits for them (it finds both normal trials)."""
    import torch

    names = ["fig1", "normal", "skl"]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        serial = run_all(tmp_path / "serial", scale="smoke", progress=False, names=names)
        torch.set_num_threads(2)  # shared out: one thread per worker
        with caplog.at_level("INFO", logger="darcyvae.experiments"):
            par = run_all(tmp_path / "par", scale="smoke", progress=False, names=names, jobs=2)
    finally:
        torch.set_num_threads(threads)
    assert list(par) == names  # the registry's order, whatever order they finished in
    assert "2 processes of 1 thread(s) each" in caplog.text
    for name in names:
        assert "error" not in par[name], par[name].get("error")
        assert [(c["id"], c["measured"], c["verdict"]) for c in par[name]["claims"]] == [
            (c["id"], c["measured"], c["verdict"]) for c in serial[name]["claims"]
        ]
    assert len(par["skl"]["models"]) == 2
    for a, b in zip(par["skl"]["models"], serial["skl"]["models"], strict=True):
        assert (a["folder"], a["s_d"], a["s_kl"]) == (b["folder"], b["s_d"], b["s_kl"])
    top = (tmp_path / "par" / "report.md").read_text()
    assert "--jobs 2" in top
    rows = [line for line in top.splitlines() if line.startswith("| `")]
    serial_rows = (tmp_path / "serial" / "report.md").read_text().splitlines()
    assert rows == [line for line in serial_rows if line.startswith("| `")]


@pytest.mark.slow
def test_reproduce_one_experiment_with_jobs_trains_an_arm_in_blocks(tmp_path):
    """reproduce normal --jobs 2: the arm's two trials train as two blocks in two worker
    processes, and come out as the one-block run's (the engine's members equal their single
    runs to float32 rounding); the report records --jobs."""
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_experiment("normal", tmp_path / "one", scale="smoke", progress=False)
        torch.set_num_threads(2)
        two = run_experiment("normal", tmp_path / "two", scale="smoke", progress=False, jobs=2)
    finally:
        torch.set_num_threads(threads)
    arm = "std-normal_prior"
    assert json.loads((tmp_path / "two" / arm / "ensemble.json").read_text())["blocks"] == [
        [0],
        [1],
    ]
    assert json.loads((tmp_path / "one" / arm / "ensemble.json").read_text())["blocks"] == [[0, 1]]
    assert len(one["trial_table"]) == len(two["trial_table"]) == 2
    for a, b in zip(one["trial_table"], two["trial_table"], strict=True):
        assert (a["arm"], a["seed"]) == (b["arm"], b["seed"])
        for key in ("test_rate", "test_distortion", "s_d"):
            assert math.isclose(a[key], b[key], rel_tol=1e-4, abs_tol=1e-5), (key, a, b)
    assert "--jobs 2" in (tmp_path / "two" / "report.md").read_text()


@pytest.mark.slow
def test_reproduce_demo_with_jobs_trains_its_arms_side_by_side(tmp_path, caplog):
    """reproduce demo --jobs 2: one model per arm, fewer than the jobs, so the two arms
    train at once, one process each, and give what a one-thread run gives arm after arm:
    the demo is deterministic, so its summary is the same to the digit."""
    import torch

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = run_experiment("demo", tmp_path / "one", scale="smoke", progress=False)
        torch.set_num_threads(2)  # shared out: one thread per arm
        with caplog.at_level("INFO", logger="darcyvae.experiments"):
            two = run_experiment("demo", tmp_path / "two", scale="smoke", progress=False, jobs=2)
    finally:
        torch.set_num_threads(threads)
    assert "arms no HP, HP side by side in 2 processes of 1 thread(s) each" in caplog.text
    for arm in ("no HP", "HP"):
        assert one["arms"][arm]["test"] == two["arms"][arm]["test"]
        assert one["arms"][arm]["epochs"] == two["arms"][arm]["epochs"]

    def summary(run: str) -> list[str]:
        text = (tmp_path / run / "summary.txt").read_text()
        return [line for line in text.splitlines() if "figures:" not in line]

    assert summary("one") == summary("two")
    assert "--jobs 2" in (tmp_path / "two" / "report.md").read_text()


def test_reproduce_all_jobs_is_checked_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(ValueError, match="jobs"):
        run_all(tmp_path / "x", scale="smoke", progress=False, names=["fig1"], jobs=0)
    assert not (tmp_path / "x").exists()
    assert (
        main(["reproduce", "fig1", "--scale", "smoke", "--jobs", "0", "--out", str(tmp_path / "y")])
        == 2
    )
    assert "--jobs must be" in capsys.readouterr().err
    assert not (tmp_path / "y").exists()


def test_the_registry_declares_what_reproduce_all_jobs_schedules_by():
    """Every experiment states its measured cpu minutes; only skl, which scores the models
    the others trained, waits for them."""
    exps = list_experiments()
    assert all(e.cpu_minutes > 0 for e in exps)
    assert [e.name for e in exps if e.after_others] == ["skl"]
    with pytest.raises(ValueError, match="cpu_minutes"):
        experiments.register_experiment("new-one", "x", order=5, cpu_minutes=0)(lambda ctx: {})
    assert "new-one" not in [e.name for e in list_experiments()]


def test_rotated_rate_is_invariant_for_the_standard_normal_prior_only():
    import torch
    from darcyvae.experiments.rotation import rotated_rate
    from darcyvae.losses import gaussian_kl
    from darcyvae.models import DenseVAE, VAEConfig

    class _Data:
        pass

    torch.manual_seed(0)
    data = _Data()
    data.y = torch.randn(16, 3, 9, 9)
    base = {"grid": 9, "blocks": (1, 1, 1), "growth_rate": 2, "fc_hidden": 8}
    model = DenseVAE(VAEConfig(**base)).eval()
    omegas = np.linspace(0, np.pi / 2, 5)
    rates = rotated_rate(model, data, omegas, n_draws=4000, seed=1)
    assert np.ptp(rates) < 1e-4 * abs(rates[0])
    with torch.no_grad():
        mu, logvar = model.encode(data.y)
        kl = float(gaussian_kl(mu, logvar).sum(1).mean())
    assert rates[0] == pytest.approx(kl, rel=0.05, abs=0.02)  # Monte Carlo of the closed form
    hp = DenseVAE(VAEConfig(**base, prior="hierarchical")).eval()
    hp_rates = rotated_rate(hp, data, omegas, n_draws=16, seed=1)
    assert np.ptp(hp_rates) > 1e-3 * abs(hp_rates[0])


@given(st.floats(-1e4, 1e4, allow_nan=False))
def test_fmt_rounds_to_the_stated_digits(x):
    assert float(fmt(x)) == pytest.approx(x, abs=5e-4, rel=1e-2)


@given(st.integers(-5, 0))
def test_nonpositive_trials_are_refused_before_anything_is_written(tmp_path_factory, trials):
    out = tmp_path_factory.mktemp("t") / "out"
    with pytest.raises(ValueError, match="trials"):
        run_experiment("normal", out, scale="smoke", trials=trials, progress=False)
    assert not out.exists()


def test_a_folder_in_use_is_refused(tmp_path, capsys):
    from darcyvae._lock import folder_lock

    out = tmp_path / "busy"
    with folder_lock(out, "another darcyvae reproduce"):
        assert main(["reproduce", "fig1", "--scale", "smoke", "--out", str(out)]) == 2
    assert "in use" in capsys.readouterr().err
    assert not (out / "results.json").exists()


def test_a_diverged_trial_is_kept_as_a_record(tmp_path):
    from darcyvae.errors import TrainingDivergedError
    from darcyvae.experiments._common import require_finished, trial_record

    rec = trial_record(tmp_path / "seed_7", 7, (-100.0, 243), "non-finite loss in epoch 3")
    assert rec["status"] == "diverged"
    assert rec["seed"] == 7
    assert not rec["beats_bound"]
    assert not rec["over_regularized"]
    assert not rec["disentangled"]
    with pytest.raises(TrainingDivergedError, match=r"seed\(s\) \[7\] diverged"):
        require_finished([rec], "landscape")


@pytest.mark.slow
def test_landscape_walk_resumes_from_its_log(tmp_path):
    """The walk's finished paths are read back from walk.jsonl, not evaluated again: a rerun
    gives the same curves; a path marked in the log comes back as logged (so it was read);
    an interrupted walk (the log cut after two paths) finishes to the uninterrupted curves;
    a log of another solution is not used."""
    from darcyvae.experiments.landscape import WALK_LOG

    out = tmp_path / "landscape"
    first = run_experiment("landscape", out, scale="smoke", progress=False)
    log_file = out / WALK_LOG
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    scale = experiments.get_scale("smoke")
    assert len(records) == scale.landscape_inits + scale.landscape_directions
    # marked: the first direction's first loss
    records[scale.landscape_inits]["points"][0]["loss"] = 12345.0
    log_file.write_text("".join(json.dumps(r) + "\n" for r in records[:-1]) + '{"torn')
    again = run_experiment("landscape", out, scale="smoke", progress=False)
    assert again["directions_loss"][0][0] == 12345.0
    assert again["lines"] == first["lines"]
    assert again["directions_loss"][1:] == first["directions_loss"][1:]  # the last re-evaluated
    # another solution's log: every path evaluated afresh, the file rewritten for this key
    for r in records:
        r["key"]["solution"] = "0" * 64
    log_file.write_text("".join(json.dumps(r) + "\n" for r in records))
    fresh = run_experiment("landscape", out, scale="smoke", progress=False)
    assert fresh["directions_loss"] == first["directions_loss"]
    assert fresh["lines"] == first["lines"]
    kept = [json.loads(line) for line in log_file.read_text().splitlines()]
    assert len(kept) == len(records)
    assert all(r["key"]["solution"] != "0" * 64 for r in kept)


@given(points=st.integers(2, 41), refine=st.integers(0, 20))
def test_landscape_line_grid_refines_the_last_step(points, refine):
    """The uniform grid, plus ``refine`` points between the last grid step and 1e-3 short of
    the solution, geometrically spaced (equal ratios of the gaps to alpha = 1)."""
    from darcyvae.experiments.landscape import _line_alphas

    alphas = np.linspace(0.0, 1.0, points)
    grid = _line_alphas(alphas, refine)
    assert np.all(np.diff(grid) > 0)
    assert np.all(np.isin(alphas, grid))
    extra = np.setdiff1d(grid, alphas)
    step = alphas[1] - alphas[0]
    if refine == 0 or step <= 1e-3:
        assert len(extra) <= refine
        return
    assert len(extra) == refine
    assert extra[0] > 1.0 - step
    assert math.isclose(extra[-1], 1.0 - 1e-3)
    gaps = 1.0 - extra
    assert np.allclose(gaps[1:] / gaps[:-1], (1e-3 / step) ** (1 / refine))


def test_scales_state_only_what_differs_from_the_paper():
    """Every Scale field defaults to the paper's setting; the named scales override some."""
    paper = experiments.get_scale("paper")
    assert paper == experiments.Scale()
    assert (paper.grid, paper.epochs, paper.hp_epochs, paper.ss_batch) == (65, 6500, 14000, 512)
    assert paper.lr_values == (5e-4, 1e-4)
    assert paper.hp_lr_values == (3e-4, 5e-5, 2.5e-5)
    assert paper.normalize == "none"
    assert paper.output_logvar_init == "zero"
    fast = experiments.get_scale("cpu-fast")
    assert (fast.grid, fast.normalize, fast.lr_values) == (17, "channel", (3e-3, 2e-4))
    assert experiments.get_scale("smoke").dpi >= 100  # legible figures at every scale


@pytest.mark.slow
def test_skl_finds_the_test_data_of_a_moved_run_folder(tmp_path):
    """The checkpoints record their training file's absolute path; after the folder of a
    `reproduce all` run is moved, skl finds each model's test file under its experiment."""
    import shutil

    first = tmp_path / "first"
    run_all(first, scale="smoke", progress=False, names=["normal"])
    moved = tmp_path / "moved"
    shutil.move(first, moved)
    res = run_all(moved, scale="smoke", progress=False, names=["skl"])["skl"]
    assert res["skipped"] == []
    assert [m["experiment"] for m in res["models"]] == ["normal", "normal"]


def test_skl_claim_keeps_collapsed_latents_ranked_last():
    """A collapsed latent scores S_KL = inf (docs/scores.md §5); the Fig. 13 claim keeps it in
    the medians and the rank correlation instead of dropping it as non-finite."""
    from darcyvae.experiments.skl import _claims

    rows = [
        {"trained": True, "class": "disentangled", "s_d": 0.95 + 0.01 * i, "s_kl": 0.01 * i}
        for i in range(3)
    ] + [
        {"trained": True, "class": "rotated", "s_d": 0.5 + 0.01 * i, "s_kl": s}
        for i, s in enumerate([1.0, float("inf"), float("inf")])
    ]
    (c,) = _claims(rows)
    assert c["values"]["median_other"] == float("inf")
    assert c["values"]["spearman"] is not None
    assert c["values"]["spearman"] < -0.5
    assert c["verdict"] == "reproduced"


def test_reproduce_all_compares_each_verdict_with_an_earlier_run(tmp_path):
    """--compare: the robust? column gives each claim's verdict in the other run, "(same)" when
    it agrees; a folder holding no 'reproduce all' run is a clear error before anything runs."""
    first = tmp_path / "a"
    run_all(first, scale="smoke", progress=False, names=["fig1"])
    second = tmp_path / "b"
    run_all(second, scale="smoke", progress=False, names=["fig1"], compare=first)
    top = (second / "report.md").read_text()
    assert "| robust? |" in top
    assert "| smoke: reproduced (same) |" in top
    assert f"--compare {first}" in top
    # A different verdict in the compared run shows as such.
    stored = first / "fig1" / "results.json"
    res = json.loads(stored.read_text())
    res["claims"][0]["verdict"] = "partly"
    stored.write_text(json.dumps(res))
    run_all(second, scale="smoke", progress=False, names=["fig1"], compare=first)
    assert "| smoke: partly |" in (second / "report.md").read_text()
    with pytest.raises(ValueError, match="holds no 'reproduce all' run"):
        run_all(tmp_path / "c", scale="smoke", progress=False, names=["fig1"], compare=tmp_path)
    assert not (tmp_path / "c").exists()


def test_robust_column_reads_the_sensitivity_grid_for_mixture4_claims():
    from darcyvae.experiments import _robust

    c = {"id": "HP-half-disentangle", "verdict": "partly"}
    grid = {
        "claims": [
            {
                "id": "robust-HP-half-disentangle",
                "values": {"verdicts": {"a": "partly", "b": "partly"}, "robust": True},
            },
        ]
    }
    assert _robust("mixture4", c, {"sensitivity": grid}, None) == "grid: robust (2 cells)"
    grid["claims"][0]["values"] = {"verdicts": {"a": "partly", "b": "reproduced"}, "robust": False}
    assert _robust("mixture4", c, {"sensitivity": grid}, None) == "grid: depends (2 cells)"
    assert _robust("gaussian", c, {"sensitivity": grid}, None) == "n/a"
    other = {"scale": "cpu-fast", "folder": "x", "results": {"mixture4": {"claims": [dict(c)]}}}
    assert _robust("mixture4", c, {}, other) == "cpu-fast: partly (same)"
    assert _robust("normal", c, {}, other) == "cpu-fast: not run"


def test_cpu_scale_of_a_chosen_cell_applies_it_everywhere():
    from darcyvae.experiments._scales import CPU_FAST, cpu_scale

    assert cpu_scale(None) == CPU_FAST.replace(name="cpu")
    cpu = cpu_scale(("none", "authors", "zero"))
    assert (cpu.name, cpu.normalize, cpu.output_logvar_init) == ("cpu", "none", "zero")
    # the authors' per-arm rates x 10 (ratio 0.6) and their drops, on cpu-fast's epochs
    assert cpu.lr_values == pytest.approx((5e-3, 1e-3))
    assert cpu.hp_lr_values == pytest.approx((3e-3, 5e-4, 2.5e-4))
    assert cpu.lr_milestones == (150 + round(0.76 * 250),)
    assert cpu.hp_lr_milestones == (200, 200 + round(0.8 * 300))
    assert (cpu.epochs, cpu.hp_epochs, cpu.grid) == (CPU_FAST.epochs, CPU_FAST.hp_epochs, 17)
    # the paper's trial counts; the authors' full-batch semi-supervised runs, started at the data
    assert (cpu.trials, cpu.ss_trials, cpu.ss_batch) == (50, 10, 512)
    assert cpu.ss_output_logvar_init == "data"
    assert cpu.ss_lr_values == pytest.approx((1e-2, 5e-3))
    assert any("chosen by the written rule" in n for n in cpu.notes)


def _flat_train_config(ctx, *, prior="std_norm", schedule=None, mixture=False, model=None, **flat):
    """``train_config`` as it was built before the sections: one flat ``TrainConfig(**kw)``
    (the configurations of runs written then, which a rerun must find equal to resume)."""
    from darcyvae.models import VAEConfig

    s = ctx.scale
    schedule = schedule or ("hp" if prior == "hierarchical" else "plain")
    if schedule == "hp":
        epochs, rec, lrs, miles = s.hp_epochs, s.hp_rec_epochs, s.hp_lr_values, s.hp_lr_milestones
    elif schedule == "ss":
        epochs, rec, lrs, miles = s.ss_epochs, s.ss_rec_epochs, s.ss_lr_values, s.ss_lr_milestones
    else:
        epochs, rec, lrs, miles = s.epochs, s.rec_epochs, s.lr_values, s.lr_milestones
    if mixture:
        extra = round(rec * (s.mixture_rec_factor - 1.0))
        epochs, rec = epochs + extra, rec + extra
        miles = tuple(m + extra for m in miles)
    mkw = {
        "grid": s.grid,
        "latent_dim": 2,
        "blocks": s.blocks,
        "growth_rate": s.growth_rate,
        "init_features": s.init_features,
        "fc_hidden": s.fc_hidden,
        "prior": prior,
        "output_logvar_init": s.output_logvar_init,
    }
    if prior == "hierarchical":
        mkw["hp_decoder"] = "released"
    mkw.update(model or {})
    kw = {
        "model": VAEConfig(**mkw),
        "epochs": epochs,
        "rec_epochs": min(rec, epochs),
        "lr_values": lrs,
        "lr_milestones": tuple(m for m in miles if m < epochs) if epochs > 1 else (),
        "batch_size": s.batch_size,
        "normalize": s.normalize,
        "eval_every": s.eval_every,
        "checkpoint_every": s.checkpoint_every,
    }
    kw["lr_values"] = tuple(lrs[: len(kw["lr_milestones"]) + 1])
    kw.update(flat)
    return TrainConfig(**kw)


_SS_LABELS = {
    "n_labeled": 5,
    "loss": "nll",
    "weight": 1.0,
    "batch_size": 5,
    "source": "test",
    "forward": "concat",
    "dim_reduction": "sum",
}
ARM_KINDS = {
    # name: (sectioned train_config keywords, the same settings as flat keywords)
    "plain": ({}, {}),
    "hp": ({"prior": "hierarchical"}, {"prior": "hierarchical"}),
    "mixture4 no HP": ({"mixture": True}, {"mixture": True}),
    "mixture4 HP": ({"prior": "hierarchical", "mixture": True},) * 2,
    "hp-ablation mlp": ({"prior": "hierarchical", "mixture": True, "model": {"hp_decoder": "mlp"}},)
    * 2,
    "demo (deterministic)": (
        {"mixture": True, "run": {"deterministic": True}},
        {"mixture": True, "deterministic": True},
    ),
    "rd-plane plain VAE": (
        {"beta": {"rec_epochs": 0, "mode": "fixed", "value": 1.0}},
        {"rec_epochs": 0, "beta_mode": "fixed", "beta": 1.0},
    ),
    "rd-plane sweep": (
        {"beta": {"mode": "fixed", "value": 10.0}},
        {"beta_mode": "fixed", "beta": 10.0},
    ),
    "semisupervised": (
        {
            "prior": "scaled_gaussian",
            "schedule": "ss",
            "model": {"prior_variance": (1.0, 2.0), "output_logvar_init": "data"},
            "optim": {"batch_size": 48},
            "labels": _SS_LABELS,
        },
        {
            "prior": "scaled_gaussian",
            "schedule": "ss",
            "model": {"prior_variance": (1.0, 2.0), "output_logvar_init": "data"},
            "batch_size": 48,
            **{
                ("n_labeled" if k == "n_labeled" else f"label_{k}"): v
                for k, v in _SS_LABELS.items()
            },
        },
    ),
}


@pytest.mark.parametrize("scale", list(experiments.SCALES))
def test_sectioned_configs_equal_the_flat_ones(tmp_path, scale):
    """The experiments build their configurations by section; every kind of arm at every
    scale equals the flat construction it replaced, so runs written before resume."""
    from darcyvae.experiments._common import Context, train_config

    ctx = Context("x", tmp_path, tmp_path, experiments.get_scale(scale), 0, None, "cpu", False)
    for kind, (sectioned, flat) in ARM_KINDS.items():
        new, old = train_config(ctx, **sectioned), _flat_train_config(ctx, **flat)
        assert new == old, kind
        assert new.to_dict() == old.to_dict(), kind
