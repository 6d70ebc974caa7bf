"""Graph variants for export: what the exported model computes after the network.

* ``raw``       the network outputs ``[out0 (B, 2J, H/4, W/4), out1 (B, J, H/2, W/2)]``;
* ``aggregate`` flip test as a batched second pass (the flipped image is concatenated to the batch and
                runs in the same forward), stages resized to 1/2 and averaged, flip merged with the
                flip_index permutation, tags stacked (T = 2), projected to the input size:
                ``heatmaps (B, J, H, W)``, ``tags (B, J, H, W, T)`` — the official test maps;
* ``peaks``     ``aggregate`` plus 5x5 max-pool NMS and per-joint TopK(M) in the graph: adds
                ``peak_vals (B, J, M)``, ``peak_index (B, J, M)`` (flat y*W+x) and ``peak_tags (B, J, M, T)``,
                so only fixed-capacity peak tensors need to leave the GPU before grouping (adjust and
                refine still read the maps, which stay on the device).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from hhrnet.aggregate import aggregate


class AggregateGraph(nn.Module):
    def __init__(
        self,
        model: nn.Module,
        *,
        num_joints: int,
        flip_index: Sequence[int],
        flip: bool = True,
        with_heatmaps: Sequence[bool] = (True, True),
        with_ae: Sequence[bool] = (True, False),
        project: bool = True,
        tag_dim: int = 1,
    ) -> None:
        super().__init__()
        self.model = model
        self.num_joints = num_joints
        self.flip_index = tuple(flip_index)
        self.flip = flip
        self.with_heatmaps = tuple(with_heatmaps)
        self.with_ae = tuple(with_ae)
        self.project = project
        self.tag_dim = tag_dim

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        b = x.shape[0]
        if self.flip:
            outs = self.model(torch.cat([x, torch.flip(x, [3])], 0))  # one forward over (2B, 3, H, W)
            normal = [o[:b] for o in outs]
            flipped = [o[b:] for o in outs]
        else:
            normal, flipped = self.model(x), None
        project_to = (x.shape[2], x.shape[3]) if self.project else None
        return aggregate(
            normal,
            flipped,
            num_joints=self.num_joints,
            flip_index=self.flip_index,
            with_heatmaps=self.with_heatmaps,
            with_ae=self.with_ae,
            project_to=project_to,
            tag_dim=self.tag_dim,
        )  # (B, J, H, W), (B, J, H, W, T)


class PeaksGraph(nn.Module):
    def __init__(self, aggregate_graph: AggregateGraph, *, top_k: int = 30, nms_kernel: int = 5) -> None:
        super().__init__()
        self.inner = aggregate_graph
        self.top_k = top_k
        self.nms_kernel = nms_kernel

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        heatmaps, tags = self.inner(x)  # (B, J, H, W), (B, J, H, W, T)
        pooled = F.max_pool2d(heatmaps, self.nms_kernel, 1, self.nms_kernel // 2)
        kept = heatmaps * torch.eq(pooled, heatmaps).to(heatmaps.dtype)  # (B, J, H, W)
        flat = kept.flatten(2)  # (B, J, H*W)
        vals, index = torch.topk(flat, self.top_k, dim=2)  # (B, J, M)
        t = tags.shape[4]
        flat_tags = tags.flatten(2, 3)  # (B, J, H*W, T)
        if tags.shape[1] != heatmaps.shape[1]:  # one tag map shared by every joint (TAG_PER_JOINT False)
            flat_tags = flat_tags.expand(-1, heatmaps.shape[1], -1, -1)
        peak_tags = torch.gather(flat_tags, 2, index.unsqueeze(3).expand(-1, -1, -1, t))  # (B, J, M, T)
        return heatmaps, tags, vals, index, peak_tags
