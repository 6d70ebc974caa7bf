"""A real Triton Inference Server on this machine: PyTriton's bundled ``tritonserver`` on an hhrnet repository.

``nvidia-pytriton`` ships a Triton server binary with only the Python backend, so the repository served here
runs its network in the Python backend (``network_backend="python"``: ONNX Runtime on the CPU, or TensorRT
when an engine is given); the ensemble, the dynamic batcher, the instance groups, HTTP, gRPC and the
Prometheus metrics endpoint are Triton's own.

The Python-backend stub embeds the interpreter's libpython: under pyenv (and other builds whose libpython is
not the system one) the loader would pick Debian's ``libpython3.X.so`` and the stub fails with
``_thread.RLock has no _recursion_count``. :func:`libpython_env` puts this interpreter's ``LIBDIR`` first on
``LD_LIBRARY_PATH`` before the server starts.
"""

from __future__ import annotations

import logging
import os
import secrets
import sysconfig
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from hhrnet.deps import install_hint
from hhrnet.errors import BackendError, ConfigError
from hhrnet.serve.repository import ENSEMBLE, MODELS


@dataclass(frozen=True)
class Endpoints:
    """Where the server listens."""

    host: str = "127.0.0.1"  # bind address of HTTP, gRPC and metrics (loopback unless --host says otherwise)
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002

    def __post_init__(self) -> None:
        ports = (self.http_port, self.grpc_port, self.metrics_port)
        if len(set(ports)) != 3 or not all(0 < p < 65536 for p in ports):
            raise ConfigError(f"HTTP, gRPC and metrics ports must be three distinct ports 1..65535, got {ports}")

    @property
    def client_host(self) -> str:
        return "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host

    @property
    def http_url(self) -> str:
        return f"{self.client_host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.client_host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.client_host}:{self.metrics_port}/metrics"

    @classmethod
    def free_loopback(cls) -> Endpoints:
        """Three ports the OS says are free on 127.0.0.1 (for tests and benchmarks)."""
        import socket

        socks = [socket.socket() for _ in range(3)]
        try:
            for s in socks:
                s.bind(("127.0.0.1", 0))
            ports = [s.getsockname()[1] for s in socks]
        finally:
            for s in socks:
                s.close()
        return cls("127.0.0.1", *ports)


def metrics_binding(config_cls: Any, host: str) -> dict[str, Any]:
    """TritonConfig arguments that make the metrics endpoint follow ``host``: ``metrics_address`` where this
    PyTriton has it; otherwise metrics are switched off unless every interface was asked for (an older
    PyTriton cannot bind them anywhere but 0.0.0.0)."""
    import dataclasses

    names = {f.name for f in dataclasses.fields(config_cls)} if dataclasses.is_dataclass(config_cls) else set()
    if "metrics_address" in names:
        return {"metrics_address": host}
    return {} if host in ("0.0.0.0", "") else {"allow_metrics": False}


def libpython_env(environ: dict[str, str] | os._Environ[str] = os.environ) -> str:
    """Put this interpreter's libpython folder first on ``LD_LIBRARY_PATH`` (for the backend stub); returns it."""
    libdir = str(sysconfig.get_config_var("LIBDIR") or "")
    current = [p for p in environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p]
    if libdir and Path(libdir).is_dir() and (not current or current[0] != libdir):
        environ["LD_LIBRARY_PATH"] = os.pathsep.join([libdir, *[p for p in current if p != libdir]])
    return environ.get("LD_LIBRARY_PATH", "")


def _log_errors(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    errors = [line for line in text if line[:1] == "E" or "error" in line.lower()]
    return " | ".join(errors[-lines:])


def require_pytriton() -> None:
    """BackendError naming the install when PyTriton (the bundled Triton server) is missing."""
    import importlib.util

    if importlib.util.find_spec("pytriton") is None:
        raise BackendError(f"serving needs PyTriton and tritonclient: {install_hint('serve')}")


class TritonServer:
    """Context manager: Triton on ``repository`` through PyTriton; ready when entered, stopped on exit.

    ``wait_s`` bounds how long the models may take to load (each Python-backend instance is a process that
    imports hhrnet, Numba and ONNX Runtime). The server log goes to ``log_file`` (default: a temporary file).
    """

    def __init__(
        self,
        repository: str | Path,
        endpoints: Endpoints | None = None,
        *,
        log_file: str | Path | None = None,
        log_verbose: int = 0,
        wait_s: float = 180.0,
        exit_timeout_s: int = 5,
        open_statistics: bool = False,
    ) -> None:
        self.repository = Path(repository)
        for name in MODELS:
            if not (self.repository / name / "config.pbtxt").is_file():
                raise ConfigError(f"{self.repository} is not an hhrnet Triton repository ({name}/config.pbtxt missing)")
        self.endpoints = endpoints or Endpoints()
        self.log_file = (
            Path(log_file) if log_file is not None else Path(tempfile.mkdtemp(prefix="hhrnet-triton-")) / "triton.log"
        )
        self.log_verbose = log_verbose
        self.wait_s = wait_s
        self.exit_timeout_s = exit_timeout_s
        self._triton: Any = None
        self.access_token = secrets.token_urlsafe(24)  # header triton-access-token on restricted endpoints
        # a loopback benchmark may open the statistics endpoint: perf_analyzer reads it over gRPC without headers
        self.open_statistics = open_statistics

    def start(self) -> TritonServer:
        require_pytriton()
        from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

        libpython_env()
        logging.getLogger("pytriton").setLevel(logging.WARNING)
        e = self.endpoints
        config = TritonConfig(
            model_repository=self.repository.resolve(),
            http_address=e.host,
            http_port=e.http_port,
            grpc_address=e.host,
            grpc_port=e.grpc_port,
            metrics_port=e.metrics_port,
            log_file=self.log_file,
            log_verbose=self.log_verbose,
            exit_timeout_secs=self.exit_timeout_s,
            strict_readiness=True,
            **metrics_binding(TritonConfig, e.host),
        )
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        # PyTriton's default: statistics, model control, shared memory, trace and logging need this token
        restricted = ["shared-memory", "model-repository", "trace", "logging"] if self.open_statistics else None
        security = TritonSecurityConfig(access_token=self.access_token, restricted_endpoints=restricted)
        self._triton = Triton(config=config, security_config=security)
        try:
            self._triton.run()
            self._wait_ready()
        except BaseException as exc:
            self.stop()
            if isinstance(exc, BackendError):
                raise
            if isinstance(exc, KeyboardInterrupt):
                raise
            raise BackendError(
                f"Triton did not start on {self.repository}: {exc}; log {self.log_file}: {_log_errors(self.log_file)}"
            ) from None
        return self

    def _wait_ready(self) -> None:
        import tritonclient.http as httpclient

        deadline = time.monotonic() + self.wait_s
        client = httpclient.InferenceServerClient(self.endpoints.http_url, connection_timeout=5.0, network_timeout=5.0)
        try:
            while time.monotonic() < deadline:
                if not self._triton.is_alive():
                    raise BackendError(
                        f"Triton exited while loading {self.repository}; log {self.log_file}: "
                        f"{_log_errors(self.log_file)}"
                    )
                try:
                    if client.is_model_ready(ENSEMBLE):
                        return
                except Exception:  # noqa: BLE001 - connection refused while the server comes up
                    pass
                time.sleep(0.25)
        finally:
            client.close()
        raise BackendError(
            f"the {ENSEMBLE} model was not ready after {self.wait_s:.0f} s; log {self.log_file}: "
            f"{_log_errors(self.log_file)}"
        )

    def is_alive(self) -> bool:
        return self._triton is not None and bool(self._triton.is_alive())

    def serve_forever(self, poll_s: float = 1.0) -> None:
        """Block until the server exits or Ctrl-C (KeyboardInterrupt propagates after a clean stop)."""
        try:
            while self.is_alive():
                time.sleep(poll_s)
        finally:
            self.stop()
        raise BackendError(f"Triton exited; log {self.log_file}: {_log_errors(self.log_file)}")

    def stop(self) -> None:
        if self._triton is not None:
            triton, self._triton = self._triton, None
            triton.stop()

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
