"""benchmarks/bench_reconstruction.py: both variants it times compute the same term."""

from __future__ import annotations

import json

BENCHMARK = "bench_reconstruction"
"""The script the ``bench`` fixture (conftest.py) loads."""


def test_times_the_term_and_the_step_of_equal_computations(bench, tmp_path):
    out = tmp_path / "rec.json"
    assert bench.main(["--quick", "--json", str(out)]) == 0
    result = json.loads(out.read_text())["results"][0]
    s = result["summary"]
    assert (s["k"], s["batch"]) == (8, 16)
    # the copy + torch's loss and the one pass: the same values and gradients
    assert s["term_max_relative_difference"] < 1e-5
    # K = 8 in float32 runs members last, so the training step is timed too
    assert [r["what"] for r in result["rows"]] == [
        "reconstruction term (fwd + bwd)",
        "training step",
    ]
