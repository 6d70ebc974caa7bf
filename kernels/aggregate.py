"""NumPy twin of :func:`hhrnet.aggregate.aggregate` for runtimes without torch (ONNX Runtime, TensorRT
outputs copied to the host). Bilinear resizing with align_corners=False semantics is done by
``cv2.resize(INTER_LINEAR)``, which uses the same half-pixel sampling; results agree with torch to ~1e-6.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np


def resize_maps(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(B, C, h, w) f32 -> (B, C, H, W) with size = (H, W)."""
    b, c, h, w = x.shape
    if (h, w) == tuple(size):
        return x
    out = np.empty((b, c, size[0], size[1]), np.float32)
    for i in range(b):
        for c0 in range(0, c, 512):  # OpenCV handles at most 512 channels per call
            chunk = np.ascontiguousarray(x[i, c0 : c0 + 512].transpose(1, 2, 0))
            res = cv2.resize(chunk, (size[1], size[0]), interpolation=cv2.INTER_LINEAR)
            out[i, c0 : c0 + 512] = res.reshape(size[0], size[1], -1).transpose(2, 0, 1)
    return out


def _stages(
    outputs: Sequence[np.ndarray], num_joints: int, with_heatmaps: Sequence[bool], with_ae: Sequence[bool],
    flip_index: Sequence[int] | None,
) -> tuple[np.ndarray, list[np.ndarray]]:  # fmt: skip
    size = (outputs[-1].shape[2], outputs[-1].shape[3])
    total: np.ndarray | None = None
    count = 0
    tags: list[np.ndarray] = []
    for i, out in enumerate(outputs):
        out = resize_maps(out.astype(np.float32, copy=False), size)
        if flip_index is not None:
            out = out[:, :, :, ::-1]
        if with_heatmaps[i]:
            hm = out[:, :num_joints]
            if flip_index is not None:
                hm = hm[:, list(flip_index)]
            total = hm if total is None else total + hm
            count += 1
        if with_ae[i]:
            tag = out[:, num_joints:]
            if flip_index is not None and tag.shape[1] == num_joints:
                tag = tag[:, list(flip_index)]
            tags.append(tag)
    if total is None:
        raise ValueError("at least one stage must provide heatmaps")
    return total / np.float32(count), tags


def aggregate(
    outputs: Sequence[np.ndarray],
    flip_outputs: Sequence[np.ndarray] | None = None,
    *,
    num_joints: int,
    flip_index: Sequence[int],
    with_heatmaps: Sequence[bool] = (True, True),
    with_ae: Sequence[bool] = (True, False),
    project_to: tuple[int, int] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """One scale -> heatmaps (B, J, H', W') f32 and tags (B, J, H', W', T) f32; ``project_to`` is (H, W)."""
    heatmaps, tags = _stages(outputs, num_joints, with_heatmaps, with_ae, None)
    maps = [heatmaps]
    if flip_outputs is not None:
        hm_flip, tags_flip = _stages(flip_outputs, num_joints, with_heatmaps, with_ae, flip_index)
        maps.append(hm_flip)
        tags = tags + tags_flip
    if project_to is not None:
        maps = [resize_maps(np.ascontiguousarray(m), project_to) for m in maps]
        tags = [resize_maps(np.ascontiguousarray(t), project_to) for t in tags]
    final = (maps[0] + maps[1]) / np.float32(2.0) if len(maps) == 2 else maps[0]
    return np.ascontiguousarray(final, dtype=np.float32), np.ascontiguousarray(np.stack(tags, axis=4), np.float32)


def combine_scales(per_scale: Sequence[np.ndarray], tags: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    total = per_scale[0]
    for hm in per_scale[1:]:
        total = total + hm
    return total / np.float32(len(per_scale)), tags
