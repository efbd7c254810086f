"""Benchmark: DenseVAE training throughput, darcyvae's loop against a bare PyTorch loop.

darcyvae: ``darcyvae.training.train`` (the paper's method: phase-2 adaptive
beta after every step, losses accumulated on the device, one host sync per
epoch, JSON log; evaluation off, one checkpoint at the end). Baseline: the
loop a user writes by hand over the same model and data: shuffle, forward,
Gaussian NLL + KL inline, backward, Adam step, ``loss.item()`` per batch.
Both run in this process, on the same device, the same 512 random fields
(``default_rng(1234)``, batch 64); each repeat is one epoch; the first
(warm-up) and the last epoch (darcyvae's checkpoint) of each run are not
timed. Speed-up = baseline median / darcyvae median (1.0 means the loop adds
nothing).

Usage::

    python benchmarks/bench_training.py                # tiny, small and paper models
    python benchmarks/bench_training.py --quick        # tiny and small, 128 samples
    python benchmarks/bench_training.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import darcyvae
import h5py
import numpy as np
import torch
from _machine import cpu_model
from darcyvae.dataset import DarcyDataset
from darcyvae.models import DenseVAE, model_config
from darcyvae.training import TrainConfig, train

FULL = ["dense_vae_tiny", "dense_vae_small", "dense_vae_paper"]
QUICK = ["dense_vae_tiny", "dense_vae_small"]


def make_data(folder: Path, grid: int, n: int) -> Path:
    rng = np.random.default_rng(1234)
    path = folder / f"bench_{grid}_{n}.h5"
    with h5py.File(path, "w") as fh:
        fh["output"] = rng.standard_normal((n, 3, grid, grid)).astype(np.float32)
        fh["generative_params"] = rng.standard_normal((n, 2)).astype(np.float32)
    return path


def run_baseline(config, data: DarcyDataset, epochs: int, device: torch.device) -> list[float]:
    torch.manual_seed(0)
    model = DenseVAE(config).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    y_all = data.y.to(device)
    gen = torch.Generator().manual_seed(0)
    times = []
    for _ in range(epochs):
        start = time.perf_counter()
        perm = torch.randperm(len(y_all), generator=gen).to(device)
        for k in range(0, len(y_all), 64):
            y = y_all[perm[k : k + 64]]
            mu, logvar = model.encoder(y)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu)
            mean, s = model.decoder(z)
            rec = 0.5 * (math.log(2 * math.pi) + s + (y - mean) ** 2 * torch.exp(-s))
            kl = 0.5 * (mu**2 + logvar.exp() - 1 - logvar)
            loss = rec.sum((1, 2, 3)).mean() / y.shape[-1] ** 2 + 1e-7 * kl.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def run_darcyvae(config, data: DarcyDataset, epochs: int, device: torch.device) -> list[float]:
    cfg = TrainConfig(
        model=config,
        epochs=epochs,
        rec_epochs=1,  # the rest in phase 2: the beta rule runs after every step
        lr_values=(1e-4,),
        lr_milestones=(),
        eval_every=0,
        checkpoint_every=epochs,
    )
    with tempfile.TemporaryDirectory() as out:
        result = train(cfg, data, out_dir=out, device=device, progress=False)
    return [r["seconds"] for r in result.history]


RUNNERS = {"torch_loop": run_baseline, "darcyvae": run_darcyvae}


def machine() -> dict:
    cpu = cpu_model()
    info = {
        "platform": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "loadavg": os.getloadavg(),
        "python": platform.python_version(),
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def versions() -> dict:
    return {"darcyvae": darcyvae.__version__, "torch": torch.__version__, "numpy": np.__version__}


def benchmark(models: list[str], n: int, repeats: int, device: torch.device) -> list[dict]:
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name in models:
            config = model_config(name)
            data = DarcyDataset(make_data(Path(folder), config.grid, n), device=device)
            medians = {}
            for impl in ("torch_loop", "darcyvae"):
                # Drop the warm-up epoch, and the last one (darcyvae writes its checkpoint there).
                times = RUNNERS[impl](config, data, repeats + 2, device)[1:-1]
                med = statistics.median(times)
                medians[impl] = med
                rows.append(
                    {
                        "impl": impl,
                        "model": name,
                        "grid": config.grid,
                        "n_samples": n,
                        "median_s": med,
                        "min_s": min(times),
                        "samples_per_s": n / med,
                        "repeats": len(times),
                    }
                )
                print(f"  {impl:10s} {name:16s} {n / med:9.1f} samples/s", file=sys.stderr)
            for row in rows[-2:]:
                row["speedup"] = medians["torch_loop"] / row["median_s"]
    return rows


def table(rows: list[dict]) -> str:
    head = (
        f"{'impl':11s} {'model':16s} {'N':>4s} {'median s/epoch':>15s} {'min s':>9s} "
        f"{'samples/s':>10s} {'speed-up':>9s}"
    )
    lines = [head, "-" * len(head)]
    for r in rows:
        lines.append(
            f"{r['impl']:11s} {r['model']:16s} {r['grid']:4d} {r['median_s']:15.3f} "
            f"{r['min_s']:9.3f} {r['samples_per_s']:10.1f} {r['speedup']:9.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny and small models, 128 samples")
    parser.add_argument("--json", default=None, help="write the rows here")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or auto")
    parser.add_argument("--repeats", type=int, default=3, help="timed epochs per implementation")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    models, n = (QUICK, 128) if args.quick else (FULL, 512)
    rows = benchmark(models, n, args.repeats, device)
    print(table(rows))
    if args.json:
        payload = {
            "rows": rows,
            "versions": versions(),
            "machine": machine(),
            "device": str(device),
        }
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(payload, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
