"""Torch-free TensorRT runtime: CUDA memory through cuda-python, a CUDA stream, pinned host buffers, and a
guard that runs before any engine is deserialised.

Deserialising an engine built for another GPU or TensorRT version (or with no GPU) can crash the process
(SPEC/ENVIRONMENT: ``deserialize_cuda_engine`` segfaults without a GPU). :func:`check_engine` compares the
engine's sidecar (written by :func:`hhrnet.export.tensorrt.build_engine`) with the running TensorRT and GPU
and raises a :class:`~hhrnet.errors.BackendError` naming the mismatch; only then is the engine loaded.

Outputs stay on the device as :class:`DeviceBuffer` objects exposing ``__cuda_array_interface__`` so they
can go straight to GPU post-processing; ``__call__`` copies them to the host for the common interface.
Not run on the project's CPU machines (no TensorRT, no GPU); the guard logic is tested there.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.errors import BackendError
from hhrnet.runtime.artifact import Artifact


def sidecar(engine_path: str | Path) -> Path:
    """``<engine>.json``: what the engine was built for, and the artifact contract it carries."""
    p = Path(engine_path)
    return p.with_suffix(p.suffix + ".json")


@dataclass(frozen=True)
class DeviceInfo:
    name: str
    compute_capability: str  # e.g. "9.0"


def _check(result: Any, what: str) -> Any:
    """cuda-python calls return (err, *values); raise a BackendError on failure."""
    err, *values = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise BackendError(f"CUDA error during {what}: {err}")
    return values[0] if len(values) == 1 else tuple(values)


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime
    except ImportError:
        try:
            from cuda import cudart as runtime  # type: ignore[no-redef]
        except ImportError:
            raise BackendError("cuda-python is not installed (pip install 'hhrnet[tensorrt]')") from None
    return runtime


def device_info(device: int = 0) -> DeviceInfo:
    rt = _cudart()
    try:
        props = _check(rt.cudaGetDeviceProperties(device), "cudaGetDeviceProperties")
    except BackendError as exc:
        raise BackendError(f"no usable CUDA GPU: {exc}") from None
    name = props.name.decode() if isinstance(props.name, bytes) else str(props.name)
    return DeviceInfo(name.rstrip("\x00"), f"{props.major}.{props.minor}")


def check_engine(engine_path: str | Path, trt_version: str, device: DeviceInfo) -> dict[str, Any]:
    """Refuse an engine whose sidecar says it was built for another TensorRT version or GPU."""
    path = Path(engine_path)
    if not path.is_file():
        raise BackendError(f"engine not found: {path}")
    side = sidecar(path)
    if not side.is_file():
        raise BackendError(f"{path} has no {side.name}: rebuild it with hhrnet export --format engine")
    try:
        meta = json.loads(side.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise BackendError(f"cannot read {side}: {exc}") from None
    if meta.get("tensorrt") != trt_version:
        raise BackendError(
            f"{path.name} was built with TensorRT {meta.get('tensorrt')} but this is TensorRT {trt_version}: rebuild it"
        )
    if meta.get("compute_capability") != device.compute_capability:
        raise BackendError(
            f"{path.name} was built for {meta.get('gpu')} (sm {meta.get('compute_capability')}) but this GPU is "
            f"{device.name} (sm {device.compute_capability}): rebuild it"
        )
    return dict(meta)


def engine_contract(engine_path: str | Path) -> Artifact:
    """The artifact contract an engine's sidecar carries (no TensorRT, no GPU, no ONNX file needed)."""
    side = sidecar(engine_path)
    try:
        meta = json.loads(side.read_text())
    except FileNotFoundError:
        raise BackendError(f"{engine_path} has no {side.name}: rebuild it with hhrnet export --format engine") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise BackendError(f"cannot read {side}: {exc}") from None
    return Artifact.from_metadata(meta.get("contract") or {}, str(engine_path))


def check_input_shape(shape: Sequence[int], profiles: Sequence[dict[str, Sequence[int]]]) -> int:
    """Index of the first profile containing ``shape``; BackendError naming the profiles otherwise."""
    for i, p in enumerate(profiles):
        if all(a <= s <= b for a, s, b in zip(p["min"], shape, p["max"], strict=True)):
            return i
    ranges = ", ".join(f"{tuple(p['min'])}..{tuple(p['max'])}" for p in profiles)
    raise BackendError(f"input shape {tuple(shape)} is outside the engine's profiles {ranges}; rebuild with --profile")


class DeviceBuffer:
    """Raw device memory with ``__cuda_array_interface__`` (float32) for zero-copy hand-off."""

    def __init__(self, nbytes: int, shape: Sequence[int] | None = None) -> None:
        self.rt = _cudart()
        self.nbytes = int(nbytes)
        self.ptr = int(_check(self.rt.cudaMalloc(self.nbytes), "cudaMalloc"))
        self.shape = tuple(shape) if shape is not None else (self.nbytes // 4,)

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": "<f4", "data": (self.ptr, False), "version": 3}

    def copy_from_host(self, array: np.ndarray, stream: Any = 0) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyHostToDevice
        _check(self.rt.cudaMemcpyAsync(self.ptr, array.ctypes.data, array.nbytes, kind, stream), "copy to device")

    def copy_to_host(self, array: np.ndarray, stream: Any = 0) -> None:
        kind = self.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(self.rt.cudaMemcpyAsync(array.ctypes.data, self.ptr, array.nbytes, kind, stream), "copy to host")

    def __del__(self) -> None:
        ptr = getattr(self, "ptr", 0)
        if ptr:
            self.rt.cudaFree(ptr)


class TensorRTSession:
    """Runs an engine: ``(B, 3, H, W) f32 -> [outputs of its graph]`` on the host (device outputs kept)."""

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, device: int = 0) -> None:
        from hhrnet.deps import require_tensorrt

        trt = require_tensorrt()
        info = device_info(device)
        self.meta = check_engine(engine_path, trt.__version__, info)  # before deserialising anything
        self.artifact = engine_contract(engine_path)
        self.precision = str(self.meta.get("precision", "fp32"))
        self.device = f"cuda:{device}"
        self.rt = _cudart()
        self.stream = _check(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialise {engine_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        self.input_name = next(n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
        self.output_names = [n for n in names if n != self.input_name]
        self.device_outputs: list[DeviceBuffer] = []

    @property
    def graph(self) -> str:
        return self.artifact.graph

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        profile = check_input_shape(batch.shape, self.meta.get("profiles", []))
        self.context.set_optimization_profile_async(profile, self.stream)
        host_in = np.ascontiguousarray(batch, np.float32)
        d_in = DeviceBuffer(host_in.nbytes, host_in.shape)
        d_in.copy_from_host(host_in, self.stream)
        self.context.set_input_shape(self.input_name, tuple(host_in.shape))
        self.context.set_tensor_address(self.input_name, d_in.ptr)
        outs, self.device_outputs = [], []
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            buf = DeviceBuffer(int(np.prod(shape)) * 4, shape)
            self.context.set_tensor_address(name, buf.ptr)
            self.device_outputs.append(buf)
            outs.append(np.empty(shape, np.float32))
        if not self.context.execute_async_v3(self.stream):
            raise BackendError("TensorRT execution failed")
        for buf, host in zip(self.device_outputs, outs, strict=True):
            buf.copy_to_host(host, self.stream)
        _check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return outs
