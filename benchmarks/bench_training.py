"""Benchmark: DenseVAE training throughput (issue 9 part 4, issue 17 "Speed").

Side by side in one process, on the same device and the same random fields
(``default_rng(1234)``, batch 64), samples per second of:

- ``authors_loop``: a loop that behaves like the authors' released loop: a
  ``DataLoader`` over CPU tensors (each batch copied to the device), the
  losses inline, ``.cpu().numpy()`` of the losses after every step, beta a
  Python float updated by the paper's rule, plain ``torch.optim.Adam``;
- ``darcyvae``: ``darcyvae.training.train`` (the training engine,
  ``darcyvae.ensemble.engine``, with one member: its own ``DenseVAE`` and
  ``torch.optim.Adam``; phase 2 from epoch 1: the beta rule after every
  step; losses on the device, one host sync per epoch; evaluation off);
- ``batched K=1`` (``--batched-k1``, on by default): the same single run on
  the engine's batched path (``BatchedDenseVAE`` + ``StackedAdam``, the loss
  vmapped; forced with ``darcyvae.ensemble.members._FORCE_BATCHED``): what the engine's choice
  of its own ``DenseVAE`` for K = 1 is measured against;
- ``ensemble K=k``: ``darcyvae.ensemble.train_ensemble`` with k seeds at once
  (aggregate samples/s = k x samples / epoch time), the engine's default
  layout (on the CPU: darcyvae's member convolution kernels for K >= 8,
  torch's grouped convolutions channels last below);
- with ``--layouts`` also the layout the default would take next, to check
  the choice: on the CPU ``ensemble K=k cl`` for K >= 8 (torch's grouped
  convolutions channels last, ``channels_last=True``) and ``ensemble K=k
  nchw`` below (``channels_last=False``); elsewhere ``ensemble K=k cl``;
- with ``--bf16`` also ``ensemble K=k bf16`` (opt-in bfloat16 autocast of
  the network; not equal to the float32 runs);
- with ``--workers W`` also ``ensemble K=k wW``: the k seeds in W blocks, each
  trained in a local worker process at its share of the threads
  (``train_ensemble(workers=W)``); an epoch's time is the slowest block's
  (the process start, a few seconds once per run, is not in it).

Each repeat is one epoch; the first epoch (warm-up) and the last (which
evaluates and checkpoints) are not timed; medians are reported, over
``--rounds`` turns through all implementations (on a shared machine,
alternating keeps a drifting load from favouring one of them). Every
``--threads`` value (e.g. ``1,2``) is measured in the same process, one after
the other, and gets its own rows. ``vs_authors`` = samples/s / authors_loop
samples/s (same model and threads); ``vs_sequential`` = aggregate samples/s /
darcyvae's single-run samples/s, i.e. against k sequential single runs.

Usage::

    python benchmarks/bench_training.py --quick                 # tiny, K = 2, 4, 16, 128 samples
    python benchmarks/bench_training.py                          # tiny/small/paper, K = 2, 4, 16, 50
    python benchmarks/bench_training.py --models dense_vae_tiny --ks 2,16 --threads 1,2 --layouts
    python benchmarks/bench_training.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch
from _machine import machine
from _table import text_table
from darcyvae.config import TrainConfig
from darcyvae.dataset import DarcyDataset
from darcyvae.ensemble import members, train_ensemble
from darcyvae.ensemble.convolutions import MIN_MEMBERS
from darcyvae.losses import update_beta
from darcyvae.models import DenseVAE, model_config
from darcyvae.training import train
from torch.utils.data import DataLoader, TensorDataset

FULL = ["dense_vae_tiny", "dense_vae_small", "dense_vae_paper"]
QUICK = ["dense_vae_tiny"]
LOG_2PI = math.log(2 * math.pi)


def make_data(folder: Path, grid: int, n: int) -> Path:
    rng = np.random.default_rng(1234)
    path = folder / f"bench_{grid}_{n}.h5"
    with h5py.File(path, "w") as fh:
        fh["output"] = rng.standard_normal((n, 3, grid, grid)).astype(np.float32)
        fh["generative_params"] = rng.standard_normal((n, 2)).astype(np.float32)
    return path


def run_authors_loop(config, data: DarcyDataset, epochs: int, device: torch.device) -> list[float]:
    """The released loop's habits: CPU DataLoader, per-step host reads, Python-float beta."""
    torch.manual_seed(0)
    model = DenseVAE(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    ds = TensorDataset(data.y.cpu(), data.theta.cpu())
    loader = DataLoader(ds, batch_size=64, shuffle=True)
    beta = 1e-7
    n_pix = config.grid * config.grid
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        for y, _ in loader:
            y = y.to(device)
            mu, logvar = model.encoder(y)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            mean, s = model.decoder(z)
            rec = (0.5 * (LOG_2PI + s + (y - mean) ** 2 * torch.exp(-s))).sum((1, 2, 3))
            rec = rec.mean() / n_pix
            kl = (0.5 * (mu**2 + logvar.exp() - 1 - logvar)).mean()
            loss = rec + beta * kl
            opt.zero_grad()
            loss.backward()
            opt.step()
            rec_np = rec.cpu().detach().numpy()
            kl.cpu().detach().numpy()
            beta = update_beta(beta, float(rec_np))
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def bench_config(config, epochs: int) -> TrainConfig:
    return TrainConfig(
        model=config,
        epochs=epochs,
        rec_epochs=1,  # the rest in phase 2: the beta rule runs after every step
        lr_values=(1e-4,),
        lr_milestones=(),
        eval_every=0,
        checkpoint_every=epochs,
    )


def run_darcyvae(config, data: DarcyDataset, epochs: int, device: torch.device) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        result = train(
            bench_config(config, epochs), data, out_dir=out, device=device, progress=False
        )
    return [r["seconds"] for r in result.history]


def run_ensemble(
    config,
    data: DarcyDataset,
    epochs: int,
    device: torch.device,
    k: int,
    precision: str,
    channels_last: bool | None = None,
    workers: int | None = None,
) -> list[float]:
    with tempfile.TemporaryDirectory() as out:
        res = train_ensemble(
            bench_config(config, epochs),
            list(range(k)),
            data if workers is None else data.path,  # workers read the file
            out_dir=Path(out) / "run",
            device=device,
            progress=False,
            precision=precision,
            channels_last=channels_last,
            workers=workers,
        )
    # blocks train at once: an epoch lasts as long as its slowest block
    per_member = [[r["seconds"] for r in m.history] for m in res.members]
    return [max(epoch) for epoch in zip(*per_member, strict=True)]


def run_batched_single(
    config, data: DarcyDataset, epochs: int, device: torch.device
) -> list[float]:
    """``train`` (one member) on the engine's batched path instead of its own DenseVAE."""
    members._FORCE_BATCHED = True
    try:
        return run_darcyvae(config, data, epochs, device)
    finally:
        members._FORCE_BATCHED = False


def implementations(
    ks: list[int],
    batched_k1: bool,
    layouts: bool,
    bf16: bool,
    cpu: bool = True,
    workers: int | None = None,
) -> list[tuple]:
    """(row name, k, runner kind, options) of every implementation, in the order they run."""
    runs: list[tuple] = [("authors_loop", 1, "authors", None), ("darcyvae", 1, "train", None)]
    if batched_k1:
        runs.append(("batched K=1", 1, "batched", None))
    for k in ks:
        runs.append((f"ensemble K={k}", k, "ensemble", ("float32", None)))
        if layouts:  # the layout the default would take next on this device
            if cpu and k >= MIN_MEMBERS:  # the default: the member kernels
                runs.append((f"ensemble K={k} cl", k, "ensemble", ("float32", True)))
            elif cpu:
                runs.append((f"ensemble K={k} nchw", k, "ensemble", ("float32", False)))
            else:
                runs.append((f"ensemble K={k} cl", k, "ensemble", ("float32", True)))
        if bf16:
            runs.append((f"ensemble K={k} bf16", k, "ensemble", ("bfloat16", None)))
        if workers and k >= workers:
            runs.append((f"ensemble K={k} w{workers}", k, "ensemble", ("float32", None, workers)))
    return runs


def benchmark(
    models: list[str],
    ks: list[int],
    n: int,
    repeats: int,
    device: torch.device,
    rounds: int = 1,
    bf16: bool = False,
    threads: list[int | None] | None = None,
    batched_k1: bool = True,
    layouts: bool = False,
    workers: int | None = None,
) -> list[dict]:
    rows = []
    runs = implementations(ks, batched_k1, layouts, bf16, device.type == "cpu", workers)
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            config = model_config(name)
            data = DarcyDataset(make_data(Path(folder), config.grid, n), device=device)
            epochs = repeats + 2
            for nthreads in threads or [None]:
                if nthreads:
                    torch.set_num_threads(nthreads)
                used = torch.get_num_threads()
                # workers share the threads out: fewer threads than workers is not this row
                here = [r for r in runs if r[3] is None or len(r[3]) < 3 or r[3][2] <= used]
                timed: dict[str, list[float]] = {impl: [] for impl, *_ in here}
                for _ in range(rounds):  # alternate, so that a drifting load hits all alike
                    for impl, k, kind, opts in here:
                        if kind == "authors":
                            times = run_authors_loop(config, data, epochs, device)
                        elif kind == "train":
                            times = run_darcyvae(config, data, epochs, device)
                        elif kind == "batched":
                            times = run_batched_single(config, data, epochs, device)
                        else:
                            times = run_ensemble(config, data, epochs, device, k, *opts)
                        timed[impl] += times[1:-1]
                base: dict[str, float] = {}
                for impl, k, *_ in here:
                    times = timed[impl]
                    med = statistics.median(times)
                    sps = k * n / med
                    base.setdefault(impl, sps)
                    row = {
                        "impl": impl,
                        "model": name,
                        "grid": config.grid,
                        "threads": used,
                        "k": k,
                        "n_samples": n,
                        "median_s": med,
                        "min_s": min(times),
                        "samples_per_s": sps,
                        "repeats": len(times),
                        "vs_authors": sps / base["authors_loop"],
                        "vs_sequential": (
                            None if impl == "authors_loop" else sps / base["darcyvae"]
                        ),
                    }
                    rows.append(row)
                    print(
                        f"  {impl:21s} {name:16s} {used}t {sps:9.1f} samples/s  "
                        f"x{row['vs_authors']:.2f} authors",
                        file=sys.stderr,
                        flush=True,
                    )
    return rows


def table(rows: list[dict]) -> str:
    return text_table(
        [
            ("impl", "21", lambda r: r["impl"]),
            ("model", "16", lambda r: r["model"]),
            ("thr", ">3", lambda r: f"{r['threads']}"),
            ("N", ">3", lambda r: f"{r['grid']}"),
            ("s/epoch", ">9", lambda r: f"{r['median_s']:.3f}"),
            ("samples/s", ">10", lambda r: f"{r['samples_per_s']:.1f}"),
            ("vs authors", ">10", lambda r: f"{r['vs_authors']:.2f}"),
            (
                "vs K sequential",
                ">15",
                lambda r: "" if r["vs_sequential"] is None else f"{r['vs_sequential']:.2f}",
            ),
        ],
        rows,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny model, K = 2, 4, 16, 128 samples"
    )
    parser.add_argument("--models", default=None, help="comma-separated registered models")
    parser.add_argument(
        "--ks", default=None, help="ensemble sizes, e.g. 1,4,16,50 ('' for single runs only)"
    )
    parser.add_argument("--n-samples", type=int, default=None, help="training samples")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per implementation")
    parser.add_argument(
        "--rounds", type=int, default=1, help="run the implementations in turn this many times"
    )
    parser.add_argument(
        "--bf16", action="store_true", help="also the ensembles with precision='bfloat16'"
    )
    parser.add_argument(
        "--threads", default=None, help="torch CPU threads, e.g. 1,2 (each gets its own rows)"
    )
    parser.add_argument(
        "--no-batched-k1",
        dest="batched_k1",
        action="store_false",
        help="skip the single run on the batched path (row 'batched K=1')",
    )
    parser.add_argument(
        "--layouts",
        action="store_true",
        help="also each ensemble with channels last (cl) and without (nchw) forced",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="also each ensemble in this many local worker processes (threads shared out)",
    )
    args = parser.parse_args(argv)
    logging.getLogger("darcyvae").setLevel(logging.ERROR)  # random fields: verdicts are noise
    threads = [int(t) for t in args.threads.split(",")] if args.threads else None
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    models = QUICK if args.quick else FULL
    ks = [2, 4, 16] if args.quick else [2, 4, 16, 50]
    n = 128 if args.quick else 512
    if args.models:
        models = args.models.split(",")
    if args.ks is not None:
        ks = [int(k) for k in args.ks.split(",") if k.strip()]
    if args.n_samples:
        n = args.n_samples
    rows = benchmark(
        models,
        ks,
        n,
        args.repeats,
        device,
        args.rounds,
        args.bf16,
        threads,
        args.batched_k1,
        args.layouts,
        args.workers,
    )
    print(table(rows))
    if args.json:
        payload = {"rows": rows, "machine": machine(device=str(device))}
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
