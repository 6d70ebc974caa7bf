"""HigherHRNet training loss: masked heatmap MSE per stage plus the associative-embedding (AE) tag loss.

Official semantics (docs/official.md §5):

* heatmap loss per sample: ``mean_{j,y,x} (pred - gt)² · mask[y, x]`` (not normalised by the mask area);
* AE loss per image on the stage-0 tag map flattened to (J·H·W,): for each person n with ≥ 1 visible joint,
  ``h̄_n`` = mean of its tags, ``pull_n = mean_k (h_k - h̄_n)²``; with N such people,
  ``pull = Σ_n pull_n / N`` and ``push = (Σ_{a,b} f(h̄_a - h̄_b) - N) / ((N-1) N) / 2`` with
  ``f(d) = exp(-d²)`` (``exp``) or ``max(0, 1 - |d|)`` (``max``); both are 0 for N = 0, push is 0 for N = 1;
* total = ``Σ_stage [mean_B(hm)·f_hm + mean_B(push)·f_push + mean_B(pull)·f_pull]``, the AE terms only for
  stages with ``with_ae_loss`` and only inside stages that also have a heatmap loss (as the official trainer).

The official AE loss loops over images, people and joints in Python and copies the joints to the host every
step (docs/official.md S5). Here the whole batch is one gather plus masked reductions on the fixed (B, MAXP, J) layout:
no Python loop over people or joints, no ``.item()``/``.cpu()``, no data-dependent shapes, so it never
synchronises with the device. Everything is computed in float32, also under autocast.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import Literal

import torch
from torch import Tensor, nn

from hhrnet.config import LossConfig

AELossType = Literal["exp", "max"]


def heatmap_loss(pred: Tensor, gt: Tensor, mask: Tensor) -> Tensor:
    """Per-sample masked MSE (B,) for ``pred``/``gt`` (B, J, H, W) and ``mask`` (B, H, W)."""
    if pred.shape != gt.shape:
        raise ValueError(f"heatmap prediction {tuple(pred.shape)} and target {tuple(gt.shape)} differ")
    sq = (pred.float() - gt.float()) ** 2 * mask.float()[:, None]  # (B, J, H, W)
    return sq.mean(dim=(1, 2, 3))  # (B,)


def _tag_distance(diff: Tensor) -> Tensor:
    """Euclidean length over dim 1 of ``diff`` (B, D, ...): ``|d|`` for D = 1 (the official arithmetic); for
    D > 1 the squared length is clamped at 1e-12 first, so coinciding tags get a finite gradient."""
    if diff.shape[1] == 1:
        return diff[:, 0].abs()
    return (diff**2).sum(dim=1).clamp(min=1e-12).sqrt()


def _picked_tags(tags: Tensor, joints: Tensor, tag_dim: int) -> tuple[Tensor, Tensor]:
    """The tags at the labelled joints (B, D, P, J) (0 at unused slots) and the used mask (B, P, J)."""
    batch = tags.shape[0]
    flat = tags.reshape(batch, tag_dim, -1).float()  # (B, D, N): D groups of tag channels
    index = joints[..., 0].long().clamp(0, flat.shape[2] - 1)  # (B, P, J)
    used = joints[..., 1] > 0  # (B, P, J)
    gather = index.reshape(batch, 1, -1).expand(batch, tag_dim, index.shape[1] * index.shape[2])
    picked = torch.gather(flat, 2, gather).reshape(batch, tag_dim, *index.shape[1:])  # (B, D, P, J)
    picked = torch.where(used[:, None], picked, torch.zeros_like(picked))
    return picked, used


def ae_loss(
    tags: Tensor, joints: Tensor, loss_type: AELossType = "exp", margin: float = 1.0, tag_dim: int = 1
) -> tuple[Tensor, Tensor]:
    """Push and pull (B,) each, for ``tags`` (B, D * J', H, W) and ``joints`` (B, P, J', 2).

    ``joints[..., 0]`` are flat indices into one tag group flattened to (J' * H * W,), ``joints[..., 1] > 0``
    marks a used slot. ``margin`` (``max`` only; official: 1) is the tag distance beyond which two people no
    longer push each other: ``max(0, margin - |d|)``. With ``tag_dim`` D > 1 (not official) each tag is a
    D-vector, the channels being D consecutive groups of J'; ``(h - h̄)²`` and ``d²`` become squared Euclidean
    lengths and ``|d|`` the length. D = 1 is the official loss, computed as before.
    """
    if loss_type not in ("exp", "max"):
        raise ValueError(f"unknown AE loss type {loss_type!r}; expected 'exp' or 'max'")
    if margin != 1.0 and loss_type != "max":
        raise ValueError(f"an AE push margin ({margin}) applies to the 'max' loss only")
    picked, used = _picked_tags(tags, joints, tag_dim)  # (B, D, P, J), (B, P, J)
    weight = used.to(picked.dtype)
    count = weight.sum(dim=2)  # (B, P)
    person = count > 0  # (B, P)
    safe_count = count.clamp(min=1)
    mean = picked.sum(dim=3) / safe_count[:, None]  # (B, D, P)
    spread = ((picked - mean[..., None]) ** 2).sum(dim=1)  # (B, P, J)
    spread = torch.where(used, spread, torch.zeros_like(spread))
    pull_person = spread.sum(dim=2) / safe_count  # (B, P)
    num = person.to(picked.dtype).sum(dim=1)  # (B,)
    pull = torch.where(person, pull_person, torch.zeros_like(pull_person)).sum(dim=1) / num.clamp(min=1)  # (B,)

    diff = mean[:, :, :, None] - mean[:, :, None, :]  # (B, D, P, P)
    if loss_type == "exp":
        similarity = torch.exp(-(diff**2).sum(dim=1))
    else:
        similarity = torch.clamp(margin - _tag_distance(diff), min=0)
    pair = person[:, :, None] & person[:, None, :]  # (B, P, P)
    total = torch.where(pair, similarity, torch.zeros_like(similarity)).sum(dim=(1, 2))  # (B,) incl. diagonal
    push = (total - num * margin) / ((num - 1) * num).clamp(min=1) * 0.5  # (B,): the diagonal is `margin` each
    push = torch.where(num > 1, push, torch.zeros_like(push))
    return push, pull


def grouping_counts(tags: Tensor, joints: Tensor, threshold: float = 1.0, tag_dim: int = 1) -> tuple[Tensor, Tensor]:
    """How many ground-truth people the tags group correctly, and how many there are (two int64 scalars).

    The tags are read at the ground-truth joints (the same gather as :func:`ae_loss`), so this measures the
    grouping alone, whatever the heatmaps do. A person (a slot with >= 1 used joint) is grouped correctly when
    each of its joints' tags is within ``threshold`` of the person's mean tag (the decoder's
    ``test.tag_threshold``) and strictly nearer to it than to any other person's mean tag in the image
    (Euclidean distances for D-vector tags). Collapsed tags (every person at one value) score 0 on images with
    two or more people.
    """
    picked, used = _picked_tags(tags.detach(), joints, tag_dim)  # (B, D, P, J), (B, P, J)
    count = used.sum(dim=2)  # (B, P)
    person = count > 0  # (B, P)
    mean = picked.sum(dim=3) / count.clamp(min=1)[:, None]  # (B, D, P)
    dist = _tag_distance(picked[:, :, :, :, None] - mean[:, :, None, None, :])  # (B, P, J, P): joint of p to mean of q
    dist = torch.where(person[:, None, None, :], dist, torch.full_like(dist, float("inf")))
    own = _tag_distance(picked - mean[..., None])  # (B, P, J)
    slots = torch.arange(dist.shape[1], device=dist.device)
    other = torch.where(
        slots[None, :, None, None] == slots[None, None, None, :], torch.full_like(dist, float("inf")), dist
    ).amin(dim=3)  # (B, P, J) nearest other person's mean
    right = ((own < threshold) & (own < other)) | ~used  # (B, P, J)
    correct = (right.all(dim=2) & person).sum()
    return correct, person.sum()


class HigherHRNetLoss(nn.Module):
    """Multi-stage loss (official MultiLossFactory + the trainer's sum), built from ``cfg.loss``.

    ``forward(outputs, heatmaps, masks, joints)`` takes per-stage lists: ``outputs[i]`` (B, C_i, H_i, W_i)
    with the J heatmap channels first (then tag channels where a stage has the AE loss), ``heatmaps[i]``
    (B, J, H_i, W_i), ``masks[i]`` (B, H_i, W_i), ``joints[i]`` (B, MAXP, J, 2). Returns the scalar total and
    a dict of detached per-stage terms (``heatmap_i``, ``push_i``, ``pull_i``, already multiplied by their
    factors and averaged over the batch) for logging.
    """

    def __init__(self, loss: LossConfig, num_joints: int, tag_dim: int = 1) -> None:
        super().__init__()
        stages = len(loss.with_heatmaps_loss)
        lists = (loss.heatmaps_loss_factor, loss.with_ae_loss, loss.push_loss_factor, loss.pull_loss_factor)
        if any(len(v) != stages for v in lists):
            raise ValueError("every per-stage loss setting needs one entry per stage")
        if loss.ae_loss_type not in ("exp", "max"):
            raise ValueError(f"unknown AE loss type {loss.ae_loss_type!r}; expected 'exp' or 'max'")
        self.num_joints = num_joints
        self.tag_dim = int(tag_dim)
        self.with_heatmaps_loss = tuple(bool(v) for v in loss.with_heatmaps_loss)
        self.heatmaps_loss_factor = tuple(float(v) for v in loss.heatmaps_loss_factor)
        self.with_ae_loss = tuple(bool(v) for v in loss.with_ae_loss)
        self.push_loss_factor = tuple(float(v) for v in loss.push_loss_factor)
        self.pull_loss_factor = tuple(float(v) for v in loss.pull_loss_factor)
        self.ae_loss_type: AELossType = loss.ae_loss_type
        if loss.ae_push_margin <= 0 or (loss.ae_push_margin != 1.0 and loss.ae_loss_type != "max"):
            raise ValueError(f"loss.ae_push_margin={loss.ae_push_margin}: a positive margin, for ae_loss_type=max only")
        self.ae_push_margin = float(loss.ae_push_margin)

    @property
    def num_stages(self) -> int:
        return len(self.with_heatmaps_loss)

    def stage_terms(
        self, index: int, output: Tensor, heatmaps: Tensor, mask: Tensor, joints: Tensor
    ) -> tuple[Tensor | None, Tensor | None, Tensor | None]:
        """Per-sample (B,) heatmap, push and pull losses of one stage, factors applied (None where off)."""
        j = self.num_joints
        hm = push = pull = None
        offset = 0
        if self.with_heatmaps_loss[index]:
            hm = heatmap_loss(output[:, :j], heatmaps, mask) * self.heatmaps_loss_factor[index]  # (B,)
            offset = j
        if self.with_ae_loss[index]:
            tags = output[:, offset:]  # (B, D * (J or 1), H, W)
            push, pull = ae_loss(tags, joints, self.ae_loss_type, self.ae_push_margin, self.tag_dim)
            push = push * self.push_loss_factor[index]
            pull = pull * self.pull_loss_factor[index]
        return hm, push, pull

    def grouping_counts(self, outputs: Sequence[Tensor], joints: Sequence[Tensor]) -> tuple[Tensor, Tensor] | None:
        """:func:`grouping_counts` on the first stage with tags (None when no stage has them)."""
        for i in range(self.num_stages):
            if self.with_ae_loss[i]:
                offset = self.num_joints if self.with_heatmaps_loss[i] else 0
                return grouping_counts(outputs[i][:, offset:], joints[i], tag_dim=self.tag_dim)
        return None

    def forward(
        self,
        outputs: Sequence[Tensor],
        heatmaps: Sequence[Tensor],
        masks: Sequence[Tensor],
        joints: Sequence[Tensor],
    ) -> tuple[Tensor, dict[str, Tensor]]:
        n = self.num_stages
        if not (len(outputs) == len(heatmaps) == len(masks) == len(joints) == n):
            raise ValueError(
                f"the loss has {n} stages but got {len(outputs)} outputs, {len(heatmaps)} heatmaps, "
                f"{len(masks)} masks and {len(joints)} joints"
            )
        device_type = outputs[0].device.type
        autocast_on = device_type in ("cuda", "cpu") and torch.is_autocast_enabled(device_type)
        with torch.autocast(device_type=device_type, enabled=False) if autocast_on else nullcontext():
            total = outputs[0].new_zeros((), dtype=torch.float32)
            terms: dict[str, Tensor] = {}
            for i in range(n):
                hm, push, pull = self.stage_terms(i, outputs[i], heatmaps[i], masks[i], joints[i])
                if hm is None:
                    continue  # the official trainer adds push/pull only inside the heatmap branch
                total = total + hm.mean()
                terms[f"heatmap_{i}"] = hm.mean().detach()
                if push is not None and pull is not None:
                    total = total + push.mean() + pull.mean()
                    terms[f"push_{i}"] = push.mean().detach()
                    terms[f"pull_{i}"] = pull.mean().detach()
            terms["total"] = total.detach()
        return total, terms


__all__ = ["AELossType", "HigherHRNetLoss", "ae_loss", "grouping_counts", "heatmap_loss"]
