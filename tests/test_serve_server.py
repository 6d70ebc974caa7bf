"""A real Triton Inference Server on loopback (PyTriton's bundled server on a generated repository): the real
sample photos over HTTP and gRPC give the poses ``hhrnet predict --letterbox`` gives; 16 concurrent clients;
malformed requests get one clear error and the server keeps serving; ``hhrnet serve`` stops on Ctrl-C after
answering, while its models load and while it compiles the decoder on a cold Numba cache, and kills a backend
stub that does not stop; ps shows that no ``tritonserver`` or backend stub is left behind.

Every request loop is bounded in count and every wait in time. One smoke test runs by default; the rest are
``slow``; ``make test-serve`` runs them all (about a minute on 2 cores, 2.5 min on a cold Numba cache).
"""

from __future__ import annotations

import json
import os
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
from conftest import default_sigint

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
        except Exception as exc:  # reported below with the client's number
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


def _serve(repository: Path, tmp_path: Path, *extra: str, env: dict[str, str] | None = None) -> tuple[Any, int]:
    """``hhrnet serve --repository`` on three free loopback ports; returns the process and its HTTP port."""
    from hhrnet.serve.server import Endpoints

    e = Endpoints.free_loopback()
    ports = ["--http-port", str(e.http_port), "--grpc-port", str(e.grpc_port), "--metrics-port", str(e.metrics_port)]
    cmd = [sys.executable, "-m", "hhrnet", "serve", "--repository", str(repository), "--host", "127.0.0.1", *ports]
    cmd += ["--log-file", str(tmp_path / "triton.log"), *extra]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, preexec_fn=default_sigint
    )
    return proc, e.http_port


def _ps() -> list[tuple[int, int, str, list[str]]]:
    """(pid, ppid, state, argv) of every live process, from ps (-ww: commands never cut at the terminal width)."""
    out = subprocess.run(
        ["ps", "-ww", "-eo", "pid=,ppid=,stat=,args="], capture_output=True, text=True, check=True
    ).stdout
    rows = [line.split(None, 3) for line in out.splitlines()]
    return [(int(r[0]), int(r[1]), r[2], r[3].split() if len(r) > 3 else []) for r in rows if r[2][:1] != "Z"]


def _triton_below(pid: int) -> dict[int, list[str]]:
    """The tritonserver process below ``pid`` and its backend stubs (pid -> argv)."""
    rows = _ps()
    below, frontier = {}, {pid}
    while frontier:
        frontier = {p for p, ppid, _, _ in rows if ppid in frontier}
        below.update({p: argv for p, _, _, argv in rows if p in frontier})
    return {p: argv for p, argv in below.items() if any("tritonserver" in a or "_backend_stub" in a for a in argv[:1])}


def _left_behind(known: dict[int, list[str]]) -> dict[int, str]:
    """Which of ``known`` still run, and any backend stub naming one of them as its server (an orphan)."""
    servers = {str(p) for p, argv in known.items() if argv and argv[0].endswith("tritonserver")}
    return {
        p: " ".join(argv[:2])
        for p, _, _, argv in _ps()
        if (p in known and argv[:1] == known[p][:1])
        or (argv[:1] and "_backend_stub" in argv[0] and servers & set(argv))
    }


def _answer(proc: Any, http: int, wait_s: float = 240.0) -> None:
    from hhrnet.serve.client import PoseClient

    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with PoseClient(f"127.0.0.1:{http}", "http", timeout_s=30) as client:
                client.infer_one(samples.images()[0].read_bytes())
            return
        except BackendError:
            time.sleep(0.5)
    raise AssertionError(f"hhrnet serve did not answer: {proc.stderr.read() if proc.poll() is not None else ''}")


def _ctrl_c(proc: Any, limit_s: float) -> tuple[float, str]:
    """SIGINT, then the seconds until the process exited and its stderr; it must exit within ``limit_s``."""
    t0 = time.monotonic()
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=limit_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"hhrnet serve still running {limit_s:.0f} s after Ctrl-C") from None
    took = time.monotonic() - t0
    assert proc.returncode == 0, err
    print(f"exited {took:.1f} s after Ctrl-C")  # shown with -s: the number the README quotes
    return took, err


def _kill(proc: Any, known: dict[int, list[str]]) -> None:
    """Clean up after a failed test: the CLI process and what it started."""
    if proc.poll() is None:
        proc.kill()
        proc.communicate(timeout=30)
    for pid in _left_behind(known):
        os.kill(pid, signal.SIGKILL)


@pytest.mark.slow
def test_cli_serve_stops_cleanly_on_ctrl_c(repository: Path, tmp_path: Path) -> None:
    proc, http = _serve(repository, tmp_path)
    known: dict[int, list[str]] = {}
    try:
        _answer(proc, http)
        known = _triton_below(proc.pid)
        assert sum("_backend_stub" in argv[0] for argv in known.values()) == 6  # 3 models x 2 instances
        _, err = _ctrl_c(proc, 60)
    finally:
        _kill(proc, known)
    assert err.rstrip().endswith("stopped"), err  # exited by itself: nothing had to be killed
    assert not _left_behind(known)
    with socket.socket() as s:  # the server is gone: nothing listens on its port any more
        assert s.connect_ex(("127.0.0.1", http)) != 0


@pytest.mark.slow
def test_cli_serve_stops_on_ctrl_c_while_the_models_load(repository: Path, tmp_path: Path) -> None:
    proc, http = _serve(repository, tmp_path)
    known: dict[int, list[str]] = {}
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:  # Ctrl-C as soon as the first stub runs
            known = _triton_below(proc.pid)
            if any("_backend_stub" in argv[0] for argv in known.values()):
                break
            time.sleep(0.05)
        assert any("_backend_stub" in argv[0] for argv in known.values()), "no backend stub started"
        _, err = _ctrl_c(proc, 60)
    finally:
        _kill(proc, known)
    assert "stopped" in err and "Traceback" not in err, err
    assert not _left_behind(known)


@pytest.mark.slow
def test_cli_serve_stops_on_ctrl_c_while_compiling_on_a_cold_cache(repository: Path, tmp_path: Path) -> None:
    env = {**os.environ, "NUMBA_CACHE_DIR": str(tmp_path / "numba")}  # empty: the decoder must be compiled
    proc, _ = _serve(repository, tmp_path, env=env)
    try:
        assert proc.stderr.readline().startswith("starting Triton"), "hhrnet serve failed before starting Triton"
        time.sleep(2.0)  # the compile takes tens of seconds on a cold cache
        assert not _triton_below(proc.pid), "Triton started before the decoder was compiled"
        _, err = _ctrl_c(proc, 30)
    finally:
        _kill(proc, {})
    assert err.rstrip().endswith("stopped"), err


@pytest.mark.slow
def test_cli_serve_kills_a_backend_stub_that_does_not_stop(repository: Path, tmp_path: Path) -> None:
    proc, http = _serve(repository, tmp_path, "--stop-timeout", "3")
    known: dict[int, list[str]] = {}
    try:
        _answer(proc, http)
        known = _triton_below(proc.pid)
        stuck = next(p for p, argv in known.items() if "_backend_stub" in argv[0] and "hhrnet_decode" in " ".join(argv))
        os.kill(stuck, signal.SIGSTOP)  # a decode instance that never answers Triton's unload
        took, err = _ctrl_c(proc, 60)
    finally:
        _kill(proc, known)
    assert "of Triton's processes did not exit within 3 s and were killed" in err, err
    assert took >= 3
    assert not _left_behind(known)
