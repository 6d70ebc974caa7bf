"""Pose NMS: an opt-in departure from the official decoder (which keeps every person it groups, docs/official.md §9).

With occluded joints the official grouping starts extra persons from candidates it could not match; refine
then fills their missing joints at the same tag-nearest peaks as the real person, so the extra person is a
duplicate. OKS-based pose NMS removes them: persons are visited by score (descending; equal scores keep
their order) and a person is dropped when its OKS with an already kept person reaches the threshold.

OKS as COCO defines it, between two decoded poses a and b (map pixels): over the joints found in both
(val > 0), mean of exp(-d^2 / (2 s (2 sigma_j)^2)) with s the mean of their keypoint-box areas (at least 1).
Kept persons stay in the official order. NumPy + Numba only; the same function serves every decoder.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from hhrnet.datasets import DEFAULT_OKS_SIGMA, facts_for_joints


def sigmas_for(num_joints: int) -> np.ndarray:
    """(J,) f64 OKS sigmas for a joint count: COCO's (17 joints), CrowdPose's (14), else 0.08 for every joint."""
    facts = facts_for_joints(num_joints)
    return np.asarray(facts.oks_sigmas) if facts is not None else np.full(num_joints, DEFAULT_OKS_SIGMA)


@njit(cache=True)
def _box_area(pose: np.ndarray) -> float:
    x0 = y0 = np.inf
    x1 = y1 = -np.inf
    for j in range(pose.shape[0]):
        if pose[j, 2] > 0:
            x0 = min(x0, np.float64(pose[j, 0]))
            x1 = max(x1, np.float64(pose[j, 0]))
            y0 = min(y0, np.float64(pose[j, 1]))
            y1 = max(y1, np.float64(pose[j, 1]))
    if x1 < x0:
        return 0.0
    return (x1 - x0) * (y1 - y0)


@njit(cache=True)
def oks(a: np.ndarray, b: np.ndarray, sigmas: np.ndarray) -> float:
    """OKS of two poses (J, >= 3) [x, y, val, ...]: 0 when they share no found joint."""
    s = max((_box_area(a) + _box_area(b)) / 2.0, 1.0)
    total = 0.0
    n = 0
    for j in range(a.shape[0]):
        if a[j, 2] > 0 and b[j, 2] > 0:
            dx = np.float64(a[j, 0]) - np.float64(b[j, 0])
            dy = np.float64(a[j, 1]) - np.float64(b[j, 1])
            k2 = (2.0 * sigmas[j]) ** 2
            total += math.exp(-(dx * dx + dy * dy) / (2.0 * s * k2))
            n += 1
    return total / n if n else 0.0


@njit(cache=True)
def pose_nms(poses: np.ndarray, scores: np.ndarray, sigmas: np.ndarray, threshold: float) -> np.ndarray:
    """poses (P, J, 3+T), scores (P,) -> indices of the kept persons (K,) int64, ascending (official order)."""
    p_count = poses.shape[0]
    order = np.argsort(-scores, kind="mergesort")  # stable: equal scores keep the official order
    keep = np.zeros(p_count, np.bool_)
    kept = np.empty(p_count, np.int64)
    k = 0
    for q in range(p_count):
        p = order[q]
        dup = False
        for r in range(k):
            if oks(poses[p], poses[kept[r]], sigmas) >= threshold:
                dup = True
                break
        if not dup:
            keep[p] = True
            kept[k] = p
            k += 1
    return np.flatnonzero(keep)


def suppress(poses: np.ndarray, scores: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(poses, scores) without the persons pose NMS drops at ``threshold`` (0 = off: unchanged)."""
    if threshold <= 0 or len(poses) < 2:
        return poses, scores
    keep = pose_nms(poses, scores.astype(np.float64), sigmas_for(poses.shape[1]), float(threshold))
    return poses[keep], scores[keep]
