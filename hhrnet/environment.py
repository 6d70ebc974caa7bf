"""Where a number was measured: machine, CPU features, library versions, commit and date.

Benchmarks stamp every row with :func:`environment`; ``eval --json`` and ``bench --json`` write it beside
their numbers, so a result never travels without its context.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from pathlib import Path
from typing import Any


def running_in_ci() -> bool:
    """Whether the ``CI`` variable says this is a CI run (progress bars and live lines are then left out)."""
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def package_version(dist: str) -> str | None:
    """The installed version of distribution ``dist``, None when it is not installed."""
    try:
        from importlib.metadata import version

        return version(dist)
    except Exception:  # a missing/odd distribution is simply "not installed"
        return None


def git_commit(cwd: str | Path | None = None) -> str:
    """Short commit of the working tree (with ``+dirty``), or ``unknown`` outside a checkout."""
    where = Path(cwd) if cwd is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=where, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


SIMD_FLAGS = (
    "avx2",
    "fma",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "amx_bf16",
    "asimd",
    "asimddp",
    "sve",
)


def cpu_flags() -> str:
    """The SIMD features that decide int8 / bf16 / fp32 speed on this CPU (from /proc/cpuinfo)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine()
    present: set[str] = set()
    for line in text.splitlines():
        if line.lower().startswith(("flags", "features")):
            present |= set(line.split(":", 1)[1].split())
    return " ".join(f for f in SIMD_FLAGS if f in present)


def environment(device: str = "cpu") -> dict[str, Any]:
    """Machine, library versions, commit and date for a benchmark row."""
    env: dict[str, Any] = {
        "date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "commit": git_commit(),
        "machine": f"{cpu_name()} x{os.cpu_count()}",
        "python": platform.python_version(),
        "numpy": package_version("numpy"),
        "numba": package_version("numba"),
        "torch": package_version("torch"),
        "onnxruntime": package_version("onnxruntime"),
        "tensorrt": package_version("tensorrt"),
        "cpu_flags": cpu_flags(),
        "device": device,
    }
    if device.startswith("cuda"):
        try:
            import torch

            env["gpu"] = torch.cuda.get_device_name(0)
        except Exception:  # informational only
            env["gpu"] = "unknown"
    return env
