"""Decode benchmark: the fast Numba decoder against the literal port of the official parse
(:mod:`hhrnet.benchmarks.official_port`: dict grouping, pure-Python Munkres, full-map refine of every joint
of every person), on the same maps in one process. Every row names its scene type (:mod:`.scenes`) and says
whether both outputs are identical; the fast decoder is timed on one thread and on all of Numba's threads.

Two more yardsticks, timed in the same rounds: ``floor_ms``, one read of the maps (NumPy's max over det and
over tags, one thread: what any decoder must at least pay to look at every value; ``x_floor`` = fast_1t /
floor), and for the realistic kinds (crowd, coco) the *clean counterpart*: a planted scene (every joint found,
nothing to refine) of the same size and person count; ``vs_clean`` = fast_1t / clean_1t says what refining
the missing joints costs (1.0 = nothing).

    python -m hhrnet.benchmarks.decode            # the full table at the official setting (17x512x704, T = 2)
    python -m hhrnet.benchmarks.decode --quick    # the CI gate's subset (17x128x128)
    python -m hhrnet.benchmarks.decode --worst    # the bounded worst case: pure noise vs a clean 20-person scene
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any

import numba
import numpy as np

from hhrnet.benchmarks import scenes
from hhrnet.benchmarks.common import environment, measure
from hhrnet.benchmarks.official_port import decode_official
from hhrnet.kernels.decode import decode, warmup
from hhrnet.kernels.params import DecodeParams

OFFICIAL = (17, 512, 704)  # a 640x480 COCO image at input size 512 (PROJECT2IMAGE); T = 2 with the flip test
# (kind, people) per scene: coco takes the sample image id
SCENES: tuple[tuple[str, int], ...] = (
    ("crowd", 1),
    ("crowd", 5),
    ("crowd", 10),
    ("crowd", 20),
    ("crowd", 30),
    ("coco", 785),
    ("coco", 40083),
    ("coco", 196141),
    ("coco", 197388),
    ("noise", 0),
    ("planted", 5),
    ("planted", 20),
)
# the CI gate's cases; crowd-30 is refine-heavy (~15 missing joints per decoded person), planted-30 its clean twin
QUICK: tuple[tuple[str, int], ...] = (
    ("crowd", 5),
    ("crowd", 20),
    ("crowd", 30),
    ("coco", 197388),
    ("noise", 0),
    ("planted", 20),
    ("planted", 30),
)
COLUMNS = (
    "scene",
    "kind",
    "people",
    "persons",
    "port_ms",
    "fast_1t_ms",
    "fast_all_ms",
    "speedup_1t",
    "speedup_all",
    "clean_1t_ms",
    "vs_clean",
    "floor_ms",
    "x_floor",
    "identical",
)
REALISTIC = ("crowd", "coco")  # kinds that get a clean counterpart


def planted_maps(shape: tuple[int, int, int], people: int, t: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian peaks with a distinct tag per person (docs/official.md §10): det, tags.

    See :func:`.scenes.planted_maps`.
    """
    det, tags, _ = scenes.planted_maps(shape, people, t, seed)
    return det, tags


def _same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> bool:
    return bool(a[0].shape == b[0].shape and np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]))


def _timed(fn: Callable[[], object], repeats: int) -> float:
    return measure(fn, repeat=repeats, warmup=1)[0].p50


def _seconds(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def touch(det: np.ndarray, tags: np.ndarray) -> float:
    """The bandwidth probe: read every value of the maps once (NumPy's vectorised max, one thread)."""
    return max(float(det.max()), float(tags.max()))


def clean_twin(sc: scenes.Scene, shape: tuple[int, int, int], t: int) -> scenes.Scene | None:
    """The clean counterpart of a realistic scene: planted, same size and ground-truth person count."""
    return scenes.planted(sc.people, shape, t) if sc.kind in REALISTIC and sc.people > 0 else None


def run(
    quick: bool = False,
    shape: tuple[int, int, int] = OFFICIAL,
    t: int = 2,
    cases: Sequence[tuple[str, int]] | None = None,
    repeats: int = 5,
    port_repeats: int = 1,
    threads: int | None = None,
) -> list[dict[str, Any]]:
    """Rows per scene: scene, kind, people (ground truth), persons (decoded), port_ms, fast_1t_ms (one thread),
    fast_all_ms (``threads`` or all of Numba's threads), speedup_1t / speedup_all (port / fast), clean_1t_ms
    and vs_clean (fast_1t / clean_1t; realistic kinds only, else None), floor_ms and x_floor (fast_1t /
    floor), identical (fast single-thread and all-core outputs both equal the port's, bit for bit).

    ``quick``: the CI gate's cases at 17x128x128. All are timed in interleaved rounds (the port once, each
    fast variant, the clean twin and the floor ``repeats`` times per round, ``port_repeats`` rounds; the fast
    decoders after one untimed call), so load from other processes hits them alike; times are medians.
    """
    if quick:
        shape, cases = (17, 128, 128), QUICK
    cases = SCENES if cases is None else cases
    all_threads = threads or numba.get_num_threads()
    warmup(parallel=True)
    env = environment("cpu")
    params = DecodeParams()
    rows = []
    for kind, people in cases:
        sc = scenes.scene(kind, people, shape, t)
        start = time.perf_counter()
        port_out = decode_official(sc.det, sc.tags, params)  # plain NumPy: its first call is a timed sample
        samples: dict[str, list[float]] = {
            "port": [time.perf_counter() - start],
            "1t": [],
            "all": [],
            "clean": [],
            "floor": [],
        }
        clean = clean_twin(sc, shape, t)
        numba.set_num_threads(1)
        fast_out = decode(sc.det, sc.tags, params)
        numba.set_num_threads(all_threads)
        all_out = decode(sc.det, sc.tags, params, parallel=True)
        for r in range(max(port_repeats, 1)):
            if r:
                samples["port"].append(_seconds(partial(decode_official, sc.det, sc.tags, params)))
            numba.set_num_threads(1)
            samples["1t"] += [_seconds(partial(decode, sc.det, sc.tags, params)) for _ in range(repeats)]
            if clean is not None:
                samples["clean"] += [_seconds(partial(decode, clean.det, clean.tags, params)) for _ in range(repeats)]
            samples["floor"] += [_seconds(partial(touch, sc.det, sc.tags)) for _ in range(repeats)]
            numba.set_num_threads(all_threads)
            samples["all"] += [
                _seconds(partial(decode, sc.det, sc.tags, params, parallel=True)) for _ in range(repeats)
            ]
        port, fast_1t, fast_all, floor = (statistics.median(samples[k]) * 1e3 for k in ("port", "1t", "all", "floor"))
        clean_1t = statistics.median(samples["clean"]) * 1e3 if samples["clean"] else None
        rows.append(
            {
                "benchmark": "decode",
                "scene": sc.name,
                "kind": sc.kind,
                "shape": "x".join(map(str, shape)),
                "T": t,
                "people": sc.people,
                "persons": len(fast_out[0]),
                "port_ms": round(port, 1),
                "fast_1t_ms": round(fast_1t, 2),
                "fast_all_ms": round(fast_all, 2),
                "threads": all_threads,
                "speedup_1t": round(port / fast_1t, 1),
                "speedup_all": round(port / fast_all, 1),
                "clean_1t_ms": None if clean_1t is None else round(clean_1t, 2),
                "vs_clean": None if clean_1t is None else round(fast_1t / clean_1t, 2),
                "floor_ms": round(floor, 2),
                "x_floor": round(fast_1t / floor, 1),
                "identical": _same(fast_out, port_out) and _same(all_out, port_out),
                **env,
            }
        )
    numba.set_num_threads(all_threads)
    return rows


def worst_case(shape: tuple[int, int, int] = OFFICIAL, t: int = 2, repeats: int = 3) -> list[dict[str, Any]]:
    """The unbounded official person count (docs/official.md B2) made cheap: the fast decoder (one thread) on pure noise
    (det uniform in [0, 1]: M peaks per joint, every candidate its own person when tags are far apart) against
    a clean 20-person planted scene, same run. Rows: scene, persons, fast_1t_ms, ratio to the clean scene."""
    warmup()
    numba.set_num_threads(1)
    params = DecodeParams()
    rng = np.random.default_rng(0)
    det = rng.random(shape).astype(np.float32)
    cases = {
        "planted-20": planted_maps(shape, 20, t),
        "uniform, tags x100": (det, (rng.random((*shape, t)) * 100).astype(np.float32)),
        "uniform, tags x5": (det, (rng.random((*shape, t)) * 5).astype(np.float32)),
        "uniform, tags x1": (det, rng.random((*shape, t)).astype(np.float32)),
    }
    env = environment("cpu")
    rows = []
    clean = 0.0
    for name, (d, g) in cases.items():
        persons = len(decode(d, g, params)[0])
        ms = _timed(partial(decode, d, g, params), repeats)
        clean = clean or ms
        rows.append(
            {
                "benchmark": "decode_worst",
                "scene": name,
                "shape": "x".join(map(str, shape)),
                "T": t,
                "persons": persons,
                "fast_1t_ms": round(ms, 1),
                "vs_clean": round(ms / clean, 2),
                **env,
            }
        )
    numba.set_num_threads(numba.get_num_threads())
    return rows


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    """Rows as a markdown table."""
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join("-" if r[c] is None else str(r[c]) for c in columns) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hhrnet.benchmarks.decode")
    parser.add_argument("--quick", action="store_true", help="the CI gate's cases at 17x128x128")
    parser.add_argument("--worst", action="store_true", help="pure noise against a clean 20-person scene")
    parser.add_argument("--scenes", nargs="*", help="kind:people items, e.g. crowd:20 coco:785 noise:0")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--port-repeats", type=int, default=1)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)
    if args.worst:
        rows = worst_case()
        sys.stdout.write(table(rows, ("scene", "persons", "fast_1t_ms", "vs_clean")))
    else:
        cases = [(s.split(":")[0], int(s.split(":")[1])) for s in args.scenes] if args.scenes else None
        rows = run(quick=args.quick, cases=cases, repeats=args.repeats, port_repeats=args.port_repeats)
        sys.stdout.write(table(rows, COLUMNS))
        median = statistics.median(r["speedup_1t"] for r in rows)
        sys.stdout.write(f"\nmedian speedup, one thread: {median:.1f}x over {len(rows)} scenes\n")
        paired = [r["vs_clean"] for r in rows if r["vs_clean"] is not None]
        if paired:
            sys.stdout.write(
                f"realistic / clean twin, one thread: at most {max(paired):.2f}x over {len(paired)} scenes\n"
            )
    env = rows[0]
    sys.stdout.write(
        f"{env['machine']}, Python {env['python']}, NumPy {env['numpy']}, Numba {env['numba']}, "
        f"{env['date']}, commit {env['commit']}\n"
    )
    if args.json:
        from hhrnet.benchmarks.common import write_rows

        write_rows(args.json, rows)
    return 0 if all(r.get("identical", True) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
