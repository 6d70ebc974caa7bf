"""Test-time pipeline: official geometry (golden), torch vs NumPy aggregation, ideal-network round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from hhrnet import samples
from hhrnet.aggregate import aggregate as agg_torch
from hhrnet.config import COCO_FLIP_INDEX, apply_overrides, preset
from hhrnet.errors import InputError
from hhrnet.inference import Predictor, multi_scale_size, read_image, to_image_coords
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
def test_torch_and_numpy_aggregation_agree(flip: bool) -> None:
    rng = np.random.default_rng(0)
    outs = [rng.random((2, 34, 16, 24), dtype=np.float32), rng.random((2, 17, 32, 48), dtype=np.float32)]
    flips = [rng.random((2, 34, 16, 24), dtype=np.float32), rng.random((2, 17, 32, 48), dtype=np.float32)]
    kw = {"num_joints": 17, "flip_index": COCO_FLIP_INDEX, "project_to": (64, 96)}
    a = agg_np(outs, flips if flip else None, **kw)
    b = agg_torch([torch.from_numpy(o) for o in outs], [torch.from_numpy(o) for o in flips] if flip else None, **kw)
    assert a[0].shape == (2, 17, 64, 96) and a[1].shape == (2, 17, 64, 96, 2 if flip else 1)
    np.testing.assert_allclose(a[0], b[0].numpy(), atol=2e-6)
    np.testing.assert_allclose(a[1], b[1].numpy(), atol=2e-6)


def test_flip_merge_semantics() -> None:
    # a flipped pass whose output is the mirror image of the normal pass gives identical flipped-back maps
    rng = np.random.default_rng(1)
    out1 = rng.random((1, 17, 8, 8), dtype=np.float32)
    out0 = np.concatenate([rng.random((1, 17, 4, 4), dtype=np.float32)] * 2, 1)
    mirror = [o[:, list(COCO_FLIP_INDEX) * (o.shape[1] // 17)][:, :, :, ::-1].copy() for o in (out0, out1)]
    hm, tags = agg_np([out0, out1], mirror, num_joints=17, flip_index=COCO_FLIP_INDEX, project_to=None)
    single, _ = agg_np([out0, out1], None, num_joints=17, flip_index=COCO_FLIP_INDEX, project_to=None)
    np.testing.assert_allclose(hm, single, atol=1e-6)
    np.testing.assert_allclose(tags[..., 0], tags[..., 1], atol=1e-6)


def _ideal_network(people_img: np.ndarray, predictor: Predictor, image: np.ndarray):  # type: ignore[no-untyped-def]
    """A network that renders exactly the training targets of known people (in input coordinates)."""
    from hhrnet.inference import affine_transform

    prepared = predictor.preprocess(image)
    (w_in, h_in) = prepared.base_size
    trans = affine_transform(prepared.center, prepared.scale, 0, (w_in, h_in))
    pts = people_img[..., :2] @ trans[:, :2].T + trans[:, 2]  # (P, J, 2) input pixels

    def render(points: np.ndarray, stride: int, tags_on: bool) -> np.ndarray:
        h, w = h_in // stride, w_in // stride
        ys, xs = np.mgrid[0:h, 0:w]
        hm = np.zeros((17, h, w), np.float32)
        tg = np.zeros((17, h, w), np.float32)
        for p, person in enumerate(points):
            for j, (x, y) in enumerate(person / stride):
                g = np.exp(-((xs - int(x)) ** 2 + (ys - int(y)) ** 2) / 8.0).astype(np.float32)
                hm[j] = np.maximum(hm[j], g)
                tg[j][g > 0.01] = 3.0 * p
        return np.concatenate([hm, tg]) if tags_on else hm

    def network(batch: np.ndarray) -> list[np.ndarray]:
        outs0, outs1 = [], []
        for i in range(batch.shape[0]):
            flipped = i >= 1
            p = pts.copy()
            if flipped:
                p[..., 0] = w_in - 1 - p[..., 0]
                p = p[:, list(COCO_FLIP_INDEX)]
            outs0.append(render(p, 4, True))
            outs1.append(render(p, 2, False))
        return [np.stack(outs0), np.stack(outs1)]

    return network


def test_ideal_network_round_trip() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (240, 320, 3), dtype=np.uint8)
    centres = [(70.0, 80.0), (160.0, 150.0), (250.0, 90.0)]  # compact, separated people
    people = np.stack([np.stack([rng.uniform(cx - 30, cx + 30, 17), rng.uniform(cy - 40, cy + 40, 17)], 1)
                       for cx, cy in centres])  # fmt: skip
    cfg = apply_overrides(preset("tiny"), ["data.input_size=256"])
    probe = Predictor(lambda b: [], cfg)
    predictor = Predictor(_ideal_network(people, probe, image), cfg)
    got = predictor.predict(image)
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
    cfg = preset("tiny")
    nan_net = Predictor(lambda b: [np.full((b.shape[0], 34, 64, 64), np.nan, np.float32)] * 2, cfg)
    with pytest.raises(InputError, match="NaN"):
        nan_net.predict(np.zeros((256, 256, 3), np.uint8))
    with pytest.raises(InputError, match="scale"):
        Predictor(lambda b: [], cfg, scales=(0.5, 2.0))


def test_letterbox_batch_equals_one_by_one() -> None:
    from golden_weights import fill_formula_weights

    from hhrnet.inference import torch_network
    from hhrnet.model import build_model

    cfg = apply_overrides(preset("tiny"), ["test.detection_threshold=0.02"])
    model = build_model(cfg).eval()
    fill_formula_weights(model, 9)
    predictor = Predictor(torch_network(model), cfg, letterbox=256)
    images = [read_image(p) for p in sorted(samples.images("coco"))[:3]]
    batched = predictor.predict_batch(images)
    for image, got in zip(images, batched, strict=True):
        single = predictor.predict(image)
        np.testing.assert_allclose(got.keypoints, single.keypoints, atol=1e-3)
        np.testing.assert_allclose(got.scores, single.scores, atol=1e-5)
    assert sum(len(p) for p in batched) > 0
