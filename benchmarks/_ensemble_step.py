"""What the benchmarks of an ensemble's training step share: the command line
(model, prior, members, batch, threads, repeats, ``--quick``, ``--json``), the
members and their batch, the summary's first keys and the run over the thread
counts."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _machine import write_results
from darcyvae.models import DenseVAE, VAEConfig, model_config

QUICK = {"k": 8, "batch": 16, "repeats": 3}
"""``--quick``: 8 members (one vector of the member kernels), batch 16, 3 repeats."""


def step_parser(description: str, *, k: int, k_help: str, repeats: int) -> argparse.ArgumentParser:
    """The shared options; a benchmark may add its own before ``parse``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--model", default="dense_vae_tiny", help="registered model")
    parser.add_argument(
        "--prior", default="hierarchical", help="prior (default: the mixture4 HP arm's)"
    )
    parser.add_argument("--k", type=int, default=k, help=k_help)
    parser.add_argument("--batch", type=int, default=64, help="batch per member")
    parser.add_argument("--threads", default="1", help="torch CPU threads, e.g. 1,2")
    parser.add_argument("--repeats", type=int, default=repeats, help="timed repeats (medians)")
    parser.add_argument("--quick", action="store_true", help="K = 8, batch 16, 3 repeats")
    parser.add_argument("--json", type=Path, help="write the rows and summaries here")
    return parser


def parse(
    parser: argparse.ArgumentParser, argv: list[str] | None, **quick: Any
) -> argparse.Namespace:
    """The arguments, with ``--quick``'s settings (``QUICK`` and the benchmark's own
    ``quick``) applied; sizes below 1 are a usage error."""
    args = parser.parse_args(argv)
    if args.quick:
        for name, value in {**QUICK, **quick}.items():
            setattr(args, name, value)
    if args.k < 1 or args.batch < 1 or args.repeats < 1:
        parser.error("--k, --batch and --repeats must be >= 1")
    return args


def ensemble(
    model: str, prior: str, k: int, batch: int
) -> tuple[VAEConfig, list[DenseVAE], torch.Tensor, torch.Generator]:
    """K members of the registered ``model`` with ``prior`` (torch seeded 0) and a batch of
    random fields (K, batch, C, N, N) from the returned generator (seeded 1; draw the
    noise from it next)."""
    cfg = model_config(model, prior=prior)
    torch.manual_seed(0)
    members = [DenseVAE(cfg) for _ in range(k)]
    g = torch.Generator().manual_seed(1)
    y = torch.randn(k, batch, cfg.channels, cfg.grid, cfg.grid, generator=g)
    return cfg, members, y, g


def summary_head(model: str, prior: str, k: int, batch: int) -> dict[str, Any]:
    """The keys every summary starts with (the threads are torch's current ones)."""
    return {
        "model": model,
        "prior": prior,
        "k": k,
        "batch": batch,
        "threads": torch.get_num_threads(),
    }


def heading(summary: dict[str, Any], what: str) -> str:
    """The line over a configuration's table: model, prior, members, batch, threads."""
    s = summary
    return (
        f"\n{s['model']} ({s['prior']}), K = {s['k']}, batch {s['batch']}, "
        f"{s['threads']} thread(s): {what}"
    )


def run_thread_counts(
    args: argparse.Namespace,
    measure: Callable[[], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
) -> int:
    """``measure()`` at each of ``--threads`` torch threads, ``report`` each result,
    write them all to ``--json``; the exit status."""
    results = []
    for t in (int(t) for t in args.threads.split(",")):
        torch.set_num_threads(t)
        res = measure()
        report(res)
        results.append(res)
    if args.json:
        write_results(args.json, results)
    return 0


def block_step_main(
    description: str,
    measure: Callable[[str, str, int, int, int], dict[str, Any]],
    report: Callable[[dict[str, Any]], None],
    argv: list[str] | None,
) -> int:
    """The command line of a benchmark of one mixture4 worker's block (25 members by
    default, 15 repeats): ``measure(model, prior, k, batch, repeats)`` at each thread
    count, each result reported; the exit status."""
    parser = step_parser(
        description,
        k=25,
        k_help="members (default: 25, a mixture4 worker's block)",
        repeats=15,
    )
    args = parse(parser, argv)
    return run_thread_counts(
        args, lambda: measure(args.model, args.prior, args.k, args.batch, args.repeats), report
    )
