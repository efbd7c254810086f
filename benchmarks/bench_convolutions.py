"""Benchmark: an ensemble's convolutions, torch's grouped kernels against darcyvae's member kernels.

The training engine runs K DenseVAEs as one network (docs/model.md §4a,
``BatchedDenseVAE``). Its convolutions can run as torch's grouped
convolutions (``groups=K``, channels last: oneDNN) or, for K >= 8 in float32
on the CPU (the default there), as darcyvae's member kernels
(``darcyvae.ensemble.convolutions``, members innermost, ``cpp/conv_kernels.inc``).
For one training step of K members (forward and backward) this benchmark

- records every convolution the step runs in torch's layout (a
  ``TorchDispatchMode`` on ``aten.convolution``: input, weight, stride,
  padding, groups, transposed);
- replays each one alone, forward + backward (the weight's gradient, and the
  input's where the step needs it), with torch's kernel in the same memory
  layout and with the member kernels, side by side, and times both;
- counts its floating-point work by hand, 2 x (multiply-adds) per pass:
  forward, weight gradient, input gradient;
- times the whole step in both layouts, and a large single-precision matrix
  product (``n x n`` ``@``) at the same threads: the rate dense BLAS work
  reaches on this core.

It prints one row per distinct convolution (calls per step, ms per step and
GFLOP/s of each kernel, the speed-up, the member kernels' share of the GEMM
rate) and a summary: the step's time in each layout, the convolutions'
share, and the step's floor if the convolutions ran at the GEMM rate.

Usage::

    python benchmarks/bench_convolutions.py                        # tiny + HP, K = 50, 1 thread
    python benchmarks/bench_convolutions.py --k 16 --threads 2 --json conv.json
    python benchmarks/bench_convolutions.py --quick                # K = 8, batch 16: seconds
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _ensemble_step import ensemble, heading, parse, run_thread_counts, step_parser, summary_head
from _table import text_table
from darcyvae.ensemble import convolutions as member_convs
from darcyvae.ensemble.batched import BatchedDenseVAE


class _RecordConvolutions(TorchDispatchMode):
    """Records the arguments of every ``aten.convolution`` call (forward only)."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[dict[str, Any]] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.ops.aten.convolution.default:
            x, w, bias, stride, padding, dilation, transposed, output_padding, groups = args
            self.calls.append(
                {
                    "input": tuple(x.shape),
                    "weight": tuple(w.shape),
                    "channels_last": x.is_contiguous(memory_format=torch.channels_last)
                    and not x.is_contiguous(),
                    "input_grad": x.requires_grad,
                    "stride": tuple(stride),
                    "padding": tuple(padding),
                    "dilation": tuple(dilation),
                    "transposed": bool(transposed),
                    "output_padding": tuple(output_padding),
                    "groups": int(groups),
                    "bias": bias is not None,
                }
            )
        return func(*args, **kwargs)


def _key(call: dict[str, Any]) -> tuple:
    return tuple((k, call[k]) for k in sorted(call))


def _convolve(call: dict[str, Any], x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    if call["transposed"]:
        return F.conv_transpose2d(
            x,
            w,
            None,
            call["stride"],
            call["padding"],
            call["output_padding"],
            call["groups"],
            call["dilation"],
        )
    return F.conv2d(x, w, None, call["stride"], call["padding"], call["dilation"], call["groups"])


def conv_flops(call: dict[str, Any], output_shape: tuple[int, ...]) -> float:
    """Floating-point operations of one forward + backward of ``call``.

    Multiply-adds of the forward pass: every output element of a grouped
    convolution sums ``C_in / groups x kh x kw`` products (for a transposed
    convolution every *input* element scatters ``C_out / groups x kh x kw``,
    the same count seen from the other side). The weight gradient costs as
    much again, and so does the input gradient when the step needs it.
    """
    w = call["weight"]
    kh, kw = w[2], w[3]
    if call["transposed"]:  # weight (C_in, C_out / groups, kh, kw)
        n, c_in, h, wd = call["input"]
        macs = n * h * wd * c_in * w[1] * kh * kw
    else:  # weight (C_out, C_in / groups, kh, kw)
        n, c_out, h, wd = output_shape
        macs = n * h * wd * c_out * w[1] * kh * kw
    passes = 3 if call["input_grad"] else 2
    return 2.0 * macs * passes


def time_convolution(call: dict[str, Any], repeats: int) -> tuple[float, tuple[int, ...]]:
    """Median seconds of one forward + backward of ``call`` alone, and its output shape."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(call["input"], generator=g)
    if call["channels_last"]:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(call["input_grad"])
    w = torch.randn(call["weight"], generator=g, requires_grad=True)
    out = _convolve(call, x, w)
    shape = tuple(out.shape)
    grad = torch.ones_like(out)
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        out = _convolve(call, x, w)
        out.backward(grad)
        times.append(time.perf_counter() - t0)
        x.grad = w.grad = None
    return statistics.median(times[1:]), shape


def time_member_convolution(call: dict[str, Any], repeats: int) -> float | None:
    """Median seconds of ``call`` forward + backward by the member kernels (None: K < 8)."""
    k = call["groups"]
    if k < member_convs.MIN_MEMBERS:
        return None
    n, kc, h, w = call["input"]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, h, w, kc // k, k, generator=g, requires_grad=call["input_grad"])
    ws = call["weight"]  # (K * a, b, kh, kw) -> (K, a, b, kh, kw)
    weight = torch.randn(k, ws[0] // k, *ws[1:], generator=g, requires_grad=True)

    def once() -> torch.Tensor:
        if call["transposed"]:
            return member_convs.conv_transpose2d(
                x, weight, call["stride"], call["padding"], call["output_padding"]
            )
        return member_convs.conv2d(x, weight, call["stride"], call["padding"])

    grad = torch.ones_like(once())
    times = []
    for _ in range(repeats + 1):  # the first is a warm-up
        t0 = time.perf_counter()
        once().backward(grad)
        times.append(time.perf_counter() - t0)
        x.grad = weight.grad = None
    return statistics.median(times[1:])


def gemm_rate(n: int, repeats: int) -> float:
    """FLOP/s of an ``n x n`` float32 matrix product (median of ``repeats``)."""
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2.0 * n**3 / statistics.median(times)


def _step_seconds(net: BatchedDenseVAE, y, eps, repeats: int, recorder=None) -> float:
    """Median seconds of one forward + backward of ``net`` (the first calls untimed)."""

    def step() -> None:
        out = net(y, eps)
        (out.y_mean.square().mean() + out.mu.square().mean() + out.logvar.exp().mean()).backward()
        for p in net.parameters():
            p.grad = None

    if recorder is not None:
        with recorder:
            step()
    step()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def measure(
    model: str, prior: str, k: int, batch: int, repeats: int, gemm_n: int
) -> dict[str, Any]:
    """The rows and the summary for one configuration (at torch's current threads)."""
    cfg, members, y, g = ensemble(model, prior, k, batch)
    eps = torch.randn(k, batch, cfg.latent_dim, generator=g)
    recorder = _RecordConvolutions()
    # torch's grouped convolutions, channels last (the layout below K = 8)
    step_s = _step_seconds(BatchedDenseVAE(members, channels_last=True), y, eps, repeats, recorder)
    default = BatchedDenseVAE(members)
    member_step_s = _step_seconds(default, y, eps, repeats) if default.layout.members_last else None

    counts: dict[tuple, int] = {}
    calls: dict[tuple, dict[str, Any]] = {}
    for call in recorder.calls:
        counts[_key(call)] = counts.get(_key(call), 0) + 1
        calls[_key(call)] = call
    gemm = gemm_rate(gemm_n, max(3, repeats))
    rows = []
    for key, call in calls.items():
        seconds, out_shape = time_convolution(call, repeats)
        member_s = time_member_convolution(call, repeats)
        n = counts[key]
        flops = conv_flops(call, out_shape)
        rows.append(
            {
                "kind": "conv_transpose" if call["transposed"] else "conv",
                "input": list(call["input"]),
                "weight": list(call["weight"]),
                "stride": call["stride"][0],
                "groups": call["groups"],
                "input_grad": call["input_grad"],
                "calls_per_step": n,
                "ms_per_step": 1e3 * seconds * n,
                "gflop_per_step": flops * n / 1e9,
                "gflops": flops / seconds / 1e9,
                "of_gemm": flops / seconds / gemm,
                "member_ms_per_step": None if member_s is None else 1e3 * member_s * n,
                "member_gflops": None if member_s is None else flops / member_s / 1e9,
                "member_of_gemm": None if member_s is None else flops / member_s / gemm,
                "member_speedup": None if member_s is None else seconds / member_s,
            }
        )
    rows.sort(key=lambda r: -r["ms_per_step"])
    conv_s = sum(r["ms_per_step"] for r in rows) / 1e3
    conv_flop = sum(r["gflop_per_step"] for r in rows) * 1e9
    floor_s = step_s - conv_s + conv_flop / gemm
    summary = {
        **summary_head(model, prior, k, batch),
        "step_ms": 1e3 * step_s,
        "convolutions_ms": 1e3 * conv_s,
        "convolutions_share": conv_s / step_s,
        "convolutions_gflops": conv_flop / conv_s / 1e9,
        "gemm_gflops": gemm / 1e9,
        "floor_ms_at_gemm_rate": 1e3 * floor_s,
        "possible_speedup": step_s / floor_s,
        "member_step_ms": None if member_step_s is None else 1e3 * member_step_s,
    }
    if member_step_s is not None:
        member_conv_s = sum(r["member_ms_per_step"] for r in rows) / 1e3
        summary.update(
            member_convolutions_ms=1e3 * member_conv_s,
            member_convolutions_share=member_conv_s / member_step_s,
            member_convolutions_gflops=conv_flop / member_conv_s / 1e9,
            member_step_speedup=step_s / member_step_s,
        )
    return {"rows": rows, "summary": summary}


def _shape(r: dict[str, Any]) -> str:
    w = r["weight"]
    return f"{r['input'][1]}x{r['input'][2]}x{r['input'][3]} k{w[2]} s{r['stride']}"


def _opt(fmt: str, key: str):
    return lambda r: "-" if r[key] is None else fmt.format(r[key])


COLUMNS = [
    ("convolution", "<16", lambda r: r["kind"]),
    ("input (C x H x W)", "<20", _shape),
    ("C/group in", ">10", lambda r: str(r["input"][1] // r["groups"])),
    ("calls", ">5", lambda r: str(r["calls_per_step"])),
    ("GFLOP/step", ">10", lambda r: f"{r['gflop_per_step']:.3f}"),
    ("torch ms/step", ">13", lambda r: f"{r['ms_per_step']:.1f}"),
    ("torch GFLOP/s", ">13", lambda r: f"{r['gflops']:.1f}"),
    ("member ms/step", ">14", _opt("{:.1f}", "member_ms_per_step")),
    ("member GFLOP/s", ">14", _opt("{:.1f}", "member_gflops")),
    ("speed-up", ">8", _opt("{:.2f}x", "member_speedup")),
    ("of GEMM", ">8", _opt("{:.0%}", "member_of_gemm")),
]


def report(res: dict[str, Any]) -> None:
    s = res["summary"]
    print(heading(s, "one training step (forward + backward)"))
    print(text_table(COLUMNS, res["rows"]))
    print(
        f"torch's kernels: step {s['step_ms']:.0f} ms; convolutions "
        f"{s['convolutions_ms']:.0f} ms ({100 * s['convolutions_share']:.0f}%) at "
        f"{s['convolutions_gflops']:.1f} GFLOP/s; float32 GEMM {s['gemm_gflops']:.1f} GFLOP/s; "
        f"with the convolutions at the GEMM rate the step would take "
        f"{s['floor_ms_at_gemm_rate']:.0f} ms ({s['possible_speedup']:.1f}x faster)"
    )
    if s["member_step_ms"] is not None:
        print(
            f"member kernels: step {s['member_step_ms']:.0f} ms "
            f"({s['member_step_speedup']:.2f}x); convolutions "
            f"{s['member_convolutions_ms']:.0f} ms "
            f"({100 * s['member_convolutions_share']:.0f}%) at "
            f"{s['member_convolutions_gflops']:.1f} GFLOP/s"
        )


def main(argv: list[str] | None = None) -> int:
    parser = step_parser(
        __doc__.splitlines()[0], k=50, k_help="members (default: 50, mixture4's)", repeats=7
    )
    parser.add_argument("--gemm-n", type=int, default=2048, help="size of the GEMM reference")
    args = parse(parser, argv, gemm_n=512)
    return run_thread_counts(
        args,
        lambda: measure(args.model, args.prior, args.k, args.batch, args.repeats, args.gemm_n),
        report,
    )


if __name__ == "__main__":
    raise SystemExit(main())
