"""Benchmark: the members' reconstruction term, torch's loss against darcyvae's one pass.

In the members-last layout of the training engine (``BatchedDenseVAE``, K >= 8
in float32 on the CPU; docs/model.md §4g) the decoder's output lies in memory
as (batch, N, N, C, K). By default the engine reads it there: the
reconstruction term of every member is one C++ pass
(``darcyvae.ensemble.reconstruction.reconstruction_nll``,
``cpp/reconstruction.cpp``) and its gradient is written in the same layout.
``BatchedDenseVAE.fuse_reconstruction = False`` copies the output into
(K, batch, C, N, N) and computes the term with torch's operations
(``darcyvae.losses.reconstruction_loss`` vmapped over members), as before.
For K members this benchmark times, interleaved (medians of repeats):

- the term alone, forward + backward, from the members-last output: the copy
  and torch's loss against the one pass;
- one training step of the engine's members (forward, every loss term,
  backward) with and without the one pass.

Usage::

    python benchmarks/bench_reconstruction.py                  # tiny + HP, K = 25, 1 thread
    python benchmarks/bench_reconstruction.py --threads 1,2 --json rec.json
    python benchmarks/bench_reconstruction.py --quick          # K = 8, batch 16: seconds
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ensemble_step import block_step_main, ensemble, heading, summary_head
from _table import text_table
from _timing import interleaved
from darcyvae.ensemble.members import StackedMembers
from darcyvae.ensemble.reconstruction import reconstruction_nll
from darcyvae.losses import reconstruction_loss
from darcyvae.models import DenseVAE


def time_term(k: int, batch: int, channels: int, grid: int, repeats: int) -> dict[str, float]:
    """Forward + backward seconds of the term from a members-last output, both ways, and
    the largest relative difference between their results."""
    g = torch.Generator().manual_seed(0)
    out = torch.randn(batch, grid, grid, channels, k, generator=g, requires_grad=True)
    y = torch.randn(k, batch, channels, grid, grid, generator=g)
    logvar = (0.1 * torch.randn(k, 1, 1, grid, grid, generator=g)).requires_grad_()
    grad = torch.rand(k, batch, generator=g)

    def torch_loss() -> tuple[torch.Tensor, ...]:
        mean = out.permute(4, 0, 3, 1, 2).contiguous()
        per_member = torch.func.vmap(lambda *a: reconstruction_loss(*a, reduction="sum"))
        term = per_member(y, mean, logvar)
        return (term.detach(), *torch.autograd.grad(term, (out, logvar), grad))

    def one_pass() -> tuple[torch.Tensor, ...]:
        term = reconstruction_nll(y, out.permute(4, 0, 3, 1, 2), logvar)
        return (term.detach(), *torch.autograd.grad(term, (out, logvar), grad))

    # the two compute the same: the largest relative difference of the term and its
    # gradients goes into the results
    differences = [
        ((a - b).abs().max() / b.abs().max()).item()
        for a, b in zip(one_pass(), torch_loss(), strict=True)
    ]
    times = interleaved({"torch": torch_loss, "fused": one_pass}, repeats)
    return {**times, "max_relative_difference": max(differences)}


def time_steps(
    members: list[DenseVAE], y: torch.Tensor, eps_z: torch.Tensor, eps_xi, repeats: int
) -> dict[str, float] | None:
    """Seconds of one training step of the engine's members (forward, losses, backward)
    with torch's loss and with the one pass (None unless the layout is members last)."""
    stacks = {}
    for name in ("torch", "fused"):
        runs = [SimpleNamespace(model=m, optimizer=None) for m in members]
        stacks[name] = StackedMembers(runs, None, 1e-3)
    if not stacks["fused"].net.layout.members_last:
        return None
    stacks["torch"].net.fuse_reconstruction = False

    def step(members: StackedMembers) -> Callable[[], None]:
        def run() -> None:
            out = members.forward(y, eps_z)
            terms = members.losses(y, out, eps_z, eps_xi, 0.5, 1.0, "mean", True, None)
            terms[0].sum().backward()
            members.zero_grad()

        return run

    return interleaved({name: step(s) for name, s in stacks.items()}, repeats)


def measure(model: str, prior: str, k: int, batch: int, repeats: int) -> dict[str, Any]:
    """The rows and the summary for one configuration (at torch's current threads)."""
    cfg, members, y, g = ensemble(model, prior, k, batch)
    noise = [m.draw_noise(batch, g) for m in members]
    eps_z = torch.stack([n.z for n in noise])
    eps_xi = None if noise[0].xi is None else torch.stack([n.xi for n in noise])
    term = time_term(k, batch, cfg.channels, cfg.grid, repeats)
    difference = term.pop("max_relative_difference")
    rows = [{"what": "reconstruction term (fwd + bwd)", **term}]
    steps = time_steps(members, y, eps_z, eps_xi, repeats)
    if steps is not None:
        rows.append({"what": "training step", **steps})
    for r in rows:
        r["torch_ms"], r["fused_ms"] = 1e3 * r.pop("torch"), 1e3 * r.pop("fused")
        r["speedup"] = r["torch_ms"] / r["fused_ms"]
    summary = {
        **summary_head(model, prior, k, batch),
        "saved_ms_per_step": rows[-1]["torch_ms"] - rows[-1]["fused_ms"],
        "term_max_relative_difference": difference,
    }
    return {"rows": rows, "summary": summary}


COLUMNS = [
    ("", "<32", lambda r: r["what"]),
    ("torch's loss ms", ">15", lambda r: f"{r['torch_ms']:.2f}"),
    ("one pass ms", ">11", lambda r: f"{r['fused_ms']:.2f}"),
    ("speed-up", ">8", lambda r: f"{r['speedup']:.2f}x"),
]


def report(res: dict[str, Any]) -> None:
    s = res["summary"]
    print(heading(s, "the reconstruction term from the members-last output"))
    print(text_table(COLUMNS, res["rows"]))
    print(
        "largest relative difference of the two terms and gradients: "
        f"{s['term_max_relative_difference']:.1e}"
    )


def main(argv: list[str] | None = None) -> int:
    return block_step_main(__doc__.splitlines()[0], measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
