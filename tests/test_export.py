"""ONNX export: graphs, the contract carried in the file, precedence, static inputs, parity with PyTorch."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from golden_weights import fill_formula_weights

from hhrnet import samples
from hhrnet.codec import Codec
from hhrnet.config import apply_overrides, preset
from hhrnet.errors import BackendError, ConfigError, InputError
from hhrnet.model import build_model

TINY_128 = ["data.input_size=128", "data.output_size=[32,64]"]
OFFICIAL_TAGS = ["model.tag_dim=1", "model.tag_position=false"]  # one value per tag, no position term
CROWD = ["data.dataset=crowdpose", "model.num_joints=14", "data.num_joints=14"]


def tiny_model(overrides: list[str], seed: int = 5) -> tuple[torch.nn.Module, object]:
    cfg = apply_overrides(preset("tiny"), overrides)
    model = build_model(cfg).eval()
    fill_formula_weights(model, seed)  # non-trivial outputs, so output errors mean something
    return model, cfg


@pytest.fixture(scope="module")
def tiny() -> tuple[torch.nn.Module, object]:
    return tiny_model(TINY_128)


@pytest.mark.parametrize("graph", ["raw", "aggregate", "peaks"])
def test_graphs_export_check_and_match_torch(tiny: tuple, tmp_path: Path, graph: str) -> None:
    from hhrnet.export.onnx import export_onnx, read_contract
    from hhrnet.export.opsets import TENSORRT_ONNX_OPS

    model, cfg = tiny
    rep = export_onnx(
        model,
        cfg,
        tmp_path / f"{graph}.onnx",
        graph=graph,
        sample_size=(128, 128),  # type: ignore[arg-type]
        check_shapes=[(1, 128, 128), (2, 96, 160)],
    )
    assert set(rep.op_types) <= TENSORRT_ONNX_OPS
    assert rep.max_abs_error and max(rep.max_abs_error.values()) < 1e-4
    art = read_contract(rep.path)
    assert art == rep.artifact and art.graph == graph and art.precision == "fp32" and art.static_hw is None
    assert art.codec == Codec.from_config(cfg) and art.build_config() == cfg


@pytest.mark.parametrize(
    ("overrides", "flip", "static"),
    [([], None, False), ([], False, False), (["data.input_size=192"], None, True), (CROWD, None, False)],
    ids=["default", "no-flip", "static-192", "crowdpose"],
)
def test_contract_round_trip_config_onnx_engine_sidecar(
    tmp_path: Path, overrides: list[str], flip: bool | None, static: bool
) -> None:
    """config -> ONNX -> contract equal; the engine sidecar alone -> the same contract (no ONNX file needed)."""
    from hhrnet.export.onnx import export_onnx
    from hhrnet.export.tensorrt import sidecar_payload
    from hhrnet.runtime.ort import OrtSession
    from hhrnet.runtime.tensorrt import engine_contract, sidecar

    model, cfg = tiny_model([*TINY_128, *overrides] if not static else overrides)
    codec = Codec.from_config(cfg, flip=flip)
    rep = export_onnx(model, cfg, tmp_path / "m.onnx", codec=codec, static=static)
    session = OrtSession(rep.path)
    expected = codec.replace(letterbox=cfg.data.input_size) if static else codec
    assert session.artifact.codec == expected
    assert session.artifact.static_hw == ((192, 192) if static else None)
    assert session.artifact.codec.flip is (flip is not False)
    assert session.artifact.codec.dataset == cfg.data.dataset
    (tmp_path / "m.onnx").unlink()  # the engine must not need it
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"\x00")
    import json

    sidecar(engine).write_text(
        json.dumps(
            sidecar_payload(
                rep.artifact,
                key="k",
                trt_version="10.3",
                gpu="H100",
                compute_capability="9.0",
                precision="fp32",
                profiles=[],
                onnx_sha256="0",
            )
        )
    )
    assert engine_contract(engine) == rep.artifact


def test_aggregate_graph_equals_exact_host_pipeline(tiny: tuple, tmp_path: Path) -> None:
    from hhrnet.export.onnx import export_onnx
    from hhrnet.inference import Predictor, torch_network
    from hhrnet.runtime.ort import OrtSession

    model, cfg = tiny
    export_onnx(model, cfg, tmp_path / "agg.onnx", sample_size=(128, 128))
    session = OrtSession(tmp_path / "agg.onnx")
    x = np.random.default_rng(0).standard_normal((1, 3, 128, 160)).astype(np.float32)
    got = Predictor(session, session.artifact.codec).batch_maps(x, (128, 160))[0]
    ref = Predictor(torch_network(model), Codec.from_config(cfg)).batch_maps(x, (128, 160))[0]
    np.testing.assert_allclose(got.heatmaps, ref.heatmaps, atol=1e-5)
    np.testing.assert_allclose(got.tags, ref.tags, rtol=1e-6, atol=1e-5)  # position tags reach ~100: relative too


@pytest.mark.parametrize("graph", ["raw", "aggregate", "peaks"])
@pytest.mark.parametrize(
    ("override", "channels", "dims"),
    [("model.tag_dim=2", 17, 4), ("model.tag_per_joint=false", 1, 2), ("model.tag_position=true", 17, 2)],
)
def test_tag_layouts_export_and_run_as_in_torch(
    tmp_path: Path, graph: str, override: str, channels: int, dims: int
) -> None:
    """D-vector tags (``model.tag_dim``, not official) and one tag map shared by every joint (official
    TAG_PER_JOINT False): every graph carries the layout in its contract, the runtime's maps equal torch's, and
    the whole path decodes; an export refuses a codec with another layout. Tags with a position term
    (``model.tag_position``, not official) keep the layout; the graph builds the coordinates from the input's own
    size (exported at 128 x 128, run at 128 x 160)."""
    from hhrnet.export.onnx import export_onnx
    from hhrnet.images import read_image
    from hhrnet.inference import Predictor, torch_network
    from hhrnet.runtime.ort import OrtSession

    model, cfg = tiny_model([*TINY_128, *OFFICIAL_TAGS, override], seed=7)
    codec = Codec.from_config(cfg)
    assert (codec.tag_channels, codec.tag_dims) == (channels, dims)
    rep = export_onnx(model, cfg, tmp_path / "m.onnx", graph=graph, sample_size=(128, 128))  # type: ignore[arg-type]
    session = OrtSession(rep.path)
    assert session.artifact.codec == codec
    x = np.random.default_rng(2).standard_normal((1, 3, 128, 160)).astype(np.float32)
    got = Predictor(session, codec).batch_maps(x, (128, 160))[0]
    ref = Predictor(torch_network(model), codec).batch_maps(x, (128, 160))[0]
    assert got.tags.shape == ref.tags.shape == (channels, 128, 160, dims)
    np.testing.assert_allclose(got.tags, ref.tags, rtol=1e-6, atol=1e-5)  # position tags reach ~50: relative too
    if got.peaks is not None:  # the peaks graph gathers every joint's peak tags from the shared map
        index = got.peaks[1]
        flat = ref.tags.reshape(channels, -1, dims)
        expected = np.stack([flat[0 if channels == 1 else j, index[j]] for j in range(17)])
        distinct = np.array([len(np.unique(v)) == len(v) for v in got.peaks[0]])
        np.testing.assert_allclose(got.peaks[2][distinct], expected[distinct], rtol=1e-6, atol=1e-5)
    if codec.tag_dim == 2 or codec.tag_channels == 1:
        other = codec.replace(tag_dim=1) if codec.tag_dim == 2 else codec.replace(tag_channels=17)
        with pytest.raises(ConfigError, match="tag_dim=2|tag_channels=1"):
            session.artifact.check(other)
    poses = Predictor(session, codec).predict(read_image(samples.images()[0]))  # the whole path decodes
    assert poses.keypoints.shape[1:] == (17, 3) and np.isfinite(poses.keypoints).all()


def test_peaks_graph_feeds_the_decoder(tiny: tuple, tmp_path: Path) -> None:
    from hhrnet.export.onnx import export_onnx
    from hhrnet.kernels.decode import decode, decode_from_peaks
    from hhrnet.kernels.peaks import peaks_jhw
    from hhrnet.runtime.ort import OrtSession

    model, cfg = tiny
    export_onnx(model, cfg, tmp_path / "peaks.onnx", graph="peaks", sample_size=(128, 128))
    session = OrtSession(tmp_path / "peaks.onnx")
    x = np.random.default_rng(1).standard_normal((1, 3, 128, 128)).astype(np.float32)
    hm, tags, vals, index, ptags = session(x)
    ref_vals, ref_index, ref_tags = peaks_jhw(hm[0], tags[0], 30, 2)
    np.testing.assert_allclose(vals[0], ref_vals, atol=1e-6)  # same peak values in the same order
    distinct = np.array([len(np.unique(v)) == len(v) for v in ref_vals])  # ties may be ordered differently
    np.testing.assert_array_equal(index[0][distinct], ref_index[distinct])
    np.testing.assert_allclose(ptags[0][distinct], ref_tags[distinct], atol=1e-6)
    params = dataclasses.replace(session.artifact.codec.decode, detection_threshold=0.0)  # many candidates
    a = decode_from_peaks(hm[0], tags[0], ref_vals, ref_index, ref_tags, params)
    b = decode(hm[0], tags[0], params)
    np.testing.assert_array_equal(a[0], b[0])  # the kernel's own peaks give exactly decode()'s answer
    with pytest.raises(InputError, match="do not match"):
        decode_from_peaks(hm[0], tags[0], ref_vals[:, :5], ref_index, ref_tags, params)


def test_ort_session_errors_and_parity(tiny: tuple, tmp_path: Path) -> None:
    from hhrnet.export.onnx import export_onnx
    from hhrnet.export.parity import decoded_parity
    from hhrnet.runtime.ort import OrtSession

    model, cfg = tiny
    export_onnx(model, cfg, tmp_path / "raw.onnx", graph="raw", sample_size=(128, 128))
    session = OrtSession(tmp_path / "raw.onnx")
    out = session(np.zeros((2, 3, 128, 96), np.float32))
    assert out[0].shape == (2, 51, 32, 24) and out[1].shape == (2, 17, 64, 48)  # J heatmaps + 2 x J tags
    summary = decoded_parity(model, session, samples.folder("coco"))
    assert summary.images == 4 and summary.identical and summary.max_map_error < 1e-4
    with pytest.raises(BackendError, match="not found"):
        OrtSession(tmp_path / "missing.onnx")
    (tmp_path / "junk.onnx").write_bytes(b"this is not a protobuf")
    with pytest.raises(BackendError, match="not an ONNX model"):
        OrtSession(tmp_path / "junk.onnx")
    import onnx

    bare = onnx.load(str(tmp_path / "raw.onnx"))
    del bare.metadata_props[:]
    onnx.save(bare, str(tmp_path / "bare.onnx"))
    with pytest.raises(ConfigError, match="carries no hhrnet contract"):
        OrtSession(tmp_path / "bare.onnx")


def test_static_export_letterboxes_every_image(tmp_path: Path) -> None:
    """A fixed-shape export runs photos of any size (the codec letterboxes), and says so when fed a wrong shape."""
    from hhrnet.export.onnx import export_onnx
    from hhrnet.images import read_image
    from hhrnet.load import open_model

    model, cfg = tiny_model(["data.input_size=128", "data.output_size=[32,64]"])
    export_onnx(model, cfg, tmp_path / "s.onnx", static=True)
    loaded = open_model(onnx=tmp_path / "s.onnx")
    assert loaded.codec.letterbox == 128 and loaded.artifact is not None and loaded.artifact.static_hw == (128, 128)
    predictor = loaded.predictor()
    for path in samples.images("coco"):  # 640x425, 500x333, ...: all go through the same 128x128 input
        predictor.predict(read_image(path))
    with pytest.raises(InputError, match="takes 128x128 inputs only"):
        loaded.network(np.zeros((1, 3, 128, 192), np.float32))
    with pytest.raises(ConfigError, match="fixed 128x128 input"):
        open_model(onnx=tmp_path / "s.onnx", letterbox=256)


def test_precedence_artifact_then_config_then_set(tmp_path: Path) -> None:
    """The artifact's own codec is the base; --set changes only what it names; what the graph bakes in is kept."""
    from hhrnet.export.onnx import export_onnx
    from hhrnet.load import open_model

    model, cfg = tiny_model(TINY_128)
    export_onnx(model, cfg, tmp_path / "nf.onnx", codec=Codec.from_config(cfg, flip=False))
    plain = open_model(onnx=tmp_path / "nf.onnx")
    assert plain.codec.flip is False and plain.config == cfg
    tuned = open_model(onnx=tmp_path / "nf.onnx", overrides=["test.detection_threshold=0.3"])
    assert tuned.codec.decode.detection_threshold == 0.3
    assert tuned.codec.flip is False  # the export's choice survives an unrelated --set
    assert tuned.codec.replace(decode=plain.codec.decode) == plain.codec
    with pytest.raises(ConfigError, match="flip=False"):
        open_model(onnx=tmp_path / "nf.onnx", flip=True)
    other = open_model(onnx=tmp_path / "nf.onnx", config="tiny", overrides=[*TINY_128, "test.tag_threshold=2.0"])
    assert other.codec.decode.tag_threshold == 2.0 and other.config.test.tag_threshold == 2.0
