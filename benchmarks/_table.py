"""The text table every benchmark prints (shared by bench_*.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

Column = tuple[str, str, Callable[[dict[str, Any]], str]]
"""``(title, align, cell)``: a heading, a format alignment and width such as
``">10"`` (applied to the heading and to every cell), and the cell's text from a row."""


def text_table(columns: Sequence[Column], rows: Sequence[dict[str, Any]]) -> str:
    """A heading line, a rule as long as it, then one line per row; columns one space apart."""
    head = " ".join(f"{title:{align}}" for title, align, _ in columns)
    lines = [head, "-" * len(head)]
    lines += [" ".join(f"{cell(r):{align}}" for _, align, cell in columns) for r in rows]
    return "\n".join(lines)
