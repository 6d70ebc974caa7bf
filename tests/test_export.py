"""ONNX export (three variants, dynamic shapes, metadata, TensorRT op allowlist), backends, TensorRT guards."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from golden_weights import fill_formula_weights

from hhrnet import samples
from hhrnet.config import apply_overrides, preset
from hhrnet.errors import BackendError, InputError
from hhrnet.model import build_model


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, object]:
    cfg = apply_overrides(preset("tiny"), ["data.input_size=128", "data.output_size=[32,64]"])
    model = build_model(cfg).eval()
    fill_formula_weights(model, 5)  # non-trivial outputs, so output errors mean something
    return model, cfg


@pytest.mark.parametrize("variant", ["raw", "aggregate", "peaks"])
def test_variants_export_check_and_match_torch(tiny: tuple, tmp_path: Path, variant: str) -> None:
    from hhrnet.export.onnx import export_onnx, read_metadata
    from hhrnet.export.opsets import TENSORRT_ONNX_OPS

    model, cfg = tiny
    rep = export_onnx(model, cfg, tmp_path / f"{variant}.onnx", variant=variant, sample_size=(128, 128),  # type: ignore[arg-type]
                      check_shapes=[(1, 128, 128), (2, 96, 160)])  # fmt: skip
    assert set(rep.op_types) <= TENSORRT_ONNX_OPS
    assert rep.max_abs_error and max(rep.max_abs_error.values()) < 1e-4
    meta = read_metadata(rep.path)
    assert meta["variant"] == variant and meta["num_joints"] == "17"
    assert json.loads(meta["flip_index"]) == list(cfg.data.flip_index)
    assert json.loads(meta["config"])["data"]["input_size"] == 128


def test_allowlist_rejects_unsupported_ops() -> None:
    from hhrnet.export.opsets import unsupported_ops

    assert unsupported_ops(["Conv", "Relu", "Resize", "TopK"]) == []
    assert unsupported_ops(["Conv", "MyCustomNMS", "NonMaxSuppressionXYZ"]) == ["MyCustomNMS", "NonMaxSuppressionXYZ"]


def test_aggregate_graph_equals_pipeline_aggregation(tiny: tuple, tmp_path: Path) -> None:
    import onnxruntime as ort

    from hhrnet.export.onnx import export_onnx
    from hhrnet.inference import Predictor, torch_network

    model, cfg = tiny
    export_onnx(model, cfg, tmp_path / "agg.onnx", variant="aggregate", sample_size=(128, 128))
    sess = ort.InferenceSession(str(tmp_path / "agg.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 160)).astype(np.float32)
    hm, tags = sess.run(None, {"image": x})
    pred = Predictor(torch_network(model), cfg, aggregator="torch")
    outs, flipped = pred.run_network(x)
    ref_hm, ref_tags = pred.aggregate(outs, flipped, (128, 160))
    np.testing.assert_allclose(hm, ref_hm, atol=1e-5)
    np.testing.assert_allclose(tags, ref_tags, atol=1e-5)


def test_peaks_variant_decodes_like_raw(tiny: tuple, tmp_path: Path) -> None:
    import onnxruntime as ort

    from hhrnet.export.onnx import export_onnx
    from hhrnet.kernels.peaks import peaks_jhw

    model, cfg = tiny
    export_onnx(model, cfg, tmp_path / "peaks.onnx", variant="peaks", sample_size=(128, 128))
    sess = ort.InferenceSession(str(tmp_path / "peaks.onnx"), providers=["CPUExecutionProvider"])
    x = np.random.default_rng(1).standard_normal((1, 3, 128, 128)).astype(np.float32)
    hm, tags, vals, index, ptags = sess.run(None, {"image": x})
    ref_vals, ref_index, ref_tags = peaks_jhw(hm[0], tags[0], 30, 2)
    np.testing.assert_allclose(vals[0], ref_vals, atol=1e-6)  # same peak values in the same order
    distinct = np.array([len(np.unique(v)) == len(v) for v in ref_vals])  # ties may be ordered differently
    np.testing.assert_array_equal(index[0][distinct], ref_index[distinct])
    np.testing.assert_allclose(ptags[0][distinct], ref_tags[distinct], atol=1e-6)


def test_onnxruntime_backend_and_parity(tiny: tuple, tmp_path: Path) -> None:
    from hhrnet.export.backends import OnnxRuntimeBackend, config_from_onnx, create_backend
    from hhrnet.export.onnx import export_onnx
    from hhrnet.export.parity import decoded_parity

    model, cfg = tiny
    export_onnx(model, cfg, tmp_path / "raw.onnx", sample_size=(128, 128))
    backend = OnnxRuntimeBackend(tmp_path / "raw.onnx")
    out = backend(np.zeros((2, 3, 128, 96), np.float32))
    assert out[0].shape == (2, 34, 32, 24) and out[1].shape == (2, 17, 64, 48)
    assert config_from_onnx(tmp_path / "raw.onnx") == cfg
    summary = decoded_parity(model, cfg, tmp_path / "raw.onnx", samples.folder("coco"))
    assert summary.images == 4 and summary.identical and summary.max_output_error < 1e-4
    net, cfg2 = create_backend("auto", onnx=tmp_path / "raw.onnx")
    assert net.name == "onnxruntime" and cfg2 == cfg
    export_onnx(model, cfg, tmp_path / "agg.onnx", variant="aggregate", sample_size=(128, 128))
    with pytest.raises(BackendError, match="aggregate"):
        OnnxRuntimeBackend(tmp_path / "agg.onnx")
    with pytest.raises(BackendError, match="not found"):
        OnnxRuntimeBackend(tmp_path / "missing.onnx")


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
    from hhrnet.export.tensorrt import sidecar
    from hhrnet.export.trt_runtime import DeviceInfo, check_engine, check_input_shape

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
def test_tensorrt_engine_matches_onnxruntime(tiny: tuple, tmp_path: Path) -> None:
    from hhrnet.deps import tensorrt_or_none

    if tensorrt_or_none() is None or not torch.cuda.is_available():
        pytest.skip("needs TensorRT and a CUDA GPU")
    from hhrnet.export.backends import OnnxRuntimeBackend
    from hhrnet.export.onnx import export_onnx
    from hhrnet.export.tensorrt import Profile, build_engine
    from hhrnet.export.trt_runtime import TensorRTBackend

    model, cfg = tiny
    export_onnx(model, cfg, tmp_path / "m.onnx", sample_size=(128, 128))
    engine = build_engine(tmp_path / "m.onnx", precision="fp32", cache_dir=tmp_path,
                          profiles=[Profile.parse("1x3x64x64:1x3x128x128:2x3x256x256")])  # fmt: skip
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 128)).astype(np.float32)
    for a, b in zip(TensorRTBackend(engine)(x), OnnxRuntimeBackend(tmp_path / "m.onnx")(x), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-3)
    assert (
        build_engine(
            tmp_path / "m.onnx",
            precision="fp32",
            cache_dir=tmp_path,
            profiles=[Profile.parse("1x3x64x64:1x3x128x128:2x3x256x256")],
        )
        == engine
    )  # cached
