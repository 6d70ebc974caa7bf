"""Fast decoder (Numba CPU): the official parse, step for step, with identical output.

    peaks (NMS + top-k, :mod:`.peaks`) -> group (:mod:`.group`) -> adjust -> score -> refine (:mod:`.refine`)

Every step keeps the reference's arithmetic (float64 candidate rows, NumPy's float32 means, float64
matching distance, float32 refine distance, round half to even, first-occurrence argmax, munkres 1.1.4),
so :func:`decode` equals :func:`hhrnet.kernels.reference.decode_reference` bit for bit. The speed comes
from skipping thrown-away work: NMS is evaluated only where a pixel could enter the top-k, refine searches
only missing joints and prunes pixels by their det value, and nothing is re-converted per person.

A heatmap full of noise (SPEC B2: up to J*M = 510 persons) decodes in well under a second at 128x128;
``DecodeParams.max_persons`` bounds it further.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from hhrnet.errors import InputError
from hhrnet.kernels.group import group_jm
from hhrnet.kernels.params import DecodeParams
from hhrnet.kernels.peaks import peaks_jhw
from hhrnet.kernels.refine import adjust_pj, refine_pj, scores_pj


@njit(cache=True)
def decode_jhw(
    det: np.ndarray, tags: np.ndarray, joint_order: np.ndarray, max_num_people: int, pad: int,
    detection_threshold: float, tag_threshold: float, use_detection_val: bool, ignore_too_much: bool,
    do_adjust: bool, do_refine: bool, unique_keys: bool, max_persons: int, ties_positive: bool,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """det (J, H, W) f32, tags (J, H, W, T) f32 -> poses (P, J, 3+T) f32, scores (P,) f32."""
    vals, inds, tag_k = peaks_jhw(det, tags, max_num_people, pad)  # (J, M), (J, M), (J, M, T)
    persons = group_jm(vals, inds, tag_k, det.shape[2], joint_order, max_num_people, detection_threshold,
                       tag_threshold, use_detection_val, ignore_too_much, unique_keys, max_persons)  # fmt: skip
    if do_adjust:
        adjust_pj(persons, det, ties_positive)
    scores = scores_pj(persons)
    if do_refine:
        refine_pj(persons, det, tags, inds, max(detection_threshold, 0.0), ties_positive)
    return persons, scores


@njit(cache=True)
def decode_peaks_jhw(
    det: np.ndarray, tags: np.ndarray, vals: np.ndarray, inds: np.ndarray, tag_k: np.ndarray, joint_order: np.ndarray,
    max_num_people: int, detection_threshold: float, tag_threshold: float, use_detection_val: bool,
    ignore_too_much: bool, do_adjust: bool, do_refine: bool, unique_keys: bool, max_persons: int, ties_positive: bool,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """:func:`decode_jhw` after the peak step, from peaks computed elsewhere (a peaks graph's top-k)."""
    persons = group_jm(vals, inds, tag_k, det.shape[2], joint_order, max_num_people, detection_threshold,
                       tag_threshold, use_detection_val, ignore_too_much, unique_keys, max_persons)  # fmt: skip
    if do_adjust:
        adjust_pj(persons, det, ties_positive)
    scores = scores_pj(persons)
    if do_refine:
        refine_pj(persons, det, tags, inds, max(detection_threshold, 0.0), ties_positive)
    return persons, scores


def prepare(
    det: np.ndarray, tags: np.ndarray, params: DecodeParams, batched: bool
) -> tuple[np.ndarray, np.ndarray, DecodeParams]:
    """Validate shapes, make C-contiguous float32 copies where needed, add T = 1 to (.., J, H, W) tags."""
    det = np.ascontiguousarray(det, dtype=np.float32)
    tags = np.ascontiguousarray(tags, dtype=np.float32)
    lead = 4 if batched else 3
    if det.ndim != lead:
        raise InputError(f"det must have {lead} dimensions ({'B, ' if batched else ''}J, H, W), got {det.shape}")
    if tags.ndim == lead:
        tags = tags[..., None]
    if tags.ndim != lead + 1 or tags.shape[:lead] != det.shape or tags.shape[-1] < 1:
        raise InputError(f"tags {tags.shape} do not match det {det.shape}: expected det's shape + (T,)")
    if det.shape[-1] < 1 or det.shape[-2] < 1:
        raise InputError(f"empty maps: det {det.shape}")
    if det.shape[-3] != params.num_joints:
        params = params.with_joints(det.shape[-3])
    return det, tags, params


def _run(det: np.ndarray, tags: np.ndarray, params: DecodeParams) -> tuple[np.ndarray, np.ndarray]:
    return decode_jhw(
        det, tags, np.asarray(params.joint_order, np.int64), params.max_num_people, params.nms_padding,
        params.detection_threshold, params.tag_threshold, params.use_detection_val, params.ignore_too_much,
        params.adjust, params.refine, params.unique_person_keys, params.max_persons, params.ties_positive,
    )  # fmt: skip


def decode(det: np.ndarray, tags: np.ndarray, params: DecodeParams) -> tuple[np.ndarray, np.ndarray]:
    """One image: det (J, H, W), tags (J, H, W, T) or (J, H, W) -> poses (P, J, 3+T) f32, scores (P,) f32.

    poses rows are [x, y, val, tag_0..] in map pixels, persons in the official order. A J other than
    ``params.num_joints`` uses that J's default joint order.
    """
    det, tags, params = prepare(det, tags, params, batched=False)
    return _run(det, tags, params)


def decode_from_peaks(
    det: np.ndarray, tags: np.ndarray, vals: np.ndarray, inds: np.ndarray, tag_k: np.ndarray, params: DecodeParams
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode` with the NMS + top-k step already done (vals (J, M), flat inds (J, M), tag_k (J, M, T)).

    Equal to :func:`decode` when the peaks equal :func:`hhrnet.kernels.peaks.peaks_jhw`'s; a runtime's TopK
    may order tied values differently, which changes grouping only among equal peaks.
    """
    det, tags, params = prepare(det, tags, params, batched=False)
    j_count, h, w = det.shape
    m = min(params.max_num_people, h * w)
    vals = np.ascontiguousarray(vals, np.float32)
    inds = np.ascontiguousarray(inds, np.int64)
    tag_k = np.ascontiguousarray(tag_k, np.float32)
    if tag_k.ndim == 2:
        tag_k = tag_k[..., None]
    if vals.shape != (j_count, m) or inds.shape != (j_count, m) or tag_k.shape != (j_count, m, tags.shape[-1]):
        raise InputError(
            f"peaks {vals.shape}/{inds.shape}/{tag_k.shape} do not match maps {det.shape} "
            f"with M={m}, T={tags.shape[-1]}"
        )
    if inds.size and (inds.min() < 0 or inds.max() >= h * w):
        raise InputError("peak indices fall outside the heatmap")
    if not (np.isfinite(vals).all() and np.isfinite(tag_k).all()):
        raise InputError("peak values or tags are NaN or infinite")
    return decode_peaks_jhw(
        det, tags, vals, inds, tag_k, np.asarray(params.joint_order, np.int64), params.max_num_people,
        params.detection_threshold, params.tag_threshold, params.use_detection_val, params.ignore_too_much,
        params.adjust, params.refine, params.unique_person_keys, params.max_persons, params.ties_positive,
    )  # fmt: skip


@dataclass
class DecodedBatch:
    """Fixed-capacity batch output: nothing ragged crosses a kernel boundary."""

    counts: np.ndarray  # (B,) int32 persons kept per image (at most the capacity C)
    poses: np.ndarray  # (B, C, J, 3+T) f32; rows >= counts[b] are zero
    scores: np.ndarray  # (B, C) f32; entries >= counts[b] are zero
    overflow: np.ndarray  # (B,) bool: the image had more than C persons (the later ones are dropped)

    def image(self, b: int) -> tuple[np.ndarray, np.ndarray]:
        """(poses (P, J, 3+T), scores (P,)) of image b, as :func:`decode` returns them (up to C persons)."""
        n = int(self.counts[b])
        return self.poses[b, :n], self.scores[b, :n]


def empty_batch(b_count: int, capacity: int, j_count: int, t_count: int) -> DecodedBatch:
    return DecodedBatch(
        counts=np.zeros(b_count, np.int32),
        poses=np.zeros((b_count, capacity, j_count, 3 + t_count), np.float32),
        scores=np.zeros((b_count, capacity), np.float32),
        overflow=np.zeros(b_count, np.bool_),
    )


def decode_batch(det: np.ndarray, tags: np.ndarray, params: DecodeParams, capacity: int = 512) -> DecodedBatch:
    """det (B, J, H, W), tags (B, J, H, W, T) -> :class:`DecodedBatch` with C = ``capacity`` slots per image.

    The first C persons of each image (official order) are kept; ``overflow`` flags images that had more.
    """
    if capacity < 1:
        raise InputError(f"capacity must be >= 1, got {capacity}")
    det, tags, params = prepare(det, tags, params, batched=True)
    out = empty_batch(det.shape[0], capacity, det.shape[1], tags.shape[-1])
    for b in range(det.shape[0]):
        poses, scores = _run(det[b], tags[b], params)
        n = min(len(poses), capacity)
        out.poses[b, :n] = poses[:n]
        out.scores[b, :n] = scores[:n]
        out.counts[b] = n
        out.overflow[b] = len(poses) > capacity
    return out


def warmup() -> None:
    """Compile (or load from cache) every CPU entry point for T = 1 and 2, both top-k paths."""
    rng = np.random.default_rng(0)
    for h, w in ((8, 8), (48, 48)):  # nth_element path, partial_sort path
        det = rng.random((3, h, w)).astype(np.float32)
        for t in (1, 2):
            decode(det, rng.random((3, h, w, t)).astype(np.float32), DecodeParams(num_joints=3))
