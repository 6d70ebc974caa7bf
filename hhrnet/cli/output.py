"""How commands print results: a rich table on a terminal, full-precision plain text in a log or pipe
(nothing is cut at 80 columns), and ``--json PATH`` with the environment stamp for CI."""

from __future__ import annotations

import json
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any


def _plain(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else repr(value)
    return str(value)


def _short(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4f}" if abs(value) < 1000 else f"{value:.1f}"
    return str(value)


def is_terminal() -> bool:
    return sys.stdout.isatty()


def print_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], title: str) -> None:
    """Rows as a table: rich on a TTY, otherwise tab-separated lines with every digit."""
    if not is_terminal():
        print(f"# {title}")
        print("\t".join(columns))
        for r in rows:
            print("\t".join(_plain(r.get(c, "")) for c in columns))
        sys.stdout.flush()
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for c in columns:
        table.add_column(c, overflow="fold")
    for r in rows:
        table.add_row(*(_short(r.get(c, "")) for c in columns))
    Console().print(table)


def write_json(path: Path, payload: Mapping[str, Any], device: str = "cpu") -> Path:
    """``payload`` plus the environment stamp (machine, CPU flags, versions, commit, date), atomically."""
    from hhrnet.environment import environment
    from hhrnet.io import atomic_write_text

    return atomic_write_text(path, json.dumps({"environment": environment(device), **payload}, indent=2, default=str))
