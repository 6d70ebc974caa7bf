"""The drawing: one colour per drawn pose, weak poses left out, a caption."""

from __future__ import annotations

import numpy as np

from hhrnet.visualize import _colour, draw_poses


def _pose(x0: float) -> np.ndarray:
    kp = np.zeros((17, 3))
    kp[:, 0] = x0 + np.linspace(0, 30, 17)
    kp[:, 1] = np.linspace(40, 200, 17)
    kp[:, 2] = 1.0
    return kp


def _colours(image: np.ndarray, x0: int, x1: int) -> set[tuple[int, int, int]]:
    return {tuple(int(c) for c in px) for px in image[:, x0:x1].reshape(-1, 3)}


def test_each_pose_in_its_own_colour_and_weak_poses_left_out() -> None:
    image = np.zeros((256, 256, 3), np.uint8)
    keypoints = np.stack([_pose(20), _pose(120), _pose(200)])
    out = draw_poses(
        image, keypoints, np.array([0.9, 0.5, 0.1]), threshold=0.1, min_score=0.2, caption="2 poses with score >= 0.2"
    )
    first, second = _colour(0), _colour(1)
    left, middle, right = _colours(out, 0, 100), _colours(out, 100, 190), _colours(out, 195, 256)
    assert first in left and second not in left  # the first pose only in its own colour
    assert second in middle and first not in middle
    assert right == {(0, 0, 0)}  # score 0.1 < min_score: not drawn at all
    assert out[:12, :100].any() and not image[:12, :100].any()  # the caption is written top-left
    assert draw_poses(image, keypoints[:0]).tolist() == image.tolist()  # no poses: the image unchanged
