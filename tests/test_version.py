from __future__ import annotations

import os

import darcyvae
from darcyvae import _core


def test_version_matches_core():
    assert darcyvae.__version__ == _core.__version__
    assert darcyvae.__version__.count(".") == 2


def _hardware_threads():
    """What std::thread::hardware_concurrency may report here: the online CPUs
    (libstdc++ asks get_nprocs) or, under an affinity mask, the CPUs allowed."""
    counts = {os.cpu_count() or 1}
    if hasattr(os, "sched_getaffinity"):
        counts.add(len(os.sched_getaffinity(0)))
    return counts


def test_resolve_threads():
    # cpp/parallel.hpp: max_threads() is 4 x the hardware threads, within [4, 256];
    # resolve_threads(t) is t for t > 0 and all hardware threads for t <= 0, both
    # capped at max_threads().
    cap = _core.max_threads()
    hardware = _hardware_threads()
    assert cap in {max(4, min(4 * hw, 256)) for hw in hardware}
    assert _core.resolve_threads(0) in {min(hw, cap) for hw in hardware}
    assert _core.resolve_threads(-1) == _core.resolve_threads(0)
    assert _core.resolve_threads(-(2**31)) == _core.resolve_threads(0)
    for threads in sorted({1, 2, 3, cap - 1, cap}):
        assert _core.resolve_threads(threads) == threads
    assert _core.resolve_threads(cap + 1) == cap
    assert _core.resolve_threads(2**31 - 1) == cap


def test_the_typed_stub_names_every_binding_with_its_arguments():
    """python/darcyvae/_core.pyi declares every public function and class of the compiled
    module, each function with the argument names pybind11 reports."""
    import ast
    import inspect
    from pathlib import Path

    stub = ast.parse((Path(darcyvae.__file__).parent / "_core.pyi").read_text())
    declared = {
        node.name: [a.arg for a in node.args.args]
        for node in stub.body
        if isinstance(node, ast.FunctionDef)
    }
    declared.update({node.name: None for node in stub.body if isinstance(node, ast.ClassDef)})
    public = {n: getattr(_core, n) for n in dir(_core) if not n.startswith("_")}
    assert set(public) == set(declared)
    for name, obj in public.items():
        if inspect.isclass(obj):
            continue
        # pybind11's signature line: "name(arg: type, arg: type = default, ...) -> ret"
        signature = obj.__doc__.splitlines()[0]
        inside = signature[signature.index("(") + 1 : signature.rindex(") ->")]
        names = [part.split(":")[0].strip() for part in inside.split(", ") if ":" in part]
        assert names == declared[name], name
