"""Decode benchmark: the fast Numba decoder against the literal port of the official parse
(:mod:`hhrnet.benchmarks.official_port`: dict grouping, pure-Python Munkres, full-map refine of every joint
of every person), on the same planted maps in one process. Every row says whether both outputs are identical.

    python -m hhrnet.benchmarks.decode          # the full table (SPEC §10 shapes, T = 1/2, 5/20/30 people)
    python -m hhrnet.benchmarks.decode --quick  # the CI gate's subset
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from hhrnet.benchmarks.common import environment, measure
from hhrnet.benchmarks.official_port import decode_official
from hhrnet.kernels.decode import decode, warmup
from hhrnet.kernels.params import DecodeParams

SHAPES = ((17, 128, 128), (17, 256, 256), (17, 512, 704))


def planted_maps(shape: tuple[int, int, int], people: int, t: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian peaks (sigma 2 at 128/256, 4 at 512) with a distinct tag per person, spaced 2.0 (SPEC §10)."""
    j, h, w = shape
    sigma = 4.0 if h >= 512 else 2.0
    rng = np.random.default_rng(seed)
    det = np.zeros(shape, np.float32)
    tags = np.zeros((j, h, w, t), np.float32)
    r = int(3 * sigma) + 1
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    g = np.exp(-(oy**2 + ox**2) / (2 * sigma**2)).astype(np.float32)
    for p in range(people):
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        for k in range(j):
            y = int(np.clip(cy + rng.normal(0, h / 12), r, h - r - 1))
            x = int(np.clip(cx + rng.normal(0, w / 12), r, w - r - 1))
            patch = det[k, y - r : y + r + 1, x - r : x + r + 1]
            np.maximum(patch, g * rng.uniform(0.6, 1.0), out=patch)
            tags[k, y - r : y + r + 1, x - r : x + r + 1] = 2.0 * p + rng.normal(0, 0.05, t)
    return det, tags


def run(quick: bool = False, shapes: Sequence[tuple[int, int, int]] = SHAPES, repeats: int = 3) -> list[dict[str, Any]]:
    """Rows: shape, T, people, persons, port_ms (official port), fast_ms, speedup (port / fast), identical.

    ``quick``: only 17x128x128, T = 2, 5 and 20 people (the CI gate's cases).
    """
    warmup()
    env = environment("cpu")
    cases = [((17, 128, 128), 2, 5), ((17, 128, 128), 2, 20)] if quick else [
        (s, t, p) for s in shapes for t in (1, 2) for p in (5, 20, 30)
    ]  # fmt: skip
    rows = []
    params = DecodeParams()
    for shape, t, people in cases:
        det, tags = planted_maps(shape, people, t)
        fast_out = decode(det, tags, params)
        port_out = decode_official(det, tags, params)
        identical = bool(np.array_equal(fast_out[0], port_out[0]) and np.array_equal(fast_out[1], port_out[1]))

        def port(det: np.ndarray = det, tags: np.ndarray = tags) -> object:
            return decode_official(det, tags, params)

        def fast(det: np.ndarray = det, tags: np.ndarray = tags) -> object:
            return decode(det, tags, params)

        port_t, _ = measure(port, repeat=repeats)
        fast_t, _ = measure(fast, repeat=max(repeats, 10))
        rows.append(
            {
                "benchmark": "decode",
                "shape": "x".join(map(str, shape)),
                "T": t,
                "people": people,
                "persons": len(fast_out[0]),
                "port_ms": round(port_t.p50, 2),
                "fast_ms": round(fast_t.p50, 3),
                "speedup": round(port_t.p50 / fast_t.p50, 1),
                "identical": identical,
                **env,
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hhrnet.benchmarks.decode")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick, repeats=args.repeats)
    if args.json:
        from hhrnet.benchmarks.common import write_rows

        write_rows(args.json, rows)
    cols = ["shape", "T", "people", "persons", "port_ms", "fast_ms", "speedup", "identical"]
    sys.stdout.write("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols) + "\n")
    for r in rows:
        sys.stdout.write("| " + " | ".join(str(r[c]) for c in cols) + " |\n")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
