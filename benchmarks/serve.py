"""Serving throughput and latency: a real Triton server (PyTriton's bundled server on a generated repository)
at several client concurrencies, against in-process predict on the same images in the same run.

Every request sends one encoded image and waits for its poses (the client's view: encode -> HTTP/gRPC ->
preprocess -> batched network -> decode -> response). The in-process row decodes the same bytes and runs
``Predictor.predict`` with the same letterboxed codec, one image per call, in this process. Rows: images/s
over the wall time of the run, p50/p99 per-request latency, and the mean network batch size Triton formed.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hhrnet.benchmarks.common import Row, environment, summarize


def _row(path: str, concurrency: int, latencies: Sequence[float], wall_s: float, **extra: Any) -> Row:
    t = summarize(latencies)
    return {"benchmark": "serve", "path": path, "concurrency": concurrency, "images": len(latencies),
            "images_per_s": round(len(latencies) / wall_s, 2), "p50_ms": round(t.p50, 2), "p99_ms": round(t.p99, 2),
            **extra}  # fmt: skip


def in_process_row(onnx: Path, letterbox: int | None, payloads: Sequence[bytes], requests: int) -> Row:
    """``predict`` in this process, one image per call (bytes decoded each time, as the server does)."""
    from hhrnet.images import decode_image
    from hhrnet.load import open_model

    predictor = open_model(onnx=onnx, letterbox=letterbox).predictor()
    predictor.predict(decode_image(payloads[0]))  # warm-up: Numba, ONNX Runtime first call
    latencies = []
    start = time.perf_counter()
    for i in range(requests):
        t = time.perf_counter()
        predictor.predict(decode_image(payloads[i % len(payloads)]))
        latencies.append(time.perf_counter() - t)
    return _row("in-process predict", 1, latencies, time.perf_counter() - start)


def server_row(url: str, protocol: str, payloads: Sequence[bytes], concurrency: int, requests: int, stats: Any) -> Row:
    """``concurrency`` clients, each with its own connection, ``requests`` images in all."""
    from hhrnet.serve.client import PoseClient, batch_histogram

    before = batch_histogram(stats.statistics("hhrnet_network"), "hhrnet_network")
    per_client = max(1, requests // concurrency)
    latencies: list[list[float]] = [[] for _ in range(concurrency)]
    errors: list[str] = []
    barrier = threading.Barrier(concurrency + 1, timeout=120)

    def worker(k: int) -> None:
        try:
            with PoseClient(url, protocol, timeout_s=120) as client:
                barrier.wait()
                for i in range(per_client):
                    t = time.perf_counter()
                    client.infer_one(payloads[(k + i) % len(payloads)])
                    latencies[k].append(time.perf_counter() - t)
        except Exception as exc:  # noqa: BLE001 - reported as the row's failure
            errors.append(f"client {k}: {exc}")

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(concurrency)]
    for t in threads:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in threads:
        t.join(timeout=600)
    wall = time.perf_counter() - start
    if errors or any(t.is_alive() for t in threads):
        raise RuntimeError(f"serve benchmark at concurrency {concurrency} failed: {errors or 'clients timed out'}")
    after = batch_histogram(stats.statistics("hhrnet_network"), "hhrnet_network")
    runs = {b: after.get(b, 0) - before.get(b, 0) for b in after}
    executions = sum(runs.values())
    mean_batch = sum(b * n for b, n in runs.items()) / executions if executions else 0.0
    flat = [x for lat in latencies for x in lat]
    return _row(f"triton {protocol}", concurrency, flat, wall, mean_network_batch=round(mean_batch, 2))


def run(
    onnx: str | Path,
    images: Sequence[str | Path] | None = None,
    *,
    concurrency: Sequence[int] = (1, 4, 16),
    requests: int = 64,
    protocol: str = "http",
    instances: int = 2,
    max_batch: int = 8,
    window_us: int = 2000,
    letterbox: int | None = None,
    threads: int = 0,
) -> list[Row]:
    """In-process predict, then the server at each concurrency; ``requests`` images per row."""
    from hhrnet import samples
    from hhrnet.serve.client import PoseClient
    from hhrnet.serve.repository import ServeOptions, write_repository
    from hhrnet.serve.server import Endpoints, TritonServer

    files = [Path(p) for p in images] if images else samples.images()
    payloads = [p.read_bytes() for p in files]
    rows = [in_process_row(Path(onnx), letterbox, payloads, requests)]
    options = ServeOptions(max_batch_size=max_batch, max_queue_delay_us=window_us, instances=instances, device="cpu",
                           threads=threads)  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="hhrnet-bench-serve-") as tmp:
        repo = write_repository(Path(tmp) / "repo", onnx=onnx, network_backend="python", letterbox=letterbox,
                                options=options)  # fmt: skip
        endpoints = Endpoints.free_loopback()
        with TritonServer(repo.path, endpoints, log_file=Path(tmp) / "triton.log") as server:
            url = endpoints.http_url if protocol == "http" else endpoints.grpc_url
            with PoseClient(url, protocol, access_token=server.access_token) as admin:
                for p in payloads:  # warm-up: every instance's first calls
                    admin.infer_one(p)
                for c in concurrency:
                    rows.append(server_row(url, protocol, payloads, c, requests, admin))
    base = rows[0]["images_per_s"]
    env = environment("cpu")
    side = repo.codec.letterbox
    for r in rows:
        r |= {"speedup_vs_in_process": round(r["images_per_s"] / base, 2), "input": f"{side}x{side}",
              "instances": instances, "max_batch": max_batch, "window_us": window_us, "onnx": str(onnx),
              **env}  # fmt: skip
    return rows


if __name__ == "__main__":
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("onnx")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--protocol", default="http")
    args = parser.parse_args()
    print(json.dumps(run(args.onnx, requests=args.requests, protocol=args.protocol), indent=1))
