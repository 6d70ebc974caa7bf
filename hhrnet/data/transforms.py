"""Training augmentation: the official random affine crop + horizontal flip as a pure function.

The official pipeline (docs/official.md §6) draws its random numbers inside the transform objects. Here the draw
(:func:`sample_affine_params`) and the warp (:func:`apply_transform`) are separate, so a sample can be
reproduced from its :class:`AffineParams` alone and tested without any random state.

Geometry, for every output size R (and for the network input size S):

* ``h = 200 * scale``; the crop maps ``center`` to ``(R/2, R/2)`` and ``h`` image pixels to ``R`` pixels;
* then a rotation by ``-rotation`` degrees about ``(R/2, R/2)``;
* the image is warped with the S matrix (bilinear, black border), the ignore mask with each R matrix
  (``warp(uint8(mask*255))/255 > 0.5``), joints are mapped with each R matrix;
* a flip mirrors the image and the masks, permutes the joints with ``flip_index`` and sets ``x = R - x - 1``.

RNG order of the official code: ``np.random`` for aug scale, rotation, dx, dy, then python ``random`` for the
flip. Passing the legacy global generators (``np.random`` and ``random``) reproduces the official draws.
"""

from __future__ import annotations

import functools
import random as _pyrandom
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

import cv2
import numpy as np

from hhrnet.datasets import IMAGENET_MEAN, IMAGENET_STD
from hhrnet.warp import warp_affine


class AugmentationSettings(Protocol):
    """What :func:`sample_affine_params` reads; :class:`hhrnet.config.DataConfig` satisfies it."""

    @property
    def max_rotation(self) -> float: ...
    @property
    def min_scale(self) -> float: ...
    @property
    def max_scale(self) -> float: ...
    @property
    def scale_type(self) -> Literal["short", "long"]: ...
    @property
    def max_translate(self) -> int: ...
    @property
    def flip(self) -> float: ...


@dataclass(frozen=True)
class AffineParams:
    """One draw of the official augmentation.

    ``center`` is the image centre before translation, ``translate`` the integer shift added to it;
    ``scale`` is in units of 200 image pixels and already includes ``aug_scale``; ``rotation`` is in degrees.
    """

    center: tuple[float, float]  # (cx, cy) image pixels
    scale: float
    rotation: float = 0.0
    translate: tuple[int, int] = (0, 0)  # (dx, dy) image pixels
    flip: bool = False
    aug_scale: float = 1.0  # the random factor inside ``scale`` (scale-aware sigma is divided by it)

    @property
    def shifted_center(self) -> tuple[float, float]:
        return (self.center[0] + self.translate[0], self.center[1] + self.translate[1])


@dataclass(frozen=True)
class TransformedSample:
    image: np.ndarray  # (S, S, 3) uint8 RGB
    masks: list[np.ndarray]  # per output size R: (R, R) float32, 1 = supervise, 0 = ignore
    joints: list[np.ndarray]  # per output size R: (P, J, C) float64 in R-pixel coordinates


def base_scale(image_size: tuple[int, int], scale_type: str) -> float:
    """Official ``scale`` before augmentation: the short (or long) image side / 200."""
    height, width = image_size
    if scale_type == "short":
        return min(height, width) / 200
    if scale_type == "long":
        return max(height, width) / 200
    raise ValueError(f"unknown scale_type {scale_type!r}; expected 'short' or 'long'")


def identity_params(image_size: tuple[int, int], scale_type: str = "short") -> AffineParams:
    """The deterministic (validation) crop: centred, no scale jitter, rotation, shift or flip."""
    height, width = image_size
    return AffineParams(center=(width / 2, height / 2), scale=base_scale(image_size, scale_type))


def _is_new_generator(rng: Any) -> bool:
    return isinstance(rng, np.random.Generator)


def sample_affine_params(
    rng: np.random.Generator | np.random.RandomState | Any,
    image_size: tuple[int, int],
    aug: AugmentationSettings,
    flip_rng: _pyrandom.Random | Any | None = None,
) -> AffineParams:
    """Draw one augmentation for an image of ``image_size = (height, width)``.

    ``rng`` is a ``np.random.Generator``, a ``np.random.RandomState`` or the ``np.random`` module itself;
    ``flip_rng`` is a ``random.Random`` or the ``random`` module (default: the ``random`` module for legacy
    generators, ``rng`` itself for a ``Generator``). Draw order: aug scale, rotation, dx, dy, flip — with
    ``rng=np.random, flip_rng=random`` this is exactly the official sequence of global draws.
    """
    gen: Any = rng
    new_api = _is_new_generator(gen)
    uniform = gen.random if new_api else gen.random_sample
    aug_scale = float(uniform() * (aug.max_scale - aug.min_scale) + aug.min_scale)
    scale = base_scale(image_size, aug.scale_type) * aug_scale
    rotation = float((uniform() * 2 - 1) * aug.max_rotation)
    dx = dy = 0
    if aug.max_translate > 0:
        # the official code passes float bounds to randint, which truncates them toward zero
        bound = int(aug.max_translate * scale)
        if bound > 0:
            draw = gen.integers if new_api else gen.randint
            dx = int(draw(-bound, bound))
            dy = int(draw(-bound, bound))
    if flip_rng is None:
        flip_rng = gen if new_api else _pyrandom
    flip = bool(flip_rng.random() < aug.flip)
    height, width = image_size
    return AffineParams(
        center=(width / 2, height / 2),
        scale=scale,
        rotation=rotation,
        translate=(dx, dy),
        flip=flip,
        aug_scale=aug_scale,
    )


def affine_matrix(center: tuple[float, float], scale: float, output_size: int, rotation: float = 0.0) -> np.ndarray:
    """(2, 3) float64 map from image pixels to an ``output_size``² crop (official numerics, operation order)."""
    res = float(output_size)
    h = 200 * scale
    crop = np.zeros((3, 3))
    crop[0, 0] = res / h
    crop[1, 1] = res / h
    crop[0, 2] = res * (-float(center[0]) / h + 0.5)
    crop[1, 2] = res * (-float(center[1]) / h + 0.5)
    crop[2, 2] = 1
    if rotation != 0:
        angle = -rotation * np.pi / 180
        sin, cos = np.sin(angle), np.cos(angle)
        rot = np.zeros((3, 3))
        rot[0, :2] = [cos, -sin]
        rot[1, :2] = [sin, cos]
        rot[2, 2] = 1
        to_origin = np.eye(3)
        to_origin[:2, 2] = -output_size / 2
        back = np.eye(3)
        back[:2, 2] = output_size / 2
        crop = np.dot(back, np.dot(rot, np.dot(to_origin, crop)))
    return crop[:2]


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine matrix to points (..., 2)."""
    flat = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    homogeneous = np.concatenate((flat, np.ones((flat.shape[0], 1))), axis=1)
    return np.dot(homogeneous, matrix.T).reshape(np.shape(points))


def _warp_mask(mask: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    warped = warp_affine((mask * 255).astype(np.uint8), matrix, (size, size)) / 255
    return (warped > 0.5).astype(np.float32)


def apply_transform(
    image: np.ndarray,
    mask: np.ndarray | Sequence[np.ndarray],
    joints: np.ndarray,
    params: AffineParams,
    input_size: int,
    output_sizes: Sequence[int],
    flip_index: Sequence[int],
    scale_aware_sigma: bool = False,
) -> TransformedSample:
    """Warp one sample with ``params``.

    ``image`` (H, W, 3) uint8 RGB; ``mask`` (H, W) bool/float (1 = supervise), or one per output size;
    ``joints`` (P, J, C) with C = 3 ``[x, y, v]`` or 4 (plus the scale-aware sigma, divided by ``aug_scale``
    when ``scale_aware_sigma``). Returns the warped image, per-output-size masks and joints.
    """
    sizes = [int(r) for r in output_sizes]
    masks_in = [mask] * len(sizes) if isinstance(mask, np.ndarray) else list(mask)
    if len(masks_in) != len(sizes):
        raise ValueError(f"got {len(masks_in)} masks for {len(sizes)} output sizes")
    joints = np.asarray(joints, dtype=np.float64)
    center = params.shifted_center
    masks_out: list[np.ndarray] = []
    joints_out: list[np.ndarray] = []
    for r, m in zip(sizes, masks_in, strict=True):
        mat = affine_matrix(center, params.scale, r, params.rotation)
        masks_out.append(_warp_mask(np.asarray(m), mat, r))
        warped = joints.copy()
        warped[..., 0:2] = transform_points(joints[..., 0:2], mat)
        if scale_aware_sigma and warped.shape[-1] > 3:
            warped[..., 3] = warped[..., 3] / params.aug_scale
        joints_out.append(warped)
    matrix = affine_matrix(center, params.scale, input_size, params.rotation)
    image_out = warp_affine(image, matrix, (input_size, input_size))
    if params.flip:
        order = np.asarray(flip_index, dtype=np.int64)
        image_out = np.ascontiguousarray(image_out[:, ::-1])
        for i, r in enumerate(sizes):
            masks_out[i] = np.ascontiguousarray(masks_out[i][:, ::-1])
            flipped = joints_out[i][:, order]
            flipped[..., 0] = r - flipped[..., 0] - 1
            joints_out[i] = flipped
    return TransformedSample(image=image_out, masks=masks_out, joints=joints_out)


@functools.lru_cache(maxsize=8)
def _normalize_table(mean: tuple[float, ...], std: tuple[float, ...]) -> np.ndarray:
    values = np.arange(256, dtype=np.float32)[None, :] / np.float32(255)  # (1, 256)
    m = np.asarray(mean, dtype=np.float32)[:, None]
    s = np.asarray(std, dtype=np.float32)[:, None]
    return np.ascontiguousarray((values - m) / s, dtype=np.float32)  # (3, 256)


def normalize_image(
    image: np.ndarray, mean: tuple[float, ...] = IMAGENET_MEAN, std: tuple[float, ...] = IMAGENET_STD
) -> np.ndarray:
    """(S, S, 3) uint8 RGB -> (3, S, S) float32 ``(x/255 - mean)/std`` (the official ImageNet statistics by default:
    the same defaults as the codec's, :mod:`hhrnet.datasets`).

    Same float32 arithmetic as the official ToTensor + Normalize, done once per channel and byte value
    (a 3x256 table), so the result is bit-identical and the per-pixel work is a table lookup.
    """
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an (H, W, 3) uint8 image, got {image.shape} {image.dtype}")
    out = np.empty((3, *image.shape[:2]), dtype=np.float32)  # (3, S, S)
    table = _normalize_table(tuple(mean), tuple(std))
    for c in range(3):
        out[c] = cv2.LUT(np.ascontiguousarray(image[:, :, c]), table[c])
    return out


__all__ = [
    "AffineParams",
    "AugmentationSettings",
    "TransformedSample",
    "affine_matrix",
    "apply_transform",
    "base_scale",
    "identity_params",
    "normalize_image",
    "sample_affine_params",
    "transform_points",
]
