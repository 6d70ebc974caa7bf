"""TensorRT engine builder: fp32/fp16/int8, optimization profiles, persistent timing cache, engine cache.

Written against the TensorRT 10 Python API and type-checked with ``tensorrt-stubs``. TensorRT is not
installable on the project's CPU machines, so building has not been run there; the cache keys, profile
parsing, calibration batches and sidecar files are tested without it.

* Engine cache: the engine lands in ``cache_dir/<key>.engine`` where the key hashes the ONNX bytes, the
  TensorRT version, the GPU compute capability, the precision, the profiles and the kept-precision layers;
  an unchanged build returns the cached file at once.
* A sidecar ``<engine>.json`` records what the engine was built for; the runtime checks it before it
  deserialises anything (see :mod:`hhrnet.export.trt_runtime`).
* int8: entropy calibration (IInt8EntropyCalibrator2) over a folder of images preprocessed exactly as at
  test time; the calibration cache file is kept and reused. Layers whose names match ``keep_fp32``
  patterns (default: the final 1x1 conv that produces the tags) stay in fp32.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.codec import Codec
from hhrnet.errors import BackendError, InputError
from hhrnet.runtime.artifact import Artifact

Shape = tuple[int, int, int, int]
DEFAULT_KEEP_FP32 = (r"final_layers\.0",)


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


@dataclass(frozen=True)
class BuildSpec:
    precision: str
    profiles: tuple[Profile, ...]
    keep_fp32: tuple[str, ...] = DEFAULT_KEEP_FP32
    workspace_gib: float = 4.0


def cache_key(onnx_bytes: bytes, spec: BuildSpec, trt_version: str, compute_capability: str) -> str:
    h = hashlib.sha256()
    h.update(hashlib.sha256(onnx_bytes).digest())
    h.update(json.dumps({"trt": trt_version, "sm": compute_capability, "spec": asdict(spec)}, sort_keys=True).encode())
    return h.hexdigest()[:24]


def calibration_batches(
    image_dir: str | Path, codec: Codec, batch_size: int = 8, limit: int = 512
) -> Iterator[np.ndarray]:
    """(B, 3, S, S) f32 batches preprocessed by ``codec`` letterboxed to its input size (fixed batch shape)."""
    from hhrnet.images import IMAGE_SUFFIXES, read_image

    boxed = codec.replace(letterbox=codec.letterbox or codec.input_size, scales=(1.0,))
    files = sorted(p for p in Path(image_dir).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InputError(f"no calibration images in {image_dir}")
    batch: list[np.ndarray] = []
    for path in files[:limit]:
        try:
            image = read_image(path)
        except InputError:
            continue
        batch.append(boxed.preprocess(image).inputs[0][1])
        if len(batch) == batch_size:
            yield np.stack(batch)
            batch = []
    if batch:
        yield np.stack(batch)


def sidecar_payload(
    contract: Artifact, *, key: str, trt_version: str, gpu: str, compute_capability: str, precision: str,
    profiles: list[dict[str, Any]], onnx_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    """The ``<engine>.json`` sidecar: what the engine was built for (checked before deserialising) and the
    artifact contract of the ONNX file it came from, so the engine runs with nothing beside it."""
    return {
        "key": key, "tensorrt": trt_version, "compute_capability": compute_capability, "gpu": gpu,
        "precision": precision, "profiles": profiles, "onnx_sha256": onnx_sha256, "contract": contract.metadata(),
    }  # fmt: skip


def build_engine(
    onnx_path: str | Path,
    *,
    precision: str = "fp16",
    profiles: Sequence[Profile] = (Profile((1, 3, 256, 256), (1, 3, 512, 512), (1, 3, 1024, 1024)),),
    cache_dir: str | Path = ".hhrnet-cache",
    calib_images: str | Path | None = None,
    keep_fp32: Sequence[str] = DEFAULT_KEEP_FP32,
    out: str | Path | None = None,
) -> Path:
    """Build (or fetch from the cache) an engine for ``onnx_path``; returns the engine path."""
    from hhrnet.deps import require_tensorrt
    from hhrnet.export.onnx import read_contract
    from hhrnet.io import atomic_write_bytes, atomic_write_text
    from hhrnet.runtime.tensorrt import device_info, sidecar

    if precision not in ("fp32", "fp16", "int8"):
        raise InputError(f"precision must be fp32, fp16 or int8, got {precision!r}")
    if precision == "int8" and calib_images is None:
        raise InputError("int8 needs --calib-images (a folder of representative images)")
    trt = require_tensorrt()
    dev = device_info()
    contract = read_contract(onnx_path)  # the engine carries the ONNX file's contract, so it runs alone
    onnx_bytes = Path(onnx_path).read_bytes()
    spec = BuildSpec(precision, tuple(profiles), tuple(keep_fp32))
    key = cache_key(onnx_bytes, spec, trt.__version__, dev.compute_capability)
    cache = Path(cache_dir)
    engine_path = Path(out) if out is not None else cache / f"{key}.engine"
    side = sidecar(engine_path)
    if engine_path.is_file() and side.is_file() and json.loads(side.read_text()).get("key") == key:
        return engine_path

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(spec.workspace_gib * (1 << 30)))
    timing_path = cache / "timing.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    if precision in ("fp16", "int8"):
        config.set_flag(trt.BuilderFlag.FP16)
    calibrator = None
    if precision == "int8":
        config.set_flag(trt.BuilderFlag.INT8)
        config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        calibrator = make_calibrator(trt, calib_images, contract.codec, cache / f"{key}.calib")  # type: ignore[arg-type]
        config.int8_calibrator = calibrator
        patterns = [re.compile(p) for p in keep_fp32]
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if any(p.search(layer.name) for p in patterns):
                layer.precision = trt.float32
                for o in range(layer.num_outputs):
                    layer.set_output_type(o, trt.float32)
    name = network.get_input(0).name
    for prof in profiles:
        p = builder.create_optimization_profile()
        p.set_shape(name, prof.min, prof.opt, prof.max)
        config.add_optimization_profile(p)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
    atomic_write_bytes(engine_path, bytes(memoryview(serialized)))
    atomic_write_text(side, json.dumps(sidecar_payload(
        contract, key=key, trt_version=trt.__version__, gpu=dev.name, compute_capability=dev.compute_capability,
        precision=precision, profiles=[asdict(p) for p in profiles], onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
    ), indent=2))  # fmt: skip
    return engine_path


def make_calibrator(trt: Any, image_dir: str | Path, codec: Codec, cache_file: Path) -> Any:
    """An IInt8EntropyCalibrator2 feeding test-time-preprocessed images; the cache file is kept."""
    from hhrnet.runtime.tensorrt import DeviceBuffer

    class Calibrator(trt.IInt8EntropyCalibrator2):  # type: ignore[name-defined,misc]
        def __init__(self) -> None:
            super().__init__()
            self.batches = calibration_batches(image_dir, codec)
            self.batch_size = 8
            self.buffer: DeviceBuffer | None = None

        def get_batch_size(self) -> int:
            return self.batch_size

        def get_batch(self, names: list[str]) -> list[int] | None:
            try:
                batch = np.ascontiguousarray(next(self.batches), np.float32)
            except StopIteration:
                return None
            if self.buffer is None or self.buffer.nbytes < batch.nbytes:
                self.buffer = DeviceBuffer(batch.nbytes)
            self.buffer.copy_from_host(batch)
            return [self.buffer.ptr]

        def read_calibration_cache(self) -> bytes | None:
            return cache_file.read_bytes() if cache_file.is_file() else None

        def write_calibration_cache(self, cache: bytes) -> None:
            from hhrnet.io import atomic_write_bytes

            atomic_write_bytes(cache_file, bytes(cache))

    return Calibrator()
