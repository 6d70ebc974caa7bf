"""TensorRT: strongly typed builds (a fake of the API proves which calls are made), profiles from the contract,
cache keys, the guard before deserialising, the runtime's buffers and data path (a fake CUDA runtime that
moves real bytes in host memory), and, with TensorRT and a GPU, real engines against ONNX Runtime."""

from __future__ import annotations

import ctypes
import dataclasses
import json
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hhrnet.errors import BackendError, InputError

REMOVED = ("BuilderFlag", "IInt8EntropyCalibrator2", "IInt8MinMaxCalibrator", "IInt8Calibrator", "set_flag",
           "int8_calibrator", "set_calibration_profile", "precision", "set_output_type")  # fmt: skip


# --------------------------------------------------------------------------------------------
# a fake of the TensorRT builder API that records every call and attribute the builder touches
# --------------------------------------------------------------------------------------------


class Recorder:
    """Records attribute reads/writes and calls; any attribute not defined on the fake raises."""

    def __init__(self, log: list[str], label: str, **members: Any) -> None:
        object.__setattr__(self, "_log", log)
        object.__setattr__(self, "_name", label)
        object.__setattr__(self, "_members", members)

    def __getattr__(self, item: str) -> Any:
        self._log.append(f"{self._name}.{item}")
        members = object.__getattribute__(self, "_members")
        if item not in members:
            raise AttributeError(f"fake TensorRT has no {self._name}.{item} (removed or unknown API)")
        return members[item]

    def __setattr__(self, item: str, value: Any) -> None:
        self._log.append(f"{self._name}.{item}=")
        if item not in self._members:
            raise AttributeError(f"fake TensorRT has no settable {self._name}.{item}")
        self._members[item] = value


def fake_trt(version: str = "10.13.0.35", strongly_typed_member: bool = True) -> tuple[Any, list[str], dict]:
    log: list[str] = []
    state: dict[str, Any] = {"profiles": [], "timing_in": None}

    def call(name: str, result: Any = None) -> Any:
        def f(*args: Any, **kwargs: Any) -> Any:
            log.append(f"{name}{args}")
            return result(*args) if callable(result) else result

        return f

    def create_network(flags: int) -> Any:
        state["flags"] = flags
        log.append(f"create_network({flags})")
        return network

    def set_shape(name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
        state["profiles"].append((name, lo, opt, hi))

    def create_timing_cache(data: bytes) -> Any:
        state["timing_in"] = data
        return Recorder(log, "timing", serialize=call("timing.serialize", b"timing-bytes"))

    network = Recorder(log, "network", get_input=call("get_input", Recorder(log, "input", name="image")))
    config = Recorder(
        log, "config", set_memory_pool_limit=call("set_memory_pool_limit"), builder_optimization_level=3,
        create_timing_cache=create_timing_cache, set_timing_cache=call("set_timing_cache", True),
        add_optimization_profile=call("add_optimization_profile", 0),
        get_timing_cache=lambda: Recorder(log, "timing", serialize=lambda: b"timing-bytes"),
    )  # fmt: skip
    builder = Recorder(
        log, "builder", create_network=create_network, create_builder_config=lambda: config,
        create_optimization_profile=lambda: Recorder(log, "profile", set_shape=set_shape),
        build_serialized_network=call("build_serialized_network", b"serialized-engine"),
    )  # fmt: skip
    flags = {"EXPLICIT_BATCH": 0} | ({"STRONGLY_TYPED": 1} if strongly_typed_member else {})
    logger_cls = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    module = Recorder(
        log, "trt", __version__=version, Logger=logger_cls, Builder=lambda logger: builder,
        OnnxParser=lambda net, logger: Recorder(log, "parser", parse=call("parse", True), num_errors=0),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(**flags),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE=0),
    )  # fmt: skip
    return module, log, state


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """fp32, fp16, int8 (tensorrt) and int8 (cpu) aggregate exports of a small formula-weight model."""
    from test_export import TINY_128, tiny_model

    from hhrnet import samples
    from hhrnet.export.onnx import export_onnx
    from hhrnet.export.precision import convert

    root = tmp_path_factory.mktemp("trt")
    model, cfg = tiny_model(TINY_128)
    export_onnx(model, cfg, root / "fp32.onnx", sample_size=(128, 128))
    coco = samples.images("coco")[0].parent
    convert(root / "fp32.onnx", root / "fp16.onnx", "fp16")
    convert(root / "fp32.onnx", root / "int8.onnx", "int8", calib_images=coco, calib_count=2)
    convert(root / "fp32.onnx", root / "int8cpu.onnx", "int8", calib_images=coco, calib_count=2, target="cpu")
    return {p: root / f"{p}.onnx" for p in ("fp32", "fp16", "int8", "int8cpu")}


def _patch_build(monkeypatch: pytest.MonkeyPatch, trt: Any) -> None:
    import hhrnet.deps
    import hhrnet.runtime.tensorrt as rt

    monkeypatch.setattr(hhrnet.deps, "require_tensorrt", lambda: trt)
    monkeypatch.setattr(rt, "device_info", lambda device=0: rt.DeviceInfo("NVIDIA H200", "9.0"))


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_build_is_strongly_typed_and_touches_no_removed_api(
    exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    from hhrnet.export.onnx import read_contract
    from hhrnet.export.tensorrt import build_engine, default_profiles
    from hhrnet.runtime.tensorrt import engine_contract, sidecar

    trt, log, state = fake_trt()
    _patch_build(monkeypatch, trt)
    engine = build_engine(exports[precision], cache_dir=tmp_path)
    assert state["flags"] == 1 << 1  # STRONGLY_TYPED requested, nothing else
    touched = {entry.split("(")[0].split(".")[-1].rstrip("=") for entry in log}
    assert not touched & set(REMOVED), touched & set(REMOVED)
    assert engine.read_bytes() == b"serialized-engine"
    side = json.loads(sidecar(engine).read_text())
    assert side["precision"] == precision and side["strongly_typed"] and side["gpu"] == "NVIDIA H200"
    assert engine_contract(engine) == read_contract(exports[precision])  # calibration provenance travels too
    prof = default_profiles(read_contract(exports[precision]))[0]
    assert state["profiles"] == [("image", prof.min, prof.opt, prof.max)]
    timing = next(tmp_path.glob("timing-*.cache"))
    assert timing.read_bytes() == b"timing-bytes" and "10.13.0.35" in timing.name and "H200" in timing.name
    # an unchanged build is served from the cache without touching the builder
    log.clear()
    assert build_engine(exports[precision], cache_dir=tmp_path) == engine
    assert not any(e.startswith("create_network") for e in log)


def test_tensorrt_11_and_too_old_versions(
    exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hhrnet.export.tensorrt import build_engine, network_flags

    trt11, _, state = fake_trt("11.4.0", strongly_typed_member=True)
    assert network_flags(trt11) == 1 << 1  # accepted (always on) in 11.x
    trt11_bare, _, state = fake_trt("11.4.0", strongly_typed_member=False)
    _patch_build(monkeypatch, trt11_bare)
    build_engine(exports["int8"], cache_dir=tmp_path)
    assert state["flags"] == 0  # strongly typed is the only mode; nothing to request
    with pytest.raises(BackendError, match="lacks NetworkDefinitionCreationFlag.STRONGLY_TYPED"):
        network_flags(fake_trt("10.0.1", strongly_typed_member=False)[0])
    with pytest.raises(BackendError, match="TensorRT 8.6.1 is too old"):
        network_flags(fake_trt("8.6.1")[0])


def test_cpu_int8_file_is_refused_before_building(
    exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hhrnet.export.tensorrt import build_engine

    trt, log, _ = fake_trt()
    _patch_build(monkeypatch, trt)
    with pytest.raises(BackendError, match=r"uint8 zero point .*--int8-target tensorrt"):
        build_engine(exports["int8cpu"], cache_dir=tmp_path)
    assert not log  # TensorRT never touched


def test_cache_keys_cover_everything_that_changes_the_engine(exports: dict[str, Path]) -> None:
    from hhrnet.export.tensorrt import BuildSpec, Profile, cache_key

    p = Profile.parse("1x3x256x256:1x3x512x512:4x3x1024x1024")
    spec = BuildSpec((p,))
    onnx = {k: v.read_bytes() for k, v in exports.items()}
    base = cache_key(onnx["fp32"], spec, "10.13", "H200", "9.0")
    assert base == cache_key(onnx["fp32"], spec, "10.13", "H200", "9.0")
    variants = {
        base,
        cache_key(onnx["fp16"], spec, "10.13", "H200", "9.0"),
        cache_key(onnx["int8"], spec, "10.13", "H200", "9.0"),
        cache_key(onnx["fp32"], spec, "11.4", "H200", "9.0"),
        cache_key(onnx["fp32"], spec, "10.13", "H100", "9.0"),
        cache_key(onnx["fp32"], spec, "10.13", "H200", "8.9"),
        cache_key(
            onnx["fp32"], BuildSpec((Profile.parse("1x3x256x256:1x3x512x512:8x3x1024x1024"),)), "10.13", "H200", "9.0"
        ),  # fmt: skip
        cache_key(onnx["fp32"], BuildSpec((p,), workspace_gib=2.0), "10.13", "H200", "9.0"),
    }
    assert len(variants) == 8


def test_profiles_parse_and_come_from_the_contract() -> None:
    from hhrnet.codec import Codec
    from hhrnet.config import preset
    from hhrnet.export.onnx import make_artifact
    from hhrnet.export.tensorrt import Profile, default_profiles

    p = Profile.parse("1x3x256x256:1x3x512x512:4x3x1024x1024")
    assert p.contains((2, 3, 512, 704)) and not p.contains((8, 3, 512, 512))
    assert Profile.parse(p.text()) == p
    for bad in ("1x3x256x256:1x3x512x512", "1x3x250x256:1x3x512x512:1x3x512x512",
                "1x3x512x512:1x3x256x256:1x3x1024x1024", "1x1x256x256:1x1x256x256:1x1x256x256"):  # fmt: skip
        with pytest.raises(InputError):
            Profile.parse(bad)
    cfg = preset("coco_w32_512")
    codec = Codec.from_config(cfg)
    (official,) = default_profiles(make_artifact(cfg, codec, "aggregate", False), max_batch=4)
    assert official == Profile((1, 3, 512, 512), (1, 3, 512, 704), (4, 3, 1024, 1024))
    # every shape the codec's official resize gives a 2:1 photo fits
    x = codec.preprocess(np.zeros((300, 600, 3), np.uint8)).inputs[0][1]
    assert official.contains((1, *x.shape)) and x.shape[1:] == (512, 1024)
    (boxed,) = default_profiles(make_artifact(cfg, codec.replace(letterbox=640), "aggregate", False))
    assert boxed == Profile((1, 3, 640, 640), (1, 3, 640, 640), (1, 3, 640, 640))
    (static,) = default_profiles(make_artifact(cfg, codec, "aggregate", True), max_batch=2)
    assert static == Profile((1, 3, 512, 512), (1, 3, 512, 512), (2, 3, 512, 512))
    (multi,) = default_profiles(make_artifact(cfg, codec.replace(scales=(2.0, 1.0, 0.5)), "raw", False))
    assert multi.min == (1, 3, 256, 256) and multi.max == (1, 3, 2048, 2048)
    prepared = codec.replace(scales=(2.0, 1.0, 0.5)).preprocess(np.zeros((480, 640, 3), np.uint8))
    shapes = [x.shape for _, x in prepared.inputs]
    assert all(multi.contains((1, *s)) for s in shapes)


def test_engine_guard_refuses_foreign_engines(tmp_path: Path) -> None:
    from hhrnet.runtime.tensorrt import DeviceInfo, check_engine, check_input_shape, sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 16)  # never deserialised: the guard decides first
    with pytest.raises(BackendError, match="no m.engine.json"):
        check_engine(engine, "10.3", DeviceInfo("H100", "9.0"))
    side = {"tensorrt": "10.3", "compute_capability": "8.6", "gpu": "RTX 3090",
            "profiles": [{"min": [1, 3, 256, 256], "max": [1, 3, 512, 512]}]}  # fmt: skip
    sidecar(engine).write_text(json.dumps(side))
    with pytest.raises(BackendError, match="TensorRT 10.3 but this is TensorRT 10.5"):
        check_engine(engine, "10.5", DeviceInfo("H100", "9.0"))
    with pytest.raises(BackendError, match=r"built for RTX 3090 \(sm 8.6\) but this GPU is H100 \(sm 9.0\)"):
        check_engine(engine, "10.3", DeviceInfo("H100", "9.0"))
    meta = check_engine(engine, "10.3", DeviceInfo("RTX 3090", "8.6"))
    assert check_input_shape((1, 3, 384, 512), meta["profiles"]) == 0
    with pytest.raises(BackendError, match="outside the engine's profiles"):
        check_input_shape((1, 3, 1024, 1024), meta["profiles"])


def test_tensorrt_missing_is_one_clear_error(exports: dict[str, Path]) -> None:
    from hhrnet.deps import tensorrt_or_none
    from hhrnet.export.tensorrt import build_engine

    if tensorrt_or_none() is not None:
        pytest.skip("TensorRT is installed here")
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        build_engine(exports["fp16"])


# --------------------------------------------------------------------------------------------
# the runtime against a fake CUDA runtime (host memory) and a fake engine
# --------------------------------------------------------------------------------------------


class FakeCudart:
    """cuda-python's runtime calls over host memory: (err, value) tuples, real memcpy, call counts."""

    class cudaMemcpyKind:  # noqa: N801 - mirrors cuda-python
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self) -> None:
        self.blocks: dict[int, Any] = {}
        self.calls: dict[str, int] = {}
        self.copies: list[tuple[int, int]] = []  # (kind, nbytes)

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _alloc(self, nbytes: int) -> tuple[int, int]:
        block = ctypes.create_string_buffer(nbytes)
        self.blocks[ctypes.addressof(block)] = block
        return 0, ctypes.addressof(block)

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:  # noqa: N802
        self._count("cudaMalloc")
        return self._alloc(nbytes)

    def cudaMallocHost(self, nbytes: int) -> tuple[int, int]:  # noqa: N802
        self._count("cudaMallocHost")
        return self._alloc(nbytes)

    def cudaFree(self, ptr: int) -> tuple[int]:  # noqa: N802
        self._count("cudaFree")
        return (0,)

    def cudaFreeHost(self, ptr: int) -> tuple[int]:  # noqa: N802
        self._count("cudaFreeHost")
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream: Any) -> tuple[int]:  # noqa: N802
        assert stream == 7, "every copy goes on the session's stream"
        ctypes.memmove(dst, src, nbytes)
        self.copies.append((kind, nbytes))
        return (0,)

    def cudaStreamCreate(self) -> tuple[int, int]:  # noqa: N802
        self._count("cudaStreamCreate")
        return 0, 7

    def cudaStreamSynchronize(self, stream: Any) -> tuple[int]:  # noqa: N802
        assert stream == 7
        return (0,)


def _read(ptr: int, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    return np.frombuffer((ctypes.c_byte * (n * dt.itemsize)).from_address(ptr), dt, n).reshape(shape).copy()


class FakeContext:
    """heatmaps[b, j] = x[b, 0] + j; tags[b, j, ..., t] = x[b, 1] * (t + 1); J = 3, T = 2."""

    J = 3

    def __init__(self) -> None:
        self.addresses: dict[str, int] = {}
        self.shape: tuple[int, ...] = ()
        self.profiles: list[int] = []

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        assert stream == 7
        self.profiles.append(index)
        return True

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        b, _, h, w = self.shape
        return (b, self.J, h, w) if name == "heatmaps" else (b, self.J, h, w, 2)

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        assert stream == 7
        x = _read(self.addresses["image"], self.shape)
        hm = x[:, :1] + np.arange(self.J, dtype=np.float32)[None, :, None, None]
        tags = np.stack([np.repeat(x[:, 1:2], self.J, 1) * (t + 1) for t in range(2)], -1)
        for name, arr in (("heatmaps", hm), ("tags", tags)):
            ctypes.memmove(self.addresses[name], np.ascontiguousarray(arr, np.float32).ctypes.data, arr.nbytes)
        return True


def _fake_session(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, static: bool = False) -> tuple[Any, FakeCudart]:
    import hhrnet.deps
    import hhrnet.runtime.tensorrt as rt
    from hhrnet.codec import Codec
    from hhrnet.config import preset
    from hhrnet.export.onnx import make_artifact
    from hhrnet.export.tensorrt import sidecar_payload

    cfg = preset("tiny")
    artifact = dataclasses.replace(make_artifact(cfg, Codec.from_config(cfg), "aggregate", static), precision="int8",
                                   calibration={"method": "percentile", "count": 2})  # fmt: skip
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    profiles = [{"min": [1, 3, 64, 64], "opt": [1, 3, 128, 128], "max": [2, 3, 256, 256]}]
    rt.sidecar(engine).write_text(json.dumps(sidecar_payload(
        artifact, key="k", trt_version="10.13.0", gpu="NVIDIA H200", compute_capability="9.0", precision="int8",
        profiles=profiles, onnx_sha256="0")))  # fmt: skip
    cudart = FakeCudart()
    context = FakeContext()
    dtype = types.SimpleNamespace(name="FLOAT")
    mode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    names = ["image", "heatmaps", "tags"]
    eng = types.SimpleNamespace(
        num_io_tensors=3, get_tensor_name=names.__getitem__, get_tensor_dtype=lambda n: dtype,
        get_tensor_mode=lambda n: "in" if n == "image" else "out", create_execution_context=lambda: context,
    )  # fmt: skip
    runtime = types.SimpleNamespace(deserialize_cuda_engine=lambda data: eng if data == b"engine" else None)
    trt = types.SimpleNamespace(__version__="10.13.0", Logger=type("Logger", (), {"WARNING": 2,
                                "__init__": lambda self, lvl: None}), Runtime=lambda logger: runtime,
                                TensorIOMode=mode)  # fmt: skip
    monkeypatch.setattr(hhrnet.deps, "require_tensorrt", lambda: trt)
    monkeypatch.setattr(rt, "_cudart", lambda: cudart)
    monkeypatch.setattr(rt, "device_info", lambda device=0: rt.DeviceInfo("NVIDIA H200", "9.0"))
    return rt.TensorRTSession(engine), cudart


def _expected(x: np.ndarray) -> list[np.ndarray]:
    hm = x[:, :1] + np.arange(3, dtype=np.float32)[None, :, None, None]
    tags = np.stack([np.repeat(x[:, 1:2], 3, 1) * (t + 1) for t in range(2)], -1)
    return [hm, tags]


def test_runtime_allocates_once_per_shape_and_grows_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session, cudart = _fake_session(tmp_path, monkeypatch)
    assert session.precision == "int8" and session.graph == "aggregate"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 128, 128)).astype(np.float32)
    for got, want in zip(session(x), _expected(x), strict=True):
        np.testing.assert_array_equal(got, want)
    first = dict(cudart.calls)
    assert first["cudaMalloc"] == 3 and first["cudaMallocHost"] == 3 and first["cudaStreamCreate"] == 1
    for _ in range(3):  # the same shape again: no allocation, the input copied once, outputs once each
        cudart.copies.clear()
        y = rng.standard_normal(x.shape).astype(np.float32)
        for got, want in zip(session(y), _expected(y), strict=True):
            np.testing.assert_array_equal(got, want)
        assert [k for k, _ in cudart.copies] == [1, 2, 2]
    small = rng.standard_normal((1, 3, 64, 96)).astype(np.float32)  # smaller: reuses the buffers
    outs = session(small)
    np.testing.assert_array_equal(outs[1], _expected(small)[1])
    assert cudart.calls["cudaMalloc"] == 3 and cudart.calls["cudaMallocHost"] == 3
    big = rng.standard_normal((2, 3, 192, 256)).astype(np.float32)  # larger: grows, once
    np.testing.assert_array_equal(session(big)[0], _expected(big)[0])
    session(big)
    assert cudart.calls["cudaMalloc"] == 6 and cudart.calls["cudaMallocHost"] == 6
    with pytest.raises(BackendError, match="outside the engine's profiles"):
        session(np.zeros((1, 3, 512, 512), np.float32))


def test_run_device_hands_outputs_over_without_a_host_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session, cudart = _fake_session(tmp_path, monkeypatch)
    x = np.random.default_rng(1).standard_normal((2, 3, 96, 128)).astype(np.float32)
    cudart.copies.clear()
    outs = session.run_device(x)
    assert [k for k, _ in cudart.copies] == [1]  # the input went up; nothing came back
    for arr, want in zip(outs, _expected(x), strict=True):
        cai = arr.__cuda_array_interface__
        assert cai["shape"] == want.shape and cai["typestr"] == "<f4" and cai["version"] == 3
        np.testing.assert_array_equal(_read(cai["data"][0], want.shape), want)


def test_runtime_static_engine_refuses_other_shapes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session, _ = _fake_session(tmp_path, monkeypatch, static=True)
    with pytest.raises(InputError, match="takes 256x256 inputs only"):
        session(np.zeros((1, 3, 128, 128), np.float32))


# --------------------------------------------------------------------------------------------
# GPU + TensorRT only
# --------------------------------------------------------------------------------------------


def _need_tensorrt() -> None:
    from hhrnet.deps import tensorrt_or_none

    try:
        import torch

        cuda = torch.cuda.is_available()
    except ImportError:
        cuda = False
    if tensorrt_or_none() is None or not cuda:
        pytest.skip("needs TensorRT and a CUDA GPU")


@pytest.mark.tensorrt
@pytest.mark.parametrize(("precision", "atol"), [("fp32", 1e-3), ("fp16", 2e-2), ("int8", 0.15)])
def test_tensorrt_engines_match_onnxruntime(
    exports: dict[str, Path], tmp_path: Path, precision: str, atol: float
) -> None:
    """Each precision's engine against ONNX Runtime on the same file, at OPT and at a shape different from OPT."""
    _need_tensorrt()
    from hhrnet.export.tensorrt import Profile, build_engine
    from hhrnet.runtime.ort import OrtSession
    from hhrnet.runtime.tensorrt import TensorRTSession

    profiles = [Profile.parse("1x3x64x64:1x3x128x128:2x3x256x256")]
    engine = build_engine(exports[precision], cache_dir=tmp_path, profiles=profiles)
    session, ort = TensorRTSession(engine), OrtSession(exports[precision])
    assert session.precision == precision
    rng = np.random.default_rng(0)
    for shape in ((1, 3, 128, 128), (2, 3, 96, 192)):
        x = rng.standard_normal(shape).astype(np.float32)
        for a, b in zip(session(x), ort(x), strict=True):
            np.testing.assert_allclose(a, b, atol=atol)
        for d, b in zip(session.run_device(x), ort(x), strict=True):
            host = np.empty(d.shape, d.dtype)
            session.rt.cudaMemcpy(host.ctypes.data, d.ptr, d.nbytes, session.rt.cudaMemcpyKind.cudaMemcpyDeviceToHost)
            np.testing.assert_allclose(host, b, atol=atol)
    assert build_engine(exports[precision], cache_dir=tmp_path, profiles=profiles) == engine


@pytest.mark.tensorrt
def test_predict_and_eval_with_an_engine(exports: dict[str, Path], tmp_path: Path) -> None:
    """``hhrnet predict --engine`` and ``hhrnet eval --engine`` on an int8 engine built from the contract."""
    _need_tensorrt()
    from typer.testing import CliRunner

    from hhrnet import samples
    from hhrnet.cli.app import app
    from hhrnet.export.tensorrt import build_engine

    engine = build_engine(exports["int8"], cache_dir=tmp_path)
    runner = CliRunner()
    folder = samples.images("coco")[0].parent
    res = runner.invoke(app, ["predict", str(folder), "--engine", str(engine), "--out", str(tmp_path / "pred")])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["eval", "--engine", str(engine), "--images", str(folder),
                              "--annotations", str(folder / "test_coco.json")])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "AP" in res.output
