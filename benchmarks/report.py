"""Render measured benchmark rows (JSON files written by the benchmark commands) as Markdown tables.

    python -m hhrnet.benchmarks.report decode.json latency.json parity.json targets.json > RESULTS-part.md

Each table is headed by the machine, versions, commit and date its rows carry.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from hhrnet.benchmarks.common import Row, read_rows

COLUMNS: dict[str, list[str]] = {
    "decode": ["shape", "T", "people", "persons", "port_ms", "fast_ms", "speedup", "identical"],
    "targets": ["size", "people", "joints_drawn", "naive_ms", "fast_ms", "speedup", "identical"],
    "latency": [
        "backend",
        "graph",
        "precision",
        "stage",
        "input",
        "flip",
        "p50_ms",
        "p90_ms",
        "p99_ms",
        "share_of_total",
        "warmup_ms",
    ],
    "latency_people": ["maps", "T", "people", "p50_ms", "p90_ms", "p99_ms"],
    "latency_batch": ["backend", "precision", "input", "p50_ms", "p99_ms", "images_per_s", "warmup_ms"],
    "latency_precision": ["variant", "precision", "input", "onnx_MB", "p50_ms", "p90_ms", "speedup_vs_first"],
    "parity": ["variant", "decoder", "images", "AP", "delta_AP_points", "agreement_AP", "gate", "passed"],
}
OPTIONAL: dict[str, list[str]] = {"parity": ["kept_fp32", "calibration", "activations"]}  # shown when present


def render(rows: Sequence[Row]) -> str:
    out: list[str] = []
    for kind, cols in COLUMNS.items():
        sel = [r for r in rows if r.get("benchmark") == kind]
        if not sel:
            continue
        r0 = sel[0]
        cols = cols + [c for c in OPTIONAL.get(kind, []) if any(c in r for r in sel)]
        env = ", ".join(
            f"{k} {r0.get(k)}"
            for k in ("machine", "device", "python", "torch", "numba", "onnxruntime", "cpu_flags")
            if r0.get(k)
        )
        out.append(f"#### {kind} — {r0.get('date', '?')}, commit {r0.get('commit', '?')}\n\n{env}\n")
        out.append("| " + " | ".join(cols) + " |")
        out.append("|" + "---|" * len(cols))
        out += ["| " + " | ".join(str(r.get(c, "")) for c in cols) + " |" for r in sel]
        out.append("")
    return "\n".join(out)


def main(argv: Sequence[str] | None = None) -> int:
    rows: list[Row] = []
    for path in sys.argv[1:] if argv is None else argv:
        rows += read_rows(path)
    sys.stdout.write(render(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
