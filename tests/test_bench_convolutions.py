"""benchmarks/bench_convolutions.py: its hand count of a convolution's work and what it records.

The benchmark's verdict (how far the ensemble's convolutions run from the
core's GEMM rate) rests on two things checked here against independent
sources: the floating-point count of each convolution (torch's own
``FlopCounterMode`` for the forward pass) and the list of convolutions one
training step runs (the model's convolution modules, each once).
"""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

BENCHMARK = "bench_convolutions"
"""The script the ``bench`` fixture (conftest.py) loads."""


CASES = [
    # input shape, weight shape, stride, padding, groups, transposed, output_padding
    ((2, 12, 9, 9), (8, 3, 3, 3), 1, 1, 4, False, 0),
    ((2, 6, 17, 17), (4, 3, 7, 7), 2, 2, 2, False, 0),
    ((3, 10, 8, 8), (10, 1, 1, 1), 1, 0, 10, False, 0),
    ((2, 12, 8, 8), (12, 2, 4, 4), 2, 1, 4, True, 1),
    ((1, 6, 4, 4), (6, 3, 3, 3), 2, 1, 2, True, 1),
]


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("input_grad", [False, True])
def test_conv_flops_agree_with_torchs_forward_count(bench, case, input_grad):
    shape, wshape, stride, pad, groups, transposed, out_pad = case
    call = {
        "input": shape,
        "weight": wshape,
        "channels_last": False,
        "input_grad": input_grad,
        "stride": (stride, stride),
        "padding": (pad, pad),
        "dilation": (1, 1),
        "transposed": transposed,
        "output_padding": (out_pad, out_pad),
        "groups": groups,
        "bias": False,
    }
    x, w = torch.randn(shape), torch.randn(wshape)
    with FlopCounterMode(display=False) as counter:
        out = bench._convolve(call, x, w)
    passes = 3 if input_grad else 2
    assert bench.conv_flops(call, tuple(out.shape)) == passes * counter.get_total_flops()


def test_records_each_convolution_of_a_step_once(bench, tmp_path):
    from darcyvae.models import DenseVAE, model_config

    out = tmp_path / "conv.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    model = DenseVAE(model_config("dense_vae_tiny", prior="hierarchical"))
    n_conv = sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in model.modules())
    assert sum(r["calls_per_step"] for r in result["rows"]) == n_conv
    k = result["summary"]["k"]
    assert all(r["groups"] == k for r in result["rows"])  # every one a grouped convolution
    # the model's input convolutions get no input gradient, every other one does
    first = [r for r in result["rows"] if not r["input_grad"]]
    assert [r["input"][1] for r in first] == [3 * k]
    # K = 8: every convolution also replayed by the member kernels, and the step run by them
    assert k == 8
    assert all(r["member_ms_per_step"] > 0 for r in result["rows"])
    assert result["summary"]["member_step_ms"] > 0
