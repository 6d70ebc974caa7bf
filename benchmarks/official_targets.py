"""Naive twins of the official target generators and augmentation (docs/official.md §4, §6).

Written from the algorithm description as plain per-person / per-joint loops, the way the official code
works, so that the fast implementations in :mod:`hhrnet.targets` and :mod:`hhrnet.data.transforms` can be
checked against them (tests) and timed against them (:mod:`hhrnet.benchmarks.targets`). Not used in training.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from hhrnet.warp import warp_affine  # the official cv2.warpAffine, on OpenCV's own kernel (hhrnet.warp)


def naive_kernel(sigma: float) -> np.ndarray:
    """Unnormalised Gaussian on a grid of ``6σ+3`` points, centred at ``3σ+1``."""
    n = 6 * sigma + 3
    col = np.arange(0.0, n, 1.0, dtype=np.float64)
    row = col[:, None]
    c = 3 * sigma + 1
    return np.exp(-((col - c) ** 2 + (row - c) ** 2) / (2 * sigma**2))


def naive_heatmaps(
    joints: np.ndarray, output_size: int, num_joints: int, sigma: float = 2.0, scale_aware: bool = False
) -> np.ndarray:
    """One person and one joint at a time: paste the kernel window with an element-wise maximum."""
    res = output_size
    maps = np.zeros((num_joints, res, res), dtype=np.float32)
    fixed = naive_kernel(sigma) if not scale_aware else None
    for person in joints:
        s = float(person[0, 3]) if scale_aware else sigma
        g = naive_kernel(s) if fixed is None else fixed
        for j, point in enumerate(person):
            if point[2] <= 0:
                continue
            x, y = int(point[0]), int(point[1])
            if not (0 <= x < res and 0 <= y < res):
                continue
            x_lo, y_lo = int(np.round(x - 3 * s - 1)), int(np.round(y - 3 * s - 1))
            x_hi, y_hi = int(np.round(x + 3 * s + 2)), int(np.round(y + 3 * s + 2))
            gx0, gx1 = max(0, -x_lo), min(x_hi, res) - x_lo
            gy0, gy1 = max(0, -y_lo), min(y_hi, res) - y_lo
            mx0, mx1 = max(0, x_lo), min(x_hi, res)
            my0, my1 = max(0, y_lo), min(y_hi, res)
            maps[j, my0:my1, mx0:mx1] = np.maximum(maps[j, my0:my1, mx0:mx1], g[gy0:gy1, gx0:gx1])
    return maps


def naive_joints(
    joints: np.ndarray, output_size: int, num_joints: int, max_people: int = 30, tag_per_joint: bool = True
) -> np.ndarray:
    """Person i -> row i; its visible in-bounds joints fill slots 0, 1, ... Raises IndexError past max_people."""
    res = output_size
    out = np.zeros((max_people, num_joints, 2))
    for i in range(len(joints)):
        filled = 0
        for j, point in enumerate(joints[i]):
            x, y = int(point[0]), int(point[1])
            if point[2] > 0 and 0 <= x < res and 0 <= y < res:
                flat = y * res + x + (j * res * res if tag_per_joint else 0)
                out[i][filled] = (flat, 1)
                filled += 1
    return out


def naive_affine_matrix(center: Sequence[float], scale: float, res: int, rot: float) -> np.ndarray:
    """(3, 3) crop-then-rotate matrix built step by step."""
    h = 200 * scale
    m = np.zeros((3, 3))
    m[0, 0] = float(res) / h
    m[1, 1] = float(res) / h
    m[0, 2] = res * (-float(center[0]) / h + 0.5)
    m[1, 2] = res * (-float(center[1]) / h + 0.5)
    m[2, 2] = 1
    if rot != 0:
        a = (-rot) * np.pi / 180
        r = np.zeros((3, 3))
        r[0, :2] = [np.cos(a), -np.sin(a)]
        r[1, :2] = [np.sin(a), np.cos(a)]
        r[2, 2] = 1
        shift = np.eye(3)
        shift[0, 2] = -res / 2
        shift[1, 2] = -res / 2
        unshift = np.eye(3)
        unshift[0, 2] = res / 2
        unshift[1, 2] = res / 2
        m = np.dot(unshift, np.dot(r, np.dot(shift, m)))
    return m


def naive_augment(
    image: np.ndarray,
    mask: np.ndarray,
    joints: np.ndarray,
    *,
    center: Sequence[float],
    scale: float,
    rot: float,
    flip: bool,
    input_size: int,
    output_sizes: Sequence[int],
    flip_index: Sequence[int],
) -> tuple[np.ndarray, list[np.ndarray], list[np.ndarray]]:
    """Affine crop of image, mask and joints per output size, then the optional flip (center already shifted)."""
    masks, joint_list = [], []
    for res in output_sizes:
        mat = naive_affine_matrix(center, scale, res, rot)[:2]
        m = warp_affine((mask * 255).astype(np.uint8), mat, (res, res)) / 255
        masks.append((m > 0.5).astype(np.float32))
        jt = np.array(joints, dtype=np.float64)
        for p in range(jt.shape[0]):
            for j in range(jt.shape[1]):
                x, y = jt[p, j, 0], jt[p, j, 1]
                jt[p, j, 0] = np.dot(mat[0], [x, y, 1.0])
                jt[p, j, 1] = np.dot(mat[1], [x, y, 1.0])
        joint_list.append(jt)
    mat_in = naive_affine_matrix(center, scale, input_size, rot)[:2]
    out = warp_affine(image, mat_in, (input_size, input_size))
    if flip:
        out = out[:, ::-1].copy()
        for i, res in enumerate(output_sizes):
            masks[i] = masks[i][:, ::-1].copy()
            jt = joint_list[i][:, list(flip_index)]
            jt[:, :, 0] = res - jt[:, :, 0] - 1
            joint_list[i] = jt
    return out, masks, joint_list


__all__ = ["naive_affine_matrix", "naive_augment", "naive_heatmaps", "naive_joints", "naive_kernel"]
