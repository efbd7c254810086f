from __future__ import annotations

import darcyvae
from darcyvae import _core


def test_version_matches_core():
    assert darcyvae.__version__ == _core.__version__
    assert darcyvae.__version__.count(".") == 2


def test_resolve_threads():
    assert _core.resolve_threads(3) == 3
    assert _core.resolve_threads(0) >= 1
