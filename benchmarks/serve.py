"""Serving throughput and latency: a real Triton server (PyTriton's bundled server on a generated repository)
at several client concurrencies, against in-process predict on the same images in the same run.

Every request sends one encoded image and waits for its poses (the client's view: encode -> HTTP/gRPC ->
preprocess -> batched network -> decode -> response). The in-process row decodes the same bytes and runs
``Predictor.predict`` with the same letterboxed codec, one image per call, in this process. Rows: images/s
over the wall time of the run, p50/p99 per-request latency, and the mean network batch size Triton formed.

With ``perf_analyzer`` (Triton's own load generator; ``make perf-analyzer`` fetches the real binary from the
``tritonclient==2.41.0`` wheel), the same server in the same run is also measured the way Triton users measure
it: a concurrency sweep over HTTP and gRPC on the public model ``hhrnet`` (the same encoded images as our
client, in a generated JSON input file) and on ``hhrnet_network`` alone (real preprocessed letterboxed images),
with perf_analyzer's p50/p90/p99 latencies and throughput, in the same table.

    python -m hhrnet.benchmarks.serve --tiny --perf-analyzer PATH/perf_analyzer --out perf_analyzer_out
"""

from __future__ import annotations

import base64
import csv
import json
import struct
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hhrnet.benchmarks.common import Row, environment, summarize


def _row(path: str, concurrency: int, latencies: Sequence[float], wall_s: float, **extra: Any) -> Row:
    t = summarize(latencies)
    return {
        "benchmark": "serve",
        "path": path,
        "concurrency": concurrency,
        "images": len(latencies),
        "images_per_s": round(len(latencies) / wall_s, 2),
        "p50_ms": round(t.p50, 2),
        "p90_ms": round(t.p90, 2),
        "p99_ms": round(t.p99, 2),
        **extra,
    }


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
        except Exception as exc:  # reported as the row's failure
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


def bytes_input_json(name: str, payloads: Sequence[bytes]) -> dict[str, Any]:
    """perf_analyzer's input data for a BYTES tensor of shape (1,): one stream entry per encoded image, each
    the tensor's raw form (Triton's 4-byte little-endian length before every element), base64-encoded."""
    data = [{name: {"b64": base64.b64encode(struct.pack("<I", len(p)) + p).decode()}} for p in payloads]
    return {"data": data}


def float_input_json(name: str, arrays: Sequence[Any]) -> dict[str, Any]:
    """perf_analyzer's input data for a float32 tensor: one entry per preprocessed image (C, S, S)."""
    return {
        "data": [{name: {"content": [round(float(v), 5) for v in a.ravel()], "shape": list(a.shape)}} for a in arrays]
    }


def preprocessed(codec: Any, payloads: Sequence[bytes]) -> list[Any]:
    """The encoded images as the served codec's preprocess gives them to the network (letterboxed, normalised,
    (3, S, S) f32): real network inputs for perf_analyzer."""
    from hhrnet.images import decode_image

    return [codec.preprocess(decode_image(p)).inputs[0][1] for p in payloads]


def _beside(binary: str | Path) -> dict[str, str]:
    """The environment with the binary's own folder first on LD_LIBRARY_PATH: ``make perf-analyzer`` puts the
    libcudart.so.12 it needs there (only for perf_analyzer, not for the Triton server)."""
    import os

    folder = str(Path(binary).resolve().parent)
    return dict(
        os.environ, LD_LIBRARY_PATH=os.pathsep.join(p for p in (folder, os.environ.get("LD_LIBRARY_PATH")) if p)
    )


PA_LATENCIES = {"p50_ms": "p50 latency", "p90_ms": "p90 latency", "p99_ms": "p99 latency"}


def perf_analyzer_rows(
    binary: str | Path,
    url: str,
    protocol: str,
    model: str,
    input_json: Path,
    concurrency: Sequence[int],
    workdir: Path,
    requests: int = 64,
    stability: int = 10,
    timeout_s: float = 600,
) -> list[Row]:
    """One perf_analyzer run per concurrency (``--concurrency-range C:C``, batch 1), each measurement window
    ``requests`` requests (as our client's rows), repeated until three windows agree within ``stability``
    percent (its default 10; at most 5 windows): throughput and the p50/p90/p99 latency it reports
    (microseconds in its CSV, milliseconds here)."""
    rows = []
    for c in concurrency:
        report = workdir / f"pa-{model}-{protocol}-{c}.csv"
        options = (
            f"-m {model} -u {url.split('://')[-1]} -i {protocol} --concurrency-range {c}:{c} --percentile 99 "
            f"--measurement-mode count_windows --measurement-request-count {requests} "
            f"--stability-percentage {stability} --max-trials 5"
        )
        command = [str(binary), *options.split(), "--input-data", str(input_json), "-f", str(report)]
        proc = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, env=_beside(binary))
        path = f"perf_analyzer {protocol} {model}"
        if proc.returncode != 0 or not report.is_file():  # e.g. no stable windows on a loaded machine: say why
            why = [
                ln for ln in (proc.stdout + proc.stderr).splitlines() if "fail" in ln.lower() or "error" in ln.lower()
            ]
            rows.append({"benchmark": "serve", "path": path, "concurrency": c, "error": " ".join(why[-2:])[:300]})
            continue
        with report.open() as f:
            (line,) = list(csv.DictReader(f))[:1]
        rows.append(
            {
                "benchmark": "serve",
                "path": path,
                "concurrency": c,
                "images_per_s": round(float(line["Inferences/Second"]), 2),
                **{k: round(float(line[v]) / 1e3, 2) for k, v in PA_LATENCIES.items()},
            }
        )
    return rows


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
    protocols: Sequence[str] | None = None,
    perf_analyzer: str | Path | None = None,
    workdir: Path | None = None,
    pa_stability: int = 10,
) -> list[Row]:
    """In-process predict, then the server at each concurrency (for each of ``protocols``, default
    ``protocol``); ``requests`` images per row. With ``perf_analyzer`` (its binary), its sweep over HTTP and
    gRPC on the same server follows; its input files and CSV reports go to ``workdir`` (default temporary)."""
    from hhrnet import samples
    from hhrnet.serve.client import PoseClient
    from hhrnet.serve.repository import ServeOptions, write_repository
    from hhrnet.serve.server import Endpoints, TritonServer

    files = [Path(p) for p in images] if images else samples.images()
    payloads = [p.read_bytes() for p in files]
    rows = [in_process_row(Path(onnx), letterbox, payloads, requests)]
    options = ServeOptions(
        max_batch_size=max_batch, max_queue_delay_us=window_us, instances=instances, device="cpu", threads=threads
    )
    with tempfile.TemporaryDirectory(prefix="hhrnet-bench-serve-") as tmp:
        repo = write_repository(
            Path(tmp) / "repo", onnx=onnx, network_backend="python", letterbox=letterbox, options=options
        )
        endpoints = Endpoints.free_loopback()
        work = workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        with TritonServer(
            repo.path, endpoints, log_file=Path(tmp) / "triton.log", open_statistics=perf_analyzer is not None
        ) as server:
            urls = {"http": endpoints.http_url, "grpc": endpoints.grpc_url}
            for proto in protocols or (protocol,):
                with PoseClient(urls[proto], proto, access_token=server.access_token) as admin:
                    for p in payloads:  # warm-up: every instance's first calls
                        admin.infer_one(p)
                    for c in concurrency:
                        rows.append(server_row(urls[proto], proto, payloads, c, requests, admin))
            if perf_analyzer is not None:
                inputs = {"hhrnet": work / "pa_images.json", "hhrnet_network": work / "pa_preprocessed.json"}
                inputs["hhrnet"].write_text(json.dumps(bytes_input_json("image", payloads)))
                network_input = repo.network_inputs[0]
                arrays = preprocessed(repo.codec, payloads)
                inputs["hhrnet_network"].write_text(json.dumps(float_input_json(network_input.name, arrays)))
                for model, data in inputs.items():
                    for proto in ("http", "grpc"):
                        rows += perf_analyzer_rows(
                            perf_analyzer, urls[proto], proto, model, data, concurrency, work, requests, pa_stability
                        )
    base = rows[0]["images_per_s"]
    env = environment("cpu")
    side = repo.codec.letterbox
    for r in rows:
        speedup = round(r["images_per_s"] / base, 2) if "images_per_s" in r else None  # None: perf_analyzer failed
        r |= {
            "speedup_vs_in_process": speedup,
            "input": f"{side}x{side}",
            "instances": instances,
            "max_batch": max_batch,
            "window_us": window_us,
            "onnx": str(onnx),
            **env,
        }
    return rows


COLUMNS = ("path", "concurrency", "images_per_s", "p50_ms", "p90_ms", "p99_ms", "mean_network_batch", "error")


def table(rows: Sequence[Row]) -> str:
    """Our client's rows and perf_analyzer's in one markdown table."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(r.get(c, "")) for c in COLUMNS) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def tiny_onnx(folder: Path, side: int = 128) -> Path:
    """The tiny preset (random weights) exported at ``side`` (aggregate graph): a model to serve anywhere."""
    import torch

    from hhrnet.config import apply_overrides, preset
    from hhrnet.export.onnx import export_onnx
    from hhrnet.model import build_model

    cfg = apply_overrides(preset("tiny"), [f"data.input_size={side}", f"data.output_size=[{side // 4},{side // 2}]"])
    torch.manual_seed(0)
    return export_onnx(build_model(cfg).eval(), cfg, folder / "tiny.onnx", sample_size=(side, side)).path


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m hhrnet.benchmarks.serve", description=__doc__.split("\n")[0])
    parser.add_argument("onnx", nargs="?", help="the model to serve (or --tiny)")
    parser.add_argument("--tiny", action="store_true", help="export and serve the tiny preset (random weights)")
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--concurrency", default="1,4,16")
    parser.add_argument("--protocols", default="http,grpc")
    parser.add_argument("--perf-analyzer", help="perf_analyzer binary: also run its sweep on the same server")
    parser.add_argument("--pa-stability", type=int, default=10, help="perf_analyzer --stability-percentage")
    parser.add_argument("--out", type=Path, help="write rows (serve.json), the table (serve.md), perf_analyzer files")
    args = parser.parse_args(argv)
    if (args.onnx is None) == (not args.tiny):
        parser.error("give an ONNX file or --tiny")
    with tempfile.TemporaryDirectory(prefix="hhrnet-serve-bench-") as tmp:
        onnx = Path(args.onnx) if args.onnx else tiny_onnx(Path(tmp))
        rows = run(
            onnx,
            requests=args.requests,
            concurrency=tuple(int(c) for c in args.concurrency.split(",")),
            protocols=tuple(args.protocols.split(",")),
            perf_analyzer=args.perf_analyzer,
            pa_stability=args.pa_stability,
            workdir=args.out,
        )
    text = table(rows)
    env = rows[0]
    text += (
        f"\n{env['machine']}, {env['input']} letterbox, {env['instances']} instances, max batch "
        f"{env['max_batch']}, window {env['window_us']} us, {args.requests} requests per row, {env['date']}, "
        f"commit {env['commit']}\n"
    )
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "serve.json").write_text(json.dumps(rows, indent=1))
        (args.out / "serve.md").write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
