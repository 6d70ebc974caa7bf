"""A real Triton Inference Server on loopback (PyTriton's bundled server on a generated repository): the real
sample photos over HTTP and gRPC give the poses ``hhrnet predict --letterbox`` gives; 16 concurrent clients;
malformed requests get one clear error and the server keeps serving; ``hhrnet serve`` stops on Ctrl-C.

Every request loop is bounded in count and every wait in time. One smoke test runs by default; the rest
(about a minute on 2 cores) are ``slow``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hhrnet import samples
from hhrnet.errors import BackendError

pytest.importorskip("pytriton")
pytest.importorskip("tritonclient.grpc")

SIDE = 128


@pytest.fixture(scope="module")
def onnx_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_export import TINY_128, tiny_model

    from hhrnet.export.onnx import export_onnx

    model, cfg = tiny_model(TINY_128)
    return export_onnx(model, cfg, tmp_path_factory.mktemp("onnx") / "m.onnx", sample_size=(SIDE, SIDE)).path


@pytest.fixture(scope="module")
def repository(onnx_file: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hhrnet.serve.repository import ServeOptions, write_repository

    # a 50 ms window so that concurrent requests reliably meet in one network batch on a busy 2-core machine
    options = ServeOptions(max_batch_size=8, max_queue_delay_us=50_000, instances=2, device="cpu", threads=1)
    return write_repository(
        tmp_path_factory.mktemp("triton") / "repo", onnx=onnx_file, network_backend="python", options=options
    ).path


@pytest.fixture(scope="module")
def server(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from hhrnet.serve.server import Endpoints, TritonServer

    ends = Endpoints.free_loopback()
    http, grpc, metrics = ends.http_port, ends.grpc_port, ends.metrics_port
    log = tmp_path_factory.mktemp("log") / "triton.log"
    with TritonServer(repository, Endpoints("127.0.0.1", http, grpc, metrics), log_file=log, wait_s=240) as s:
        yield s


@pytest.fixture(scope="module")
def reference(onnx_file: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[dict[str, Any]]]:
    """What the predict job (``hhrnet predict --onnx m.onnx --letterbox 128``) writes for the sample photos."""
    from hhrnet.load import open_model
    from hhrnet.predict import run_predict

    out = tmp_path_factory.mktemp("predict")
    predictor = open_model(onnx=onnx_file, letterbox=SIDE).predictor()
    run_predict(samples.images(), predictor, out, draw=False)
    records = json.loads((out / "predictions.json").read_text())["predictions"]
    people = {Path(r["file"]).name: r["people"] for r in records}
    assert sum(len(p) for p in people.values()) > 0  # comparing empty results would prove nothing
    return people


def _entries(poses: Any) -> list[dict[str, Any]]:
    from hhrnet.evaluate import result_entries

    return json.loads(json.dumps(result_entries(0, poses.keypoints, poses.scores)))


def _client(server: Any, protocol: str) -> Any:
    from hhrnet.serve.client import PoseClient

    url = server.endpoints.http_url if protocol == "http" else server.endpoints.grpc_url
    return PoseClient(url, protocol, timeout_s=60.0, access_token=server.access_token)


def test_server_smoke_http_equals_predict(server: Any, reference: dict[str, list[dict[str, Any]]]) -> None:
    path = samples.images()[1]
    with _client(server, "http") as client:
        assert client.served_codec().letterbox == SIDE
        assert _entries(client.infer_one(path.read_bytes())) == reference[path.name]


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_sample_photos_equal_predict(server: Any, reference: dict[str, list[dict[str, Any]]], protocol: str) -> None:
    files = samples.images()
    with _client(server, protocol) as client:
        for path in files:  # one image per request
            assert _entries(client.infer_one(path.read_bytes())) == reference[path.name], path.name
        together = client.infer([p.read_bytes() for p in files])  # all four in one request
        assert [_entries(p) for p in together] == [reference[p.name] for p in files]


@pytest.mark.slow
def test_sixteen_concurrent_clients_are_batched(server: Any, reference: dict[str, list[dict[str, Any]]]) -> None:
    from hhrnet.serve.client import batch_histogram

    files = samples.images()
    payloads = [(p.name, p.read_bytes()) for p in files]
    with _client(server, "http") as admin:
        before = batch_histogram(admin.statistics("hhrnet_network"), "hhrnet_network")
    results: dict[int, list[bool]] = {}
    errors: list[str] = []
    start = threading.Barrier(16, timeout=60)

    def worker(k: int) -> None:
        try:
            with _client(server, "http" if k % 2 else "grpc") as client:
                start.wait()
                ok = []
                for r in range(2):  # 8 requests per client, 128 in all
                    for name, data in payloads[(k + r) % 4 :] + payloads[: (k + r) % 4]:
                        ok.append(_entries(client.infer_one(data)) == reference[name])
                results[k] = ok
        except Exception as exc:  # noqa: BLE001 - reported below with the client's number
            errors.append(f"client {k}: {exc}")

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(16)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 300
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic()))
    assert not errors, errors
    assert not any(t.is_alive() for t in threads), "clients still running after 300 s"
    assert sorted(results) == list(range(16)) and all(len(v) == 8 and all(v) for v in results.values())
    with _client(server, "grpc") as admin:
        after = batch_histogram(admin.statistics("hhrnet_network"), "hhrnet_network")
    new = {b: after.get(b, 0) - before.get(b, 0) for b in after}
    assert sum(b * n for b, n in new.items()) == 128  # every image went through the network once
    assert max(b for b, n in new.items() if n > 0) > 1, f"no batch larger than one: {new}"


def _png_header(width: int, height: int) -> bytes:
    from test_serve import _png_header as make

    return make(width, height)


@pytest.mark.slow
def test_malformed_requests_get_clear_errors_and_the_server_keeps_serving(
    server: Any, reference: dict[str, list[dict[str, Any]]]
) -> None:
    good = samples.images()[0]
    jpeg = good.read_bytes()

    def as_bytes(*items: bytes) -> np.ndarray:
        data = np.empty((len(items), 1), np.object_)
        data[:, 0] = items
        return data

    bad: list[tuple[str, list[tuple[str, np.ndarray, str]], str, str]] = [
        ("wrong dtype", [("image", np.zeros((1, 1), np.float32), "FP32")], "hhrnet", "(?i)data.?type|expect"),
        ("wrong shape", [("image", as_bytes(jpeg, jpeg).reshape(1, 2), "BYTES")], "hhrnet", r"(?i)shape|\[1,2\]"),
        ("corrupt bytes", [("image", as_bytes(b"this is not a picture"), "BYTES")], "hhrnet", "cannot decode image"),
        ("truncated JPEG", [("image", as_bytes(jpeg[: len(jpeg) // 3]), "BYTES")], "hhrnet", "truncated JPEG"),
        (
            "far too large",
            [("image", as_bytes(_png_header(60_000, 60_000)), "BYTES")],
            "hhrnet",
            "60000x60000 pixels; this server accepts at most 40000000",
        ),
        ("empty", [("image", as_bytes(b""), "BYTES")], "hhrnet", "empty"),
        (
            "bad network input",
            [("image", np.zeros((1, 3, 64, 64), np.float32), "FP32")],
            "hhrnet_network",
            r"(?i)shape|\[1,3,64,64\]",
        ),
        ("missing input", [("picture", as_bytes(jpeg), "BYTES")], "hhrnet", r"(?i)image|picture"),
    ]
    for protocol in ("http", "grpc"):
        with _client(server, protocol) as client:
            for what, inputs, model, pattern in bad:
                with pytest.raises(BackendError, match=pattern):
                    client.infer_raw(inputs, model=model)
                # the next request is served normally
                assert _entries(client.infer_one(jpeg)) == reference[good.name], f"after {what} over {protocol}"
            # one bad image in a multi-image request names its position
            with pytest.raises(BackendError, match="image 1 of 2"):
                client.infer([jpeg, b"garbage"])
    assert server.is_alive()


@pytest.mark.slow
def test_metrics_endpoint_counts_inferences(server: Any) -> None:
    from hhrnet.serve.client import metrics_text

    with _client(server, "http") as client:
        client.infer_one(samples.images()[0].read_bytes())
    text = metrics_text(server.endpoints.metrics_url)
    counts = {
        line.split("{")[0] + line.split('model="')[1].split('"')[0]: float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("nv_inference_count{")
    }
    for model in ("hhrnet", "hhrnet_preprocess", "hhrnet_network", "hhrnet_decode"):
        assert counts[f"nv_inference_count{model}"] >= 1


@pytest.mark.slow
def test_cli_serve_stops_cleanly_on_ctrl_c(repository: Path, tmp_path: Path) -> None:
    from hhrnet.serve.client import PoseClient
    from hhrnet.serve.server import Endpoints

    ends = Endpoints.free_loopback()
    http, grpc, metrics = ends.http_port, ends.grpc_port, ends.metrics_port
    cmd = [
        sys.executable,
        "-m",
        "hhrnet",
        "serve",
        "--repository",
        str(repository),
        "--host",
        "127.0.0.1",
        "--http-port",
        str(http),
        "--grpc-port",
        str(grpc),
        "--metrics-port",
        str(metrics),
        "--log-file",
        str(tmp_path / "triton.log"),
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 240
        served = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with PoseClient(f"127.0.0.1:{http}", "http", timeout_s=30) as client:
                    served = client.infer_one(samples.images()[0].read_bytes())
                break
            except BackendError:
                time.sleep(0.5)
        assert served is not None, (
            f"hhrnet serve did not answer: {proc.stderr.read() if proc.poll() is not None else ''}"
        )
        proc.send_signal(signal.SIGINT)
        # generous: in a fresh clone (cold Numba cache) the other backend instances may still be compiling the
        # decoder when Ctrl-C arrives, and Triton waits for them to finish before it exits (seen once: > 60 s)
        _, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "stopped" in err
    with socket.socket() as s:  # the server is gone: nothing listens on its port any more
        assert s.connect_ex(("127.0.0.1", http)) != 0
