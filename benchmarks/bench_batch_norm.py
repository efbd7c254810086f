"""Benchmark: an ensemble's BatchNorm + ReLU pairs, torch's two layers against darcyvae's fused one.

Every BatchNorm of the DenseVAE is followed by a ReLU. In the members-last
layout of the training engine (``BatchedDenseVAE``, K >= 8 in float32 on the
CPU; docs/model.md §4g) the pair runs by default as darcyvae's fused layer
(``darcyvae.ensemble.batch_norm.batch_norm_relu``, ``cpp/batch_norm*``);
``BatchedDenseVAE.fuse_batch_norm = False`` runs torch's ``F.batch_norm`` and
``F.relu`` on the same memory instead. For one training step of K members this
benchmark

- records the input shape of every BatchNorm the step runs (forward hooks on
  one member's layers);
- replays each distinct shape alone, forward + backward, with torch's two
  layers (channels-last NCHW view, as the engine ran them) and with the fused
  layer, interleaved, and times both (medians of repeats);
- times the whole step (forward + backward) of the members-last network with
  and without the fusion, interleaved.

It prints one row per distinct shape (calls per step, ms per step each way,
the speed-up) and a summary line for the layers and for the step.

Usage::

    python benchmarks/bench_batch_norm.py                      # tiny + HP, K = 25, 1 thread
    python benchmarks/bench_batch_norm.py --k 50 --threads 1,2 --json bn.json
    python benchmarks/bench_batch_norm.py --quick              # K = 8, batch 16: seconds
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ensemble_step import block_step_main, ensemble, heading, summary_head
from _table import text_table
from _timing import interleaved
from darcyvae.ensemble.batch_norm import batch_norm_relu
from darcyvae.ensemble.batched import BatchedDenseVAE
from darcyvae.models import DenseVAE


def batch_norm_shapes(model: DenseVAE, y: torch.Tensor) -> dict[tuple[int, int, int], int]:
    """``{(C, H, W): calls}`` of the BatchNorm2d layers in one training forward of ``model``."""
    counts: dict[tuple[int, int, int], int] = {}

    def hook(_module, inputs) -> None:
        _, c, h, w = inputs[0].shape
        counts[(c, h, w)] = counts.get((c, h, w), 0) + 1

    handles = [
        m.register_forward_pre_hook(hook)
        for m in model.modules()
        if isinstance(m, torch.nn.BatchNorm2d)
    ]
    model.train()
    with torch.no_grad():
        model(y)
    for handle in handles:
        handle.remove()
    return counts


def time_layer(shape: tuple[int, int, int], k: int, batch: int, repeats: int) -> dict[str, float]:
    """Forward + backward seconds of torch's BatchNorm + ReLU and of the fused layer on
    members-last activations (batch, H, W, C, K)."""
    c, h, w = shape
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, h, w, c * k, generator=g, requires_grad=True)
    dy = torch.randn(batch, h, w, c * k, generator=g)
    gamma = torch.rand(c * k, generator=g).requires_grad_()
    beta = torch.randn(c * k, generator=g).requires_grad_()
    mean, var = torch.zeros(c * k), torch.ones(c * k)

    def torch_layers() -> None:
        xn = x.permute(0, 3, 1, 2)  # the NCHW view torch's layers saw (channels last)
        out = F.relu(F.batch_norm(xn, mean, var, gamma, beta, True, 0.1, 1e-5))
        torch.autograd.grad(out, (x, gamma, beta), dy.permute(0, 3, 1, 2))

    def fused() -> None:
        out = batch_norm_relu(x, gamma, beta, mean, var, 0.1, 1e-5)
        torch.autograd.grad(out, (x, gamma, beta), dy)

    return interleaved({"torch": torch_layers, "fused": fused}, repeats)


def time_steps(
    members: list[DenseVAE], y: torch.Tensor, eps: torch.Tensor, repeats: int
) -> dict[str, float] | None:
    """Seconds of one training step of the members-last network, with torch's layers and
    fused (None when the configuration does not run members last)."""
    nets = {"torch": BatchedDenseVAE(members), "fused": BatchedDenseVAE(members)}
    if not nets["fused"].layout.members_last:
        return None
    nets["torch"].fuse_batch_norm = False

    def step(net: BatchedDenseVAE) -> Callable[[], None]:
        def run() -> None:
            out = net(y, eps)
            loss = out.y_mean.square().mean() + out.mu.square().mean() + out.logvar.exp().mean()
            loss.backward()
            for p in net.parameters():
                p.grad = None

        return run

    return interleaved({name: step(net) for name, net in nets.items()}, repeats)


def measure(model: str, prior: str, k: int, batch: int, repeats: int) -> dict[str, Any]:
    """The rows and the summary for one configuration (at torch's current threads)."""
    cfg, members, y, g = ensemble(model, prior, k, batch)
    eps = torch.randn(k, batch, cfg.latent_dim, generator=g)
    rows = []
    for shape, calls in batch_norm_shapes(DenseVAE(cfg), y[0]).items():
        s = time_layer(shape, k, batch, repeats)
        rows.append(
            {
                "input": list(shape),
                "calls_per_step": calls,
                "torch_ms_per_step": 1e3 * s["torch"] * calls,
                "fused_ms_per_step": 1e3 * s["fused"] * calls,
                "speedup": s["torch"] / s["fused"],
            }
        )
    rows.sort(key=lambda r: -r["torch_ms_per_step"])
    steps = time_steps(members, y, eps, repeats)
    torch_ms = sum(r["torch_ms_per_step"] for r in rows)
    fused_ms = sum(r["fused_ms_per_step"] for r in rows)
    summary = {
        **summary_head(model, prior, k, batch),
        "layers_torch_ms": torch_ms,
        "layers_fused_ms": fused_ms,
        "layers_speedup": torch_ms / fused_ms,
        "step_torch_ms": None if steps is None else 1e3 * steps["torch"],
        "step_fused_ms": None if steps is None else 1e3 * steps["fused"],
        "step_speedup": None if steps is None else steps["torch"] / steps["fused"],
    }
    return {"rows": rows, "summary": summary}


COLUMNS = [
    ("input (C x H x W)", "<18", lambda r: "x".join(map(str, r["input"]))),
    ("calls", ">5", lambda r: str(r["calls_per_step"])),
    ("torch ms/step", ">13", lambda r: f"{r['torch_ms_per_step']:.2f}"),
    ("fused ms/step", ">13", lambda r: f"{r['fused_ms_per_step']:.2f}"),
    ("speed-up", ">8", lambda r: f"{r['speedup']:.2f}x"),
]


def report(res: dict[str, Any]) -> None:
    s = res["summary"]
    print(heading(s, "BatchNorm + ReLU of one training step (forward + backward)"))
    print(text_table(COLUMNS, res["rows"]))
    line = (
        f"layers: torch {s['layers_torch_ms']:.1f} ms, fused {s['layers_fused_ms']:.1f} ms "
        f"({s['layers_speedup']:.2f}x)"
    )
    if s["step_torch_ms"] is not None:
        line += (
            f"; step: torch's layers {s['step_torch_ms']:.0f} ms, fused "
            f"{s['step_fused_ms']:.0f} ms ({s['step_speedup']:.2f}x)"
        )
    print(line)


def main(argv: list[str] | None = None) -> int:
    return block_step_main(__doc__.splitlines()[0], measure, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
