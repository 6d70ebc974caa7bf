"""Per-stage latency of the image -> poses path: preprocess, network, aggregate, decode, total.

p50/p90/p99 over warm repetitions for each backend given; warm-up (compile, first call) is reported
separately and never mixed in. A people-count sweep times the decode alone on planted maps at the
pipeline's map size (1, 5, 15, 30 people). Rows carry device, versions, commit, shapes and precision.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.benchmarks.common import Row, environment, measure, summarize
from hhrnet.benchmarks.report import COLUMNS


def stage_rows(predictor: Any, image: np.ndarray, backend: str, precision: str, repeats: int) -> list[Row]:
    """Time each stage of ``predictor`` on ``image``; one row per stage plus 'total'.

    ``aggregate`` is the host's share: with a raw graph the host resizes, merges and projects the maps;
    with an aggregate/peaks graph that work is inside ``network`` and the host only unpacks outputs.
    """
    stages: dict[str, list[float]] = {k: [] for k in ("preprocess", "network", "aggregate", "decode", "total")}
    t0 = time.perf_counter()
    predictor.predict(image)  # warm-up: Numba compile, ORT/torch first-call allocation
    warm_ms = (time.perf_counter() - t0) * 1e3
    shape = ""
    for _ in range(repeats):
        a = time.perf_counter()
        prepared = predictor.preprocess(image)
        b = time.perf_counter()
        x = prepared.inputs[0][1][None]
        shape = "x".join(map(str, x.shape))
        outs, flipped = predictor.run_network(x)
        c = time.perf_counter()
        maps = predictor.to_maps(outs, flipped, predictor.codec.project_size(prepared))[0]
        d = time.perf_counter()
        poses, scores = predictor.decode(maps)
        predictor.postprocess(poses, scores, prepared, maps.heatmaps.shape[1:])
        e = time.perf_counter()
        for k, v in (
            ("preprocess", b - a),
            ("network", c - b),
            ("aggregate", d - c),
            ("decode", e - d),
            ("total", e - a),
        ):
            stages[k].append(v)
    env = environment(getattr(predictor.network, "device", "cpu"))
    total = summarize(stages["total"])
    rows = []
    for stage, samples in stages.items():
        t = summarize(samples)
        rows.append(
            {
                "benchmark": "latency",
                "backend": backend,
                "graph": predictor.graph,
                "precision": precision,
                "stage": stage,
                "input": shape,
                "flip": predictor.codec.flip,
                "decoder": predictor.decoder,
                "share_of_total": round(t.p50 / total.p50, 4),
                "warmup_ms": round(warm_ms, 1),
                **t.as_row(),
                **env,
            }
        )
    return rows


def people_rows(
    map_shape: tuple[int, int, int], tag_dims: int, people: Sequence[int] = (1, 5, 15, 30), repeats: int = 10
) -> list[Row]:
    """Decode time vs people on planted maps of the pipeline's size (fast decoder, same run)."""
    from hhrnet.benchmarks.decode import planted_maps
    from hhrnet.kernels.decode import decode
    from hhrnet.kernels.params import DecodeParams

    env = environment("cpu")
    rows = []
    params = DecodeParams(num_joints=map_shape[0])
    for p in people:
        det, tags = planted_maps(map_shape, p, tag_dims, seed=p)

        def run(det: np.ndarray = det, tags: np.ndarray = tags) -> object:
            return decode(det, tags, params)

        t, _ = measure(run, repeat=repeats)
        rows.append(
            {
                "benchmark": "latency_people",
                "stage": "decode",
                "people": p,
                "maps": "x".join(map(str, map_shape)),
                "T": tag_dims,
                **t.as_row(),
                **env,
            }
        )
    return rows


def batch_rows(
    network: Any, backend: str, precision: str, size: int, batches: Sequence[int] = (1, 8), repeats: int = 5
) -> list[Row]:
    """Network latency and throughput per batch size on a fixed (letterboxed) input size."""
    env = environment(getattr(network, "device", "cpu"))
    rows = []
    for b in batches:
        x = np.zeros((b, 3, size, size), np.float32)

        def forward(x: np.ndarray = x) -> object:
            return network(x)

        t, warm = measure(forward, repeat=repeats)
        rows.append(
            {
                "benchmark": "latency_batch",
                "backend": backend,
                "precision": precision,
                "batch": b,
                "input": f"{b}x3x{size}x{size}",
                "images_per_s": round(b / (t.p50 / 1e3), 1),
                "warmup_ms": round(warm * 1e3, 1),
                **t.as_row(),
                **env,
            }
        )
    return rows


def precision_rows(
    networks: Sequence[tuple[str, str, Any, str | None]], size: int = 512, repeats: int = 5, batch: int = 1
) -> list[Row]:
    """Network latency of the same model at several precisions, interleaved in one run at (batch, 3, S, S).

    ``networks``: (label, precision, network, ONNX path or None); the first is the baseline the speedups
    are ratios to. Calls alternate between the networks so drifting machine load hits them alike.
    """
    import os

    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    warm = {}
    for label, _, net, _ in networks:
        t0 = time.perf_counter()
        net(x)
        warm[label] = (time.perf_counter() - t0) * 1e3
    samples: dict[str, list[float]] = {label: [] for label, *_ in networks}
    for _ in range(repeats):
        for label, _, net, _ in networks:
            t0 = time.perf_counter()
            net(x)
            samples[label].append(time.perf_counter() - t0)
    base = summarize(samples[networks[0][0]])
    rows = []
    for label, precision, net, path in networks:
        t = summarize(samples[label])
        size_mb = round(os.path.getsize(path) / 2**20, 2) if path else None
        rows.append(
            {
                "benchmark": "latency_precision",
                "variant": label,
                "precision": precision,
                "input": f"{batch}x3x{size}x{size}",
                "onnx_MB": size_mb,
                "speedup_vs_first": round(base.p50 / t.p50, 3),
                "warmup_ms": round(warm[label], 1),
                **t.as_row(),
                **environment(getattr(net, "device", "cpu")),
            }
        )
    return rows


# (benchmark, columns, title) of the tables ``hhrnet bench latency`` prints, in order
LATENCY_TABLES: tuple[tuple[str, list[str], str], ...] = (
    ("latency_precision", COLUMNS["latency_precision"], "network latency per precision ({cpu_flags})"),
    (
        "latency",
        ["backend", "graph", "stage", "input", "p50_ms", "p90_ms", "p99_ms", "share_of_total", "warmup_ms"],
        "latency (ms)",
    ),
    ("latency_people", ["maps", "T", "people", "p50_ms", "p99_ms"], "decode vs people (ms)"),
    ("latency_batch", ["backend", "input", "p50_ms", "images_per_s", "warmup_ms"], "network vs batch size"),
)


def run_latency(
    loaded: Sequence[Any],
    image: np.ndarray,
    *,
    people: Sequence[int],
    batches: Sequence[int],
    repeats: int,
    variants: Sequence[tuple[Path, Any]] = (),
    size: int | None = None,
    log: Callable[[str], None] = print,
) -> list[Row]:
    """``hhrnet bench latency``: per-stage rows for each opened model (:class:`hhrnet.load.Loaded`), decode vs
    people, network vs batch size, and with ``variants`` ((ONNX file, opened model), the fp32 file first) the
    network latency of each precision at one square size, interleaved in one run."""
    rows: list[Row] = []
    for m in loaded:
        log(f"timing {m.backend} ({m.graph} graph, {m.precision}) on a {image.shape[1]}x{image.shape[0]} photo ...")
        rows += stage_rows(m.predictor(), image, m.backend, m.precision, repeats)
    log("timing decode vs people ...")
    maps = loaded[0].predictor().maps(loaded[0].codec.preprocess(image))
    rows += people_rows(maps.heatmaps.shape, maps.tags.shape[-1], tuple(people), repeats)
    log("timing the network per batch size ...")
    for m in loaded:
        rows += batch_rows(m.network, m.backend, m.precision, min(m.codec.input_size, 512), tuple(batches))
    if variants:
        codec = variants[0][1].codec
        side = size or codec.letterbox or codec.input_size
        nets = [(v.name, m.precision, m.network, str(v)) for v, m in variants]
        log(f"timing the network at {side}x{side} per precision ({', '.join(n[0] for n in nets)}) ...")
        rows += precision_rows(nets, side, repeats)
    return rows
