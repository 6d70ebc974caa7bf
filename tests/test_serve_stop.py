"""The bounded stop of :class:`hhrnet.serve.server.TritonServer` on real processes, without Triton.

A stand-in ``tritonserver`` (a process named so, with a backend-like child) ignores SIGINT, as a server whose
backend stubs do not finish; the PyTriton stand-in sends SIGINT and waits for it, as PyTriton does. The stop
must return after ``stop_timeout_s``, kill both and say so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import default_sigint

from hhrnet.serve.repository import MODELS
from hhrnet.serve.server import Endpoints, TritonServer, kill_processes, process_tree, wait_gone

pytestmark = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs Linux /proc")

# a parent that ignores SIGINT and starts a child that ignores it too; prints the child's pid, then sleeps
STUBBORN = (
    "import signal, subprocess, time\n"
    "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
    f"child = subprocess.Popen([{sys.executable!r}, '-c', "
    "'import signal, time; signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(600)'])\n"
    "print(child.pid, flush=True)\n"
    "time.sleep(600)\n"
)

EXEC_AS = 'exec -a "$0" "$1" -c "$2" "${@:3}"'  # bash -c EXEC_AS NAME PYTHON CODE ARGS...: a Python named NAME


def _alive(pid: int) -> bool:
    """Alive and not a zombie, read with ps (independently of the library's /proc reader)."""
    out = subprocess.run(["ps", "-o", "stat=", "-p", str(pid)], capture_output=True, text=True).stdout.strip()
    return bool(out) and not out.startswith("Z")


def _stubborn(argv0: str, *args: str) -> tuple[subprocess.Popen[str], int]:
    """Start STUBBORN with ``argv0`` as its process name; returns it and its child's pid."""
    proc = subprocess.Popen(
        ["bash", "-c", EXEC_AS, argv0, sys.executable, STUBBORN, *args], stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_process_tree_lists_children_and_kill_processes_ends_them() -> None:
    proc, child = _stubborn("stubborn")
    try:
        tree = process_tree(proc.pid)
        assert [p.pid for p in tree] == [proc.pid, child]
        os.kill(proc.pid, signal.SIGINT)  # ignored by both
        assert not wait_gone(tree, 0.5)
        assert kill_processes(tree) == 2
        assert wait_gone(tree, 10.0)
        proc.wait(timeout=10)
        assert not _alive(child)
        assert kill_processes(tree) == 0  # nothing left to kill
        assert process_tree(proc.pid) == []
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _repository(path: Path) -> None:
    for name in MODELS:  # what TritonServer checks before anything starts
        (path / name).mkdir()
        (path / name / "config.pbtxt").write_text("")


class _PyTritonStandIn:
    """What PyTriton's ``Triton.stop`` does with its server: SIGINT, then wait (here: without a limit)."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        self.proc.wait()


@pytest.mark.parametrize("stop_timeout_s", [1.0, 3.0])
def test_stop_kills_a_server_that_outlives_the_timeout(tmp_path: Path, stop_timeout_s: float) -> None:
    _repository(tmp_path)
    ends = Endpoints.free_loopback()
    proc, child = _stubborn(str(tmp_path / "tritonserver"), "--http-port", str(ends.http_port))
    try:
        server = TritonServer(tmp_path, ends, stop_timeout_s=stop_timeout_s)
        server._triton = _PyTritonStandIn(proc)  # as start() leaves it once PyTriton runs the server
        t0 = time.monotonic()
        server.stop()
        took = time.monotonic() - t0
        assert server.killed == 2  # the server and its child
        assert stop_timeout_s <= took < stop_timeout_s + 15
        assert proc.poll() is not None and not _alive(child)
        server.stop()  # a second stop does nothing
        assert server.killed == 2
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if _alive(child):
            os.kill(child, signal.SIGKILL)


def test_stop_leaves_a_server_that_exits_in_time_alone(tmp_path: Path) -> None:
    _repository(tmp_path)
    ends = Endpoints.free_loopback()
    code = "import time; time.sleep(600)"  # exits on SIGINT (KeyboardInterrupt), as a healthy server does
    name, port = str(tmp_path / "tritonserver"), str(ends.http_port)
    args = ["bash", "-c", EXEC_AS, name, sys.executable, code, "--http-port", port]
    proc = subprocess.Popen(args, text=True, stderr=subprocess.DEVNULL, preexec_fn=default_sigint)
    try:
        time.sleep(0.5)
        server = TritonServer(tmp_path, ends, stop_timeout_s=30.0)
        server._triton = _PyTritonStandIn(proc)
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 20 and server.killed == 0
        assert proc.returncode not in (None, -signal.SIGKILL)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
