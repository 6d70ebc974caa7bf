"""Target encoding: vectorised NumPy + Numba (:mod:`hhrnet.targets`) against the naive per-joint loops of the
official generators (:mod:`hhrnet.benchmarks.official_targets`), timed side by side in one run on the same
random people. Each row also says whether both produced identical heatmaps and joints.

    python -m hhrnet.benchmarks.targets            # 10 and 30 people at 128 and 256
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from hhrnet import targets
from hhrnet.benchmarks.common import environment, measure
from hhrnet.benchmarks.official_targets import naive_heatmaps, naive_joints


def _people(rng: np.random.Generator, count: int, num_joints: int, size: int) -> np.ndarray:
    """People spread over the map (some joints outside it, about 1 in 4 unlabelled), like augmented COCO."""
    centres = rng.uniform(0, size, size=(count, 1, 2))
    spread = rng.normal(0, size / 12, size=(count, num_joints, 2))
    joints = np.zeros((count, num_joints, 3))
    joints[..., :2] = centres + spread
    joints[..., 2] = np.where(rng.random((count, num_joints)) < 0.75, 2, 0)
    return joints


def run(
    people: Sequence[int] = (10, 30),
    sizes: Sequence[int] = (128, 256),
    num_joints: int = 17,
    repeats: int = 20,
    seed: int = 0,
) -> list[dict[str, Any]]:
    """One row per (size, people): median (p50) milliseconds per encode (heatmaps + joints), the speedup of
    the fast encoder over the naive loops measured in the same run, and whether both outputs are identical."""
    targets.warmup()
    env = environment("cpu")
    rng = np.random.default_rng(seed)
    rows = []
    for size in sizes:
        for count in people:
            joints = _people(rng, count, num_joints, size)

            slots = max(30, count)  # room for everyone, so both sides produce the same layout

            def fast(joints: np.ndarray = joints, size: int = size, slots: int = slots) -> tuple[np.ndarray, ...]:
                return targets.encode(joints, size, max_people=slots)

            def naive(joints: np.ndarray = joints, size: int = size, slots: int = slots) -> tuple[np.ndarray, ...]:
                return naive_heatmaps(joints, size, num_joints), naive_joints(joints, size, num_joints, slots)

            hm_fast, pk_fast = fast()
            hm_naive, pk_naive = naive()
            identical = bool(np.array_equal(hm_fast, hm_naive) and np.array_equal(pk_fast, pk_naive))
            naive_t, _ = measure(naive, repeat=repeats)
            fast_t, _ = measure(fast, repeat=repeats)
            rows.append(
                {
                    "benchmark": "targets",
                    "size": size,
                    "people": count,
                    "joints_drawn": int((pk_fast[..., 1] > 0).sum()),
                    "naive_ms": round(naive_t.p50, 3),
                    "fast_ms": round(fast_t.p50, 3),
                    "speedup": round(naive_t.p50 / fast_t.p50, 1),
                    "identical": identical,
                    **env,
                }
            )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    repeats = int(argv[0]) if argv else 20
    rows = run(repeats=repeats)
    if len(argv) > 1:
        from hhrnet.benchmarks.common import write_rows

        write_rows(argv[1], rows)
    header = ["size", "people", "joints_drawn", "naive_ms", "fast_ms", "speedup", "identical"]
    lines = ["  ".join(f"{h:>12}" for h in header)]
    lines += ["  ".join(f"{row[h]!s:>12}" for h in header) for row in rows]
    sys.stdout.write("\n".join(lines) + "\n")
    return 0 if all(r["identical"] for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
