"""What several verbs share: checking --out, setting torch's threads, printing splits."""

from __future__ import annotations


def check_out(out: str | None) -> None:
    """An empty ``--out`` is an error for every verb (it meant the current folder for
    some and ``runs/<name>`` for others); ``--out .`` names the current folder."""
    if out is not None and not out.strip():
        msg = f"--out must name a folder (use --out . for the current one); got {out!r}"
        raise ValueError(msg)


def print_splits(verb: str, splits, over_regularized: bool, where) -> None:
    """The one place that prints the metrics of splits (``SplitMetrics.line``)."""
    for split, metrics in splits:
        print(f"{split}: {metrics.line()}")
    verdict = "OVER-REGULARISED" if over_regularized else "not over-regularised"
    print(f"{verb}: {verdict}; wrote {where}")


def set_threads(threads: int | None, verb: str) -> None:
    """Set torch's CPU threads (on a busy shared CPU, 1 thread avoids OpenMP spin-waits).

    Checked like ``generate``'s threads (``_checks.check_threads``): >= 1, and reduced
    to ``darcyvae.darcy.MAX_THREADS`` before torch sees it.
    """
    if threads is not None:
        import torch

        from .._checks import check_threads

        torch.set_num_threads(check_threads(threads, verb, "--threads"))
