"""What every benchmark records about the machine it ran on (shared by bench_*.py).

``machine()`` returns one key set for every benchmark's JSON:
platform, cpu, cores, load_average, python, versions (darcyvae, numpy, scipy,
and torch when it is imported), torch_threads and gpu when torch is there.
"""

from __future__ import annotations

import os
import platform
import sys
from typing import Any


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo, else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def machine(**extra: Any) -> dict[str, Any]:
    """The machine and library versions a benchmark ran with, plus ``extra`` keys."""
    import darcyvae
    import numpy as np
    import scipy

    versions = {
        "darcyvae": darcyvae.__version__,
        "numpy": np.__version__,
        "scipy": scipy.__version__,
    }
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
        "python": sys.version.split()[0],
        "versions": versions,
    }
    torch = sys.modules.get("torch")
    if torch is not None:
        versions["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
        if torch.cuda.is_available():
            info["gpu"] = torch.cuda.get_device_name()
    info.update(extra)
    return info


def write_results(path: str | os.PathLike, results: list[dict[str, Any]]) -> None:
    """Write ``{"machine": machine(), "results": results}`` as JSON to ``path``."""
    import json
    from pathlib import Path

    Path(path).write_text(json.dumps({"machine": machine(), "results": results}, indent=2))
