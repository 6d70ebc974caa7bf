"""TensorRT: profiles, cache keys, the guard before deserialising, and (GPU only) engines vs ONNX Runtime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from hhrnet.errors import BackendError, InputError


def test_profiles_and_cache_keys() -> None:
    from hhrnet.export.tensorrt import BuildSpec, Profile, cache_key

    p = Profile.parse("1x3x256x256:1x3x512x512:4x3x1024x1024")
    assert p.contains((2, 3, 512, 704)) and not p.contains((8, 3, 512, 512))
    for bad in (
        "1x3x256x256:1x3x512x512",
        "1x3x250x256:1x3x512x512:1x3x512x512",
        "1x3x512x512:1x3x256x256:1x3x1024x1024",
    ):
        with pytest.raises(InputError):
            Profile.parse(bad)
    spec = BuildSpec("fp16", (p,))
    k = cache_key(b"onnx", spec, "10.3", "9.0")
    assert k == cache_key(b"onnx", spec, "10.3", "9.0")
    assert (
        len(
            {
                k,
                cache_key(b"onnx2", spec, "10.3", "9.0"),
                cache_key(b"onnx", spec, "10.4", "9.0"),
                cache_key(b"onnx", spec, "10.3", "8.9"),
                cache_key(b"onnx", BuildSpec("int8", (p,)), "10.3", "9.0"),
            }
        )
        == 5
    )


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


def test_tensorrt_missing_is_one_clear_error(tmp_path: Path) -> None:
    from hhrnet.deps import tensorrt_or_none
    from hhrnet.export.tensorrt import build_engine

    if tensorrt_or_none() is not None:
        pytest.skip("TensorRT is installed here")
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(BackendError, match="TensorRT is not installed"):
        build_engine(tmp_path / "m.onnx", precision="fp16")


@pytest.mark.tensorrt
def test_tensorrt_engine_matches_onnxruntime(tmp_path: Path) -> None:
    from hhrnet.deps import tensorrt_or_none

    if tensorrt_or_none() is None or not torch.cuda.is_available():
        pytest.skip("needs TensorRT and a CUDA GPU")
    from test_export import TINY_128, tiny_model

    from hhrnet.export.onnx import export_onnx
    from hhrnet.export.tensorrt import Profile, build_engine
    from hhrnet.runtime.ort import OrtSession
    from hhrnet.runtime.tensorrt import TensorRTSession

    model, cfg = tiny_model(TINY_128)
    export_onnx(model, cfg, tmp_path / "m.onnx", sample_size=(128, 128))
    profiles = [Profile.parse("1x3x64x64:1x3x128x128:2x3x256x256")]
    engine = build_engine(tmp_path / "m.onnx", precision="fp32", cache_dir=tmp_path, profiles=profiles)
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    for a, b in zip(TensorRTSession(engine)(x), OrtSession(tmp_path / "m.onnx")(x), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)
    assert build_engine(tmp_path / "m.onnx", precision="fp32", cache_dir=tmp_path, profiles=profiles) == engine
