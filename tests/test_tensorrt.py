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

from hhrnet.errors import BackendError, ConfigError, InputError

# What TensorRT 11 removed (NVIDIA: "Removed Python APIs and Replacements", 10.x -> 11.x) and 10.12+ deprecated:
# the builder must never touch them.
REMOVED = (
    "FP16",
    "INT8",
    "FP8",
    "BF16",
    "INT4",
    "FP4",
    "OBEY_PRECISION_CONSTRAINTS",
    "PREFER_PRECISION_CONSTRAINTS",
    "DIRECT_IO",
    "IInt8EntropyCalibrator2",
    "IInt8MinMaxCalibrator",
    "IInt8Calibrator",
    "int8_calibrator",
    "set_calibration_profile",
    "precision",
    "set_output_type",
)


# --------------------------------------------------------------------------------------------
# a fake of the TensorRT builder API with TensorRT's semantics where the builder could go wrong:
# builder flags start at TensorRT's defaults (TF32 on); parse() without a path cannot find external
# weights, parse_from_file() can; add_optimization_profile() returns -1 for a profile that does not fit
# the network's input; set_timing_cache() returns False for a cache from another TensorRT/GPU.
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


def _onnx_input(model: Any) -> tuple[str, tuple[int, ...]]:
    first = model.graph.input[0]
    return first.name, tuple(d.dim_value if d.HasField("dim_value") else -1 for d in first.type.tensor_type.shape.dim)


class FakeParser:
    """OnnxParser: ``parse(bytes)`` without a path cannot load weights stored outside the file."""

    def __init__(self, state: dict[str, Any], log: list[str]) -> None:
        self.state, self.log, self.errors = state, log, []

    @property
    def num_errors(self) -> int:
        return len(self.errors)

    def get_error(self, i: int) -> str:
        return self.errors[i]

    def _load(self, model: Any, where: str | None) -> bool:
        from onnx.external_data_helper import uses_external_data

        external = [t.name for t in model.graph.initializer if uses_external_data(t)]
        if external and where is None:
            self.errors.append(f"failed to import initializer {external[0]}: no path to find its external data")
            return False
        self.state["network_input"] = _onnx_input(model)
        self.state["parsed"].append(where)
        return True

    def parse(self, data: bytes, path: str | None = None) -> bool:
        import onnx

        self.log.append("parser.parse")
        return self._load(onnx.load_from_string(bytes(data)), path)

    def parse_from_file(self, path: str) -> bool:
        import onnx

        self.log.append(f"parser.parse_from_file({path})")
        return self._load(onnx.load(path), path)


class FakeBuiltEngine:
    """What the fake runtime deserialises from the fake builder's output: the profiles it was built with."""

    def __init__(self, data: bytes) -> None:
        self.profiles = json.loads(bytes(data))["profiles"]

    def get_tensor_profile_shape(self, name: str, index: int) -> list[tuple[int, ...]]:
        entry = self.profiles[index]
        assert entry[0] == name
        return [tuple(s) for s in entry[1:]]


def fake_trt(
    version: str = "10.13.0.35", strongly_typed_member: bool = True, tf32_member: bool = True
) -> tuple[Any, list[str], dict]:
    log: list[str] = []
    state: dict[str, Any] = {"profiles": [], "timing_in": None, "parsed": [], "network_input": None}
    timing_blob = f"timing-cache {version}".encode()  # what this TensorRT/GPU serialises
    flag_members = {"DEBUG": 2, "REFIT": 4} | ({"TF32": 6} if tf32_member else {})

    def call(name: str, result: Any = None) -> Any:
        def f(*args: Any, **kwargs: Any) -> Any:
            log.append(f"{name}{args}")
            return result

        return f

    def create_network(flags: int) -> Any:
        state["flags"] = flags
        log.append(f"create_network({flags})")
        return Recorder(log, "network", get_input=lambda i: Recorder(log, "input", name=state["network_input"][0]))

    def make_profile() -> Any:
        shapes: dict[str, tuple] = {}

        def set_shape(name: str, lo: tuple, opt: tuple, hi: tuple) -> None:
            shapes[name] = (tuple(lo), tuple(opt), tuple(hi))

        return Recorder(log, "profile", set_shape=set_shape, shapes=shapes)

    def make_config() -> Any:
        flags = {flag_members["TF32"]} if tf32_member else set()  # TensorRT's default: TF32 on
        cfg: dict[str, Any] = {"profiles": [], "timing": None}

        def add_profile(profile: Any) -> int:
            shapes = object.__getattribute__(profile, "_members")["shapes"]
            name, dims = state["network_input"]
            if name not in shapes:
                return -1  # incomplete: the input's shape was never set
            lo, opt, hi = shapes[name]
            fits = len(lo) == len(dims) and all(
                a <= b <= c and (d < 0 or a == c == d) for a, b, c, d in zip(lo, opt, hi, dims, strict=True)
            )
            if not fits:
                return -1  # outside the network's fixed dimensions
            cfg["profiles"].append((name, lo, opt, hi))
            return len(cfg["profiles"]) - 1

        def create_timing_cache(data: bytes) -> Any:
            state["timing_in"] = bytes(data)
            return Recorder(log, "timing", data=bytes(data), serialize=lambda: timing_blob)

        def set_timing_cache(cache: Any, ignore_mismatch: bool) -> bool:
            data = object.__getattribute__(cache, "_members")["data"]
            if data not in (b"", timing_blob) and not ignore_mismatch:
                return False  # a cache from another TensorRT/GPU: not used
            cfg["timing"] = cache
            return True

        return Recorder(
            log,
            "config",
            set_memory_pool_limit=call("set_memory_pool_limit"),
            builder_optimization_level=3,
            set_flag=flags.add,
            clear_flag=flags.discard,
            get_flag=lambda f: f in flags,
            create_timing_cache=create_timing_cache,
            set_timing_cache=set_timing_cache,
            add_optimization_profile=add_profile,
            get_timing_cache=lambda: cfg["timing"],
            flags=flags,
            cfg=cfg,
        )

    def build(network: Any, config: Any) -> bytes:
        members = object.__getattribute__(config, "_members")
        state["built_flags"] = {name for name, v in flag_members.items() if v in members["flags"]}
        state["profiles"] = list(members["cfg"]["profiles"])
        log.append("build_serialized_network")
        return json.dumps({"profiles": state["profiles"]}).encode()

    builder = Recorder(
        log,
        "builder",
        create_network=create_network,
        create_builder_config=make_config,
        create_optimization_profile=make_profile,
        build_serialized_network=build,
    )
    flags = {"EXPLICIT_BATCH": 0} | ({"STRONGLY_TYPED": 1} if strongly_typed_member else {})
    logger_cls = type("Logger", (), {"WARNING": 2, "__init__": lambda self, level: None})
    runtime = types.SimpleNamespace(deserialize_cuda_engine=FakeBuiltEngine)
    module = Recorder(
        log,
        "trt",
        __version__=version,
        Logger=logger_cls,
        Builder=lambda logger: builder,
        OnnxParser=lambda network, logger: FakeParser(state, log),
        BuilderFlag=Recorder(log, "BuilderFlag", **flag_members),
        NetworkDefinitionCreationFlag=types.SimpleNamespace(**flags),
        MemoryPoolType=types.SimpleNamespace(WORKSPACE=0),
        Runtime=lambda logger: runtime,
    )
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
    # the fixed rule (heads in fp32), not the guard: these files test the TensorRT side, and on two held-out photos
    # of a formula-weight model the label-free guard keeps every block in fp32 (no int8 left to check)
    int8 = {"calib_images": coco, "calib_count": 2, "guarded": False}
    convert(root / "fp32.onnx", root / "int8.onnx", "int8", **int8)
    convert(root / "fp32.onnx", root / "int8cpu.onnx", "int8", target="cpu", **int8)
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
    side = json.loads(sidecar(engine).read_text())
    assert side["precision"] == precision and side["strongly_typed"] and side["gpu"] == "NVIDIA H200"
    assert engine_contract(engine) == read_contract(exports[precision])  # calibration provenance travels too
    prof = default_profiles(read_contract(exports[precision]))[0]
    assert state["profiles"] == [("image", prof.min, prof.opt, prof.max)]
    assert side["profiles"] == [{"min": list(prof.min), "opt": list(prof.opt), "max": list(prof.max)}]
    timing = next(tmp_path.glob("timing-*.cache"))
    assert "10.13.0.35" in timing.name and "H200" in timing.name and side["timing_cache"] == "new"
    # an unchanged build is served from the cache without touching the builder; the stored timing cache is
    # handed to the next build that needs one
    log.clear()
    assert build_engine(exports[precision], cache_dir=tmp_path) == engine
    assert not any(e.startswith("create_network") for e in log)
    build_engine(exports[precision], cache_dir=tmp_path, max_batch=2)
    assert state["timing_in"] == timing.read_bytes() != b""
    second = next(p for p in tmp_path.glob("*.engine") if p != engine)
    assert json.loads(sidecar(second).read_text())["timing_cache"] == "reused"


@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_builder_flags_are_explicit_and_recorded(
    exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, precision: str
) -> None:
    """Defect 2: TensorRT enables TF32 by default, so an engine left at the defaults computes fp32 layers in TF32."""
    from hhrnet.export.tensorrt import build_engine
    from hhrnet.runtime.tensorrt import sidecar

    trt, _, state = fake_trt()
    _patch_build(monkeypatch, trt)
    engine = build_engine(exports[precision], cache_dir=tmp_path / "10")
    assert "TF32" not in state["built_flags"]  # cleared: the fake starts with TensorRT's default (on)
    assert json.loads(sidecar(engine).read_text())["builder_flags"] == {"TF32": False}
    # a TensorRT without the member (should 11.x drop it): nothing set, recorded as absent, and a new cache key
    trt11, _, state11 = fake_trt("11.4.0", tf32_member=False)
    _patch_build(monkeypatch, trt11)
    engine11 = build_engine(exports[precision], cache_dir=tmp_path / "11")
    assert state11["built_flags"] == set()
    assert json.loads(sidecar(engine11).read_text())["builder_flags"] == {"TF32": None}


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


def test_external_weights_are_parsed_from_the_path_and_keyed(
    exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 6: ``parse(bytes)`` has no path from which to find weights stored beside the file."""
    import onnx

    from hhrnet.export.tensorrt import build_engine

    model = onnx.load(str(exports["fp32"]))
    path = tmp_path / "ext" / "m.onnx"
    path.parent.mkdir()
    onnx.save(model, str(path), save_as_external_data=True, location="m.weights", size_threshold=0)
    trt, log, state = fake_trt()
    _patch_build(monkeypatch, trt)
    engine = build_engine(path, cache_dir=tmp_path / "cache")
    assert state["parsed"] == [str(path)] and "parser.parse" not in log
    # the weights are part of what the engine is built from: changing them changes the cache key
    weights = path.parent / "m.weights"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert build_engine(path, cache_dir=tmp_path / "cache") != engine
    weights.unlink()
    with pytest.raises(BackendError, match="keeps weights in m.weights, which is missing"):
        build_engine(path, cache_dir=tmp_path / "cache")


def test_a_stale_timing_cache_is_replaced_not_silently_unused(
    exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 5: ``set_timing_cache(..., ignore_mismatch=False)`` returns False for a cache from another
    TensorRT/GPU, which is then not used."""
    from hhrnet.export.tensorrt import build_engine, timing_cache_path
    from hhrnet.runtime.tensorrt import sidecar

    trt, _, state = fake_trt()
    _patch_build(monkeypatch, trt)
    stale = timing_cache_path(tmp_path, trt.__version__, "NVIDIA H200", "9.0")
    stale.write_bytes(b"a timing cache from another driver")
    with pytest.warns(RuntimeWarning, match="timing cache does not match"):
        engine = build_engine(exports["fp32"], cache_dir=tmp_path)
    assert json.loads(sidecar(engine).read_text())["timing_cache"].startswith("replaced")
    assert state["timing_in"] == b""  # the build ran with a fresh cache, which then replaced the stale file
    assert stale.read_bytes() != b"a timing cache from another driver"


def test_a_refused_profile_is_an_error(
    exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 5: ``add_optimization_profile`` returns -1 for a profile the network cannot take."""
    import onnx

    from hhrnet.export.tensorrt import Profile, build_engine

    trt, _, state = fake_trt()
    _patch_build(monkeypatch, trt)
    model = onnx.load(str(exports["fp32"]))  # its input fixed at 128x128: a profile asking for other sizes is refused
    for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
        d.ClearField("dim_param")
        d.dim_value = 128
    fixed = tmp_path / "fixed.onnx"
    onnx.save(model, str(fixed))
    wide = Profile.parse("1x3x128x128:1x3x128x256:1x3x128x512")
    with pytest.raises(BackendError, match=r"refused the optimization profile 1x3x128x128:1x3x128x256:1x3x128x512"):
        build_engine(fixed, cache_dir=tmp_path, profiles=[wide])
    square = Profile.parse("1x3x128x128:1x3x128x128:2x3x128x128")
    build_engine(fixed, cache_dir=tmp_path, profiles=[square])
    assert state["profiles"] == [("image", square.min, square.opt, square.max)]


@pytest.mark.parametrize("tf32_member", [True, False])
def test_verify_facts_reports_what_it_finds(tf32_member: bool) -> None:
    """The GPU check's probe, run against the fake: it reports the fake's semantics back, so on a real TensorRT
    it reports TensorRT's (see test_verify_facts_on_a_real_tensorrt)."""
    from hhrnet.export.tensorrt import verify_facts

    trt, log, _ = fake_trt("11.4.0", tf32_member=tf32_member)
    facts = verify_facts(trt, execute=False)
    assert facts["tensorrt"] == "11.4.0" and facts["tf32_flag"] is tf32_member
    assert facts["tf32_default"] is (True if tf32_member else None)
    assert facts["parse_without_path"] is False and facts["parse_from_file"] is True
    assert facts["empty_profile_index"] == -1 and facts["build_tf32_cleared"] is True
    assert facts["profile_shape"] == [[1, 256], [4, 256], [4, 256]]
    assert not any(k.startswith("matmul_error") for k in facts)


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
        ),
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
    for bad in (
        "1x3x256x256:1x3x512x512",
        "1x3x250x256:1x3x512x512:1x3x512x512",
        "1x3x512x512:1x3x256x256:1x3x1024x1024",
        "1x1x256x256:1x1x256x256:1x1x256x256",
    ):
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
    assert static == Profile((1, 3, 512, 512), (2, 3, 512, 512), (2, 3, 512, 512))  # a square is sent in batches
    (multi,) = default_profiles(make_artifact(cfg, codec.replace(scales=(2.0, 1.0, 0.5)), "raw", False))
    assert multi.min == (1, 3, 256, 256) and multi.max == (2, 3, 2048, 2048)  # raw + flip: 2 rows an image
    prepared = codec.replace(scales=(2.0, 1.0, 0.5)).preprocess(np.zeros((480, 640, 3), np.uint8))
    shapes = [x.shape for _, x in prepared.inputs]
    assert all(multi.contains((2, *s)) for s in shapes)


class ShapeRecorder:
    """A raw network that records every batch it is sent (heatmaps at 1/4, tags... as the raw graph's two
    outputs: out0 (B, (1 + D) J, H/4, W/4) with D tag values per joint, out1 (B, J, H/2, W/2))."""

    def __init__(self, joints: int, tag_dim: int = 1) -> None:
        self.j, self.d, self.shapes = joints, tag_dim, []  # type: ignore[var-annotated]

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        self.shapes.append(tuple(x.shape))
        b, _, h, w = x.shape
        return [
            np.zeros((b, (1 + self.d) * self.j, h // 4, w // 4), np.float32),
            np.zeros((b, self.j, h // 2, w // 2), np.float32),
        ]


@pytest.mark.parametrize("letterbox", [0, 256])
def test_default_profile_fits_what_the_predictor_sends(letterbox: int) -> None:
    """Defect 1: a raw graph with flip sends each image with its flipped copy (twice the rows); the default
    profile (``hhrnet export --format engine``) must take every batch the predictor sends, at every shape."""
    from hhrnet.codec import Codec
    from hhrnet.config import apply_overrides, preset
    from hhrnet.export.onnx import make_artifact
    from hhrnet.export.tensorrt import default_profiles
    from hhrnet.inference import Predictor

    cfg = apply_overrides(preset("tiny"), ["data.input_size=128", "data.output_size=[32,64]"])
    codec = Codec.from_config(cfg).replace(letterbox=letterbox)
    assert codec.flip  # the configuration default
    artifact = make_artifact(cfg, codec, "raw", False)
    net = ShapeRecorder(codec.num_joints, codec.tag_dim)
    predictor = Predictor(net, codec, graph="raw")
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 255, (h, w, 3), np.uint8) for h, w in ((120, 90), (90, 170), (64, 64), (200, 130))]
    max_batch = 4 if letterbox else 1
    (profile,) = default_profiles(artifact, max_batch)
    if letterbox:
        predictor.predict_batch(images)
    else:
        for im in images:
            predictor.predict(im)
    assert net.shapes and all(profile.contains(s) for s in net.shapes), (profile, net.shapes)
    assert max(s[0] for s in net.shapes) == profile.max[0]  # and no larger than it must be
    # OPT: a square goes in full batches; the official resize sends one image (with its flip) at a time
    assert profile.opt[0] == (2 * max_batch if letterbox else 2)


def test_cli_engine_of_a_raw_graph_takes_the_predictors_batches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect 1, end to end: ``hhrnet export --format engine`` of a raw graph with flip (the defaults) records a
    profile that the runtime's own check accepts for every batch the predictor sends."""
    monkeypatch.chdir(tmp_path)  # the engine cache (.hhrnet-cache) goes into the working directory
    from test_export import TINY_128, tiny_model
    from typer.testing import CliRunner

    from hhrnet.cli.app import app
    from hhrnet.export.onnx import export_onnx, read_contract
    from hhrnet.inference import Predictor
    from hhrnet.runtime.tensorrt import check_input_shape, read_sidecar

    model, cfg = tiny_model(TINY_128)
    onnx_path = export_onnx(model, cfg, tmp_path / "raw.onnx", graph="raw", sample_size=(128, 128)).path
    codec = read_contract(onnx_path).codec
    assert codec.flip
    trt, _, _ = fake_trt()
    _patch_build(monkeypatch, trt)
    res = CliRunner().invoke(
        app, ["export", "--format", "engine", "--onnx", str(onnx_path), "--out", str(tmp_path / "e")]
    )
    assert res.exit_code == 0, res.output
    profiles = read_sidecar(tmp_path / "e")["profiles"]
    net = ShapeRecorder(codec.num_joints, codec.tag_dim)
    predictor = Predictor(net, codec, graph="raw")
    rng = np.random.default_rng(1)
    for h, w in ((120, 90), (90, 170), (128, 128), (70, 140)):  # up to 2:1 (MAX_ASPECT)
        predictor.predict(rng.integers(0, 255, (h, w, 3), np.uint8))
    assert {s[0] for s in net.shapes} == {2}  # each image with its flipped copy
    assert all(check_input_shape(s, profiles) == 0 for s in net.shapes)


def test_engine_for_triton_from_the_cli(
    exports: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``hhrnet export --format engine --max-batch 8`` of a letterboxed export: the Triton writer takes the engine
    for batches up to 8 (OPT 8, what dynamic batching sends); a default engine (1 image) it refuses, naming
    the profile to build."""
    monkeypatch.chdir(tmp_path)  # the engine cache (.hhrnet-cache) goes into the working directory
    from test_export import TINY_128, tiny_model
    from typer.testing import CliRunner

    from hhrnet.cli.app import app
    from hhrnet.codec import Codec
    from hhrnet.export.onnx import export_onnx
    from hhrnet.runtime.tensorrt import read_sidecar
    from hhrnet.serve.repository import ServeOptions, read_contract, write_repository

    model, cfg = tiny_model(TINY_128)
    boxed = Codec.from_config(cfg).replace(letterbox=128)
    onnx_path = export_onnx(model, cfg, tmp_path / "boxed.onnx", codec=boxed, sample_size=(128, 128)).path
    trt, _, state = fake_trt()
    _patch_build(monkeypatch, trt)
    runner = CliRunner()
    command = ["export", "--format", "engine", "--onnx", str(onnx_path)]
    res = runner.invoke(app, [*command, "--max-batch", "8", "--out", str(tmp_path / "b8.engine")])
    assert res.exit_code == 0, res.output
    assert state["profiles"] == [("image", (1, 3, 128, 128), (8, 3, 128, 128), (8, 3, 128, 128))]
    assert "builder flags: TF32 off" in res.output
    eight = ServeOptions(max_batch_size=8)
    repo = write_repository(tmp_path / "repo", engine=tmp_path / "b8.engine", options=eight, server_tensorrt="10.13.0")
    assert read_contract(repo.path)["tensorrt"] == read_sidecar(tmp_path / "b8.engine")["tensorrt"] == "10.13.0.35"
    res = runner.invoke(app, [*command, "--out", str(tmp_path / "b1.engine")])
    assert res.exit_code == 0, res.output
    with pytest.raises(ConfigError, match=r"--profile 1x3x128x128:8x3x128x128:8x3x128x128"):
        write_repository(tmp_path / "r1", engine=tmp_path / "b1.engine", options=eight)
    # Defect 7: a plan only loads in the TensorRT that built it: a declared server version is compared
    with pytest.raises(ConfigError, match=r"TensorRT 10\.13\.0\.35, but the server runs TensorRT 10\.11\.0"):
        write_repository(tmp_path / "r2", engine=tmp_path / "b8.engine", options=eight, server_tensorrt="10.11.0")
    with pytest.raises(ConfigError, match="MAJOR.MINOR.PATCH"):
        write_repository(tmp_path / "r3", engine=tmp_path / "b8.engine", server_tensorrt="10")


def test_engine_guard_refuses_foreign_engines(tmp_path: Path) -> None:
    from hhrnet.runtime.tensorrt import DeviceInfo, check_engine, check_input_shape, sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00" * 16)  # never deserialised: the guard decides first
    with pytest.raises(BackendError, match="no m.engine.json"):
        check_engine(engine, "10.3", DeviceInfo("H100", "9.0"))
    side = {
        "tensorrt": "10.3",
        "compute_capability": "8.6",
        "gpu": "RTX 3090",
        "profiles": [{"min": [1, 3, 256, 256], "max": [1, 3, 512, 512]}],
    }
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
    """cuda-python's runtime calls over host memory: (err, value) tuples, real memcpy, call counts, and one current
    device (what cudaSetDevice selects) that every allocation, stream and copy is checked against."""

    class cudaMemcpyKind:  # mirrors cuda-python
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self, misalign: int = 0) -> None:
        self.blocks: dict[int, Any] = {}  # kept until the test ends: a freed pointer is recorded, never reused
        self.calls: dict[str, int] = {}
        self.copies: list[tuple[int, int]] = []  # (kind, nbytes)
        self.sizes: dict[str, list[int]] = {"cudaMalloc": [], "cudaMallocHost": []}
        self.devices: dict[int, int] = {}  # device allocation or stream -> the device it was made on
        self.freed: list[int] = []
        self.current = 0
        self.misalign = misalign  # cudaMalloc returns 256-byte aligned memory; a nonzero value breaks that

    def _count(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def _alloc(self, nbytes: int, offset: int = 0) -> tuple[int, int]:
        block = ctypes.create_string_buffer(nbytes + 512)
        base = ctypes.addressof(block)
        ptr = base + (-base % 256) + offset
        self.blocks[ptr] = block
        return 0, ptr

    def cudaSetDevice(self, device: int) -> tuple[int]:
        self._count("cudaSetDevice")
        self.current = device
        return (0,)

    def cudaMalloc(self, nbytes: int) -> tuple[int, int]:
        self._count("cudaMalloc")
        self.sizes["cudaMalloc"].append(nbytes)
        err, ptr = self._alloc(nbytes, self.misalign)
        self.devices[ptr] = self.current
        return err, ptr

    def cudaMallocHost(self, nbytes: int) -> tuple[int, int]:
        self._count("cudaMallocHost")
        self.sizes["cudaMallocHost"].append(nbytes)
        return self._alloc(nbytes)

    def cudaFree(self, ptr: int) -> tuple[int]:
        self._count("cudaFree")
        self.freed.append(ptr)
        return (0,)

    def cudaFreeHost(self, ptr: int) -> tuple[int]:
        self._count("cudaFreeHost")
        return (0,)

    def cudaMemcpyAsync(self, dst: int, src: int, nbytes: int, kind: int, stream: Any) -> tuple[int]:
        assert stream == 7, "every copy goes on the session's stream"
        assert self.current == self.devices[7], "a copy queued on a stream of another device"
        ctypes.memmove(dst, src, nbytes)
        self.copies.append((kind, nbytes))
        return (0,)

    def cudaStreamCreate(self) -> tuple[int, int]:
        self._count("cudaStreamCreate")
        self.devices[7] = self.current
        return 0, 7

    def cudaStreamDestroy(self, stream: Any) -> tuple[int]:
        assert stream == 7
        self._count("cudaStreamDestroy")
        return (0,)

    def cudaStreamSynchronize(self, stream: Any) -> tuple[int]:
        assert stream == 7
        return (0,)


def _read(ptr: int, shape: tuple[int, ...], dtype: Any = np.float32) -> np.ndarray:
    dt = np.dtype(dtype)
    n = int(np.prod(shape))
    return np.frombuffer((ctypes.c_byte * (n * dt.itemsize)).from_address(ptr), dt, n).reshape(shape).copy()


class FakeContext:
    """heatmaps[b, j] = x[b, 0] + j; tags[b, j, ..., t] = x[b, 1] * (t + 1); J = 3, T = 2.

    TensorRT's rules: ``set_input_shape`` refuses a shape outside the active profile; ``set_tensor_address``
    refuses a pointer that is not 256-byte aligned; execution needs the engine's device current and every
    bound buffer large enough for its tensor."""

    J = 3

    def __init__(self, profiles: list[dict[str, list[int]]], cudart: FakeCudart, device: int) -> None:
        self.profiles, self.cudart, self.device = profiles, cudart, device
        self.addresses: dict[str, int] = {}
        self.shape: tuple[int, ...] = ()
        self.active = 0
        self.selected: list[int] = []

    def set_optimization_profile_async(self, index: int, stream: int) -> bool:
        assert stream == 7
        self.selected.append(index)
        self.active = index
        return True

    def set_input_shape(self, name: str, shape: tuple) -> bool:
        p = self.profiles[self.active]
        if not all(a <= s <= b for a, s, b in zip(p["min"], shape, p["max"], strict=True)):
            return False
        self.shape = tuple(shape)
        return True

    def get_tensor_shape(self, name: str) -> tuple[int, ...]:
        b, _, h, w = self.shape
        return {"image": self.shape, "heatmaps": (b, self.J, h, w), "tags": (b, self.J, h, w, 2)}[name]

    def set_tensor_address(self, name: str, ptr: int) -> bool:
        if ptr % 256:
            return False
        self.addresses[name] = ptr
        return True

    def execute_async_v3(self, stream: int) -> bool:
        assert stream == 7 and self.cudart.current == self.device, "the engine runs on its own device"
        if set(self.addresses) != {"image", "heatmaps", "tags"}:
            return False  # a tensor without an address: TensorRT cannot enqueue
        for name, ptr in self.addresses.items():
            need = int(np.prod(self.get_tensor_shape(name))) * 4
            assert need <= len(self.cudart.blocks[ptr]) - 512, f"{name}'s buffer is too small"
        x = _read(self.addresses["image"], self.shape)
        hm = x[:, :1] + np.arange(self.J, dtype=np.float32)[None, :, None, None]
        tags = np.stack([np.repeat(x[:, 1:2], self.J, 1) * (t + 1) for t in range(2)], -1)
        for name, arr in (("heatmaps", hm), ("tags", tags)):
            ctypes.memmove(self.addresses[name], np.ascontiguousarray(arr, np.float32).ctypes.data, arr.nbytes)
        return True


PROFILE = {"min": [1, 3, 64, 64], "opt": [1, 3, 128, 128], "max": [2, 3, 256, 256]}


def _fake_session(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    static: bool = False,
    profiles: list[dict] | None = None,
    device: int | str = 0,
    cudart: FakeCudart | None = None,
) -> tuple[Any, FakeCudart]:
    import hhrnet.deps
    import hhrnet.runtime.tensorrt as rt
    from hhrnet.codec import Codec
    from hhrnet.config import preset
    from hhrnet.export.onnx import make_artifact
    from hhrnet.export.tensorrt import sidecar_payload

    cfg = preset("tiny")
    artifact = dataclasses.replace(
        make_artifact(cfg, Codec.from_config(cfg), "aggregate", static),
        precision="int8",
        calibration={"method": "percentile", "count": 2},
    )
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"engine")
    profiles = profiles or [PROFILE]
    rt.sidecar(engine).write_text(
        json.dumps(
            sidecar_payload(
                artifact,
                key="k",
                trt_version="10.13.0",
                gpu="NVIDIA H200",
                compute_capability="9.0",
                precision="int8",
                profiles=profiles,
                onnx_sha256="0",
            )
        )
    )
    cudart = cudart or FakeCudart()
    dtype = types.SimpleNamespace(name="FLOAT")
    mode = types.SimpleNamespace(INPUT="in", OUTPUT="out")
    names = ["image", "heatmaps", "tags"]

    def deserialize(data: bytes) -> Any:
        if data != b"engine":
            return None
        on = cudart.current  # an engine lives on the device current when it is deserialised
        return types.SimpleNamespace(
            num_io_tensors=3,
            get_tensor_name=names.__getitem__,
            get_tensor_dtype=lambda n: dtype,
            get_tensor_mode=lambda n: "in" if n == "image" else "out",
            create_execution_context=lambda: FakeContext(profiles, cudart, on),
            get_tensor_profile_shape=lambda n, i: [tuple(profiles[i][k]) for k in ("min", "opt", "max")],
        )

    runtime = types.SimpleNamespace(deserialize_cuda_engine=deserialize)
    trt = types.SimpleNamespace(
        __version__="10.13.0",
        Logger=type("Logger", (), {"WARNING": 2, "__init__": lambda self, lvl: None}),
        Runtime=lambda logger: runtime,
        TensorIOMode=mode,
    )
    monkeypatch.setattr(hhrnet.deps, "require_tensorrt", lambda: trt)
    monkeypatch.setattr(rt, "_cudart", lambda: cudart)
    monkeypatch.setattr(rt, "device_info", lambda device=0: rt.DeviceInfo("NVIDIA H200", "9.0"))
    return rt.TensorRTSession(engine, device=device), cudart  # type: ignore[arg-type]


def _expected(x: np.ndarray) -> list[np.ndarray]:
    hm = x[:, :1] + np.arange(3, dtype=np.float32)[None, :, None, None]
    tags = np.stack([np.repeat(x[:, 1:2], 3, 1) * (t + 1) for t in range(2)], -1)
    return [hm, tags]


def _max_bytes(profile: dict[str, list[int]]) -> list[int]:
    """Bytes of image, heatmaps (J = 3) and tags (T = 2) at the profile's maximum, f32."""
    b, _, h, w = profile["max"]
    return [b * 3 * h * w * 4, b * 3 * h * w * 4, b * 3 * h * w * 2 * 4]


def test_runtime_allocates_once_per_profile_at_its_maximum(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 3: buffers are made once, at the profile's maximum (get_tensor_profile_shape), when the profile is
    chosen; no shape inside the profile allocates again."""
    session, cudart = _fake_session(tmp_path, monkeypatch)
    assert session.precision == "int8" and session.graph == "aggregate"
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 3, 128, 128)).astype(np.float32)
    for got, want in zip(session(x), _expected(x), strict=True):
        np.testing.assert_array_equal(got, want)
    assert cudart.calls["cudaStreamCreate"] == 1
    assert cudart.sizes["cudaMalloc"] == _max_bytes(PROFILE)  # input, heatmaps, tags at (2, 3, 256, 256)
    assert sorted(cudart.sizes["cudaMallocHost"]) == sorted(_max_bytes(PROFILE))  # the host path's staging
    for _ in range(3):  # the same shape again: no allocation, the input copied once, outputs once each
        cudart.copies.clear()
        y = rng.standard_normal(x.shape).astype(np.float32)
        for got, want in zip(session(y), _expected(y), strict=True):
            np.testing.assert_array_equal(got, want)
        assert [k for k, _ in cudart.copies] == [1, 2, 2]
    for shape in ((1, 3, 64, 96), (2, 3, 192, 256), (2, 3, 256, 256), (1, 3, 128, 64)):
        z = rng.standard_normal(shape).astype(np.float32)
        for got, want in zip(session(z), _expected(z), strict=True):
            np.testing.assert_array_equal(got, want)
    assert cudart.calls["cudaMalloc"] == 3 and cudart.calls["cudaMallocHost"] == 3  # never again
    with pytest.raises(BackendError, match="outside the engine's profiles"):
        session(np.zeros((1, 3, 512, 512), np.float32))


def test_runtime_keeps_one_set_of_buffers_per_profile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    small = {"min": [1, 3, 64, 64], "opt": [1, 3, 96, 96], "max": [1, 3, 128, 128]}
    large = {"min": [1, 3, 129, 129], "opt": [2, 3, 192, 192], "max": [2, 3, 256, 256]}
    session, cudart = _fake_session(tmp_path, monkeypatch, profiles=[small, large])
    rng = np.random.default_rng(2)
    for shape in ((1, 3, 96, 96), (2, 3, 256, 192), (1, 3, 64, 128), (1, 3, 160, 160)):
        x = rng.standard_normal(shape).astype(np.float32)
        for got, want in zip(session.run_device(x), _expected(x), strict=True):
            np.testing.assert_array_equal(_read(got.ptr, want.shape), want)  # each profile's own buffers bound
    assert cudart.sizes["cudaMalloc"] == _max_bytes(small) + _max_bytes(large)
    assert session.context.selected == [0, 1, 0, 1]


def test_run_device_hands_outputs_over_without_a_host_copy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    session, cudart = _fake_session(tmp_path, monkeypatch)
    x = np.random.default_rng(1).standard_normal((2, 3, 96, 128)).astype(np.float32)
    cudart.copies.clear()
    outs = session.run_device(x)
    assert [k for k, _ in cudart.copies] == [1]  # the input went up; nothing came back
    assert cudart.sizes["cudaMallocHost"] == _max_bytes(PROFILE)[:1]  # no pinned output buffers on this path
    for arr, want in zip(outs, _expected(x), strict=True):
        cai = arr.__cuda_array_interface__
        assert cai["shape"] == want.shape and cai["typestr"] == "<f4" and cai["version"] == 3
        np.testing.assert_array_equal(_read(cai["data"][0], want.shape), want)


def test_runtime_selects_its_device(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 4: the session's stream, buffers and engine belong to its device, and each call selects it again
    (the current device is per host thread: another thread or library may have changed it)."""
    session, cudart = _fake_session(tmp_path, monkeypatch, device=1)
    assert cudart.devices[7] == 1  # the stream
    x = np.random.default_rng(3).standard_normal((1, 3, 64, 64)).astype(np.float32)
    for _ in range(2):
        cudart.current = 0  # someone else selected device 0 in the meantime
        for got, want in zip(session(x), _expected(x), strict=True):
            np.testing.assert_array_equal(got, want)
    assert {d for p, d in cudart.devices.items() if p != 7} == {1}  # every device buffer on GPU 1
    assert _fake_session(tmp_path, monkeypatch, device="cuda:1")[0].device_index == 1  # as --device gives it
    with pytest.raises(InputError, match=r"cuda or cuda:N"):
        _fake_session(tmp_path, monkeypatch, device="cpu")


def test_runtime_checks_tensor_addresses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 5: ``set_tensor_address`` returns False for an address TensorRT cannot use (here: misaligned)."""
    session, _ = _fake_session(tmp_path, monkeypatch, cudart=FakeCudart(misalign=16))
    with pytest.raises(BackendError, match="refused the address of tensor 'image'"):
        session(np.zeros((1, 3, 64, 64), np.float32))


def test_runtime_close_and_output_lifetimes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Defect 7: ``close()`` / ``with`` destroy the stream; device views keep their memory until dropped."""
    import gc

    with _fake_session(tmp_path, monkeypatch)[0] as session:
        x = np.random.default_rng(4).standard_normal((1, 3, 64, 64)).astype(np.float32)
        outs = session.run_device(x)
        cudart = session.rt
    assert cudart.calls["cudaStreamDestroy"] == 1
    with pytest.raises(BackendError, match="closed"):
        session(x)
    del session
    gc.collect()
    ptrs = [o.ptr for o in outs]
    assert not set(ptrs) & set(cudart.freed)  # the views hold their buffers
    np.testing.assert_array_equal(_read(ptrs[0], outs[0].shape), _expected(x)[0])
    del outs
    gc.collect()
    assert set(ptrs) <= set(cudart.freed)  # released with the last view
    session, cudart = _fake_session(tmp_path / "", monkeypatch)
    session.close()
    session.close()  # idempotent
    assert cudart.calls["cudaStreamDestroy"] == 1


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
def test_verify_facts_on_a_real_tensorrt() -> None:
    """What reading NVIDIA's documentation could not settle, measured: TF32 is still a builder flag (on by
    default) that a strongly typed build honours, external weights need the path, an incomplete profile is -1."""
    _need_tensorrt()
    from hhrnet.deps import require_tensorrt
    from hhrnet.export.tensorrt import verify_facts

    facts = verify_facts(require_tensorrt())
    assert facts["parse_without_path"] is False and facts["parse_from_file"] is True, facts
    assert facts["empty_profile_index"] == -1 and facts["build_tf32_cleared"] is True, facts
    assert facts["profile_shape"] == [[1, 256], [4, 256], [4, 256]], facts
    assert facts["matmul_error_tf32_off"] < 1e-3, facts
    if facts["tf32_flag"]:
        assert facts["tf32_default"] is True, facts


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
    res = runner.invoke(
        app, ["eval", "--engine", str(engine), "--images", str(folder), "--annotations", str(folder / "test_coco.json")]
    )
    assert res.exit_code == 0, res.output
    assert "AP" in res.output
