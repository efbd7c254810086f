"""benchmarks/bench_batch_norm.py: the BatchNorm layers it replays are those of a step."""

from __future__ import annotations

import json

import torch

BENCHMARK = "bench_batch_norm"
"""The script the ``bench`` fixture (conftest.py) loads."""


def test_replays_every_batch_norm_of_a_step_with_its_shape(bench, tmp_path):
    from darcyvae.models import DenseVAE, model_config

    out = tmp_path / "bn.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    model = DenseVAE(model_config("dense_vae_tiny", prior="hierarchical"))
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert sum(r["calls_per_step"] for r in result["rows"]) == len(norms)
    # every row's channel count is one of the layers' feature counts
    assert {r["input"][0] for r in result["rows"]} <= {m.num_features for m in norms}
    s = result["summary"]
    assert s["k"] == 8
    assert s["step_fused_ms"] > 0
    assert s["step_torch_ms"] > 0
