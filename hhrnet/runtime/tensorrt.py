"""Torch-free TensorRT runtime: CUDA memory through cuda-python, a CUDA stream, pinned host buffers, and a
guard that runs before any engine is deserialised.

Deserialising an engine built for another GPU or TensorRT version (or with no GPU) can crash the process
(with tensorrt-lean on a machine without a GPU, ``Runtime(Logger())`` returns but ``deserialize_cuda_engine``
segfaults). :func:`check_engine` compares the engine's sidecar (written by
:func:`hhrnet.export.tensorrt.build_engine`) with the running TensorRT and GPU and raises a
:class:`~hhrnet.errors.BackendError` naming the mismatch; only then is the engine loaded.

Buffers are allocated once per tensor and grown only when a larger shape arrives; the host side of every
copy is page-locked (cudaMallocHost) and everything is queued on one stream. :meth:`TensorRTSession.run_device`
returns the outputs as :class:`DeviceArray` objects exposing ``__cuda_array_interface__`` so they go
straight to GPU post-processing (the CUDA decoder); ``__call__`` copies them to the host.
Not run on the project's CPU machines (no TensorRT, no GPU): the guard, the buffer management and the
data path are tested there against a fake CUDA runtime and engine that move real bytes in host memory.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.deps import install_hint
from hhrnet.errors import BackendError, InputError
from hhrnet.io import read_json
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
            raise BackendError(f"cuda-python is not installed ({install_hint('tensorrt')})") from None
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
    meta = read_sidecar(path)
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


def read_sidecar(engine_path: str | Path) -> dict[str, Any]:
    """The engine's sidecar JSON (what it was built from and for)."""
    side, rebuild = sidecar(engine_path), "rebuild it with hhrnet export --format engine"
    meta = read_json(side, BackendError, f"{engine_path} has no {side.name}: {rebuild}")
    if not isinstance(meta, dict):
        raise BackendError(f"{side} is not a JSON object: {rebuild}")
    return meta


def engine_contract(engine_path: str | Path, meta: dict[str, Any] | None = None) -> Artifact:
    """The artifact contract an engine's sidecar carries (no TensorRT, no GPU, no ONNX file needed);
    ``meta``: the sidecar when already read."""
    meta = read_sidecar(engine_path) if meta is None else meta
    return Artifact.from_metadata(meta.get("contract") or {}, str(engine_path))


def check_input_shape(shape: Sequence[int], profiles: Sequence[dict[str, Sequence[int]]]) -> int:
    """Index of the first profile containing ``shape``; BackendError naming the profiles otherwise."""
    for i, p in enumerate(profiles):
        if all(a <= s <= b for a, s, b in zip(p["min"], shape, p["max"], strict=True)):
            return i
    ranges = ", ".join(f"{tuple(p['min'])}..{tuple(p['max'])}" for p in profiles)
    raise BackendError(f"input shape {tuple(shape)} is outside the engine's profiles {ranges}; rebuild with --profile")


_DTYPES = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
           "BOOL": np.bool_, "UINT8": np.uint8}  # fmt: skip


def numpy_dtype(trt_dtype: Any) -> np.dtype:
    """NumPy dtype of a ``tensorrt.DataType`` (by member name, so no TensorRT import is needed)."""
    name = getattr(trt_dtype, "name", str(trt_dtype).rsplit(".", 1)[-1])
    if name not in _DTYPES:
        raise BackendError(f"engine tensor of type {name} has no NumPy equivalent here")
    return np.dtype(_DTYPES[name])


class DeviceBuffer:
    """Raw device memory (cudaMalloc'd once); :meth:`view` gives typed, shaped :class:`DeviceArray` views of it
    for zero-copy hand-off."""

    def __init__(self, nbytes: int) -> None:
        self.rt = _cudart()
        self.nbytes = int(nbytes)
        self.ptr = int(_check(self.rt.cudaMalloc(max(self.nbytes, 1)), "cudaMalloc"))

    def view(self, shape: Sequence[int], dtype: Any) -> DeviceArray:
        """The first ``prod(shape)`` elements as a typed, shaped device array (no copy)."""
        arr = DeviceArray(self.ptr, tuple(int(d) for d in shape), np.dtype(dtype))
        if arr.nbytes > self.nbytes:
            raise BackendError(f"a {arr.shape} {arr.dtype} view needs {arr.nbytes} bytes; the buffer has {self.nbytes}")
        return arr

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


@dataclass(frozen=True)
class DeviceArray:
    """A shaped, typed view of device memory: what :meth:`TensorRTSession.run_device` returns.

    Any consumer of ``__cuda_array_interface__`` (Numba ``cuda.as_cuda_array``, CuPy, the CUDA decoder)
    reads it in place. Valid until the session's next call, which reuses the memory.
    """

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize

    @property
    def __cuda_array_interface__(self) -> dict[str, Any]:
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False), "version": 3}


class PinnedBuffer:
    """Page-locked host memory (cudaMallocHost): asynchronous copies to and from the device need it."""

    def __init__(self, nbytes: int) -> None:
        self.rt = _cudart()
        self.nbytes = int(nbytes)
        self.ptr = int(_check(self.rt.cudaMallocHost(max(self.nbytes, 1)), "cudaMallocHost"))
        self._raw = (ctypes.c_byte * max(self.nbytes, 1)).from_address(self.ptr)

    def array(self, shape: Sequence[int], dtype: Any) -> np.ndarray:
        """A NumPy view of the first bytes of the buffer."""
        dt = np.dtype(dtype)
        count = int(np.prod(shape, dtype=np.int64))
        if count * dt.itemsize > self.nbytes:
            raise BackendError(f"a {tuple(shape)} {dt} host view needs {count * dt.itemsize} bytes; have {self.nbytes}")
        return np.frombuffer(memoryview(self._raw).cast("B"), dt, count).reshape(tuple(shape))

    def __del__(self) -> None:
        ptr = getattr(self, "ptr", 0)
        if ptr:
            self.rt.cudaFreeHost(ptr)


class TensorRTSession:
    """Runs an engine: ``(B, 3, H, W) f32 -> [outputs of its graph]``.

    One CUDA stream; device buffers allocated per tensor once and grown only when a larger shape arrives;
    page-locked host buffers for the input and the outputs. :meth:`run_device` leaves the outputs on the
    device (for the CUDA decoder), ``__call__`` copies them to the host.
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, device: int = 0) -> None:
        from hhrnet.deps import require_tensorrt

        trt = require_tensorrt()
        info = device_info(device)
        self.meta = check_engine(engine_path, trt.__version__, info)  # before deserialising anything
        self.artifact = engine_contract(engine_path, self.meta)
        self.precision = self.artifact.precision
        self.device = f"cuda:{device}"
        self.rt = _cudart()
        self.stream = _check(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        self.stream_handle = int(self.stream)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            raise BackendError(f"TensorRT could not deserialise {engine_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            raise BackendError(f"{engine_path}: expected one input tensor, found {inputs}")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n != self.input_name]
        self.dtypes = {n: numpy_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        if self.dtypes[self.input_name] != np.float32:
            raise BackendError(f"{engine_path}: the input is {self.dtypes[self.input_name]}, expected float32")
        self.device_buffers: dict[str, DeviceBuffer] = {}
        self.host_buffers: dict[str, PinnedBuffer] = {}
        self.allocations = 0  # device + pinned allocations so far (they happen on growth only)
        self._profile: int | None = None
        self._shape: tuple[int, ...] | None = None
        self._out_shapes: dict[str, tuple[int, ...]] = {}

    @property
    def graph(self) -> str:
        return self.artifact.graph

    def _buffer(self, name: str, nbytes: int) -> tuple[DeviceBuffer, PinnedBuffer]:
        """The device and pinned host buffers of tensor ``name``, reallocated only to grow."""
        dev = self.device_buffers.get(name)
        if dev is None or dev.nbytes < nbytes:
            self.device_buffers[name] = dev = DeviceBuffer(nbytes)
            self.allocations += 1
        host = self.host_buffers.get(name)
        if host is None or host.nbytes < nbytes:
            self.host_buffers[name] = host = PinnedBuffer(nbytes)
            self.allocations += 1
        return dev, host

    def _bind(self, shape: tuple[int, ...]) -> None:
        """Select the profile, set the input shape and bind every tensor's address (only when the shape changes)."""
        if shape == self._shape:
            return
        static = self.artifact.static_hw
        if static is not None and tuple(shape[2:]) != tuple(static):
            raise InputError(f"this engine takes {static[0]}x{static[1]} inputs only, got {shape[2]}x{shape[3]}")
        profile = check_input_shape(shape, self.meta.get("profiles", []))
        if profile != self._profile:
            if not self.context.set_optimization_profile_async(profile, self.stream_handle):
                raise BackendError(f"TensorRT refused optimization profile {profile}")
            self._profile = profile
        if not self.context.set_input_shape(self.input_name, shape):
            raise BackendError(f"TensorRT refused the input shape {shape}")
        nbytes = int(np.prod(shape)) * 4
        dev, _ = self._buffer(self.input_name, nbytes)
        self.context.set_tensor_address(self.input_name, dev.ptr)
        for name in self.output_names:
            out_shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in out_shape):
                raise BackendError(f"TensorRT could not infer the shape of {name} for input {shape}")
            dev, _ = self._buffer(name, int(np.prod(out_shape)) * self.dtypes[name].itemsize)
            self.context.set_tensor_address(name, dev.ptr)
            self._out_shapes[name] = out_shape
        self._shape = shape

    def _launch(self, batch: np.ndarray) -> None:
        """Input to the device through its pinned buffer, then the engine, all queued on the one stream."""
        shape = tuple(int(d) for d in batch.shape)
        if len(shape) != 4 or shape[1] != 3:
            raise BackendError(f"expected a (B, 3, H, W) batch, got {shape}")
        self._bind(shape)
        dev, host = self._buffer(self.input_name, int(np.prod(shape)) * 4)
        staged = host.array(shape, np.float32)
        np.copyto(staged, batch, casting="same_kind")
        dev.copy_from_host(staged, self.stream)
        if not self.context.execute_async_v3(self.stream_handle):
            raise BackendError("TensorRT execution failed")

    def run_device(self, batch: np.ndarray) -> list[DeviceArray]:
        """Run and return the outputs as device arrays (no host copy); valid until the next call."""
        self._launch(batch)
        _check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return [self.device_buffers[n].view(self._out_shapes[n], self.dtypes[n]) for n in self.output_names]

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        self._launch(batch)
        views = []
        for name in self.output_names:
            shape, dtype = self._out_shapes[name], self.dtypes[name]
            host = self.host_buffers[name].array(shape, dtype)
            self.device_buffers[name].copy_to_host(host, self.stream)
            views.append(host)
        _check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return [v.copy() for v in views]  # the pinned buffers are reused by the next call
