"""A real Triton Inference Server on this machine: PyTriton's bundled ``tritonserver`` on an hhrnet repository.

``nvidia-pytriton`` ships a Triton server binary with only the Python backend, so the repository served here
runs its network in the Python backend (``network_backend="python"``: ONNX Runtime on the CPU, or TensorRT
when an engine is given); the ensemble, the dynamic batcher, the instance groups, HTTP, gRPC and the
Prometheus metrics endpoint are Triton's own.

The Python-backend stub embeds the interpreter's libpython: under pyenv (and other builds whose libpython is
not the system one) the loader would pick Debian's ``libpython3.X.so`` and the stub fails with
``_thread.RLock has no _recursion_count``. :func:`libpython_env` puts this interpreter's ``LIBDIR`` first on
``LD_LIBRARY_PATH`` before the server starts.

Start-up and shutdown (Linux, where the bundled server runs): before Triton starts, :class:`TritonServer`
compiles the Numba decoder once in this process, into Numba's on-disk cache, so that every decode instance
loads it instead of compiling it (on a cold cache each instance would compile for tens of seconds, all at
once). Stopping asks Triton to exit (SIGINT, in-flight requests get ``exit_timeout_s``) and waits at most
``stop_timeout_s``; a server or backend stub still running then is killed (SIGKILL), and
:attr:`TritonServer.killed` says how many were. A second Ctrl-C while stopping kills at once.
"""

from __future__ import annotations

import logging
import os
import secrets
import signal
import sysconfig
import tempfile
import threading
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


@dataclass(frozen=True)
class Process:
    """A process by pid and start time (``/proc/<pid>/stat``), so that a reused pid is never taken for it."""

    pid: int
    start: int  # clock ticks after boot

    def is_alive(self) -> bool:
        stat = _stat(self.pid)
        return stat is not None and stat[2] == self.start and stat[0] != "Z"


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, start time) of a process, None when it is gone (or there is no ``/proc``)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()  # the command name in parentheses may hold spaces
    return fields[0], int(fields[1]), int(fields[19])


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return []


def process_tree(pid: int) -> list[Process]:
    """``pid`` and every process below it (children first listed after their parent); empty when it is gone."""
    children: dict[int, list[tuple[int, int]]] = {}
    root = None
    for entry in Path("/proc").glob("[0-9]*"):
        stat = _stat(int(entry.name))
        if stat is None or stat[0] == "Z":
            continue
        children.setdefault(stat[1], []).append((int(entry.name), stat[2]))
        if int(entry.name) == pid:
            root = Process(pid, stat[2])
    if root is None:
        return []
    tree, k = [root], 0
    while k < len(tree):
        tree.extend(Process(c, start) for c, start in children.get(tree[k].pid, []))
        k += 1
    return tree


def kill_processes(processes: list[Process]) -> int:
    """SIGKILL every one still alive (the first, the parent, first: it cannot start more); returns how many."""
    killed = 0
    for p in processes:
        if p.is_alive():
            try:
                os.kill(p.pid, signal.SIGKILL)
                killed += 1
            except ProcessLookupError:
                pass
    return killed


def wait_gone(processes: list[Process], timeout_s: float) -> bool:
    """Wait until none is alive (True) or ``timeout_s`` passes (False)."""
    deadline = time.monotonic() + timeout_s
    while any(p.is_alive() for p in processes):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def require_pytriton() -> None:
    """BackendError naming the install when PyTriton (the bundled Triton server) is missing."""
    import importlib.util

    if importlib.util.find_spec("pytriton") is None:
        raise BackendError(f"serving needs PyTriton and tritonclient: {install_hint('serve')}")


class TritonServer:
    """Context manager: Triton on ``repository`` through PyTriton; ready when entered, stopped on exit.

    ``wait_s`` bounds how long the models may take to load (each Python-backend instance is a process that
    imports hhrnet, Numba and ONNX Runtime). The server log goes to ``log_file`` (default: a temporary file).
    ``warm_decoder`` compiles the decoder into Numba's cache before Triton starts (see the module docstring);
    ``stop_timeout_s`` bounds the wait for Triton to exit before its processes are killed.
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
        stop_timeout_s: float = 30.0,
        warm_decoder: bool = True,
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
        self.stop_timeout_s = stop_timeout_s
        self.warm_decoder = warm_decoder
        self.killed = 0  # processes (server, backend stubs) killed because they outlived stop_timeout_s
        self._triton: Any = None
        self._server_process: Process | None = None
        self.access_token = secrets.token_urlsafe(24)  # header triton-access-token on restricted endpoints
        # a loopback benchmark may open the statistics endpoint: perf_analyzer reads it over gRPC without headers
        self.open_statistics = open_statistics

    def start(self) -> TritonServer:
        require_pytriton()
        from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

        if self.warm_decoder:
            from hhrnet.kernels.decode import warmup_in_child

            # once here, so the decode instances load the compiled decoder instead of each compiling it; in a child
            # process, so that Ctrl-C stops the wait at once (the child is then killed)
            warm = warmup_in_child()
            try:
                failed = warm.wait() != 0
            finally:
                warm.kill()  # a no-op once it has exited
            if failed:
                logging.getLogger(__name__).warning("compiling the decoder failed; each decode instance compiles it")

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
            self._server_process = self._find_server()
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
                except Exception:  # connection refused while the server comes up
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

    def _find_server(self) -> Process | None:
        """The ``tritonserver`` process this object started (a child of this process, on our HTTP port)."""
        port = str(self.endpoints.http_port)
        for p in process_tree(os.getpid())[1:]:
            argv = _cmdline(p.pid)
            if Path(argv[0]).name == "tritonserver" and any(
                a == "--http-port" and b == port for a, b in zip(argv, argv[1:], strict=False)
            ):
                return p
        return None

    def stop(self) -> None:
        """Ask Triton to exit; after ``stop_timeout_s`` (or a second Ctrl-C) kill the server and its stubs."""
        if self._triton is None:
            return
        triton, self._triton = self._triton, None
        server = self._server_process or self._find_server()
        tree = process_tree(server.pid) if server is not None and server.is_alive() else []
        done = threading.Event()

        def pytriton_stop() -> None:  # SIGINT to the server, wait for it, clean PyTriton's workspace
            try:
                triton.stop()
            finally:
                done.set()

        threading.Thread(target=pytriton_stop, name="hhrnet-triton-stop", daemon=True).start()
        try:
            stopped = done.wait(self.stop_timeout_s)
            if server is not None and server.is_alive():  # stubs started since the first look
                tree = [server, *{p.pid: p for p in tree[1:] + process_tree(server.pid)[1:]}.values()]
            # stubs still alive after a clean exit would be orphans: give them a moment, then kill them too
            lingering = not stopped or not wait_gone(tree, 5.0)
        except KeyboardInterrupt:  # Ctrl-C again: stop waiting
            lingering = True
        if lingering:
            killed = kill_processes(tree)
            wait_gone(tree, 5.0)
            done.wait(10.0)  # PyTriton's own wait returns once its process is gone; then it cleans its workspace
            if killed:
                self.killed += killed
                logging.getLogger(__name__).warning(
                    "%d of Triton's processes (server, backend stubs) did not exit within %.0f s and were killed",
                    killed,
                    self.stop_timeout_s,
                )

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
