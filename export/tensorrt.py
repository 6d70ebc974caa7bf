"""TensorRT engine builder: strongly typed networks from ONNX files whose precision is in the graph.

TensorRT 11 removed weak typing (``BuilderFlag.FP16/INT8/BF16``, ``OBEY/PREFER_PRECISION_CONSTRAINTS``,
implicit int8 calibrators, per-layer precision) and 10.12+ deprecated it. One code path serves both: the
ONNX file carries its precision (fp16 casts, int8 Q/DQ pairs: :mod:`hhrnet.export.precision`) and the
network is created with ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` (required for this mode on 10.x,
always on in 11.x, where the flag is still accepted). No precision builder flag and no calibrator is ever
touched; the only version check is on that creation flag.

* Profiles come from what the runtime will send (:func:`default_profiles`, the one place that decides, read
  by ``hhrnet export --format engine`` and by the Triton writer): a static export gets its fixed square; a
  letterbox codec its square; the official resize a short side at the codec's input size (times each test
  scale) and a long side up to twice that. The batch axis counts network rows: ``max_batch`` images, each
  doubled when a ``raw`` graph with flip runs the flipped copy in the same batch. ``--profile`` overrides.
* Builder flags are set explicitly (:func:`builder_flags`), never left at TensorRT's defaults: TensorRT
  enables ``BuilderFlag.TF32`` by default, which lets fp32 convolutions round their inputs to 10-bit
  mantissas on Ampere and later; every precision here clears it (the reasons in :data:`TF32_ALLOWED`). The
  flags are recorded in the sidecar and in the cache key.
* The ONNX file is parsed from its path (``parse_from_file``), so external weight files next to it load.
* Return values TensorRT reports failure with are checked: ``parse_from_file`` / ``set_timing_cache``
  (False) and ``add_optimization_profile`` (-1).
* Engine cache ``cache_dir/<key>.engine``: the key hashes the ONNX bytes and any external weight files it
  names (so its precision, Q/DQ scales and calibration provenance), the TensorRT version, the GPU name and
  compute capability, the profiles and the builder settings and flags; an unchanged build returns the cached
  file at once.
* Timing cache ``cache_dir/timing-<trt>-<gpu>.cache``: kept per TensorRT version and GPU (a timing cache
  is only valid there), shared by every engine built on that pair.
* A sidecar ``<engine>.json`` records what the engine was built for and the ONNX file's contract; the
  runtime checks it before deserialising (:func:`hhrnet.runtime.tensorrt.check_engine`).

Type-checked with ``tensorrt-stubs``; TensorRT itself is not installable on the project's CPU machines, so
the build is tested there with a fake of the API surface it uses (tests/test_tensorrt.py). What only a real
TensorRT can settle (for example whether clearing TF32 under strong typing is accepted and changes the
result in 11.x) is checked by :func:`verify_facts`, which the GPU check calls.
"""

from __future__ import annotations

import hashlib
import json
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from hhrnet.errors import BackendError, InputError
from hhrnet.runtime.artifact import Artifact
from hhrnet.runtime.tensorrt import MAX_ASPECT, Profile, Shape, default_profiles, network_batch

__all__ = [
    "MAX_ASPECT",
    "BuildSpec",
    "Profile",
    "Shape",
    "build_engine",
    "builder_flags",
    "default_profiles",
    "network_batch",
    "verify_facts",
]

MIN_TENSORRT = 10  # strongly typed networks with explicit Q/DQ int8 and fp16 casts


# Whether an engine of each precision may compute fp32 layers in TF32 (BuilderFlag.TF32, on by default).
TF32_ALLOWED: dict[str, bool] = {
    "fp32": False,  # the file promises fp32 arithmetic; its parity with ONNX Runtime is measured at 1e-3
    "fp16": False,  # layers left fp32 (--keep, the converter's blocked ops) were kept there for accuracy
    "int8": False,  # the heads stay fp32 by default (DEFAULT_KEEP): that variant agreed best with fp32
}


def builder_flags(trt: Any, precision: str) -> dict[str, bool | None]:
    """The builder flags this builder sets explicitly for ``precision``: {flag name: on/off}, None for a flag
    this TensorRT does not have.

    TF32 is not among the flags TensorRT 11 removed (NVIDIA's "Removed Python APIs and Replacements" for
    10.x -> 11.x lists FP16, INT8, FP8, BF16, INT4, FP4, OBEY/PREFER_PRECISION_CONSTRAINTS and DIRECT_IO), and
    the 11.x Polygraphy ``CreateConfig`` still takes ``tf32``. Not settled by reading: whether a strongly
    typed 11.x build still honours clearing it (:func:`verify_facts` reports it on a GPU). A TensorRT without
    the member gets None recorded, not a guess.
    """
    if precision not in TF32_ALLOWED:
        raise InputError(f"no builder policy for precision {precision!r}")
    has_tf32 = getattr(getattr(trt, "BuilderFlag", None), "TF32", None) is not None
    return {"TF32": TF32_ALLOWED[precision] if has_tf32 else None}


def apply_builder_flags(trt: Any, config: Any, flags: dict[str, bool | None]) -> None:
    """Set or clear each flag of :func:`builder_flags` on ``config`` (None: absent in this TensorRT)."""
    for name, on in flags.items():
        if on is None:
            continue
        member = getattr(trt.BuilderFlag, name)
        if on:
            config.set_flag(member)
        else:
            config.clear_flag(member)
        if bool(config.get_flag(member)) != on:
            raise BackendError(f"TensorRT did not {'set' if on else 'clear'} BuilderFlag.{name}")


@dataclass(frozen=True)
class BuildSpec:
    """What, besides the ONNX file, TensorRT and the GPU, changes the engine."""

    profiles: tuple[Profile, ...]
    workspace_gib: float = 4.0
    optimization_level: int = 3  # TensorRT's default builder optimisation level
    flags: tuple[tuple[str, bool | None], ...] = ()  # builder flags set explicitly (builder_flags)


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
    contract: Artifact,
    *,
    key: str,
    trt_version: str,
    gpu: str,
    compute_capability: str,
    precision: str,
    profiles: list[dict[str, Any]],
    onnx_sha256: str,
    builder_flags: dict[str, bool | None] | None = None,
    timing_cache: str = "",
) -> dict[str, Any]:
    """The ``<engine>.json`` sidecar: what the engine was built for (checked before deserialising), the builder
    flags it was built with, and the artifact contract of the ONNX file it came from, so the engine runs with
    nothing beside it."""
    return {
        "key": key,
        "tensorrt": trt_version,
        "compute_capability": compute_capability,
        "gpu": gpu,
        "precision": precision,
        "profiles": profiles,
        "onnx_sha256": onnx_sha256,
        "strongly_typed": True,
        "builder_flags": dict(builder_flags or {}),
        "timing_cache": timing_cache,
        "contract": contract.metadata(),
    }


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


def _set_timing_cache(config: Any, data: bytes) -> str:
    """Give ``config`` the timing cache ``data`` (empty: a new one); what happened, for the sidecar.

    ``set_timing_cache(..., ignore_mismatch=False)`` returns False when the stored cache does not match this
    TensorRT / GPU (it would then go unused): the build continues with a fresh cache, which replaces the file.
    """
    if config.set_timing_cache(config.create_timing_cache(data), ignore_mismatch=False):
        return "reused" if data else "new"
    if not data:
        raise BackendError("TensorRT refused a new, empty timing cache")
    warnings.warn(
        "the stored TensorRT timing cache does not match this TensorRT/GPU: building with a new one",
        RuntimeWarning,
        stacklevel=3,
    )
    if not config.set_timing_cache(config.create_timing_cache(b""), ignore_mismatch=False):
        raise BackendError("TensorRT refused a new, empty timing cache")
    return "replaced (the stored one did not match this TensorRT/GPU)"


def external_files(model: Any, onnx_path: str | Path) -> list[Path]:
    """The weight files an ONNX model (loaded without its external data) names beside ``onnx_path``."""
    from onnx.external_data_helper import uses_external_data

    def tensors(graph: Any) -> Iterator[Any]:
        yield from graph.initializer
        for node in graph.node:
            for attr in node.attribute:
                yield from ([attr.t] if attr.HasField("t") else []) + list(attr.tensors)
                for sub in ([attr.g] if attr.HasField("g") else []) + list(attr.graphs):
                    yield from tensors(sub)

    names = {
        e.value for t in tensors(model.graph) if uses_external_data(t) for e in t.external_data if e.key == "location"
    }
    return [Path(onnx_path).parent / n for n in sorted(names)]


def onnx_digest(model: Any, onnx_path: str | Path) -> bytes:
    """SHA-256 of the ONNX file and every external weight file it names: what the engine is built from."""
    h = hashlib.sha256(Path(onnx_path).read_bytes())
    for f in external_files(model, onnx_path):
        if not f.is_file():
            raise BackendError(f"{onnx_path} keeps weights in {f.name}, which is missing")
        h.update(f.name.encode())
        h.update(hashlib.sha256(f.read_bytes()).digest())
    return h.digest()


def _parse(parser: Any, onnx_path: Path) -> None:
    """Parse from the file's path, so weights stored beside it (ONNX external data) are found."""
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise BackendError(f"TensorRT cannot parse {onnx_path}: {errors or 'no error reported'}")


def _add_profiles(builder: Any, config: Any, name: str, profiles: Sequence[Profile]) -> None:
    for prof in profiles:
        p = builder.create_optimization_profile()
        p.set_shape(name, prof.min, prof.opt, prof.max)
        if config.add_optimization_profile(p) < 0:
            raise BackendError(f"TensorRT refused the optimization profile {prof.text()} for input {name!r}")


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

    ``profiles`` default to :func:`default_profiles` of the file's contract with ``max_batch`` images a call.
    """
    from hhrnet.deps import require_tensorrt
    from hhrnet.export.onnx import load_onnx, model_contract
    from hhrnet.io import atomic_write_bytes, atomic_write_text
    from hhrnet.runtime.tensorrt import device_info, sidecar

    model = load_onnx(onnx_path)
    contract = model_contract(model, str(onnx_path))  # the engine carries the ONNX file's contract: it runs alone
    digest = onnx_digest(model, onnx_path)  # the file and its external weights: what the cache key hashes
    check_onnx_for_tensorrt(model, contract, str(onnx_path))
    chosen = tuple(profiles) if profiles else default_profiles(contract, max_batch)
    if not 0 <= optimization_level <= 5:
        raise InputError(f"the builder optimisation level must be 0..5, got {optimization_level}")
    trt = require_tensorrt()
    flags = network_flags(trt)
    dev = device_info()
    flag_values = builder_flags(trt, contract.precision)
    spec = BuildSpec(chosen, workspace_gib, optimization_level, tuple(sorted(flag_values.items())))
    key = cache_key(digest, spec, trt.__version__, dev.name, dev.compute_capability)
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
    _parse(parser, Path(onnx_path))
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(spec.workspace_gib * (1 << 30)))
    config.builder_optimization_level = spec.optimization_level
    apply_builder_flags(trt, config, flag_values)
    timing_path = timing_cache_path(cache, trt.__version__, dev.name, dev.compute_capability)
    timing_state = _set_timing_cache(config, timing_path.read_bytes() if timing_path.is_file() else b"")
    _add_profiles(builder, config, network.get_input(0).name, chosen)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise BackendError(f"TensorRT failed to build an engine from {onnx_path} (see the log above)")
    cache.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(timing_path, bytes(memoryview(config.get_timing_cache().serialize())))
    atomic_write_bytes(engine_path, bytes(memoryview(serialized)))
    atomic_write_text(
        side,
        json.dumps(
            sidecar_payload(
                contract,
                key=key,
                trt_version=trt.__version__,
                gpu=dev.name,
                compute_capability=dev.compute_capability,
                precision=contract.precision,
                profiles=[asdict(p) for p in chosen],
                onnx_sha256=digest.hex(),
                builder_flags=flag_values,
                timing_cache=timing_state,
            ),
            indent=2,
        ),
    )
    return engine_path


def _matmul_onnx(path: Path, k: int = 256, n: int = 64) -> Any:
    """``Y (B, n) = X (B, k) @ W (k, n)``, W stored in an external file beside ``path``; returns W."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = np.random.default_rng(0).standard_normal((k, n)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["b", n])],
        [numpy_helper.from_array(w, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, str(path), save_as_external_data=True, location=path.name + ".weights", size_threshold=0)
    return w


def _run_matmul(trt: Any, serialized: Any, x: Any) -> Any:
    """Run a built matmul engine once on ``x`` through the runtime's CUDA helpers; the output on the host."""
    import numpy as np

    from hhrnet.runtime.tensorrt import DeviceBuffer, _check, _cudart

    rt = _cudart()
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(serialized)
    context = engine.create_execution_context()
    context.set_input_shape("x", x.shape)
    y = np.empty(tuple(context.get_tensor_shape("y")), np.float32)
    dx, dy = DeviceBuffer(x.nbytes), DeviceBuffer(y.nbytes)
    _check(rt.cudaMemcpy(dx.ptr, x.ctypes.data, x.nbytes, rt.cudaMemcpyKind.cudaMemcpyHostToDevice), "copy")
    context.set_tensor_address("x", dx.ptr)
    context.set_tensor_address("y", dy.ptr)
    stream = _check(rt.cudaStreamCreate(), "cudaStreamCreate")
    ok = context.execute_async_v3(int(stream))
    _check(rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
    _check(rt.cudaStreamDestroy(stream), "cudaStreamDestroy")
    if not ok:
        raise BackendError("TensorRT could not run the matmul check engine")
    _check(rt.cudaMemcpy(y.ctypes.data, dy.ptr, y.nbytes, rt.cudaMemcpyKind.cudaMemcpyDeviceToHost), "copy")
    return y


def verify_facts(trt: Any, *, execute: bool = True) -> dict[str, Any]:
    """What this builder assumes about TensorRT that reading the documentation could not settle, measured on the
    installed TensorRT (and, with ``execute``, a GPU); {fact: value}. For the GPU check (``make gpu-check``).

    On a one-layer strongly typed fp32 ``MatMul`` whose weights sit in an external file:
    ``tf32_flag`` BuilderFlag.TF32 exists; ``tf32_default`` it is on in a new builder config;
    ``parse_without_path`` / ``parse_from_file`` whether each parse finds external weights (expected
    False / True); ``empty_profile_index`` what ``add_optimization_profile`` returns for an incomplete
    profile (expected -1); ``profile_shape`` what ``get_tensor_profile_shape`` returns for the profile set;
    ``build_tf32_cleared`` whether a strongly typed build accepts TF32 cleared; with ``execute``,
    ``matmul_error_tf32_on`` / ``matmul_error_tf32_off``: the largest error against a float64 product
    (TF32 honoured: "on" near 1e-2, "off" near 1e-5).
    """
    import numpy as np

    facts: dict[str, Any] = {"tensorrt": str(trt.__version__)}
    flag = getattr(getattr(trt, "BuilderFlag", None), "TF32", None)
    facts["tf32_flag"] = flag is not None
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    facts["tf32_default"] = bool(builder.create_builder_config().get_flag(flag)) if flag is not None else None
    k, batch = 256, 4
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "matmul.onnx"
        w = _matmul_onnx(path, k)
        network = builder.create_network(network_flags(trt))
        facts["parse_without_path"] = bool(trt.OnnxParser(network, logger).parse(path.read_bytes()))
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        facts["parse_from_file"] = bool(parser.parse_from_file(str(path)))
        if not facts["parse_from_file"]:
            return facts
        built: dict[bool, Any] = {}
        for tf32 in (False, True) if flag is not None else (False,):
            config = builder.create_builder_config()
            if tf32 is False:
                incomplete = builder.create_optimization_profile()
                facts["empty_profile_index"] = int(config.add_optimization_profile(incomplete))
            if flag is not None:
                apply_builder_flags(trt, config, {"TF32": tf32})
            profile = builder.create_optimization_profile()
            profile.set_shape("x", (1, k), (batch, k), (batch, k))
            if config.add_optimization_profile(profile) < 0:
                raise BackendError("TensorRT refused the matmul check's optimization profile")
            built[tf32] = builder.build_serialized_network(network, config)
        facts["build_tf32_cleared"] = built[False] is not None
        if built[False] is not None:
            engine = trt.Runtime(logger).deserialize_cuda_engine(built[False])
            facts["profile_shape"] = [list(map(int, s)) for s in engine.get_tensor_profile_shape("x", 0)]
        if execute:
            x = np.random.default_rng(1).standard_normal((batch, k)).astype(np.float32)
            exact = x.astype(np.float64) @ w.astype(np.float64)
            for tf32, serialized in built.items():
                if serialized is not None:
                    y = _run_matmul(trt, serialized, x)
                    facts[f"matmul_error_tf32_{'on' if tf32 else 'off'}"] = float(np.abs(y - exact).max())
    return facts
