"""Serving without a server: image limits, the repository's configs under Triton's own schema, and the
Python-backend models run through a naive stand-in for ``triton_python_backend_utils`` against in-process
predict. The real server is exercised in test_serve_server.py."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from hhrnet import samples
from hhrnet.errors import BackendError, ConfigError, InputError

pytest.importorskip("tritonclient.grpc")


# --------------------------------------------------------------------------------------------
# fixtures: a tiny exported model (formula weights), aggregate and peaks graphs
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from test_export import TINY_128, tiny_model

    from hhrnet.export.onnx import export_onnx

    model, cfg = tiny_model(TINY_128)
    root = tmp_path_factory.mktemp("onnx")
    out = {}
    for graph in ("aggregate", "peaks", "raw"):
        out[graph] = export_onnx(model, cfg, root / f"{graph}.onnx", graph=graph, sample_size=(128, 128)).path  # type: ignore[arg-type]
    out["static"] = export_onnx(model, cfg, root / "static.onnx", static=True).path
    return out


def _parse(path: Path) -> Any:
    return _parse_text(path.read_text())


def _parse_text(text: str) -> Any:
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _params(config: Any) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


# --------------------------------------------------------------------------------------------
# image limits
# --------------------------------------------------------------------------------------------


def test_image_size_reads_jpeg_and_png_headers() -> None:
    from hhrnet.serve.pipeline import image_size

    for path in samples.images() + samples.images("crowdpose"):
        data = path.read_bytes()
        decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        assert image_size(data) == (decoded.shape[1], decoded.shape[0]), path.name
    ok, png = cv2.imencode(".png", np.zeros((37, 53, 3), np.uint8))
    assert ok and image_size(png.tobytes()) == (53, 37)
    ok, progressive = cv2.imencode(".jpg", np.zeros((41, 29, 3), np.uint8), [cv2.IMWRITE_JPEG_PROGRESSIVE, 1])
    assert ok and image_size(progressive.tobytes()) == (29, 41)
    assert image_size(b"GIF89a....") is None and image_size(b"\xff\xd8\xff") is None and image_size(b"") is None


def _png_header(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width`` x ``height`` (no pixel data)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82"


def test_decode_request_image_refuses_bad_input_with_one_clear_error() -> None:
    from hhrnet.serve.pipeline import ImageLimits, decode_request_image

    limits = ImageLimits(max_bytes=1 << 20, max_pixels=1_000_000)
    jpeg = samples.images()[0].read_bytes()
    image = decode_request_image(jpeg, limits)
    assert image.shape == (425, 640, 3) and image.dtype == np.uint8
    with pytest.raises(InputError, match="100000x90000 pixels; this server accepts at most 1000000"):
        decode_request_image(_png_header(100_000, 90_000), limits)  # refused from the header, nothing decoded
    with pytest.raises(InputError, match="empty"):
        decode_request_image(b"", limits)
    with pytest.raises(InputError, match="at most 1048576"):
        decode_request_image(b"\x00" * ((1 << 20) + 1), limits)
    with pytest.raises(InputError, match="truncated JPEG"):
        decode_request_image(jpeg[: len(jpeg) // 2], limits)
    with pytest.raises(InputError, match="cannot decode"):
        decode_request_image(b"definitely not an image", limits)
    with pytest.raises(InputError, match="640x425 pixels"):
        decode_request_image(jpeg, ImageLimits(max_pixels=640 * 425 - 1))
    with pytest.raises(ConfigError):
        ImageLimits(max_bytes=0)


def test_pad_and_unpad_round_trip() -> None:
    from hhrnet.inference import Poses
    from hhrnet.serve.pipeline import pad_poses, unpad_poses

    rng = np.random.default_rng(0)
    results = [Poses(rng.random((n, 17, 3), dtype=np.float32), rng.random(n, dtype=np.float32)) for n in (3, 0, 5)]
    keypoints, scores, people = pad_poses(results, 17)
    assert keypoints.shape == (3, 5, 17, 3) and scores.shape == (3, 5) and people.ravel().tolist() == [3, 0, 5]
    assert not keypoints[0, 3:].any() and not keypoints[1].any()
    back = unpad_poses(keypoints, scores, people)
    for a, b in zip(results, back, strict=True):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.scores, b.scores)
    assert pad_poses([results[1]], 17)[0].shape == (1, 1, 17, 3)  # never an empty axis
    with pytest.raises(InputError, match="do not fit"):
        unpad_poses(keypoints, scores, np.array([[3], [0], [6]], np.int32))


def test_served_codec_letterboxes() -> None:
    from hhrnet.codec import Codec
    from hhrnet.config import preset
    from hhrnet.serve.pipeline import served_codec

    codec = Codec.from_config(preset("coco_w32_512"))
    assert served_codec(codec).letterbox == 512
    assert served_codec(codec.replace(input_size=480)).letterbox == 512  # rounded up to 64
    assert served_codec(codec, letterbox=640).letterbox == 640
    assert served_codec(codec, static_hw=(256, 256)).letterbox == 256
    with pytest.raises(ConfigError, match="fixed 256x256"):
        served_codec(codec, static_hw=(256, 256), letterbox=512)
    with pytest.raises(ConfigError, match="one scale"):
        served_codec(codec.replace(scales=(1.0, 0.5)))


# --------------------------------------------------------------------------------------------
# the repository
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("graph", ["aggregate", "peaks"])
@pytest.mark.parametrize("backend", ["onnxruntime", "python"])
def test_repository_configs_parse_with_triton_schema(
    exported: dict[str, Path], tmp_path: Path, graph: str, backend: str
) -> None:
    from hhrnet.codec import Codec
    from hhrnet.runtime.ort import OrtSession
    from hhrnet.serve.repository import ServeOptions, read_contract, write_repository

    options = ServeOptions(max_batch_size=6, max_queue_delay_us=1500, instances=3, device="cpu")
    repo = write_repository(tmp_path / "repo", onnx=exported[graph], network_backend=backend, options=options)
    artifact = OrtSession(exported[graph]).artifact
    expected_codec = artifact.codec.replace(letterbox=128)
    assert repo.codec == expected_codec
    ens, pre, net, dec = (
        _parse(repo.config_path(m)) for m in ("hhrnet", "hhrnet_preprocess", "hhrnet_network", "hhrnet_decode")
    )
    for config in (ens, pre, net, dec):
        assert config.max_batch_size == 6
    for config in (pre, net, dec):
        assert config.dynamic_batching.max_queue_delay_microseconds == 1500
        assert [(g.count, g.kind) for g in config.instance_group] == [(3, 2)]  # KIND_CPU
    assert ens.platform == "ensemble" and [i.name for i in ens.input] == ["image"]
    assert [(o.name, list(o.dims)) for o in ens.output] == [
        ("keypoints", [-1, 17, 3]),
        ("scores", [-1]),
        ("people", [1]),
    ]
    assert (pre.backend, dec.backend) == ("python", "python")
    assert [(o.name, list(o.dims)) for o in pre.output] == [("input", [3, 128, 128]), ("image_size", [2])]
    outs = {o.name: (list(o.dims), o.data_type) for o in net.output}
    assert outs["heatmaps"] == ([17, 128, 128], 11) and outs["tags"] == ([17, 128, 128, 4], 11)  # TYPE_FP32
    if graph == "peaks":
        assert outs["peak_index"] == ([17, 30], 9) and outs["peak_tags"] == ([17, 30, 4], 11)  # TYPE_INT64
    assert list(outs) == list(artifact.outputs)
    assert [i.name for i in net.input] == ["image"] and list(net.input[0].dims) == [3, 128, 128]
    if backend == "onnxruntime":
        assert net.platform == "onnxruntime_onnx" and net.default_model_filename == "model.onnx"
        assert not (repo.path / "hhrnet_network" / "1" / "model.py").exists()
    else:
        assert net.backend == "python" and _params(net)["hhrnet.network_file"] == "model.onnx"
        assert "NetworkModel as TritonPythonModel" in (repo.path / "hhrnet_network" / "1" / "model.py").read_text()
    assert (repo.path / "hhrnet_network" / "1" / "model.onnx").read_bytes() == exported[graph].read_bytes()
    # every tensor an ensemble step reads is the ensemble input or an earlier step's output, with the step
    # model's own tensor names on the keys
    produced = {"image"}
    models = {"hhrnet_preprocess": pre, "hhrnet_network": net, "hhrnet_decode": dec}
    for step in ens.ensemble_scheduling.step:
        model = models[step.model_name]
        assert set(step.input_map) == {i.name for i in model.input}
        assert set(step.input_map.values()) <= produced
        assert set(step.output_map) <= {o.name for o in model.output}
        produced |= set(step.output_map.values())
    assert {"keypoints", "scores", "people"} <= produced
    for config in (ens, pre, dec):  # the contract travels with the repository
        assert Codec.from_json(_params(config)["hhrnet.codec"]) == expected_codec
    assert _params(pre)["hhrnet.graph"] == graph and _params(dec)["hhrnet.graph"] == graph
    contract = read_contract(repo.path)
    assert contract["network_backend"] == backend and Codec.from_dict(contract["served_codec"]) == expected_codec


def _fake_engine(tmp_path: Path, onnx: Path, profile_max: int) -> Path:
    from hhrnet.export.tensorrt import sidecar_payload
    from hhrnet.runtime.ort import OrtSession
    from hhrnet.runtime.tensorrt import sidecar

    engine = tmp_path / "m.engine"
    engine.write_bytes(b"not a real engine: only the writer reads it")
    prof = {"min": [1, 3, 64, 64], "opt": [1, 3, 128, 128], "max": [profile_max, 3, 256, 256]}
    sidecar(engine).write_text(
        json.dumps(
            sidecar_payload(
                OrtSession(onnx).artifact,
                key="k",
                trt_version="10.3",
                gpu="H100",
                compute_capability="9.0",
                precision="fp16",
                profiles=[prof],
                onnx_sha256="0",
            )
        )
    )
    return engine


def test_repository_from_a_tensorrt_engine(exported: dict[str, Path], tmp_path: Path) -> None:
    from hhrnet.serve.repository import ServeOptions, write_repository

    engine = _fake_engine(tmp_path, exported["aggregate"], profile_max=8)
    repo = write_repository(tmp_path / "repo", engine=engine, options=ServeOptions(max_batch_size=8))
    net = _parse(repo.config_path("hhrnet_network"))
    assert net.platform == "tensorrt_plan" and net.default_model_filename == "model.plan"
    assert [(g.count, g.kind) for g in net.instance_group] == [(1, 1)]  # KIND_GPU
    assert list(net.output[1].dims) == [17, 128, 128, 4]
    version = repo.path / "hhrnet_network" / "1"
    assert (version / "model.plan").read_bytes() == engine.read_bytes()
    assert json.loads((version / "model.plan.json").read_text())["precision"] == "fp16"  # sidecar beside it
    with pytest.raises(ConfigError, match=r"do not cover batches 1\.\.16 of 128x128.*--profile 1x3x128x128"):
        write_repository(tmp_path / "r2", engine=engine, options=ServeOptions(max_batch_size=16))


def test_configs_are_written_through_the_triton_schema(
    exported: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hhrnet.serve.repository import pbtxt, write_repository

    with pytest.raises(ConfigError, match="max_batchsize"):
        pbtxt({"name": "m", "max_batchsize": 8})  # misspelt field
    with pytest.raises(ConfigError, match="KIND_TPU"):
        pbtxt({"name": "m", "instance_group": [{"count": 1, "kind": "KIND_TPU"}]})
    text = pbtxt({"name": "m", "parameters": {"codec": {"string_value": '{"a": "b\\n"}'}}})
    assert _params(_parse_text(text)) == {"codec": '{"a": "b\\n"}'}  # quotes and escapes survive

    monkeypatch.setitem(sys.modules, "tritonclient.grpc", None)  # an install without the schema
    with pytest.raises(BackendError, match=r"\.\[triton\]"):
        write_repository(tmp_path / "repo", onnx=exported["aggregate"])
    assert not (tmp_path / "repo").exists() and not list(tmp_path.iterdir())  # nothing written


def test_repository_refusals(exported: dict[str, Path], tmp_path: Path) -> None:
    from hhrnet.serve.repository import ServeOptions, write_repository

    with pytest.raises(ConfigError, match="aggregate or peaks graph"):
        write_repository(tmp_path / "a", onnx=exported["raw"])
    with pytest.raises(ConfigError, match="fixed batch of 1"):
        write_repository(tmp_path / "b", onnx=exported["static"])
    with pytest.raises(ConfigError, match="needs an engine"):
        write_repository(tmp_path / "c", onnx=exported["aggregate"], network_backend="tensorrt")
    with pytest.raises(ConfigError, match="one network"):
        write_repository(tmp_path / "d")
    with pytest.raises(ConfigError, match="instances"):
        ServeOptions(instances=0)
    (tmp_path / "e").mkdir()
    (tmp_path / "e" / "keep.txt").write_text("x")
    with pytest.raises(ConfigError, match="not empty"):
        write_repository(tmp_path / "e", onnx=exported["aggregate"])
    assert (tmp_path / "e" / "keep.txt").read_text() == "x"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging folder left behind
    with pytest.raises(BackendError, match="not found"):
        write_repository(tmp_path / "f", engine=tmp_path / "missing.engine")


# --------------------------------------------------------------------------------------------
# the Python-backend models, through a naive stand-in for triton_python_backend_utils
# --------------------------------------------------------------------------------------------


class _Tensor:
    def __init__(self, name: str, array: np.ndarray) -> None:
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class _Response:
    def __init__(self, output_tensors: list[_Tensor], error: Any = None) -> None:
        self.outputs = {t.name(): t.as_numpy() for t in output_tensors}
        self.error = error


class _Error:
    def __init__(self, message: str) -> None:
        self.message = message


def _fake_pb_utils() -> types.ModuleType:
    """What the models use of Triton's module: Tensor, InferenceResponse, TritonError, two helpers."""
    module = types.ModuleType("triton_python_backend_utils")
    module.Tensor = _Tensor  # type: ignore[attr-defined]
    module.InferenceResponse = _Response  # type: ignore[attr-defined]
    module.TritonError = _Error  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = lambda request, name: request.get(name)  # type: ignore[attr-defined]
    numpy_types = {"TYPE_FP32": np.float32, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32}
    module.triton_string_to_numpy = numpy_types.__getitem__  # type: ignore[attr-defined]
    return module


def _config_json(path: Path) -> str:
    """config.pbtxt as the JSON Triton hands to initialize()."""
    from google.protobuf import json_format

    return json.dumps(json_format.MessageToDict(_parse(path), preserving_proto_field_name=True))


def _load(repo: Path, name: str, cls: type) -> Any:
    model = cls()
    model.initialize(
        {
            "model_config": _config_json(repo / name / "config.pbtxt"),
            "model_repository": str(repo / name),
            "model_version": "1",
        }
    )
    return model


@pytest.mark.parametrize("graph", ["aggregate", "peaks"])
def test_backend_models_equal_in_process_predict(
    exported: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, graph: str
) -> None:
    """preprocess -> network -> decode as Triton chains them (batched requests, one corrupt) == predict."""
    from hhrnet.load import open_model
    from hhrnet.serve.backend import DecodeModel, NetworkModel, PreprocessModel
    from hhrnet.serve.repository import ServeOptions, write_repository

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", _fake_pb_utils())
    repo = write_repository(
        tmp_path / "repo", onnx=exported[graph], network_backend="python", options=ServeOptions(device="cpu")
    )
    pre, net, dec = (
        _load(repo.path, n, c)
        for n, c in (
            ("hhrnet_preprocess", PreprocessModel),
            ("hhrnet_network", NetworkModel),
            ("hhrnet_decode", DecodeModel),
        )
    )
    files = samples.images()
    payloads = [p.read_bytes() for p in files]

    def request(*items: bytes) -> dict[str, _Tensor]:
        data = np.empty((len(items), 1), np.object_)
        data[:, 0] = items
        return {"image": _Tensor("image", data)}

    # one dynamic batch of three requests: two images, a corrupt one, two images
    pre_out = pre.execute(
        [request(payloads[0], payloads[1]), request(b"not an image at all"), request(payloads[2], payloads[3])]
    )
    assert pre_out[1].error is not None and "cannot decode" in pre_out[1].error.message
    good = [pre_out[0], pre_out[2]]
    assert all(r.error is None for r in good) and good[0].outputs["input"].shape == (2, 3, 128, 128)
    assert good[1].outputs["image_size"].tolist() == [[640, 429], [640, 392]]
    net_out = net.execute([{"image": _Tensor("image", r.outputs["input"])} for r in good])
    assert [r.outputs["heatmaps"].shape[0] for r in net_out] == [2, 2]
    dec_in = [
        {
            **{k: _Tensor(k, v) for k, v in n.outputs.items()},
            "image_size": _Tensor("image_size", p.outputs["image_size"]),
        }
        for n, p in zip(net_out, good, strict=True)
    ]
    dec_out = dec.execute(dec_in)

    from hhrnet.serve.pipeline import unpad_poses

    served = [p for r in dec_out for p in unpad_poses(r.outputs["keypoints"], r.outputs["scores"], r.outputs["people"])]
    predictor = open_model(onnx=exported[graph], letterbox=128).predictor()
    from hhrnet.images import read_image

    reference = predictor.predict_batch([read_image(p) for p in files])
    assert sum(len(p) for p in reference) > 0  # a comparison of nothing would prove nothing
    for a, b in zip(served, reference, strict=True):
        np.testing.assert_array_equal(a.keypoints, b.keypoints)
        np.testing.assert_array_equal(a.scores, b.scores)
    # non-finite maps: an error for that request, the others decoded
    bad = {k: _Tensor(k, v.as_numpy().copy()) for k, v in dec_in[0].items()}
    bad["heatmaps"].as_numpy()[0, 0, 0, 0] = np.nan
    mixed = dec.execute([bad, dec_in[1]])
    assert mixed[0].error is not None and "NaN" in mixed[0].error.message and mixed[1].error is None


def test_serving_modules_do_not_import_torch() -> None:
    code = (
        "import sys, hhrnet.serve.backend, hhrnet.serve.pipeline, hhrnet.serve.repository, "
        "hhrnet.serve.client, hhrnet.serve.server; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"


def test_serve_without_pytriton_says_so_before_writing_anything(
    exported: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import importlib.util

    from hhrnet.cli.app import main

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "pytriton" else real(name, *a))
    keep = tmp_path / "repo"
    assert main(["serve", "--onnx", str(exported["aggregate"]), "--keep-repository", str(keep)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: serving needs PyTriton") and err.count("\n") == 1, err
    assert not keep.exists()
