"""Test-time aggregation of the network outputs, in torch (official ``get_multi_stage_outputs`` +
``aggregate_results``, docs/official.md §7.3-4). :mod:`hhrnet.kernels.aggregate` is the NumPy twin for runtimes
without torch; both are tested against each other.

Per scale: every stage is resized to the last stage's size (bilinear, align_corners=False) and the
heatmap channels averaged; with flip, the flipped pass is resized, flipped back, its channels permuted
by ``flip_index``, averaged the same way, and its tags kept as a second tag map (T = 2). With
PROJECT2IMAGE everything is resized to the input size. Across scales heatmaps are summed and divided by
the number of scales; tags come from scale 1 only.

No data-dependent Python control flow on tensor values: the function traces into ONNX.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from hhrnet.kernels.aggregate import tag_maps


def _resize(x: Tensor, size: Sequence[int]) -> Tensor:
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def _stages(
    outputs: Sequence[Tensor],
    num_joints: int,
    with_heatmaps: Sequence[bool],
    with_ae: Sequence[bool],
    flip_index: Sequence[int] | None,
    tag_dim: int = 1,
) -> tuple[Tensor, list[Tensor]]:
    size = (outputs[-1].shape[2], outputs[-1].shape[3])  # shapes, not ints: stays dynamic when traced
    total: Tensor | None = None
    count = 0
    tags: list[Tensor] = []
    for i, out in enumerate(outputs):
        if i != len(outputs) - 1:
            out = _resize(out, size)  # (B, C_i, H/2, W/2)
        if flip_index is not None:
            out = torch.flip(out, [3])
        if with_heatmaps[i]:
            hm = out[:, :num_joints]  # (B, J, H/2, W/2)
            if flip_index is not None:
                hm = hm[:, list(flip_index)]
            total = hm if total is None else total + hm
            count += 1
        if with_ae[i]:
            tags += tag_maps(out, num_joints, tag_dim, flip_index)  # (B, J or 1, H/2, W/2) each
    assert total is not None, "at least one stage must provide heatmaps"
    return total / count, tags


def aggregate(
    outputs: Sequence[Tensor],
    flip_outputs: Sequence[Tensor] | None = None,
    *,
    num_joints: int,
    flip_index: Sequence[int],
    with_heatmaps: Sequence[bool] = (True, True),
    with_ae: Sequence[bool] = (True, False),
    project_to: tuple[int, int] | None = None,
    tag_dim: int = 1,
) -> tuple[Tensor, Tensor]:
    """One scale -> heatmaps (B, J, H', W') and tags (B, J, H', W', T); ``project_to`` is (H, W)."""
    heatmaps, tags = _stages(outputs, num_joints, with_heatmaps, with_ae, None, tag_dim)
    if flip_outputs is not None:
        hm_flip, tags_flip = _stages(flip_outputs, num_joints, with_heatmaps, with_ae, flip_index, tag_dim)
        maps = [heatmaps, hm_flip]
        tags = tags + tags_flip
    else:
        maps = [heatmaps]
    if project_to is not None:
        maps = [_resize(m, project_to) for m in maps]
        tags = [_resize(t, project_to) for t in tags]
    final = (maps[0] + maps[1]) / 2.0 if len(maps) == 2 else maps[0]  # (B, J, H', W')
    stacked = torch.stack(tags, dim=4)  # (B, J, H', W', T)
    return final, stacked
