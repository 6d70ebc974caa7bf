"""Torch-free TensorRT runtime: CUDA memory through cuda-python, a CUDA stream, pinned host buffers, and a
guard that runs before any engine is deserialised.

Deserialising an engine built for another GPU or TensorRT version (or with no GPU) can crash the process
(with tensorrt-lean on a machine without a GPU, ``Runtime(Logger())`` returns but ``deserialize_cuda_engine``
segfaults). :func:`check_engine` compares the engine's sidecar (written by
:func:`hhrnet.export.tensorrt.build_engine`) with the running TensorRT and GPU and raises a
:class:`~hhrnet.errors.BackendError` naming the mismatch; only then is the engine loaded.

What the runtime sends decides an engine's optimization profile (:func:`default_profiles`): the engine
builder and the Triton repository writer both read it from here.

A session selects its GPU (``cudaSetDevice``) before it creates anything and again on every call (the
current device is per host thread). Buffers are allocated once per optimization profile, at the profile's
maximum shapes (``get_tensor_profile_shape``), when the profile is first chosen; the host side of every copy
is page-locked (cudaMallocHost) and everything is queued on one stream. :meth:`TensorRTSession.run_device`
returns the outputs as :class:`DeviceArray` objects exposing ``__cuda_array_interface__`` (each keeps its
buffer alive) so they go straight to GPU post-processing (the CUDA decoder) and no pinned output buffer is
ever made for them; ``__call__`` copies the outputs to the host. :meth:`TensorRTSession.close` (or ``with``)
destroys the stream and releases the engine.
Not run on the project's CPU machines (no TensorRT, no GPU): the guard, the buffer management and the
data path are tested there against a fake CUDA runtime and engine that move real bytes in host memory.
"""

from __future__ import annotations

import ctypes
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.deps import install_hint
from hhrnet.errors import BackendError, InputError
from hhrnet.io import read_json
from hhrnet.runtime.artifact import Artifact

Shape = tuple[int, int, int, int]
MAX_ASPECT = 2  # default profiles cover images up to 2:1 under the official resize


@dataclass(frozen=True)
class Profile:
    """min / opt / max input shapes of one optimization profile."""

    min: Shape
    opt: Shape
    max: Shape

    @classmethod
    def parse(cls, text: str) -> Profile:
        """'1x3x256x256:1x3x512x512:4x3x1024x1024' -> Profile."""
        parts = text.split(":")
        if len(parts) != 3:
            raise InputError(f"profile {text!r} must be MIN:OPT:MAX, each BxCxHxW")
        shapes = []
        for part in parts:
            try:
                dims = tuple(int(d) for d in part.lower().split("x"))
            except ValueError:
                raise InputError(f"profile shape {part!r} is not BxCxHxW") from None
            if len(dims) != 4 or dims[1] != 3 or any(d <= 0 for d in dims):
                raise InputError(f"profile shape {part!r} must be Bx3xHxW with positive sizes")
            if dims[2] % 32 or dims[3] % 32:
                raise InputError(f"profile shape {part!r}: H and W must be multiples of 32")
            shapes.append(dims)
        lo, mid, hi = shapes
        if not all(a <= b <= c for a, b, c in zip(lo, mid, hi, strict=True)):
            raise InputError(f"profile {text!r} must satisfy MIN <= OPT <= MAX in every dimension")
        return cls(lo, mid, hi)  # type: ignore[arg-type]

    def contains(self, shape: Sequence[int]) -> bool:
        return all(a <= s <= b for a, s, b in zip(self.min, shape, self.max, strict=True))

    def text(self) -> str:
        return ":".join("x".join(map(str, s)) for s in (self.min, self.opt, self.max))


def _up64(x: float) -> int:
    return int(-(-x // 64) * 64)


def network_batch(artifact: Artifact, images: int) -> int:
    """Rows of the network batch that carries ``images`` images: a ``raw`` graph with flip gets each image's
    flipped copy appended to the same batch (:meth:`hhrnet.inference.Predictor.run_network`); the other
    graphs flip inside the graph."""
    return images * (2 if artifact.kind.host_flips and artifact.codec.flip else 1)


def default_profiles(artifact: Artifact, max_batch: int = 1) -> tuple[Profile, ...]:
    """The profile of every input the runtime sends for this contract, with up to ``max_batch`` images a call.

    The batch axis runs from 1 to :func:`network_batch` of ``max_batch`` (a raw graph with flip: twice the
    images). Static export: its fixed (H, W). Letterbox codec: the letterbox square; OPT is the full batch,
    since batching (``predict --batch-size``, Triton's dynamic batcher filling up to its ``max_batch_size``)
    is what sends a square. Official resize: every image has its own shape and runs alone, so OPT is one
    image; the short side is the input size at each test scale (rounded up to 64 like the codec), the long
    side up to :data:`MAX_ASPECT` times that; OPT is the short side by a 4:3 long side at scale 1.
    """
    if max_batch < 1:
        raise InputError(f"max batch must be positive, got {max_batch}")
    codec = artifact.codec
    top, one = network_batch(artifact, max_batch), network_batch(artifact, 1)
    if artifact.static_hw is not None or codec.letterbox:
        h, w = artifact.static_hw or (codec.letterbox, codec.letterbox)
        return (Profile((1, 3, h, w), (top, 3, h, w), (top, 3, h, w)),)
    min_scale = min(codec.scales)
    base = _up64(min_scale * codec.input_size)
    shorts = [int(base * s / min_scale) for s in codec.scales]
    lo, hi = min(shorts), max(shorts)
    short1 = int(base / min_scale)
    opt = (one, 3, short1, _up64(short1 * 4 / 3))
    return (Profile((1, 3, lo, lo), opt, (top, 3, MAX_ASPECT * hi, MAX_ASPECT * hi)),)


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


def gpu_index(device: int | str) -> int:
    """The CUDA device ordinal of ``0``, ``"cuda"`` or ``"cuda:1"``; InputError otherwise."""
    if isinstance(device, int) and device >= 0:
        return device
    text = str(device)
    if text == "cuda":
        return 0
    head, _, tail = text.partition(":")
    if head == "cuda" and tail.isdigit():
        return int(tail)
    raise InputError(f"a TensorRT engine runs on a CUDA device (cuda or cuda:N), not {device!r}")


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


_DTYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
    "UINT8": np.uint8,
}


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
        """The first ``prod(shape)`` elements as a typed, shaped device array (no copy) that keeps this buffer
        alive."""
        arr = DeviceArray(self.ptr, tuple(int(d) for d in shape), np.dtype(dtype), owner=self)
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
    reads it in place. Its contents are valid until the session's next call, which reuses the memory; the
    memory itself stays allocated while the view exists (``owner``), even after the session is closed.
    """

    ptr: int
    shape: tuple[int, ...]
    dtype: np.dtype
    owner: Any = field(default=None, repr=False, compare=False)  # the DeviceBuffer this views

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
    """Runs an engine: ``(B, 3, H, W) f32 -> [outputs of its graph]``, on GPU ``device``.

    One CUDA stream; for each optimization profile, one device buffer per tensor and a page-locked input
    buffer, allocated at the profile's maximum shapes when the profile is first chosen (page-locked output
    buffers only once ``__call__`` needs them). :meth:`run_device` leaves the outputs on the device (for the
    CUDA decoder), ``__call__`` copies them to the host. ``close()`` or ``with`` releases it.
    """

    name = "tensorrt"

    def __init__(self, engine_path: str | Path, device: int | str = 0) -> None:
        from hhrnet.deps import require_tensorrt

        device = gpu_index(device)
        trt = require_tensorrt()
        info = device_info(device)
        self.meta = check_engine(engine_path, trt.__version__, info)  # before deserialising anything
        self.artifact = engine_contract(engine_path, self.meta)
        self.precision = self.artifact.precision
        self.device = f"cuda:{device}"
        self.device_index = int(device)
        self.rt = _cudart()
        self.stream: Any = None
        self.engine: Any = None
        self.context: Any = None
        self._select_device()  # stream, buffers, engine and context all belong to this GPU
        self.stream = _check(self.rt.cudaStreamCreate(), "cudaStreamCreate")
        self.stream_handle = int(self.stream)
        runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
        self.engine = runtime.deserialize_cuda_engine(Path(engine_path).read_bytes())
        if self.engine is None:
            self.close()
            raise BackendError(f"TensorRT could not deserialise {engine_path}")
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        inputs = [n for n in names if self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        if len(inputs) != 1:
            self.close()
            raise BackendError(f"{engine_path}: expected one input tensor, found {inputs}")
        self.input_name = inputs[0]
        self.output_names = [n for n in names if n != self.input_name]
        self.dtypes = {n: numpy_dtype(self.engine.get_tensor_dtype(n)) for n in names}
        if self.dtypes[self.input_name] != np.float32:
            self.close()
            raise BackendError(f"{engine_path}: the input is {self.dtypes[self.input_name]}, expected float32")
        self.device_buffers: dict[int, dict[str, DeviceBuffer]] = {}  # per profile, at its maximum shapes
        self.host_buffers: dict[int, dict[str, PinnedBuffer]] = {}  # per profile: input; outputs once needed
        self.allocations = 0  # device + pinned allocations so far
        self._profile: int | None = None
        self._shape: tuple[int, ...] | None = None
        self._out_shapes: dict[str, tuple[int, ...]] = {}

    @property
    def graph(self) -> str:
        return self.artifact.graph

    def _select_device(self) -> None:
        _check(self.rt.cudaSetDevice(self.device_index), f"cudaSetDevice({self.device_index})")

    def _address(self, name: str, ptr: int) -> None:
        if not self.context.set_tensor_address(name, ptr):
            raise BackendError(f"TensorRT refused the address of tensor {name!r}")

    def _allocate(self, profile: int) -> None:
        """Buffers of ``profile`` at its maximum shapes: the input's from ``get_tensor_profile_shape``, each
        output's as the context infers it for that input."""
        lo, _, hi = self.engine.get_tensor_profile_shape(self.input_name, profile)
        top = tuple(int(d) for d in hi)
        if not self.context.set_input_shape(self.input_name, top):
            raise BackendError(f"TensorRT refused the input shape {top}, the maximum of profile {profile}")
        sizes = {self.input_name: int(np.prod(top)) * self.dtypes[self.input_name].itemsize}
        for name in self.output_names:
            shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise BackendError(f"TensorRT could not infer the shape of {name} for input {top}")
            sizes[name] = int(np.prod(shape)) * self.dtypes[name].itemsize
        self.device_buffers[profile] = {name: DeviceBuffer(n) for name, n in sizes.items()}
        self.host_buffers[profile] = {self.input_name: PinnedBuffer(sizes[self.input_name])}
        self.allocations += len(sizes) + 1

    def _host(self, name: str) -> PinnedBuffer:
        """The page-locked buffer of tensor ``name`` in the current profile (outputs: made on first need)."""
        assert self._profile is not None
        hosts = self.host_buffers[self._profile]
        if name not in hosts:
            hosts[name] = PinnedBuffer(self.device_buffers[self._profile][name].nbytes)
            self.allocations += 1
        return hosts[name]

    def _bind(self, shape: tuple[int, ...]) -> None:
        """Select the profile (allocating its buffers the first time), set the input shape and bind every
        tensor's address (only when the shape changes)."""
        if shape == self._shape:
            return
        static = self.artifact.static_hw
        if static is not None and tuple(shape[2:]) != tuple(static):
            raise InputError(f"this engine takes {static[0]}x{static[1]} inputs only, got {shape[2]}x{shape[3]}")
        profile = check_input_shape(shape, self.meta.get("profiles", []))
        if profile != self._profile:
            if not self.context.set_optimization_profile_async(profile, self.stream_handle):
                raise BackendError(f"TensorRT refused optimization profile {profile}")
            self._profile, self._shape = profile, None
            if profile not in self.device_buffers:
                self._allocate(profile)
            for name, buf in self.device_buffers[profile].items():
                self._address(name, buf.ptr)
        if not self.context.set_input_shape(self.input_name, shape):
            raise BackendError(f"TensorRT refused the input shape {shape}")
        for name in self.output_names:
            out_shape = tuple(int(d) for d in self.context.get_tensor_shape(name))
            if any(d < 0 for d in out_shape):
                raise BackendError(f"TensorRT could not infer the shape of {name} for input {shape}")
            self._out_shapes[name] = out_shape
        self._shape = shape

    def _launch(self, batch: np.ndarray) -> None:
        """Input to the device through its pinned buffer, then the engine, all queued on the one stream."""
        if self.context is None:
            raise BackendError("this TensorRT session is closed")
        shape = tuple(int(d) for d in batch.shape)
        if len(shape) != 4 or shape[1] != 3:
            raise BackendError(f"expected a (B, 3, H, W) batch, got {shape}")
        self._select_device()
        self._bind(shape)
        assert self._profile is not None
        staged = self._host(self.input_name).array(shape, np.float32)
        np.copyto(staged, batch, casting="same_kind")
        self.device_buffers[self._profile][self.input_name].copy_from_host(staged, self.stream)
        if not self.context.execute_async_v3(self.stream_handle):
            raise BackendError("TensorRT execution failed")

    def run_device(self, batch: np.ndarray) -> list[DeviceArray]:
        """Run and return the outputs as device arrays (no host copy); their contents are valid until the next
        call."""
        self._launch(batch)
        _check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        assert self._profile is not None
        buffers = self.device_buffers[self._profile]
        return [buffers[n].view(self._out_shapes[n], self.dtypes[n]) for n in self.output_names]

    def __call__(self, batch: np.ndarray) -> list[np.ndarray]:
        self._launch(batch)
        assert self._profile is not None
        views = []
        for name in self.output_names:
            host = self._host(name).array(self._out_shapes[name], self.dtypes[name])
            self.device_buffers[self._profile][name].copy_to_host(host, self.stream)
            views.append(host)
        _check(self.rt.cudaStreamSynchronize(self.stream), "cudaStreamSynchronize")
        return [v.copy() for v in views]  # the pinned buffers are reused by the next call

    def close(self) -> None:
        """Release the context, the engine, the buffers (a :class:`DeviceArray` still held keeps its own) and
        the stream; idempotent."""
        stream, self.stream = getattr(self, "stream", None), None
        if stream is not None:
            self._select_device()  # everything below was made on this device
        self.context = None  # the context before the engine it came from
        self.engine = None
        self.device_buffers, self.host_buffers = {}, {}
        self._profile = self._shape = None
        if stream is not None:
            _check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def __enter__(self) -> TensorRTSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __del__(self) -> None:
        if getattr(self, "stream", None) is not None:
            try:
                self.close()
            except BackendError:
                pass  # at interpreter exit CUDA may already be gone
