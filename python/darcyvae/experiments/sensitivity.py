"""``sensitivity``: the mixture4 study (no HP against HP) over a grid of training settings.

Which of the reproduction's verdicts are the paper's, and which are the
settings'? Each cell of the grid changes one or more of the three settings
in which a reduced scale may deviate from the authors' runs
(docs/reproduction.md §7):

- ``normalize``: the authors' raw fields (``none``) or per-channel
  normalised fields (``channel``). With one output log-variance shared over
  the channels (docs/model.md §4a) this reweights p, u_x and u_y in the
  likelihood: it changes the objective, not only the units.
- ``lr``: ``authors``, the authors' per-arm rates and drops (no HP 5e-4
  then 1e-4; HP 3e-4, 5e-5, 2.5e-5, docs/model.md §4d), every rate times the
  scale's ``lr_factor`` (so the HP / no-HP ratio 0.6 stays) and the drops
  at the same places of the schedule; or ``common``, 3e-3 then 2e-4 for
  both arms (the ``cpu-fast`` scale).
- ``init``: the decoder's output log-variance started at ``zero`` (the
  paper) or at the ``data``'s per-pixel log-variance (the Theorem-1 optimum).

Every cell first trains one probe trial per arm; a cell where neither
probe beats the Theorem-1 bound is reported as "does not train" with the
probes' margins (never skipped silently), the others train all their
trials through the ensemble trainer. Per cell the report gives the
fraction of trials that train, over-regularised and disentangled counts,
the S_D spread, rate and margin, a Fisher exact test between the arms, and
the verdicts of the mixture4 claims under the rules of ``mixture4``.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import register_experiment
from ._common import (
    SD_DISENTANGLED,
    Context,
    dataset,
    fmt,
    spread,
    train_config,
    train_trials,
)
from ._scales import AUTHORS_LR, COMMON_LR
from .claims import Claim, NoVerdict
from .studies import _arm_stats, _mixture_claims

__all__ = ["AUTHORS_LR", "CELLS", "COMMON_LR", "Cell", "choose_cell", "parse_cells"]

NORMALIZE = ("none", "channel")
LR_CHOICES = ("authors", "common")
INITS = ("zero", "data")

MIXTURE4_CLAIMS = (
    "no-hp-over-regularised",
    "no-hp-none-disentangle",
    "HP-over-regularised",
    "HP-half-disentangle",
    "HP-rotated",
)
"""The claims of ``mixture4`` (its ``_mixture_claims`` ids) whose verdicts each cell reports."""

FIDELITY_RULE = 0.9
"""A cell qualifies for the choice of the cpu scale when at least this fraction of its
trials beats the Theorem-1 bound (docs/reproduction.md §7)."""

ROBUST = NoVerdict(
    f"compares the verdicts of the cells where >= {FIDELITY_RULE:.0%} of trials beat the "
    "Theorem-1 bound; no claim of the paper's to judge"
)
"""The rule of the robustness rows: our question, not the paper's."""


@dataclass(frozen=True)
class Cell:
    """One setting of the grid."""

    normalize: str
    lr: str
    init: str

    @property
    def name(self) -> str:
        """E.g. ``raw-authors-zero``."""
        return f"{'raw' if self.normalize == 'none' else 'channel'}-{self.lr}-{self.init}"

    @property
    def deviations(self) -> int:
        """How many of the three settings differ from the authors' runs."""
        return (self.normalize != "none") + (self.lr != "authors") + (self.init != "zero")


CELLS: tuple[Cell, ...] = tuple(
    sorted(
        (Cell(n, lr, i) for n, lr, i in itertools.product(NORMALIZE, LR_CHOICES, INITS)),
        key=lambda c: (c.normalize != "none", c.lr != "authors", c.init != "zero"),
    )
)
"""The eight cells, closest to the authors' runs first (raw fields, their rates, zero init)."""


def parse_cells(cells: str | list[str] | tuple[str, ...] | None) -> tuple[Cell, ...]:
    """The cells named in ``cells`` (names or a comma-separated string; None: all), in grid order.

    Raises
    ------
    ValueError
        An unknown cell name (the message lists the known ones).
    """
    if cells is None:
        return CELLS
    names = cells.split(",") if isinstance(cells, str) else list(cells)
    names = [str(n).strip() for n in names if str(n).strip()]
    known = {c.name: c for c in CELLS}
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        msg = (
            f"sensitivity: unknown cell(s) {unknown or names!r}; expected names from "
            f"{', '.join(known)} (comma-separated)."
        )
        raise ValueError(msg)
    return tuple(c for c in CELLS if c.name in names)


def cell_config(ctx: Context, cell: Cell, hp: bool, train_path: Path | None = None):
    """The TrainConfig of one arm of ``cell``: the mixture4 study's (``train_config``, on the
    training file ``train_path``) at the scale with the cell's settings
    (``Scale.with_settings``)."""
    from dataclasses import replace

    cell_ctx = replace(ctx, scale=ctx.scale.with_settings(cell.normalize, cell.lr, cell.init))
    prior = "hierarchical" if hp else "std_norm"
    return train_config(
        cell_ctx, prior=prior, mixture=True, train_path=train_path, where=f"cell {cell.name}"
    )


def _cell_stats(records: list[dict[str, Any]]) -> dict[str, Any]:
    st = _arm_stats(records)
    st["rate"] = spread([r["test"].get("rate") for r in records])
    st["margin_per_element"] = spread([r.get("margin_per_element") for r in records])
    return st


def _fisher(a: dict[str, Any], b: dict[str, Any]) -> float | None:
    """Fisher's exact test of disentangled / not among the trained trials of two arms."""
    from scipy.stats import fisher_exact

    if not (a["n_trained"] and b["n_trained"]):
        return None
    table = [
        [a["n_disentangled"], a["n_trained"] - a["n_disentangled"]],
        [b["n_disentangled"], b["n_trained"] - b["n_disentangled"]],
    ]
    return float(fisher_exact(table).pvalue)


def _run_cell(ctx: Context, cell: Cell, paths, n: int, probe: bool) -> dict[str, Any]:
    """Probe, then (if it trains, or without ``probe``) every trial of both arms of ``cell``."""
    configs = {arm: cell_config(ctx, cell, arm == "HP", paths["train"]) for arm in ("no HP", "HP")}
    seeds = ctx.seeds(n)
    out = ctx.out / cell.name
    probes = {
        arm: train_trials(
            cfg,
            seeds[:1],
            paths["train"],
            paths["test"],
            out / arm.replace(" ", "_"),
            ctx.device,
            ctx.progress,
            workers=ctx.jobs,
        )[0]
        for arm, cfg in configs.items()
    }
    settings = {
        "normalize": cell.normalize,
        "lr": cell.lr,
        "init": cell.init,
        "deviations": cell.deviations,
        "schedules": {
            arm: {
                "epochs": c.optim.epochs,
                "rec_epochs": c.beta.rec_epochs,
                "lr_values": list(c.optim.lr_values),
                "lr_milestones": list(c.optim.lr_milestones),
            }
            for arm, c in configs.items()
        },
    }
    probe_margins = {arm: r.get("margin_per_element") for arm, r in probes.items()}
    if probe and not any(r["beats_bound"] for r in probes.values()):
        return {
            "cell": cell.name,
            "settings": settings,
            "status": "does not train",
            "probe_margin_per_element": probe_margins,
            "records": probes,
        }
    arms = {
        arm: train_trials(
            cfg,
            seeds,
            paths["train"],
            paths["test"],
            out / arm.replace(" ", "_"),
            ctx.device,
            ctx.progress,
            workers=ctx.jobs,
        )
        for arm, cfg in configs.items()
    }
    stats = {arm: _cell_stats(recs) for arm, recs in arms.items()}
    n_all = sum(s["n"] for s in stats.values())
    n_trained = sum(s["n_trained"] for s in stats.values())
    verdicts = {c["id"]: c["verdict"] for c in _mixture_claims(ctx, arms, "no HP", ["HP"])}
    if tuple(verdicts) != MIXTURE4_CLAIMS:  # pragma: no cover - mixture4's claims changed
        msg = f"sensitivity: mixture4's claims are {list(verdicts)}; update MIXTURE4_CLAIMS."
        raise RuntimeError(msg)
    return {
        "cell": cell.name,
        "settings": settings,
        "status": "trained",
        "probe_margin_per_element": probe_margins,
        "fraction_trained": n_trained / n_all if n_all else 0.0,
        "qualifies": n_all > 0 and n_trained >= FIDELITY_RULE * n_all,
        "arms": stats,
        "fisher_p": _fisher(stats["no HP"], stats["HP"]),
        "verdicts": verdicts,
        "records": arms,
    }


def choose_cell(cells: list[dict[str, Any]]) -> tuple[str | None, str]:
    """The rule that chooses the ``cpu`` scale (docs/reproduction.md §7), and why.

    The first cell in fidelity order (``CELLS``) where at least ``FIDELITY_RULE`` of
    the trials beat the Theorem-1 bound. Undecided (None) while a cell before it in
    that order has not been measured; None as well when no cell qualifies.
    """
    by_name = {c["cell"]: c for c in cells}
    for cell in CELLS:
        c = by_name.get(cell.name)
        if c is None:
            return None, f"undecided: {cell.name} (earlier in fidelity order) was not run"
        if c["status"] == "trained" and c["qualifies"]:
            return cell.name, (
                f"{cell.name}: the first cell in fidelity order where >= {FIDELITY_RULE:.0%} "
                f"of the trials beat the Theorem-1 bound ({c['fraction_trained']:.0%})"
            )
    return None, f"no cell has >= {FIDELITY_RULE:.0%} of its trials beating the Theorem-1 bound"


def _robustness_claims(cells: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per mixture4 claim: is its verdict the same in every cell where the models train?"""
    trained = [c for c in cells if c["status"] == "trained"]
    qualifying = [c for c in trained if c["qualifies"]]
    out = []
    ids = MIXTURE4_CLAIMS
    for cid in ids:
        per = {c["cell"]: c["verdicts"][cid] for c in qualifying}
        judged = {v for v in per.values() if v != "not judged"}
        if not per:
            word = f"no cell has >= {FIDELITY_RULE:.0%} of trials beating the bound"
        elif len(judged) <= 1:
            word = f"robust: {next(iter(judged), 'not judged')} in every qualifying cell"
        else:
            word = "depends on the settings"
        measured = f"{word} ({'; '.join(f'{k}: {v}' for k, v in per.items()) or 'none'})"
        robust = Claim(
            f"robust-{cid}",
            f"(our question) the mixture4 verdict '{cid}' does not depend on the settings",
            ROBUST,
        )
        out.append(
            robust.judge(measured, {"verdicts": per, "robust": bool(per) and len(judged) <= 1})
        )
    return out


def _table(cells: list[dict[str, Any]]) -> dict[str, Any]:
    """The report's one row per cell."""
    header = [
        "cell",
        "deviations",
        "trained (no HP / HP)",
        "over-regularised",
        "disentangled (of trained)",
        "S_D median [min, max] (no HP / HP)",
        "test rate (no HP / HP)",
        "margin per element (no HP / HP)",
        "Fisher p",
        "verdicts (no-HP OR, no-HP none, HP OR, HP half, HP rotated)",
    ]
    rows = []
    for c in cells:
        if c["status"] != "trained":
            m = c["probe_margin_per_element"]
            rows.append(
                [
                    c["cell"],
                    c["settings"]["deviations"],
                    (
                        "does not train: measured margin "
                        f"{fmt(m['no HP'])} / {fmt(m['HP'])} nats per element (one probe per arm)"
                    ),
                    *[""] * (len(header) - 3),
                ]
            )
            continue
        a, b = c["arms"]["no HP"], c["arms"]["HP"]

        def sd(s):
            p = s["s_d_all"]
            return f"{fmt(p['median'])} [{fmt(p['min'])}, {fmt(p['max'])}]"

        rows.append(
            [
                c["cell"],
                c["settings"]["deviations"],
                f"{a['n_trained']}/{a['n']} / {b['n_trained']}/{b['n']}",
                f"{a['n_over_regularized']} / {b['n_over_regularized']}",
                f"{a['n_disentangled']}/{a['n_trained']} / {b['n_disentangled']}/{b['n_trained']}",
                f"{sd(a)} / {sd(b)}",
                f"{fmt(a['rate']['median'], 2)} / {fmt(b['rate']['median'], 2)}",
                (
                    f"{fmt(a['margin_per_element']['median'])} / "
                    f"{fmt(b['margin_per_element']['median'])}"
                ),
                fmt(c["fisher_p"]),
                ", ".join(c["verdicts"].values()),
            ]
        )
    return {"title": "One row per cell", "header": header, "rows": rows}


PROGRESS = "cells_done.md"
"""The table of the cells measured so far, rewritten after each cell: the grid takes hours
and spans sessions, and a stopped run's finished cells should be readable at once."""


def _write_progress(ctx: Context, results: list[dict[str, Any]]) -> None:
    """``PROGRESS``: the report's table for the cells finished so far, and the rule's choice."""
    from .._io import atomic_write_text
    from . import cell as md_cell

    table = _table(results)
    _choice, why = choose_cell(results)
    lines = [
        (
            f"# sensitivity: {len(results)} cell(s) measured so far (scale {ctx.scale.name}, "
            f"seed {ctx.seed})"
        ),
        "",
        "| " + " | ".join(md_cell(h) for h in table["header"]) + " |",
        "|" + "---|" * len(table["header"]),
        *("| " + " | ".join(md_cell(v) for v in row) + " |" for row in table["rows"]),
        "",
        f"The rule's choice so far: {why}.",
    ]
    atomic_write_text(ctx.out / PROGRESS, "\n".join(lines) + "\n")


@register_experiment(
    "sensitivity",
    "beyond the paper: the mixture4 study over normalisation x learning rates x log-variance start",
    order=110,
    cpu_minutes=300,
)
def sensitivity(
    ctx: Context, cells: str | list[str] | None = None, probe: bool = True
) -> dict[str, Any]:
    """Run every (or each named) cell of the grid; report one row per cell.

    ``cells``: names (or one comma-separated string) of the cells to run
    (``parse_cells``); ``probe=False`` trains every trial of a cell even when
    its probes do not beat the bound.
    """
    from .. import plots

    chosen = parse_cells(cells)
    n = ctx.n_trials(ctx.scale.sensitivity_trials)
    paths = dataset(ctx, "mixture4")
    results = []
    for cell in chosen:
        results.append(_run_cell(ctx, cell, paths, n, probe))
        _write_progress(ctx, results)
    ctx.seeds(n, "every arm of every cell")
    scores: dict[str, dict[str, dict[str, list]]] = {}
    for c in results:
        recs = (
            c["records"] if c["status"] == "trained" else {k: [v] for k, v in c["records"].items()}
        )
        scores[c["cell"]] = {
            arm: {
                "s_d": [r["s_d"] for r in rs],
                "over_regularized": [r["over_regularized"] for r in rs],
                "trained": [r["beats_bound"] for r in rs],
            }
            for arm, rs in recs.items()
        }
    fig = plots.plot_cell_scores(
        scores, threshold=SD_DISENTANGLED, title="mixture4: S_D of every trial, by cell and arm"
    )
    files = [ctx.save(fig, "sensitivity_s_d.png")]
    table = _table(results)
    notes = [
        (
            f"lr 'authors' = the authors' per-arm rates x {ctx.scale.lr_factor:g} (the scale's "
            "lr_factor), drops at the same fractions of phase 2; 'common' = 3e-3 then 2e-4 for "
            "both arms"
        ),
        (
            f"a cell qualifies for the choice of a scale when >= {FIDELITY_RULE:.0%} of its trials "
            "beat the Theorem-1 bound (docs/reproduction.md §7)"
        ),
    ]
    choice, why = choose_cell(results)
    notes.append(f"the rule's choice for the cpu scale: {why}")
    return {
        "choice": choice,
        "choice_reason": why,
        "cells": [{k: v for k, v in c.items() if k != "records"} for c in results],
        "records": {c["cell"]: c["records"] for c in results},
        "claims": _robustness_claims(results),
        "figures": files,
        "tables": [table],
        "notes": notes,
        "cell_names": [c.name for c in chosen],
    }
