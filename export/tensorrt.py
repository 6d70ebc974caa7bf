"""TensorRT engine builder: strongly typed networks from ONNX files whose precision is in the graph.

TensorRT 11 removed weak typing (``BuilderFlag.FP16/INT8/BF16``, ``OBEY/PREFER_PRECISION_CONSTRAINTS``,
implicit int8 calibrators, per-layer precision) and 10.12+ deprecated it. One code path serves both: the
ONNX file carries its precision (fp16 casts, int8 Q/DQ pairs: :mod:`hhrnet.export.precision`) and the
network is created with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (required for this mode on 10.x,
always on in 11.x, where the flag is still accepted). No precision builder flag and no calibrator is ever
touched; the only version check is on that creation flag.

* Profiles come from the contract the file carries (:func:`default_profiles`): a static export gets its
  fixed square; a letterbox codec its square; the official resize a short side at the codec's input size
  (times each test scale) and a long side up to twice that. ``--profile`` overrides.
* Engine cache ``cache_dir/<key>.engine``: the key hashes the ONNX bytes (so its precision, Q/DQ scales
  and calibration provenance), the TensorRT version, the GPU name and compute capability, the profiles
  and the builder settings; an unchanged build returns the cached file at once.
* Timing cache ``cache_dir/timing-<trt>-<gpu>.cache``: kept per TensorRT version and GPU (a timing cache
  is only valid there), shared by every engine built on that pair.
* A sidecar ``<engine>.json`` records what the engine was built for and the ONNX file's contract; the
  runtime checks it before deserialising (:func:`hhrnet.runtime.tensorrt.check_engine`).

Type-checked with ``tensorrt-stubs``; TensorRT itself is not installable on the project's CPU machines, so
the build is tested there with a fake of the API surface it uses (tests/test_tensorrt.py).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hhrnet.errors import BackendError, InputError
from hhrnet.runtime.artifact import Artifact

Shape = tuple[int, int, int, int]
MIN_TENSORRT = 10  # strongly typed networks with explicit Q/DQ int8 and fp16 casts
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


def default_profiles(artifact: Artifact, max_batch: int = 1) -> tuple[Profile, ...]:
    """The profile the contract implies: every input shape its codec produces (batch 1..``max_batch``).

    Static export: its fixed (H, W). Letterbox codec: the letterbox square. Official resize: the short side
    is the input size at each test scale (rounded up to 64 like the codec), the long side up to
    :data:`MAX_ASPECT` times that; OPT is the short side by a 4:3 long side at scale 1 (most photos).
    """
    if max_batch < 1:
        raise InputError(f"max batch must be positive, got {max_batch}")
    codec = artifact.codec
    if artifact.static_hw is not None or codec.letterbox:
        h, w = artifact.static_hw or (codec.letterbox, codec.letterbox)
        return (Profile((1, 3, h, w), (1, 3, h, w), (max_batch, 3, h, w)),)
    min_scale = min(codec.scales)
    base = _up64(min_scale * codec.input_size)
    shorts = [int(base * s / min_scale) for s in codec.scales]
    lo, hi = min(shorts), max(shorts)
    short1 = int(base / min_scale)
    opt = (1, 3, short1, _up64(short1 * 4 / 3))
    return (Profile((1, 3, lo, lo), opt, (max_batch, 3, MAX_ASPECT * hi, MAX_ASPECT * hi)),)


@dataclass(frozen=True)
class BuildSpec:
    """What, besides the ONNX file, TensorRT and the GPU, changes the engine."""

    profiles: tuple[Profile, ...]
    workspace_gib: float = 4.0
    optimization_level: int = 3  # TensorRT's default builder optimisation level


def cache_key(onnx_bytes: bytes, spec: BuildSpec, trt_version: str, gpu: str, compute_capability: str) -> str:
    h = hashlib.sha256()
    h.update(hashlib.sha256(onnx_bytes).digest())
    meta = {"trt": trt_version, "gpu": gpu, "sm": compute_capability, "spec": asdict(spec)}
    h.update(json.dumps(meta, sort_keys=True).encode())
    return h.hexdigest()[:24]


def timing_cache_path(cache_dir: str | Path, trt_version: str, gpu: str, compute_capability: str) -> Path:
    """One timing cache per TensorRT version and GPU model."""
    tag = re.sub(r"[^A-Za-z0-9.]+", "-", f"{trt_version}-{gpu}-sm{compute_capability}").strip("-")
    return Path(cache_dir) / f"timing-{tag}.cache"


def sidecar_payload(
    contract: Artifact, *, key: str, trt_version: str, gpu: str, compute_capability: str, precision: str,
    profiles: list[dict[str, Any]], onnx_sha256: str,
) -> dict[str, Any]:  # fmt: skip
    """The ``<engine>.json`` sidecar: what the engine was built for (checked before deserialising) and the
    artifact contract of the ONNX file it came from, so the engine runs with nothing beside it."""
    return {
        "key": key, "tensorrt": trt_version, "compute_capability": compute_capability, "gpu": gpu,
        "precision": precision, "profiles": profiles, "onnx_sha256": onnx_sha256, "strongly_typed": True,
        "contract": contract.metadata(),
    }  # fmt: skip


def network_flags(trt: Any) -> int:
    """Creation flags of a strongly typed network on TensorRT 10.x and 11.x; BackendError on older ones.

    The one place the two versions differ for this builder: 10.x needs ``STRONGLY_TYPED`` requested, 11.x
    has every network strongly typed (the flag is accepted; if a later release drops the enum member,
    0 is the same request).
    """
    major = int(str(trt.__version__).split(".")[0])
    if major < MIN_TENSORRT:
        raise BackendError(f"TensorRT {trt.__version__} is too old: strongly typed builds need TensorRT 10 or newer")
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:
        if major == MIN_TENSORRT:
            raise BackendError(f"TensorRT {trt.__version__} lacks NetworkDefinitionCreationFlag.STRONGLY_TYPED")
        return 0
    return 1 << int(flag)


def check_onnx_for_tensorrt(model: Any, artifact: Artifact, source: str) -> None:
    """BackendError when the file's quantization is one TensorRT cannot take (e.g. a ``--int8-target cpu``
    file with uint8 activations)."""
    from hhrnet.export.precision import tensorrt_problems

    if artifact.precision != "int8":
        return
    problems = tensorrt_problems(model)
    if problems:
        shown = "; ".join(problems[:3]) + (f"; ... ({len(problems)} in all)" if len(problems) > 3 else "")
        raise BackendError(
            f"{source} is quantized in a form TensorRT does not accept ({shown}): export it with "
            "--precision int8 --int8-target tensorrt"
        )


def build_engine(
    onnx_path: str | Path,
    *,
    profiles: Sequence[Profile] | None = None,
    max_batch: int = 1,
    cache_dir: str | Path = ".hhrnet-cache",
    out: str | Path | None = None,
    workspace_gib: float = 4.0,
    optimization_level: int = 3,
) -> Path:
    """Build (or fetch from the cache) a strongly typed engine for ``onnx_path``; returns the engine path.

    ``profiles`` default to :func:`default_profiles` of the file's contract with ``max_batch``.
    """
    from hhrnet.deps import require_tensorrt
    from hhrnet.export.onnx import load_onnx, model_contract
    from hhrnet.io import atomic_write_bytes, atomic_write_text
    from hhrnet.runtime.tensorrt import device_info, sidecar

    model = load_onnx(onnx_path)
    contract = model_contract(model, str(onnx_path))  # the engine carries the ONNX file's contract: it runs alone
    onnx_bytes = Path(onnx_path).read_bytes()  # what TensorRT parses and the cache key hashes
    check_onnx_for_tensorrt(model, contract, str(onnx_path))
    chosen = tuple(profiles) if profiles else default_profiles(contract, max_batch)
    if not 0 <= optimization_level <= 5:
        raise InputError(f"the builder optimisation level must be 0..5, got {optimization_level}")
    trt = require_tensorrt()
    flags = network_flags(trt)
    dev = device_info()
    spec = BuildSpec(chosen, workspace_gib, optimization_level)
    key = cache_key(onnx_bytes, spec, trt.__version__, dev.name, dev.compute_capability)
    cache = Path(cache_dir)
    engine_path = Path(out) if out is not None else cache / f"{key}.engine"
    side = sidecar(engine_path)
    if engine_path.is_file() and side.is_file():
        try:
            if json.loads(side.read_text()).get("key") == key:
                return engine_path
        except (OSError, json.JSONDecodeError):
            pass  # a damaged sidecar: rebuild

    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_bytes):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(spec.workspace_gib * (1 << 30)))
    config.builder_optimization_level = spec.optimization_level
    timing_path = timing_cache_path(cache, trt.__version__, dev.name, dev.compute_capability)
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, ignore_mismatch=False)
    name = network.get_input(0).name
    for prof in chosen:
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
        precision=contract.precision, profiles=[asdict(p) for p in chosen],
        onnx_sha256=hashlib.sha256(onnx_bytes).hexdigest(),
    ), indent=2))  # fmt: skip
    return engine_path
