"""A table of formatted cells, the one shape every metric block of the report takes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Table", "format_value", "metrics_table"]

METRIC_KEYS = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100")


@dataclass
class Table:
    """``rows`` of strings under ``columns``; ``note`` is shown under the table."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""


def format_value(v: Any) -> str:
    """Numbers with two decimals, NaN / None as an en dash, the rest as ``str``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return f"{v:.2f}"
    return str(v)


def metrics_table(
    title: str,
    rows: Sequence[tuple[Sequence[str], Mapping[str, Any]]],
    *,
    label_columns: Sequence[str],
    keys: Sequence[str] = METRIC_KEYS,
    note: str = "",
) -> Table:
    """One row per ``(labels, metrics)``: the labels, then ``metrics[k]`` for ``keys`` (keys no
    row has are dropped; extra numeric keys such as ``instances`` come first when present)."""
    extra = [k for k in ("instances",) if any(k in m for _, m in rows)]
    keys = [k for k in keys if any(k in m for _, m in rows)]
    table = Table(title, [*label_columns, *extra, *keys], note=note)
    for labels, m in rows:
        table.rows.append([*labels, *(format_value(m.get(k)) for k in [*extra, *keys])])
    return table
