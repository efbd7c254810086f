"""Minimal TOML reading (``tomllib``) and writing for run configurations.

The writer handles what configurations hold: top-level keys with bool, int,
float, str and flat lists of those, and one level of tables (``[model]``).
``None`` values are left out (TOML has no null); readers apply defaults.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from ._io import atomic_write_text

try:  # Python >= 3.11
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

__all__ = ["dumps", "load", "loads", "write"]


def _value(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            msg = f"toml: {where} must be finite to be written; got {value!r}."
            raise ValueError(msg)
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string once U+007F is escaped too; without
        # ensure_ascii, characters beyond the BMP stay themselves (JSON would write
        # surrogate pairs, which TOML refuses).
        text = json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            msg = f"toml: {where} holds a lone surrogate, which no TOML file can hold."
            raise ValueError(msg) from None
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_value(v, where) for v in value) + "]"
    msg = f"toml: {where} has a type TOML cannot hold here: {type(value).__name__}."
    raise TypeError(msg)


def dumps(data: dict[str, Any], header: str = "") -> str:
    """Serialise ``data`` (scalars first, then one level of tables) to TOML text."""
    lines = [f"# {line}" if line else "#" for line in header.splitlines()]
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in data.items():
        if value is None or key in tables:
            continue
        lines.append(f"{key} = {_value(value, key)}")
    for name, table in tables.items():
        lines.append("")
        lines.append(f"[{name}]")
        for key, value in table.items():
            if value is None:
                continue
            if isinstance(value, dict):
                msg = f"toml: nested table {name}.{key} is not supported."
                raise TypeError(msg)
            lines.append(f"{key} = {_value(value, f'{name}.{key}')}")
    return "\n".join(lines) + "\n"


def loads(text: str) -> dict[str, Any]:
    """Parse TOML text (``tomllib``); errors become ``ValueError``."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        msg = f"toml: invalid TOML ({exc})."
        raise ValueError(msg) from exc


def load(path: str | os.PathLike) -> dict[str, Any]:
    """Read and parse a TOML file."""
    path = Path(path)
    if not path.is_file():
        msg = f"toml: no such file: {str(path)!r}."
        raise FileNotFoundError(msg)
    return loads(path.read_text(encoding="utf-8"))


def write(path: str | os.PathLike, data: dict[str, Any], header: str = "") -> Path:
    """Write ``dumps(data, header)`` to ``path`` atomically; returns the path."""
    return atomic_write_text(path, dumps(data, header))
