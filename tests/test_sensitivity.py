"""``darcyvae reproduce sensitivity``: the mixture4 study over a grid of training settings."""

from __future__ import annotations

import json

import pytest
from darcyvae import experiments
from darcyvae.checkpoint import CHECKPOINT_NAME
from darcyvae.cli import main
from darcyvae.experiments._common import Context
from darcyvae.experiments.sensitivity import (
    AUTHORS_LR,
    CELLS,
    MIXTURE4_CLAIMS,
    cell_config,
    parse_cells,
)

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("DARCYVAE_CACHE_DIR", str(tmp_path / "cache"))


def _ctx(tmp_path, scale="cpu"):
    return Context(
        "sensitivity", tmp_path, tmp_path, experiments.get_scale(scale), 0, None, "cpu", False
    )


def test_the_grid_has_eight_cells_closest_to_the_authors_first():
    names = [c.name for c in CELLS]
    assert len(set(names)) == 8
    assert names[0] == "raw-authors-zero"
    assert names[-1] == "channel-common-data"
    # Fidelity order (docs/reproduction.md §7): raw fields first, then the authors' rates,
    # then the paper's zero start of the output log-variance.
    key = [(c.normalize != "none", c.lr != "authors", c.init != "zero") for c in CELLS]
    assert key == sorted(key)
    assert [c.deviations for c in CELLS] == [0, 1, 1, 2, 1, 2, 2, 3]
    assert parse_cells(" channel-common-zero,raw-authors-zero ") == (CELLS[0], CELLS[6])
    assert parse_cells(None) == CELLS


@pytest.mark.parametrize("bad", ["raw-authors", "raw-authors-zero,nope", "", ","])
def test_an_unknown_cell_is_a_clear_error(bad):
    with pytest.raises(ValueError, match="unknown cell"):
        parse_cells(bad)


def test_cell_configs_follow_the_authors_schedule_shape(tmp_path):
    """cpu scale: the authors' rates x lr_factor (HP / no HP = 0.6 at every phase), drops at the
    authors' places in phase 2; the common schedule is 3e-3 -> 2e-4 for both arms."""
    ctx = _ctx(tmp_path)
    f = ctx.scale.lr_factor
    for cell in CELLS:
        plain, hp = cell_config(ctx, cell, False), cell_config(ctx, cell, True)
        assert plain.normalize == hp.normalize == cell.normalize
        assert plain.model.output_logvar_init == hp.model.output_logvar_init == cell.init
        assert hp.model.prior == "hierarchical"
        assert plain.model.prior == "std_norm"
        if cell.lr == "authors":
            assert plain.optim.lr_values == pytest.approx([r * f for r in AUTHORS_LR["plain"][0]])
            assert hp.optim.lr_values == pytest.approx([r * f for r in AUTHORS_LR["hp"][0]])
            assert hp.optim.lr_values[0] / plain.optim.lr_values[0] == pytest.approx(0.6)
            # no HP drops 76% into phase 2 (5900 of 4000..6500); HP at the end of the
            # reconstruction-only phase (6500) and 80% into phase 2 (12500 of 6500..14000)
            e, r = plain.optim.epochs, plain.beta.rec_epochs
            assert plain.optim.lr_milestones == (r + round(0.76 * (e - r)),)
            e, r = hp.optim.epochs, hp.beta.rec_epochs
            assert hp.optim.lr_milestones == (r, r + round(0.8 * (e - r)))
        else:
            assert plain.optim.lr_values == hp.optim.lr_values == (3e-3, 2e-4)


@pytest.mark.slow
def test_smoke_run_reports_one_row_per_cell_and_resumes(tmp_path):
    out = tmp_path / "sens"
    res = experiments.run_experiment("sensitivity", out, scale="smoke", progress=False)
    report = (out / "report.md").read_text()
    assert len(res["cells"]) == 8
    (table,) = res["tables"]
    assert [row[0] for row in table["rows"]] == [c.name for c in CELLS]
    for c, row in zip(res["cells"], table["rows"], strict=True):
        assert f"| {row[0]} | {row[1]} |" in report
        # Smoke models never beat the bound: each cell says so with its probes' margins.
        assert c["status"] == "does not train"
        m = c["probe_margin_per_element"]
        assert m["no HP"] < 0.05
        assert m["HP"] < 0.05
        assert "does not train: measured margin" in row[2]
    assert [c["id"] for c in res["claims"]] == [f"robust-{i}" for i in MIXTURE4_CLAIMS]
    assert (out / "sensitivity_s_d.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # The cells measured so far are readable while the grid runs (rewritten after each cell).
    done = (out / "cells_done.md").read_text()
    assert "8 cell(s) measured so far" in done
    for row in table["rows"]:
        assert f"| {row[0]} | {row[1]} |" in done
    assert "no cell has >= 90%" in done
    # A rerun reuses every probe: nothing is trained again.
    ckpts = sorted(out.glob(f"*/*/seed_*/{CHECKPOINT_NAME}"))
    assert len(ckpts) == 16
    mtimes = [p.stat().st_mtime_ns for p in ckpts]
    experiments.run_experiment("sensitivity", out, scale="smoke", progress=False)
    assert [p.stat().st_mtime_ns for p in ckpts] == mtimes


@pytest.mark.slow
def test_a_measured_cell_reports_counts_fisher_and_verdicts(tmp_path):
    out = tmp_path / "one"
    res = experiments.run_experiment(
        "sensitivity", out, scale="smoke", progress=False, cells="channel-common-zero", probe=False
    )
    (c,) = res["cells"]
    assert c["status"] == "trained"
    assert set(c["verdicts"]) == set(MIXTURE4_CLAIMS)
    for arm in ("no HP", "HP"):
        st = c["arms"][arm]
        assert st["n"] == 2
        recs = res["records"]["channel-common-zero"][arm]
        assert st["n_trained"] == sum(r["beats_bound"] for r in recs)
        assert st["margin_per_element"]["n"] == 2
    assert c["fraction_trained"] == pytest.approx(
        sum(a["n_trained"] for a in c["arms"].values()) / 4
    )
    assert c["qualifies"] == (c["fraction_trained"] >= 0.9)
    # Smoke models do not train, so every mixture4 verdict is held back.
    assert set(c["verdicts"].values()) == {"not judged"}
    stored = json.loads((out / "results.json").read_text())
    assert stored["cell_names"] == ["channel-common-zero"]


def test_cli_refuses_bad_cells_before_writing(tmp_path, capsys):
    out = tmp_path / "s"
    assert (
        main(["reproduce", "sensitivity", "--scale", "smoke", "--cells", "x", "--out", str(out)])
        == 2
    )
    err = capsys.readouterr().err
    assert "unknown cell" in err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists()
    assert main(["reproduce", "normal", "--cells", "raw-authors-zero", "--out", str(out)]) == 2
    assert "--cells is an option of 'sensitivity' only" in capsys.readouterr().err
    assert not out.exists()


def test_the_rule_chooses_the_first_qualifying_cell_in_fidelity_order():
    from darcyvae.experiments.sensitivity import choose_cell

    def cell(name, frac, status="trained"):
        return {"cell": name, "status": status, "fraction_trained": frac, "qualifies": frac >= 0.9}

    names = [c.name for c in CELLS]
    measured = [cell(n, 0.95) for n in names]
    assert choose_cell(measured)[0] == "raw-authors-zero"
    # The most faithful cell trains too rarely: the next one in fidelity order wins,
    # even though a later cell trains more often.
    measured[0] = cell(names[0], 0.85)
    measured[1] = cell(names[1], 0.9)
    measured[5] = cell(names[5], 1.0)
    assert choose_cell(measured)[0] == "raw-authors-data"
    measured[1] = cell(names[1], 0.0, status="does not train")
    assert choose_cell(measured)[0] == "raw-common-zero"
    # Undecided while an earlier cell is missing; None when nothing qualifies.
    choice, why = choose_cell(measured[3:])
    assert choice is None
    assert "raw-authors-zero" in why
    assert choose_cell([cell(n, 0.5) for n in names]) == (
        None,
        "no cell has >= 90% of its trials beating the Theorem-1 bound",
    )


def test_a_scale_with_a_cells_settings_trains_as_that_cell(tmp_path):
    """Scale.with_settings is the one schedule path: the mixture4 configs of the scale built
    from a cell equal the cell's configs (so a scale chosen by the rule trains what the grid
    measured)."""
    from dataclasses import replace

    from darcyvae.experiments._common import train_config

    ctx = _ctx(tmp_path)
    for cell in CELLS:
        scaled = replace(ctx, scale=ctx.scale.with_settings(cell.normalize, cell.lr, cell.init))
        for hp in (False, True):
            prior = "hierarchical" if hp else "std_norm"
            assert train_config(scaled, prior=prior, mixture=True) == cell_config(ctx, cell, hp)
    with pytest.raises(ValueError, match="lr must be"):
        ctx.scale.with_settings("none", "fast", "zero")


def test_cli_compare_belongs_to_all_and_needs_an_all_run(tmp_path, capsys):
    out = tmp_path / "x"
    assert main(["reproduce", "fig1", "--compare", str(tmp_path), "--out", str(out)]) == 2
    assert "--compare is an option of 'all' only" in capsys.readouterr().err
    assert (
        main(
            ["reproduce", "all", "--scale", "smoke", "--compare", str(tmp_path), "--out", str(out)]
        )
        == 2
    )
    assert "holds no 'reproduce all' run" in capsys.readouterr().err
    assert not out.exists()


def test_cli_only_runs_the_named_experiments_and_says_so(tmp_path, capsys):
    """--only: the named experiments in the registry's order, the command in the top report;
    an unknown name or --only with one experiment is a one-line error before anything is
    written."""
    out = tmp_path / "all"
    assert main(["reproduce", "fig1", "--only", "fig1", "--out", str(out)]) == 2
    assert "--only is an option of 'all' only" in capsys.readouterr().err
    assert main(["reproduce", "all", "--only", "fig1,nope", "--out", str(out)]) == 2
    assert "unknown experiment 'nope'" in capsys.readouterr().err
    assert main(["reproduce", "all", "--only", " , ", "--out", str(out)]) == 2
    assert "--only must name at least one experiment" in capsys.readouterr().err
    assert not out.exists()
    args = ["reproduce", "all", "--quick", "--no-progress", "--out", str(out)]
    assert main([*args, "--only", "normal,fig1"]) == 0  # the registry's order, not the given
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["fig1", "normal"]
    assert "--only fig1,normal" in (out / "report.md").read_text()
    # --overwrite under --only clears the named experiments only
    stamp = out / "normal" / "report.md"
    before = stamp.stat().st_mtime_ns
    assert main([*args, "--only", "fig1", "--overwrite"]) == 0
    assert stamp.stat().st_mtime_ns == before
