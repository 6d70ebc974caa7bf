"""Test-time pipeline: official geometry (golden), host aggregation equal to torch's bit for bit, the default
pipeline equal to the official one on real photos, ideal-network round trip, batching."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import assert_torch_equal, torch_simd

from hhrnet import samples
from hhrnet.aggregate import aggregate as agg_torch
from hhrnet.codec import Codec, affine_transform, multi_scale_size, to_image_coords
from hhrnet.config import apply_overrides, preset
from hhrnet.datasets import COCO
from hhrnet.errors import InputError
from hhrnet.images import read_image
from hhrnet.inference import Predictor
from hhrnet.kernels.aggregate import aggregate as agg_np
from hhrnet.kernels.decode import decode
from hhrnet.kernels.params import DecodeParams


def test_official_base_sizes() -> None:
    assert multi_scale_size(640, 480, 512, 1.0, 1.0)[0] == (704, 512)
    assert multi_scale_size(427, 640, 512, 1.0, 1.0)[0] == (512, 768)
    assert multi_scale_size(640, 480, 512, 1.0, 0.5)[0] == (768, 512)


def test_golden_geometry_and_final_results(golden_dir: Path) -> None:
    g = np.load(golden_dir / "infer_planted_official_8people.npz")
    h, w = g["image"].shape[:2]
    size, center, scale = multi_scale_size(w, h, 512, 1.0, 1.0)
    assert size == tuple(g["base_size"])
    np.testing.assert_array_equal(center, g["center"])
    np.testing.assert_allclose(scale, g["scale"])
    poses, _ = decode(g["final_heatmaps"][0], g["tags"][0], DecodeParams())
    final = to_image_coords(poses, center, scale, (704, 512))
    assert np.abs(final - g["final_results"]).max() <= 1e-3


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize(("h", "w"), [(128, 192), (128, 176), (256, 384)])
def test_numpy_aggregation_equals_torch_bit_for_bit(flip: bool, h: int, w: int) -> None:
    """Input sizes (h, w) of the pipeline: maps at 1/4 and 1/2, projected back to the input size."""
    rng = np.random.default_rng(h + w)
    b = 2
    outs = [
        rng.random((b, 34, h // 4, w // 4), dtype=np.float32),
        rng.random((b, 17, h // 2, w // 2), dtype=np.float32),
    ]
    flips = [rng.random(o.shape, dtype=np.float32) for o in outs]
    kw = {"num_joints": 17, "flip_index": COCO.flip_index, "project_to": (h, w)}
    a = agg_np(outs, flips if flip else None, **kw)
    ref = agg_torch([torch.from_numpy(o) for o in outs], [torch.from_numpy(o) for o in flips] if flip else None, **kw)
    assert a[0].shape == (b, 17, h, w) and a[1].shape == (b, 17, h, w, 2 if flip else 1)
    assert_torch_equal(a[0], ref[0].numpy())
    assert_torch_equal(a[1], ref[1].numpy())


@pytest.mark.parametrize("flip", [False, True])
def test_vector_tags_aggregate_as_one_map_per_value(flip: bool) -> None:
    """D = 3 values per tag: the tag channels are 3 groups of J, each aggregated as a one-value tag map would be
    (the flipped pass permuted within each group); T = 3 per pass, NumPy equal to torch bit for bit."""
    rng = np.random.default_rng(5)
    b, h, w, d = 2, 128, 192, 3
    outs = [
        rng.random((b, 17 * (1 + d), h // 4, w // 4), dtype=np.float32),
        rng.random((b, 17, h // 2, w // 2), dtype=np.float32),
    ]
    flips = [rng.random(o.shape, dtype=np.float32) for o in outs]
    kw = {"num_joints": 17, "flip_index": COCO.flip_index, "project_to": (h, w)}
    hm, tags = agg_np(outs, flips if flip else None, tag_dim=d, **kw)
    ref = agg_torch(
        [torch.from_numpy(o) for o in outs], [torch.from_numpy(o) for o in flips] if flip else None, tag_dim=d, **kw
    )
    assert tags.shape == (b, 17, h, w, d * (2 if flip else 1))
    assert_torch_equal(hm, ref[0].numpy())
    assert_torch_equal(tags, ref[1].numpy())
    for k in range(d):  # value k of the tag = the one-value aggregation of channel group k
        group = [np.concatenate([outs[0][:, :17], outs[0][:, 17 * (1 + k) : 17 * (2 + k)]], 1), outs[1]]
        fgroup = [np.concatenate([flips[0][:, :17], flips[0][:, 17 * (1 + k) : 17 * (2 + k)]], 1), flips[1]]
        one_hm, one = agg_np(group, fgroup if flip else None, **kw)
        np.testing.assert_array_equal(one_hm, hm)
        np.testing.assert_array_equal(one[..., 0], tags[..., k])
        if flip:
            np.testing.assert_array_equal(one[..., 1], tags[..., d + k])


def test_a_shared_tag_map_decodes_as_one_per_joint() -> None:
    """Official TAG_PER_JOINT False: one tag map for every joint, expanded to J before the decoder (official
    ``top_k`` expands it, ``refine`` tiles it): the same poses as the map repeated per joint."""
    from hhrnet.inference import MapDecoder, Maps

    rng = np.random.default_rng(9)
    hm = rng.random((17, 40, 48), dtype=np.float32) ** 6
    shared = rng.normal(0, 2, (1, 40, 48, 2)).astype(np.float32)
    cfg = apply_overrides(preset("tiny"), ["model.tag_per_joint=false"])
    codec = Codec.from_config(cfg)
    assert codec.tag_channels == 1
    for kind in ("fast", "reference"):
        decoder = MapDecoder(codec, decoder=kind)  # type: ignore[arg-type]
        a = decoder.decode(Maps(hm, shared))
        b = decoder.decode(Maps(hm, np.repeat(shared, 17, axis=0)))
        assert len(a[0]) > 0
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


@pytest.mark.parametrize(("src", "dst"), [((37, 53), (129, 77)), ((100, 150), (512, 704)), ((128, 176), (96, 96))])
def test_resize_equals_torch_interpolate_at_any_ratio(src: tuple[int, int], dst: tuple[int, int]) -> None:
    """Multi-scale projects at non-integer ratios: torch computes the source index with a fused multiply-add."""
    from hhrnet.kernels.aggregate import resize_maps

    x = np.random.default_rng(7).standard_normal((1, 3, *src)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=dst, mode="bilinear", align_corners=False)
    assert_torch_equal(resize_maps(x, dst), ref.numpy())


def test_small_outputs_use_torchs_other_kernel() -> None:
    """Documented limit: below H + W = 128 torch switches kernels and rounds differently (<= 1 ulp-ish)."""
    from hhrnet.kernels.aggregate import resize_maps

    x = np.random.default_rng(8).standard_normal((1, 17, 32, 32)).astype(np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(x), size=(64, 64), mode="bilinear", align_corners=False)
    got = resize_maps(x, (64, 64))
    assert not np.array_equal(got, ref.numpy())
    np.testing.assert_allclose(got, ref.numpy(), atol=1e-6)


def test_flip_merge_semantics() -> None:
    # a flipped pass whose output is the mirror image of the normal pass gives identical flipped-back maps
    rng = np.random.default_rng(1)
    out1 = rng.random((1, 17, 8, 8), dtype=np.float32)
    out0 = np.concatenate([rng.random((1, 17, 4, 4), dtype=np.float32)] * 2, 1)
    mirror = [o[:, list(COCO.flip_index) * (o.shape[1] // 17)][:, :, :, ::-1].copy() for o in (out0, out1)]
    hm, tags = agg_np([out0, out1], mirror, num_joints=17, flip_index=COCO.flip_index, project_to=None)
    single, _ = agg_np([out0, out1], None, num_joints=17, flip_index=COCO.flip_index, project_to=None)
    np.testing.assert_allclose(hm, single, atol=1e-6)
    np.testing.assert_allclose(tags[..., 0], tags[..., 1], atol=1e-6)


def ideal_network(people_img: np.ndarray, codec: Codec, image: np.ndarray, visible: np.ndarray | None = None):  # type: ignore[no-untyped-def]
    """A raw network that renders Gaussian heatmaps and per-person tags of known people (image pixels):
    out0 (B, (1 + D) J, H/4, W/4) heatmaps + D groups of tags (D = ``codec.tag_dim``, the same value in each),
    out1 (B, J, H/2, W/2); the second half of a batch is the flipped image, rendered mirrored with the flip
    permutation. ``visible`` (P, J) leaves joints out."""
    prepared = codec.preprocess(image)
    (w_in, h_in) = prepared.base_size
    trans = affine_transform(prepared.center, prepared.scale, 0, (w_in, h_in))
    pts = people_img[..., :2] @ trans[:, :2].T + trans[:, 2]  # (P, J, 2) input pixels
    shown = np.ones(pts.shape[:2], bool) if visible is None else visible
    j_count = pts.shape[1]

    def render(points: np.ndarray, on: np.ndarray, stride: int, tags_on: bool) -> np.ndarray:
        h, w = h_in // stride, w_in // stride
        ys, xs = np.mgrid[0:h, 0:w]
        hm = np.zeros((j_count, h, w), np.float32)
        tg = np.zeros((j_count, h, w), np.float32)
        for p, person in enumerate(points):
            for j, (x, y) in enumerate(person / stride):
                if not on[p, j]:
                    continue
                g = np.exp(-((xs - int(x)) ** 2 + (ys - int(y)) ** 2) / 8.0).astype(np.float32)
                hm[j] = np.maximum(hm[j], g)
                tg[j][g > 0.01] = 3.0 * p
        return np.concatenate([hm] + [tg] * codec.tag_dim) if tags_on else hm

    def network(batch: np.ndarray) -> list[np.ndarray]:
        outs0, outs1 = [], []
        half = batch.shape[0] // 2 if codec.flip else batch.shape[0]
        for i in range(batch.shape[0]):
            p, on = pts.copy(), shown
            if i >= half:
                p[..., 0] = w_in - 1 - p[..., 0]
                p, on = p[:, list(codec.flip_index)], shown[:, list(codec.flip_index)]
            outs0.append(render(p, on, 4, True))
            outs1.append(render(p, on, 2, False))
        return [np.stack(outs0), np.stack(outs1)]

    return network


def official_pipeline(network, codec: Codec, image: np.ndarray, torch_maps: bool = True) -> np.ndarray:  # type: ignore[no-untyped-def]
    """The official test pipeline, literally: torch aggregation (F.interpolate), the reference parse, the
    inverse affine. Returns final keypoints (P, J, 3) in image pixels. ``torch_maps=False`` aggregates with our
    NumPy kernel instead (to check everything after the aggregation where torch's rounding is another CPU's)."""
    from hhrnet.kernels.reference import decode_reference

    prepared = codec.preprocess(image)
    x = prepared.inputs[0][1][None]
    outs = network(np.concatenate([x, x[:, :, :, ::-1]], 0))
    size = (prepared.base_size[1], prepared.base_size[0])
    kw = {"num_joints": codec.num_joints, "flip_index": codec.flip_index, "project_to": size}
    if torch_maps:
        t = [torch.from_numpy(o) for o in outs]
        hm, tags = (m.numpy() for m in agg_torch([o[:1] for o in t], [o[1:] for o in t], **kw))
    else:
        hm, tags = agg_np([o[:1] for o in outs], [o[1:] for o in outs], **kw)
    poses, _ = decode_reference(hm[0], tags[0], codec.decode)
    return to_image_coords(poses, prepared.center, prepared.scale, prepared.base_size)[..., :3]


def test_default_pipeline_is_official_bit_for_bit_on_real_photos() -> None:
    """Ideal maps built from the real COCO annotations (missing joints left out, so refine runs) through the
    default Predictor (NumPy aggregation, fast decoder) and through the official pipeline: identical.

    Where torch runs its scalar kernels (no AVX2, or ``ATEN_CPU_CAPABILITY=default``) its own maps differ in the
    last bit (the aggregation tests hold them within a few ulps), and an argmax over near-equal values can then
    move a refined joint: there the pipeline is compared with the official one on our aggregation's maps."""
    import json

    data = json.loads(samples.annotation_file("coco").read_text())
    codec = Codec.from_config(preset("coco_w32_512"))
    found = 0
    for im in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"] and a["num_keypoints"] > 0]
        kps = np.array([a["keypoints"] for a in anns], np.float64).reshape(len(anns), 17, 3)
        image = read_image(samples.folder("coco") / im["file_name"])
        net = ideal_network(kps[..., :2], codec, image, visible=kps[..., 2] > 0)
        got = Predictor(net, codec).predict(image)
        ref = official_pipeline(net, codec, image, torch_maps=torch_simd())
        assert got.keypoints.shape == ref.shape
        np.testing.assert_array_equal(got.keypoints, ref)
        found += len(ref)
    assert found >= len([a for a in data["annotations"] if a["num_keypoints"] > 0])


def test_ideal_network_round_trip() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    centres = [(70.0, 80.0), (160.0, 150.0), (250.0, 90.0)]  # compact, separated people
    people = np.stack(
        [np.stack([rng.uniform(cx - 30, cx + 30, 17), rng.uniform(cy - 40, cy + 40, 17)], 1) for cx, cy in centres]
    )
    codec = Codec.from_config(apply_overrides(preset("tiny"), ["data.input_size=256"]))
    got = Predictor(ideal_network(people, codec, image), codec).predict(image)
    assert len(got) == 3
    for person in people:  # every planted person is found within ~2 px on every joint
        d = np.linalg.norm(got.keypoints[:, :, :2] - person[None], axis=2).max(axis=1)
        assert d.min() < 3.0, d


def test_bad_inputs(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="not found"):
        read_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not a jpeg")
    with pytest.raises(InputError, match="cannot decode"):
        read_image(bad)
    codec = Codec.from_config(preset("tiny"))
    nan_net = Predictor(lambda b: [np.full((b.shape[0], 34, 64, 64), np.nan, np.float32)] * 2, codec)
    with pytest.raises(InputError, match="NaN"):
        nan_net.predict(np.zeros((256, 256, 3), np.uint8))
    from hhrnet.errors import ConfigError

    with pytest.raises(ConfigError, match="1.0"):
        codec.replace(scales=(0.5, 2.0))


def test_letterbox_batch_equals_one_by_one() -> None:
    from golden_weights import fill_formula_weights

    from hhrnet.inference import torch_network
    from hhrnet.model import build_model

    cfg = apply_overrides(preset("tiny"), ["test.detection_threshold=0.02"])
    model = build_model(cfg).eval()
    fill_formula_weights(model, 9)
    predictor = Predictor(torch_network(model), Codec.from_config(cfg, letterbox=256))
    images = [read_image(p) for p in samples.images("coco")[:3]]
    batched = predictor.predict_batch(images)
    for image, got in zip(images, batched, strict=True):
        single = predictor.predict(image)
        np.testing.assert_allclose(got.keypoints, single.keypoints, atol=1e-3)
        np.testing.assert_allclose(got.scores, single.scores, atol=1e-5)
    assert sum(len(p) for p in batched) > 0


def test_cuda_decoder_reads_device_outputs_without_a_host_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """With TensorRT's run_device, the CUDA decoder gets the engine's own output buffers; __call__ (the host
    copy) is never used. A fake session stands in for TensorRT; the CPU decoder stands in for the GPU one. The
    expectation comes from the planted scene and from the host path with the reference decoder."""
    from hhrnet.kernels import cuda as kcuda
    from hhrnet.kernels.decode import decode_batch

    codec = Codec.from_config(apply_overrides(preset("tiny"), ["data.input_size=128", "data.output_size=[32,64]"]))
    values = np.array([[0.5 + 0.02 * k + 0.1 * p for k in range(17)] for p in range(3)], np.float32)  # (P, J)

    def scene(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Three people, one isolated peak per joint, a distinct tag per person: (1, J, H, W), (1, J, H, W, 2)."""
        det = np.zeros((1, 17, h, w), np.float32)
        tags = np.zeros((1, 17, h, w, 2), np.float32)
        for p in range(3):
            for k in range(17):
                y, x = 8 + 6 * k, 12 + 30 * p
                det[0, k, y, x] = values[p, k]
                tags[0, k, y, x] = 2.0 * p + 1.0
        return det, tags

    class DeviceArray:
        def __init__(self, a: np.ndarray) -> None:
            self.a = a
            self.__cuda_array_interface__ = {"shape": a.shape, "typestr": "<f4", "data": (0, False), "version": 3}

    class FakeEngine:
        graph = "aggregate"
        handed: list[DeviceArray] = []

        def run_device(self, x: np.ndarray) -> list[DeviceArray]:
            self.handed = [DeviceArray(a) for a in scene(*x.shape[2:])]
            return self.handed

        def __call__(self, x: np.ndarray) -> list[np.ndarray]:
            raise AssertionError("the host copy must not be used")

    class HostEngine:
        graph = "aggregate"

        def __call__(self, x: np.ndarray) -> list[np.ndarray]:
            return list(scene(*x.shape[2:]))

    seen: list[tuple[object, ...]] = []

    def fake_decode_cuda(det, tags, params, capacity=512, stream=0):  # type: ignore[no-untyped-def]
        seen.append((det, tags, params, capacity))
        return decode_batch(det.a, tags.a, params, capacity)

    monkeypatch.setattr(kcuda, "decode_cuda", fake_decode_cuda)
    engine = FakeEngine()
    predictor = Predictor(engine, codec, decoder="fast")
    predictor.decoder = "cuda"  # skip the GPU availability check; dispatch is what is tested
    assert predictor.on_device()
    image = np.zeros((100, 140, 3), np.uint8)
    got = predictor.predict(image)
    ((det, tags, params, capacity),) = seen
    assert det is engine.handed[0] and tags is engine.handed[1] and params == codec.decode
    assert capacity >= 17 * codec.decode.max_num_people  # room for every candidate to start a person
    order = np.argsort(got.scores)
    np.testing.assert_allclose(got.scores[order], values.mean(axis=1), rtol=1e-6)  # mean of the planted values
    np.testing.assert_array_equal(got.keypoints[order, :, 2], values)
    host = Predictor(HostEngine(), codec, decoder="reference").predict(image)
    np.testing.assert_array_equal(got.keypoints, host.keypoints)
    np.testing.assert_array_equal(got.scores, host.scores)
