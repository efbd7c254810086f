from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy_reference as ref
from darcyvae import _core, darcy
from darcyvae.darcy import (
    DarcyConfig,
    SolveDiagnostics,
    gauge_weights,
    solve,
    solve_batch,
    source_term,
)
from darcyvae.errors import SolveAccuracyError

# The independent reference: scipy.sparse assembly of both schemes and SuperLU
# of the bordered system (tests/scipy_reference.py, shared with the benchmarks).


def rel_err(a, b):
    return np.abs(a - b).max() / np.abs(b).max()


SCHEMES = ["fd", "fv"]
ISAS = ["generic"] + (["avx2"] if _core.DarcySolver(3).isa == "avx2" else [])

# ---------------------------------------------------------------------------
# Agreement with the reference


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("n_side", [3, 4, 17, 33])
def test_matches_scipy_bordered_solve(scheme, n_side):
    k = ref.lognormal_fields(3, n_side, seed=n_side)
    out, diag = solve_batch(k, DarcyConfig(scheme=scheme), return_diagnostics=True)
    f = (
        source_term(n_side)
        if n_side >= 9
        else np.random.default_rng(1).standard_normal((n_side,) * 2)
    )
    if n_side < 9:
        out, diag = solve_batch(k, DarcyConfig(scheme=scheme), source=f, return_diagnostics=True)
    for i in range(len(k)):
        expected, lam = ref.solve(k[i], scheme, f)
        assert rel_err(out[i], expected) < 1e-8
        assert abs(diag.lagrange_multiplier[i] - lam) <= 1e-8 * max(abs(lam), 1.0)


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize("isa", ISAS)
def test_matches_scipy_at_65_rough_field(scheme, isa):
    # Rough (white-noise) log-normal field: far from an M-matrix for fd.
    k = np.exp(np.random.default_rng(7).standard_normal((1, 65, 65)))
    solver = _core.DarcySolver(65, scheme, isa=isa)
    out = np.empty((1, 3, 65, 65))
    lam, _ = solver.solve_into(k, source_term(65), out, 1)
    expected, ref_lam = ref.solve(k[0], scheme)
    assert rel_err(out[0], expected) < 1e-8
    assert abs(lam[0] - ref_lam) <= 1e-8 * max(abs(ref_lam), 1.0)
    assert solver.fallbacks == 0


@pytest.mark.parametrize("scheme", SCHEMES)
def test_instruction_sets_agree(scheme):
    if len(ISAS) < 2:
        pytest.skip("no AVX2 kernels on this machine")
    k = ref.lognormal_fields(5, 33, seed=3)
    outs = []
    for isa in ISAS:
        out = np.empty((5, 3, 33, 33))
        _core.DarcySolver(33, scheme, isa=isa).solve_into(k, source_term(33), out, 1)
        outs.append(out)
    assert rel_err(outs[0], outs[1]) < 1e-12


@pytest.mark.parametrize("scheme", SCHEMES)
@pytest.mark.parametrize(("leaf", "block"), [(1, 1), (9, 3), (40, 64)])
def test_tree_and_panel_shapes_give_the_same_solution(scheme, leaf, block):
    k = ref.lognormal_fields(4, 21, seed=11)
    f = source_term(21)
    base = solve_batch(k, DarcyConfig(scheme=scheme), threads=1)
    out = np.empty_like(base)
    _core.DarcySolver(21, scheme, leaf_size=leaf, block=block).solve_into(k, f, out, 1)
    assert rel_err(out, base) < 1e-11


@pytest.mark.parametrize("scheme", SCHEMES)
def test_pivoting_fallback_matches_fast_path(scheme):
    k = ref.lognormal_fields(6, 17, seed=5)
    f = source_term(17)
    fast, slow = np.empty((6, 3, 17, 17)), np.empty((6, 3, 17, 17))
    lam_fast, _ = _core.DarcySolver(17, scheme).solve_into(k, f, fast, 1)
    forced = _core.DarcySolver(17, scheme, check_tolerance=-1.0)
    lam_slow, _ = forced.solve_into(k, f, slow, 2)
    assert forced.fallbacks == 6
    assert rel_err(slow, fast) < 1e-10
    np.testing.assert_allclose(lam_slow, lam_fast, rtol=1e-9, atol=1e-12)


# ---------------------------------------------------------------------------
# Manufactured solution: p = cos(pi x) cos(pi y), smooth K, f = -div(K grad p)


def _manufactured(n_side):
    x = np.linspace(0.0, 1.0, n_side)
    xx, yy = np.meshgrid(x, x)
    g = 0.6 * np.sin(2 * np.pi * xx + 0.3) * np.cos(3 * np.pi * yy)
    gx = 0.6 * 2 * np.pi * np.cos(2 * np.pi * xx + 0.3) * np.cos(3 * np.pi * yy)
    gy = -0.6 * 3 * np.pi * np.sin(2 * np.pi * xx + 0.3) * np.sin(3 * np.pi * yy)
    k = np.exp(g)
    p = np.cos(np.pi * xx) * np.cos(np.pi * yy)
    px = -np.pi * np.sin(np.pi * xx) * np.cos(np.pi * yy)
    py = -np.pi * np.cos(np.pi * xx) * np.sin(np.pi * yy)
    lap = -2 * np.pi**2 * p
    f = -(k * gx * px + k * gy * py + k * lap)
    return k, f, p, -k * px, -k * py


@pytest.mark.parametrize("scheme", SCHEMES)
def test_manufactured_solution_converges_at_second_order(scheme):
    sizes = [17, 33, 65, 129]
    errors = {"p": [], "u": []}
    for n_side in sizes:
        k, f, p, ux, uy = _manufactured(n_side)
        out = solve(k, DarcyConfig(scheme=scheme), source=f)
        errors["p"].append(np.abs(out[0] - p).max())
        interior = (slice(1, -1), slice(1, -1))
        errors["u"].append(
            max(
                np.abs(out[1][interior] - ux[interior]).max(),
                np.abs(out[2][interior] - uy[interior]).max(),
            )
        )
    log_h = np.log([1.0 / (n - 1) for n in sizes])
    for name, err in errors.items():
        order = np.polyfit(log_h, np.log(err), 1)[0]
        assert 1.8 <= order <= 2.2, (name, order, err)
        pairwise = np.log2(np.array(err[:-1]) / np.array(err[1:]))
        assert np.all((pairwise > 1.7) & (pairwise < 2.3)), (name, pairwise)


# ---------------------------------------------------------------------------
# Properties


@pytest.fixture(scope="module")
def fields():
    return ref.lognormal_fields(9, 33, seed=1234)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_zero_mean_pressure_and_no_flux_walls(fields, scheme):
    out = solve_batch(fields, DarcyConfig(scheme=scheme))
    w = gauge_weights(33)
    for y in out:
        assert abs(np.sum(w * y[0])) < 1e-14 * np.abs(y[0]).max()
        assert np.all(y[1][:, 0] == 0)
        assert np.all(y[1][:, -1] == 0)
        assert np.all(y[2][0, :] == 0)
        assert np.all(y[2][-1, :] == 0)


@pytest.mark.parametrize("scheme", SCHEMES)
def test_discrete_residual(fields, scheme):
    out, diag = solve_batch(fields, DarcyConfig(scheme=scheme), return_diagnostics=True)
    for i, y in enumerate(out):
        a, b, w = ref.scheme_system(fields[i], scheme, ref.source(33))
        p = y[0].ravel()
        bordered = a @ p + w * diag.lagrange_multiplier[i] - b
        assert np.linalg.norm(bordered) < 1e-11 * np.linalg.norm(b)
        expected = np.linalg.norm(a @ p - b) / np.linalg.norm(b)
        assert diag.relative_residual[i] == pytest.approx(expected, rel=1e-6, abs=1e-13)
    if scheme == "fv":  # conservative: the symmetric wells need no multiplier
        assert np.all(np.abs(diag.lagrange_multiplier) < 1e-11)
        assert np.all(diag.relative_residual < 1e-11)
    else:  # fd is slightly inconsistent (docs/data.md §1a)
        assert np.all(np.abs(diag.lagrange_multiplier) > 1e-6)
        assert np.all((diag.relative_residual > 1e-6) & (diag.relative_residual < 0.1))


@pytest.mark.parametrize("scheme", SCHEMES)
def test_mirror_symmetry_across_the_diagonal(fields, scheme):
    config = DarcyConfig(scheme=scheme)
    out = solve_batch(fields, config)
    mirrored = solve_batch(np.ascontiguousarray(fields.transpose(0, 2, 1)), config)
    scale = np.abs(out).max()
    np.testing.assert_allclose(mirrored[:, 0], out[:, 0].transpose(0, 2, 1), atol=1e-11 * scale)
    np.testing.assert_allclose(mirrored[:, 1], out[:, 2].transpose(0, 2, 1), atol=1e-11 * scale)
    np.testing.assert_allclose(mirrored[:, 2], out[:, 1].transpose(0, 2, 1), atol=1e-11 * scale)


def test_constant_permeability_schemes_coincide():
    # With constant K the fd and fv stencils are the same after dividing the
    # fv rows by their control volumes, so the pressures agree.
    k = np.full((17, 17), 2.5)
    fd = solve(k, DarcyConfig(scheme="fd"))
    fv = solve(k, DarcyConfig(scheme="fv"))
    assert rel_err(fv, fd) < 1e-12


def test_pressure_scales_inversely_with_permeability(fields):
    out = solve(fields[0])
    scaled = solve(3.0 * fields[0])
    assert rel_err(scaled[0], out[0] / 3.0) < 1e-12
    assert rel_err(scaled[1:], out[1:]) < 1e-12


@pytest.mark.parametrize("scheme", SCHEMES)
def test_batch_equals_single_and_threads_are_bitwise_identical(fields, scheme):
    config = DarcyConfig(scheme=scheme)
    one = solve_batch(fields, config, threads=1)
    two = solve_batch(fields, config, threads=2)
    assert np.array_equal(one, two)
    for i in [0, 4, 8]:  # first, middle and padded last group
        assert np.array_equal(solve(fields[i], config), one[i])
    assert np.array_equal(solve_batch(fields[3:7], config, threads=2), one[3:7])


def test_float32_output_and_out_argument(fields):
    ref = solve_batch(fields)
    y32 = solve_batch(fields, dtype=np.float32)
    assert y32.dtype == np.float32
    assert np.array_equal(y32, ref.astype(np.float32))
    buf = np.full((9, 3, 33, 33), np.nan, dtype=np.float32)
    got = solve_batch(fields, out=buf)
    assert got is buf
    assert np.array_equal(buf, y32)
    buf64 = np.empty((9, 3, 33, 33))
    assert solve_batch(fields, out=buf64, threads=2) is buf64
    assert np.array_equal(buf64, ref)


def test_empty_batch():
    out = solve_batch(np.ones((0, 5, 5)))
    assert out.shape == (0, 3, 5, 5)


def test_diagnostics_of_single_solve(fields):
    _out, diag = solve(fields[2], return_diagnostics=True)
    assert isinstance(diag, SolveDiagnostics)
    assert isinstance(diag.lagrange_multiplier, float)
    _, ref_lam = ref.solve(fields[2], "fd")
    assert diag.lagrange_multiplier == pytest.approx(ref_lam, rel=1e-8)


def test_source_term():
    f = source_term(65)
    assert np.array_equal(f, ref.source(65))
    assert (f == 10.0).sum() == 81
    assert (f == -10.0).sum() == 81
    assert np.array_equal(f[::-1, ::-1], -f)
    g = source_term(33, well_width=0.25, rate=-2.0)
    assert np.array_equal(g, ref.source(33, 0.25, -2.0))
    assert (g == -2.0).sum() == 81


def test_custom_source_with_nonzero_mean_is_made_consistent():
    k = ref.lognormal_fields(1, 17, seed=9)[0]
    f = np.ones((17, 17))
    out, diag = solve(k, DarcyConfig(scheme="fv"), source=f, return_diagnostics=True)
    # lambda is the trapezoid mean of f, and p is then constant: zero.
    assert diag.lagrange_multiplier == pytest.approx(1.0, rel=1e-12)
    assert np.abs(out).max() < 1e-12


def test_gauge_weights():
    w = gauge_weights(5)
    assert w.sum() == pytest.approx(1.0, rel=1e-15)
    assert np.array_equal(w, ref.weights(5))


def test_solver_is_cached_per_grid_and_scheme():
    from darcyvae import darcy

    solve(np.ones((11, 11)), DarcyConfig(scheme="fv"))
    before = darcy._solver.cache_info().hits
    solve(np.ones((11, 11)), DarcyConfig(scheme="fv", rate=3.0))
    assert darcy._solver.cache_info().hits == before + 1


# ---------------------------------------------------------------------------
# Bad input


def test_config_validation():
    with pytest.raises(ValueError, match="scheme must be one of 'fd', 'fv'"):
        DarcyConfig(scheme="fe")
    with pytest.raises(ValueError, match=r"well_width must be a finite float in \(0.0, 0.5\]"):
        DarcyConfig(well_width=0.0)
    with pytest.raises(ValueError, match="well_width must be"):
        DarcyConfig(well_width=0.6)
    with pytest.raises(ValueError, match="rate must be a finite float"):
        DarcyConfig(rate=float("nan"))
    with pytest.raises(ValueError, match="rate must be a finite float"):
        DarcyConfig(rate=float("inf"))
    with pytest.raises(TypeError, match="well_width must be a real number"):
        DarcyConfig(well_width="wide")
    assert DarcyConfig(rate=3).rate == 3.0


@pytest.mark.parametrize(
    ("k", "error", "match"),
    [
        (np.ones((4, 5)), ValueError, r"permeability must have shape \(N, N\) with N >= 3"),
        (np.ones((2, 2)), ValueError, "N >= 3"),
        (np.ones(9), ValueError, "permeability must be a 2-D array"),
        (np.full((5, 5), np.nan), ValueError, "permeability must be finite"),
        (np.full((5, 5), np.inf), ValueError, "permeability must be finite"),
        (np.zeros((5, 5)), ValueError, r"permeability must be > 0 everywhere"),
        (-np.ones((5, 5)), ValueError, r"permeability must be > 0 everywhere"),
        (np.ones((5, 5), dtype=complex), TypeError, "permeability must be real-valued"),
        (np.array([["a"] * 3] * 3), TypeError, "permeability must be a numeric array"),
    ],
)
def test_solve_rejects_bad_permeability(k, error, match):
    with pytest.raises(error, match=match):
        solve(k)


def test_solve_batch_rejects_bad_input():
    k = np.ones((2, 5, 5))
    with pytest.raises(ValueError, match=r"permeability must be a 3-D array"):
        solve_batch(np.ones((5, 5)))
    with pytest.raises(ValueError, match=r"permeability must have shape \(n, N, N\)"):
        solve_batch(np.ones((2, 5, 6)))
    bad = k.copy()
    bad[1, 2, 2] = -1.0
    with pytest.raises(ValueError, match="> 0 everywhere"):
        solve_batch(bad)
    with pytest.raises(ValueError, match=r"threads must be an integer in \[0, inf\]"):
        solve_batch(k, threads=-1)
    with pytest.raises(TypeError, match="threads must be an integer"):
        solve_batch(k, threads=1.5)
    with pytest.raises(ValueError, match="dtype must be float32 or float64"):
        solve_batch(k, dtype=np.int32)
    with pytest.raises(ValueError, match="out must have dtype float32 or float64"):
        solve_batch(k, out=np.empty((2, 3, 5, 5), dtype=np.float16))
    with pytest.raises(ValueError, match=r"out must have shape \(2, 3, 5, 5\)"):
        solve_batch(k, out=np.empty((2, 3, 5, 4)))
    with pytest.raises(ValueError, match="C-contiguous and writeable"):
        solve_batch(k, out=np.empty((2, 3, 5, 10))[..., ::2])
    readonly = np.empty((2, 3, 5, 5))
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="C-contiguous and writeable"):
        solve_batch(k, out=readonly)
    with pytest.raises(TypeError, match=r"out must be a numpy\.ndarray"):
        solve_batch(k, out=[[0.0]])
    shared = np.ones((2 * 3 * 25 + 50,))
    k_view = shared[:50].reshape(2, 5, 5)
    with pytest.raises(ValueError, match="out must not overlap"):
        solve_batch(k_view, out=shared[:150].reshape(2, 3, 5, 5))


def test_source_and_config_arguments_are_checked():
    k = np.ones((5, 5))
    with pytest.raises(ValueError, match=r"source must have shape \(5, 5\)"):
        solve(k, source=np.ones((4, 4)))
    with pytest.raises(ValueError, match="source must be finite"):
        solve(k, source=np.full((5, 5), np.nan))
    with pytest.raises(ValueError, match="source must be a 2-D array"):
        solve_batch(np.ones((1, 5, 5)), source=np.ones(25))
    with pytest.raises(TypeError, match="config must be a DarcyConfig or None"):
        solve(k, {"scheme": "fv"})
    with pytest.raises(ValueError, match=r"grid must be an integer in \[3, inf\]"):
        source_term(2)
    with pytest.raises(ValueError, match="well_width must be"):
        source_term(9, well_width=-0.1)
    with pytest.raises(ValueError, match="rate must be a finite float"):
        source_term(9, rate=np.inf)
    with pytest.raises(ValueError, match=r"grid must be an integer in \[3, inf\]"):
        gauge_weights(1)


def test_core_guards_its_invariants():
    with pytest.raises(ValueError, match="scheme must be 'fd' or 'fv'"):
        _core.DarcySolver(9, "fe")
    with pytest.raises(ValueError, match="grid must be >= 3"):
        _core.DarcySolver(2)
    with pytest.raises(ValueError, match="isa must be one of"):
        _core.DarcySolver(9, isa="neon")
    with pytest.raises(ValueError, match="block must be in"):
        _core.DarcySolver(9, block=65)
    solver = _core.DarcySolver(5)
    k = np.ones((1, 5, 5))
    k[0, 1, 1] = 0.0
    with pytest.raises(ValueError, match="permeability must be finite and > 0"):
        solver.solve_into(k, np.zeros((5, 5)), np.empty((1, 3, 5, 5)), 1)
    with pytest.raises(ValueError, match="out must be float32 or float64"):
        solver.solve_into(np.ones((1, 5, 5)), np.zeros((5, 5)), np.empty((1, 3, 5, 5), np.int64), 1)
    with pytest.raises(ValueError, match="k must have shape"):
        solver.solve_into(np.ones((1, 4, 4)), np.zeros((5, 5)), np.empty((1, 3, 4, 4)), 1)
    with pytest.raises(ValueError, match="source must be finite"):
        solver.solve_into(np.ones((1, 5, 5)), np.full((5, 5), np.inf), np.empty((1, 3, 5, 5)), 1)
    times = solver.profile(np.ones((1, 5, 5)), np.zeros((5, 5)), 3)
    assert set(times) == {"assembly", "factorization", "solve", "velocity", "check", "total"}
    assert all(v >= 0 for v in times.values())


# ---------------------------------------------------------------------------
# Reliability (docs/safety.md): threads, extreme permeability, odd input


def test_threads_are_capped_and_spare_workspaces_are_freed():
    cap = _core.max_threads()
    assert cap == darcy.MAX_THREADS
    assert 4 <= cap <= 256
    assert _core.resolve_threads(10**6) == cap
    assert _core.resolve_threads(0) <= cap
    k = np.ones((2000, 17, 17))
    k[::7] = 2.0
    solver = _core.DarcySolver(17)
    many, one = np.empty((2000, 3, 17, 17)), np.empty((2000, 3, 17, 17))
    solver.solve_into(k, source_term(17), many, 200)
    # No more than one workspace per hardware thread outlives the call.
    assert 1 <= solver.pooled_workspaces <= _core.resolve_threads(0)
    solver.solve_into(k, source_term(17), one, 1)
    assert np.array_equal(many, one)
    assert np.array_equal(solve_batch(k[:9], threads=200), one[:9])


_THREAD_LIMIT_CHILD = r"""
import resource, sys
import numpy as np
from darcyvae.darcy import solve_batch
k = np.ones((2000, 17, 17))
expected = solve_batch(k[:4], threads=1)
out = np.empty((2000, 3, 17, 17))
with open("/proc/self/status") as fh:
    vm = next(int(line.split()[1]) * 1024 for line in fh if line.startswith("VmSize"))
limit = vm + int(sys.argv[1]) * 2**20
resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
try:
    solve_batch(k, threads=200, out=out)
except (RuntimeError, MemoryError) as e:
    print(type(e).__name__, str(e).replace("\n", " "))
else:
    print("ok", bool(np.array_equal(out[:4], expected)))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="needs RLIMIT_AS and /proc")
def test_refused_worker_threads_raise_instead_of_aborting():
    # Under an address-space limit thread creation fails (std::system_error);
    # it used to reach std::terminate (SIGABRT). Now: a clean Python error or,
    # with room for the threads, the right answer.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    outcomes = []
    for megabytes in (24, 100, 2048):  # 100 MB aborted the process before
        res = subprocess.run(
            [sys.executable, "-c", _THREAD_LIMIT_CHILD, str(megabytes)],
            check=False,
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        assert res.returncode == 0, res.stderr[-2000:]
        line = res.stdout.strip().splitlines()[-1]
        outcomes.append(line)
        assert line == "ok True" or line.startswith(("RuntimeError", "MemoryError")), line
    assert outcomes[-1] == "ok True"
    if outcomes[0].startswith("RuntimeError"):
        assert "could not start worker thread" in outcomes[0]
        assert "use fewer threads" in outcomes[0]


def test_extreme_permeability_is_refused_naming_the_sample():
    k = np.ones((3, 17, 17))
    k[1, 8, 8] = 1e-50  # fv: a nearly disconnected cell, p ~ 1e32 used to come back silently
    config = DarcyConfig(scheme="fv")
    with pytest.raises(ValueError, match=r"solve_batch: sample 1 could not be solved accurately"):
        solve_batch(k, config)
    with pytest.raises(SolveAccuracyError):  # darcyvae's own class, still a ValueError
        solve_batch(k, config)
    with pytest.raises(ValueError, match=r"relative residual of the bordered system is 1"):
        solve(k[1], config)
    with pytest.warns(RuntimeWarning, match="sample 1 could not be solved accurately"):
        out, diag = solve_batch(k, config, on_inaccurate="warn", return_diagnostics=True)
    assert diag.bordered_residual[1] > darcy.RESIDUAL_TOLERANCE
    assert np.all(diag.bordered_residual[[0, 2]] < 1e-12)
    assert np.array_equal(out[0], solve(k[0], config))
    with pytest.raises(ValueError, match="on_inaccurate must be one of 'raise', 'warn'"):
        solve(k[0], on_inaccurate="ignore")


@pytest.mark.parametrize("value", [1e8, 1e20])
def test_fd_spike_is_solved_by_the_pivoting_fallback(value):
    # fd with one cell at 1e20 used to return a residual of 3.7e4 silently;
    # the bordered residual now sends it to the pivoting solve, which is exact.
    k = np.ones((17, 17))
    k[8, 8] = value
    solver = _core.DarcySolver(17, "fd")
    out, bordered = np.empty((1, 3, 17, 17)), np.empty(1)
    lam, _ = solver.solve_into(k[None], source_term(17), out, 1, bordered)
    assert solver.fallbacks == 1
    a, b, w = ref.scheme_system(k, "fd", ref.source(17))
    residual = np.linalg.norm(a @ out[0, 0].ravel() + lam[0] * w - b) / np.linalg.norm(b)
    assert residual < 1e-9
    assert bordered[0] == pytest.approx(residual, rel=1e-3, abs=1e-14)
    assert abs(np.sum(gauge_weights(17) * out[0, 0])) < 1e-14 * np.abs(out[0, 0]).max()


def test_output_beyond_float32_is_refused():
    k = np.full((2, 9, 9), 1e-40)  # p ~ 1e39 fits float64 only
    assert np.isfinite(solve_batch(k)).all()
    with pytest.raises(ValueError, match=r"sample 0 .*does not fit float32"):
        solve_batch(k, dtype=np.float32)


def test_zero_d_and_bool_permeability_are_refused():
    with pytest.raises(ValueError, match=r"permeability must be a 2-D array; got shape \(\)\."):
        solve(np.float64(2.0))
    with pytest.raises(ValueError, match=r"permeability must be a 3-D array; got shape \(\)\."):
        solve_batch(3.0)
    with pytest.raises(TypeError, match=r"permeability must be a real .* got dtype bool"):
        solve(np.ones((5, 5), dtype=bool))
    with pytest.raises(TypeError, match="got dtype bool"):
        solve_batch(np.ones((2, 5, 5), dtype=bool))


def _avx2_kernel_objects():
    root = Path(__file__).resolve().parents[1]
    return sorted(root.glob("build/*/CMakeFiles/*/cpp/darcy_kernels_avx2.cpp.o"))


def test_avx2_kernel_object_has_no_weak_symbols():
    # cpp/darcy_kernels.hpp: the AVX2 translation unit must not instantiate
    # templates (std::, Eigen) that the linker could share with the baseline
    # build. CMake checks it after every build; this re-checks a local build:
    # the object exports only the entry point darcy.cpp selects at run time,
    # keeps the kernels local to its own namespace and is AVX2 (+ FMA) code.
    nm = shutil.which("nm")
    objects = _avx2_kernel_objects()
    if nm is None or not objects:
        pytest.skip("no nm or no local build with the AVX2 kernel object")
    for obj in objects:
        listing = subprocess.run([nm, "-C", str(obj)], capture_output=True, text=True, check=True)
        # "<16-digit address or blanks> <type> <name>"
        symbols = [
            (line[17:18], line[19:]) for line in listing.stdout.splitlines() if len(line) > 19
        ]
        weak = [name for kind, name in symbols if kind in {"W", "w", "V", "v", "u"}]
        assert weak == [], (obj, weak)
        exported = {name for kind, name in symbols if kind in {"T", "D", "B", "R"}}
        assert exported == {"darcyvae::detail::kernels_avx2()"}, obj
        local_code = [name for kind, name in symbols if kind == "t"]
        assert local_code, obj  # run_group and the scalar kernels
        assert all("darcyvae::detail::avx2::" in name for name in local_code), (obj, local_code)
        objdump = shutil.which("objdump")
        if objdump is None:
            continue
        code = subprocess.run([objdump, "-d", str(obj)], capture_output=True, text=True, check=True)
        assert "%ymm" in code.stdout, obj  # 4-lane (256-bit) vectors
        cache = obj.parents[3] / "CMakeCache.txt"
        if cache.exists() and "CMAKE_BUILD_TYPE:STRING=Release" in cache.read_text():
            assert re.search(r"\bvfn?m(add|sub)\d{3}[ps]d\b", code.stdout), obj  # contracted FMA


@pytest.mark.parametrize("threads", [2**70, 2**31, darcy.MAX_THREADS + 1])
def test_a_huge_thread_count_is_reduced_not_leaked_to_pybind(threads, caplog):
    """Was: ``solve_batch(threads=2**70)`` leaked pybind's multi-line
    "incompatible function arguments"; it is checked in Python like every threads
    setting (``_checks.check_threads``) and reduced to MAX_THREADS with a warning."""
    k = np.exp(np.random.default_rng(0).standard_normal((3, 9, 9)))
    with caplog.at_level("WARNING", logger="darcyvae"):
        out = solve_batch(k, threads=threads)
    assert np.array_equal(out, solve_batch(k, threads=1))
    assert f"using {darcy.MAX_THREADS}" in caplog.text
    with pytest.raises(ValueError, match=r"solve_batch: threads must be an integer in \[0, inf\]"):
        solve_batch(k, threads=-1)
    with pytest.raises(TypeError, match="solve_batch: threads must be an integer; got float"):
        solve_batch(k, threads=2.0**70)
    assert np.array_equal(solve_batch(k, threads=0), out)  # 0: all cores, as before
