"""Draw skeletons on an image (COCO-17 or CrowdPose-14 limbs), one colour per person."""

from __future__ import annotations

import colorsys

import cv2
import numpy as np

from hhrnet.datasets import facts_for_joints


def limbs_for(num_joints: int) -> tuple[tuple[int, int], ...]:
    """The skeleton of the dataset with this many joints (:mod:`hhrnet.datasets`); none for other counts."""
    facts = facts_for_joints(num_joints)
    return facts.skeleton if facts is not None else ()


def _colour(i: int) -> tuple[int, int, int]:
    r, g, b = colorsys.hsv_to_rgb((i * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_poses(
    image: np.ndarray,
    keypoints: np.ndarray,
    scores: np.ndarray | None = None,
    threshold: float = 0.1,
    min_score: float = 0.0,
    caption: str | None = None,
) -> np.ndarray:
    """RGB uint8 image + keypoints (P, J, 3) in pixels -> a new RGB image with the skeletons drawn.

    Each pose scoring at least ``min_score`` is drawn in a colour of its own: its joints whose score exceeds
    ``threshold`` and the limbs between two such joints of that pose only. ``caption`` (e.g. the thresholds) is
    written in the top-left corner."""
    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 300))
    drawn = 0
    for p, kp in enumerate(keypoints):
        if scores is not None and scores[p] < min_score:
            continue
        colour = _colour(drawn)
        drawn += 1
        visible = kp[:, 2] > threshold
        for a, b in limbs_for(len(kp)):
            if visible[a] and visible[b]:
                pa = (int(round(kp[a, 0])), int(round(kp[a, 1])))
                pb = (int(round(kp[b, 0])), int(round(kp[b, 1])))
                cv2.line(out, pa, pb, colour, thick, cv2.LINE_AA)
        for j in np.flatnonzero(visible):
            cv2.circle(out, (int(round(kp[j, 0])), int(round(kp[j, 1]))), thick + 1, colour, -1, cv2.LINE_AA)
    if caption:
        scale = max(image.shape[:2]) / 700
        (w, h), base = cv2.getTextSize(caption, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        cv2.rectangle(out, (0, 0), (w + 4, h + base + 4), (0, 0, 0), -1)
        cv2.putText(out, caption, (2, h + 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA)
    return out
