"""Targets: golden parity with the official pipeline, naive-twin parity, official quirks, B7 overflow."""

from __future__ import annotations

import hashlib
import random

import numpy as np
import pytest
from conftest import GOLDEN as GOLDEN_DIR
from conftest import assert_warp_equal

from hhrnet import targets as TG
from hhrnet.benchmarks.official_targets import naive_heatmaps, naive_joints
from hhrnet.config import preset
from hhrnet.data import transforms as T
from hhrnet.datasets import IMAGENET_STD
from hhrnet.errors import InputError

GOLDEN = GOLDEN_DIR / "targets_official_seed0.npz"


def _random_joints(rng: np.random.Generator, people: int, joints: int, size: int, cols: int = 3) -> np.ndarray:
    """Joints around and across the map border, fractional and negative-fraction coordinates, v in {0,1,2}."""
    out = np.zeros((people, joints, cols))
    out[..., :2] = rng.uniform(-3.0, size + 3.0, size=(people, joints, 2))
    pick = rng.random((people, joints, 2))
    out[..., :2] = np.where(pick < 0.08, rng.uniform(-0.999, 0.0, size=(people, joints, 2)), out[..., :2])
    out[..., :2] = np.where(pick > 0.95, size - rng.uniform(0.0, 0.5, size=(people, joints, 2)), out[..., :2])
    out[..., 2] = rng.integers(0, 3, size=(people, joints))
    if cols == 4:
        out[..., 3] = rng.choice([0.75, 1.25, 1.5, 2.0, 2.5, 3.0, 1.7], size=(people, 1))
    return out


@pytest.mark.parametrize("global_ipp", [True, False], ids=["ipp-on", "ipp-off"])
def test_golden_seed0_full_pipeline_is_bit_exact(global_ipp: bool) -> None:
    """Seed 0 of the official pipeline: same draws, same warped image, same heatmaps and joints layout.

    Whatever OpenCV's global IPP switch says: the product's warps run on OpenCV's own kernel (hhrnet.warp).
    """
    import cv2

    previous = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(global_ipp)
    try:
        _check_golden_seed0()
    finally:
        cv2.ipp.setUseIPP(previous)


def _check_golden_seed0() -> None:
    g = dict(np.load(GOLDEN))
    g["image"] = np.load(GOLDEN_DIR / "infer_planted_official_8people.npz")["image"]  # stored once
    assert hashlib.sha256(g["image"].tobytes()).hexdigest() == str(g["image_sha256"])
    data = preset("coco_w32_512").data
    np.random.seed(0)
    random.seed(0)
    params = T.sample_affine_params(np.random, g["image"].shape[:2], data)
    people = g["anno_keypoints"].reshape(-1, 17, 3)
    sample = T.apply_transform(
        g["image"], np.ones(g["image"].shape[:2], bool), people, params, 512, (128, 256), data.flip_index
    )
    assert_warp_equal(T.normalize_image(sample.image), g["img_t"], grey_level=1 / 255 / min(IMAGENET_STD))
    heatmaps, packed = TG.TargetEncoder(17, (128, 256))(sample.joints)
    for i in range(2):
        np.testing.assert_array_equal(heatmaps[i], g[f"target{i}"])
        assert heatmaps[i].dtype == np.float32
        np.testing.assert_array_equal(packed[i], g[f"joints{i}"])
        assert packed[i].dtype == np.int64
    # masks: the all-ones image mask warped with the same draw equals the golden mask except inside one
    # small blob the golden additionally ignores (the 7th, keypoint-less person's polygon, not stored)
    for i, r in enumerate((128, 256)):
        gm = g[f"mask{i}"]
        diff = sample.masks[i] != gm
        assert np.all(gm[diff] == 0) and np.all(sample.masks[i][diff] == 1)
        assert 0 < diff.sum() < 0.04 * r * r
        ys, xs = np.nonzero(diff)
        mat = np.vstack([T.affine_matrix(params.shifted_center, params.scale, r, params.rotation), [0, 0, 1]])
        img_xy = T.transform_points(np.stack([xs, ys], 1).astype(float), np.linalg.inv(mat)[:2])
        assert np.ptp(img_xy[:, 0]) < 60 and np.ptp(img_xy[:, 1]) < 80  # one blob of at most 60x80 image px


@pytest.mark.parametrize("index", [0, 1])
def test_golden_targets_rebuilt_from_golden_joints(index: int) -> None:
    g = np.load(GOLDEN)
    r = (128, 256)[index]
    decoded = TG.unpack_joints(g[f"joints{index}"], r, 17)  # (30, 17, 3) integer positions
    assert decoded[..., 2].sum() == (g[f"joints{index}"][..., 1] > 0).sum() == 91
    np.testing.assert_array_equal(TG.render_heatmaps(decoded, r), g[f"target{index}"])
    np.testing.assert_array_equal(TG.pack_joints(decoded, r), g[f"joints{index}"])


@pytest.mark.parametrize(("size", "people", "seed"), [(128, 12, 0), (256, 30, 1), (64, 1, 2), (32, 7, 3)])
def test_heatmaps_and_joints_equal_naive_twin(size: int, people: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    joints = _random_joints(rng, people, 17, size)
    hm = TG.render_heatmaps(joints, size)
    np.testing.assert_array_equal(hm, naive_heatmaps(joints, size, 17))
    np.testing.assert_array_equal(TG.pack_joints(joints, size), naive_joints(joints, size, 17).astype(np.int64))
    np.testing.assert_array_equal(
        TG.pack_joints(joints, size, tag_per_joint=False), naive_joints(joints, size, 17, tag_per_joint=False)
    )
    assert hm.max() == 1.0  # at least one joint landed in the map


def test_scale_aware_sigma_equals_naive_twin() -> None:
    rng = np.random.default_rng(5)
    for size in (64, 128):
        joints = _random_joints(rng, 9, 17, size, cols=4)
        got = TG.render_heatmaps(joints, size, scale_aware_sigma=True)
        np.testing.assert_array_equal(got, naive_heatmaps(joints, size, 17, scale_aware=True))
        # different sigmas really give different maps than the fixed sigma 2
        assert not np.array_equal(got, TG.render_heatmaps(joints, size))


def test_truncation_quirks_and_kernel() -> None:
    """int() truncation: x in (-1, 0) lands on column 0 (docs/official.md B8); 6σ+3 kernel, centre 3σ+1, peak 1."""
    k = TG.gaussian_kernel(2.0)
    assert k.shape == (15, 15) and k[7, 7] == 1.0 and np.argmax(k) == 7 * 15 + 7
    joints = np.array([[[-0.5, 3.9, 1.0], [5.99, -0.2, 2.0], [-1.0, 3.0, 1.0], [4.0, 4.0, 0.0]]])
    hm = TG.render_heatmaps(joints, 16)
    assert hm[0, 3, 0] == 1.0 and hm[0].max() == 1.0  # (-0.5, 3.9) -> (0, 3)
    assert hm[1, 0, 5] == 1.0  # (5.99, -0.2) -> (5, 0)
    assert hm[2].max() == 0.0  # x = -1 is outside
    assert hm[3].max() == 0.0  # invisible
    packed = TG.pack_joints(joints, 16, max_people=2)
    np.testing.assert_array_equal(packed[0, :2], [[0 * 256 + 3 * 16 + 0, 1], [1 * 256 + 0 * 16 + 5, 1]])
    assert packed[0, 2:].sum() == 0 and packed[1].sum() == 0  # packed into the first slots only


def test_overlap_is_elementwise_max() -> None:
    joints = np.array([[[10.0, 10.0, 1.0]], [[12.0, 10.0, 1.0]]])
    hm = TG.render_heatmaps(joints, 32)
    one = TG.render_heatmaps(joints[:1], 32)
    two = TG.render_heatmaps(joints[1:], 32)
    np.testing.assert_array_equal(hm, np.maximum(one, two))
    assert hm[0, 10, 11] < 1.0 and hm[0, 10, 10] == hm[0, 10, 12] == 1.0


def _crowd(rng: np.random.Generator, people: int, size: int, empty_tail: bool) -> np.ndarray:
    joints = _random_joints(rng, people, 17, size)
    joints[..., 2] = np.maximum(joints[..., 2], 1)
    joints[..., :2] = np.clip(joints[..., :2], 0, size - 1)
    joints[5, :, 2] = 0  # an empty person in the middle
    if empty_tail:
        joints[30:, :, 2] = 0
    return joints


def test_more_than_30_people_official_layout_when_official_succeeds() -> None:
    """> 30 people but none past the 30th has a joint: the official code succeeds, and we equal it."""
    joints = _crowd(np.random.default_rng(7), 34, 64, empty_tail=True)
    np.testing.assert_array_equal(TG.pack_joints(joints, 64), naive_joints(joints, 64, 17))


def test_more_than_30_people_compacts_instead_of_crashing() -> None:
    """B7: the official generator raises IndexError; compact keeps the first 30 people that have joints."""
    joints = _crowd(np.random.default_rng(8), 36, 64, empty_tail=False)
    with pytest.raises(IndexError):
        naive_joints(joints, 64, 17)
    packed = TG.pack_joints(joints, 64)
    keep = [p for p in range(36) if p != 5][:30]
    expected = naive_joints(joints[keep], 64, 17)
    np.testing.assert_array_equal(packed, expected)
    assert (packed[..., 1].sum(axis=1) > 0).all()  # every slot used by a real person
    # heatmaps still contain everybody, including the people without a tag slot
    np.testing.assert_array_equal(TG.render_heatmaps(joints, 64), naive_heatmaps(joints, 64, 17))
    with pytest.raises(InputError, match="max_num_people=30"):
        TG.pack_joints(joints, 64, overflow="raise")


def test_encoder_handles_zero_people_and_checks_sizes() -> None:
    enc = TG.TargetEncoder(14, (32, 64), max_people=5)
    hms, packed = enc([np.zeros((0, 14, 3)), np.zeros((0, 14, 3))])
    assert [h.shape for h in hms] == [(14, 32, 32), (14, 64, 64)]
    assert [p.shape for p in packed] == [(5, 14, 2), (5, 14, 2)]
    assert all(h.sum() == 0 for h in hms) and all(p.sum() == 0 for p in packed)
    with pytest.raises(ValueError, match="for 1 sizes, expected 2"):
        enc([np.zeros((0, 14, 3))])


def test_benchmark_rows_compare_identical_outputs() -> None:
    from hhrnet.benchmarks.targets import run

    rows = run(people=(3, 31), sizes=(32,), repeats=1)
    assert [(r["size"], r["people"]) for r in rows] == [(32, 3), (32, 31)]
    assert all(r["identical"] and r["joints_drawn"] > 0 and r["naive_ms"] > 0 for r in rows)
