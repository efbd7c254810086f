"""Typed stub of the compiled module darcyvae._core (keep in step with cpp/bindings.cpp)."""

__version__: str

def resolve_threads(threads: int) -> int:
    """Number of worker threads used for `threads` (<= 0 means all cores)."""
