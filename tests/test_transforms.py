"""Augmentation: official matrices, warps and flip against the naive twin; RNG draw order; flip semantics."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest

from hhrnet.benchmarks.official_targets import naive_affine_matrix, naive_augment
from hhrnet.config import DataConfig
from hhrnet.data import transforms as T
from hhrnet.datasets import COCO, CROWDPOSE


def _sample_inputs(seed: int, height: int = 90, width: int = 120) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 256, size=(height, width, 3), dtype=np.uint8)
    mask = np.ones((height, width), dtype=bool)
    mask[10:40, 20:70] = False
    joints = np.zeros((3, 17, 3))
    joints[..., 0] = rng.uniform(0, width, size=(3, 17))
    joints[..., 1] = rng.uniform(0, height, size=(3, 17))
    joints[..., 2] = rng.integers(0, 3, size=(3, 17))
    return image, mask, joints


@pytest.mark.parametrize(
    ("center", "scale", "size", "rot"),
    [((60.0, 45.0), 0.45, 128, 0.0), ((33.0, 71.5), 0.61, 256, 17.3), ((320.0, 240.0), 2.7, 512, -29.9)],
)
def test_affine_matrix_equals_naive(center: tuple[float, float], scale: float, size: int, rot: float) -> None:
    got = T.affine_matrix(center, scale, size, rot)
    assert got.shape == (2, 3)
    np.testing.assert_array_equal(got, naive_affine_matrix(center, scale, size, rot)[:2])
    # the shifted centre maps to the middle of the crop
    np.testing.assert_allclose(T.transform_points(np.array(center), got), [size / 2, size / 2], atol=1e-9)


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("rot", [0.0, 21.7])
def test_apply_transform_equals_naive_twin(flip: bool, rot: float) -> None:
    image, mask, joints = _sample_inputs(1)
    params = T.AffineParams(
        center=(60.0, 45.0), scale=0.45 * 1.2, rotation=rot, translate=(-7, 5), flip=flip, aug_scale=1.2
    )
    got = T.apply_transform(image, mask, joints, params, 64, (16, 32), COCO.flip_index)
    img, masks, jts = naive_augment(
        image,
        mask,
        joints,
        center=(53.0, 50.0),
        scale=0.54,
        rot=rot,
        flip=flip,
        input_size=64,
        output_sizes=(16, 32),
        flip_index=COCO.flip_index,
    )
    np.testing.assert_array_equal(got.image, img)
    assert got.image.shape == (64, 64, 3) and got.image.dtype == np.uint8
    for k in range(2):
        np.testing.assert_array_equal(got.masks[k], masks[k])
        assert got.masks[k].dtype == np.float32
        np.testing.assert_allclose(got.joints[k], jts[k], rtol=0, atol=1e-9)
    assert 0 < got.masks[1].sum() < 32 * 32  # the masked block and the padding are both ignored


def test_flip_semantics() -> None:
    """Flip = mirror image and masks, x -> R - x - 1 and joints permuted with flip_index."""
    image, mask, joints = _sample_inputs(2)
    base = T.AffineParams(center=(60.0, 45.0), scale=0.5, rotation=10.0, translate=(3, -2))
    plain = T.apply_transform(image, mask, joints, base, 64, (16, 32), COCO.flip_index)
    flipped = T.apply_transform(image, mask, joints, replace(base, flip=True), 64, (16, 32), COCO.flip_index)
    np.testing.assert_array_equal(flipped.image, plain.image[:, ::-1])
    for k, r in enumerate((16, 32)):
        np.testing.assert_array_equal(flipped.masks[k], plain.masks[k][:, ::-1])
        for j, src in enumerate(COCO.flip_index):
            np.testing.assert_allclose(flipped.joints[k][:, j, 0], r - plain.joints[k][:, src, 0] - 1)
            np.testing.assert_array_equal(flipped.joints[k][:, j, 1:], plain.joints[k][:, src, 1:])
    # a left eye (joint 1) at x becomes a right eye (joint 2) at R - x - 1
    one = np.zeros((1, 17, 3))
    one[0, 1] = (60.0, 45.0, 2)
    out = T.apply_transform(
        image, mask, one, replace(base, rotation=0.0, translate=(0, 0), flip=True), 64, (16,), COCO.flip_index
    )
    np.testing.assert_allclose(out.joints[0][0, 2], [16 - 8 - 1, 8, 2])
    assert out.joints[0][0, 1, 2] == 0


def test_crowdpose_flip_index_is_an_involution() -> None:
    idx = np.asarray(CROWDPOSE.flip_index)
    np.testing.assert_array_equal(idx[idx], np.arange(14))
    assert list(idx[:4]) == [1, 0, 3, 2] and list(idx[12:]) == [12, 13]


def test_legacy_generators_reproduce_official_draw_order() -> None:
    """scale, rotation, dx, dy from numpy (randint with float bounds), then the flip from python random."""
    data = DataConfig()
    height, width = 333, 500
    rs, pr = np.random.RandomState(3), random.Random(3)
    aug_scale = rs.random_sample() * (data.max_scale - data.min_scale) + data.min_scale
    scale = min(height, width) / 200 * aug_scale
    rot = (rs.random_sample() * 2 - 1) * data.max_rotation
    dx = rs.randint(-data.max_translate * scale, data.max_translate * scale)
    dy = rs.randint(-data.max_translate * scale, data.max_translate * scale)
    flip = pr.random() < data.flip
    got = T.sample_affine_params(np.random.RandomState(3), (height, width), data, random.Random(3))
    assert got == T.AffineParams(
        center=(250.0, 166.5), scale=scale, rotation=rot, translate=(dx, dy), flip=flip, aug_scale=aug_scale
    )


def test_generator_draws_are_reproducible_and_in_range() -> None:
    data = DataConfig()
    draws = [T.sample_affine_params(np.random.default_rng(s), (480, 640), data) for s in range(400)]
    assert draws[17] == T.sample_affine_params(np.random.default_rng(17), (480, 640), data)
    scales = np.array([d.aug_scale for d in draws])
    assert scales.min() >= 0.75 and scales.max() < 1.5 and np.ptp(scales) > 0.6
    np.testing.assert_allclose([d.scale for d in draws], scales * 2.4)
    assert max(abs(d.rotation) for d in draws) <= 30 and np.ptp([d.rotation for d in draws]) > 50
    assert all(abs(d.translate[0]) < 40 * d.scale and abs(d.translate[1]) < 40 * d.scale for d in draws)
    assert 150 < sum(d.flip for d in draws) < 250
    still = replace(data, flip=0.0, max_translate=0, max_rotation=0.0, min_scale=1.0, max_scale=1.0)
    d = T.sample_affine_params(np.random.default_rng(0), (480, 640), still)
    assert d == T.identity_params((480, 640))


def test_identity_params_and_normalize() -> None:
    p = T.identity_params((425, 640))
    assert p.center == (320.0, 212.5) and p.scale == 2.125
    assert T.identity_params((425, 640), "long").scale == 3.2
    with pytest.raises(ValueError, match="scale_type"):
        T.identity_params((425, 640), "wide")
    image = np.zeros((2, 2, 3), dtype=np.uint8)
    image[0, 1] = (255, 0, 128)
    x = T.normalize_image(image)
    assert x.shape == (3, 2, 2) and x.dtype == np.float32
    np.testing.assert_allclose(
        x[:, 0, 1], [(1 - 0.485) / 0.229, -0.456 / 0.224, (128 / 255 - 0.406) / 0.225], rtol=1e-6
    )
