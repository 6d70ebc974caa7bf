"""Shared benchmark plumbing: environment stamp, timing statistics, row I/O and baseline comparison.

Every benchmark module exposes ``run(...) -> list[dict]``. Rows are flat JSON-able dicts; each carries
the environment stamp (machine, versions, git commit, date) so a number never travels without the
context it was measured in. Regression checks compare *ratios measured in the same run*, because
absolute times on shared CI machines vary by 2-15x.
"""

from __future__ import annotations

import json
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

Row = dict[str, Any]


from hhrnet.environment import cpu_flags, cpu_name, environment, git_commit  # noqa: E402 - re-exported

__all__ = [
    "Row",
    "Timing",
    "compare",
    "cpu_flags",
    "cpu_name",
    "environment",
    "git_commit",
    "measure",
    "parse_percent",
    "percentile",
    "read_rows",
    "summarize",
    "write_rows",
]


@dataclass(frozen=True)
class Timing:
    """Latency statistics over warm repetitions, in milliseconds."""

    p50: float
    p90: float
    p99: float
    mean: float
    min: float
    n: int

    def as_row(self, prefix: str = "") -> Row:
        return {f"{prefix}{k}_ms": round(getattr(self, k), 4) for k in ("p50", "p90", "p99", "mean", "min")} | {
            f"{prefix}n": self.n
        }


def percentile(values: Sequence[float], q: float) -> float:
    """Linear-interpolated percentile (q in [0, 100]) of a non-empty sequence."""
    data = sorted(values)
    if not data:
        raise ValueError("percentile of an empty sequence")
    pos = (len(data) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(data) - 1)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


def summarize(samples_s: Sequence[float]) -> Timing:
    ms = [s * 1e3 for s in samples_s]
    return Timing(
        p50=percentile(ms, 50),
        p90=percentile(ms, 90),
        p99=percentile(ms, 99),
        mean=statistics.fmean(ms),
        min=min(ms),
        n=len(ms),
    )


def measure(
    fn: Callable[[], object],
    *,
    repeat: int = 10,
    warmup: int = 1,
    min_time_s: float = 0.0,
    sync: Callable[[], None] | None = None,
) -> tuple[Timing, float]:
    """Time ``fn``; returns (warm statistics, seconds spent in warm-up, i.e. compile/first-call time).

    ``sync`` is called after each call (e.g. ``torch.cuda.synchronize``) so asynchronous work is counted.
    Warm-up time is reported separately and never mixed into the statistics.
    """
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
        if sync is not None:
            sync()
    warm_s = time.perf_counter() - t0
    samples: list[float] = []
    start = time.perf_counter()
    while len(samples) < repeat or (time.perf_counter() - start) < min_time_s:
        t = time.perf_counter()
        fn()
        if sync is not None:
            sync()
        samples.append(time.perf_counter() - t)
        if len(samples) >= 10 * max(repeat, 1):
            break
    return summarize(samples), warm_s


def write_rows(path: str | Path, rows: Iterable[Row]) -> Path:
    """Write rows as a JSON list (atomically)."""
    from hhrnet.io import atomic_write_text

    out = Path(path)
    atomic_write_text(out, json.dumps(list(rows), indent=2, sort_keys=True, default=str) + "\n")
    return out


def read_rows(path: str | Path) -> list[Row]:
    from hhrnet.errors import InputError
    from hhrnet.io import read_json

    p = Path(path)
    data = read_json(p, InputError, f"baseline file not found: {p}")
    if isinstance(data, dict) and "rows" in data:
        data = data["rows"]
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise InputError(f"{p} does not contain a list of benchmark rows")
    return data


def row_key(row: Row, key_fields: Sequence[str]) -> str:
    """The case a row measures, e.g. 'benchmark=decode/case=crowd-5/17x128x128/T2'."""
    return "/".join(f"{k}={row.get(k)}" for k in key_fields)


@dataclass(frozen=True)
class Regression:
    key: str
    metric: str
    baseline: float
    current: float
    change: float  # relative change in the "worse" direction (0.25 = 25% worse)
    failed: bool


def compare(
    current: Sequence[Row],
    baseline: Sequence[Row],
    *,
    key_fields: Sequence[str],
    metric: str,
    higher_is_better: bool,
    max_regression: float,
) -> list[Regression]:
    """Match rows on ``key_fields`` and flag a ``metric`` that got worse by more than ``max_regression``.

    Intended for same-run ratios (speedups, backend/backend ratios): they survive machine noise.
    """
    base = {row_key(r, key_fields): r for r in baseline if metric in r}
    out: list[Regression] = []
    for row in current:
        k = row_key(row, key_fields)
        if metric not in row or k not in base:
            continue
        b, c = float(base[k][metric]), float(row[metric])
        if b == 0:
            continue
        worse = (b - c) / b if higher_is_better else (c - b) / b
        out.append(Regression(k, metric, b, c, worse, worse > max_regression))
    return out


def parse_percent(text: str) -> float:
    """'10%' -> 0.10, '0.1' -> 0.1."""
    t = text.strip()
    return float(t[:-1]) / 100.0 if t.endswith("%") else float(t)
