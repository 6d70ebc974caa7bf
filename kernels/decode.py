"""Fast decoder (Numba CPU): the official parse, step for step, with identical output.

    peaks (NMS + top-k, :mod:`.peaks`) -> group (:mod:`.group`) -> adjust -> score -> refine (:mod:`.refine`)

Every step keeps the reference's arithmetic (float64 candidate rows, NumPy's float32 means, float64
matching distance, float32 refine distance, round half to even, first-occurrence argmax, munkres 1.1.4),
so :func:`decode` equals :func:`hhrnet.kernels.reference.decode_reference` bit for bit. The speed comes
from skipping thrown-away work. The maps are read once up front (:func:`summaries`: the max det and tag
range of every 8x8 block, in the same pass as the finiteness check); NMS is then evaluated only where a
pixel could enter the top-k (whole blocks below the heap minimum are skipped), refine searches only missing
joints, joint by joint, max first over blocks shared by every person missing the joint, and nothing is
re-converted per person. ``parallel=True`` runs peaks and refine over the joints on all Numba threads.

The official person count is unbounded (docs/official.md B2: up to J*M = 510 persons on a noise map). Refine keeps its
cost bounded anyway: one joint costs O(H W) plus a small search per person (see :mod:`.refine`), so pure
noise at the official 17x512x704 decodes in a few times a clean 20-person scene, with the official output.
``DecodeParams.max_persons`` caps the count (not official). Inputs with NaN or infinite values are an
InputError (the official code would loop forever in Munkres).
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np
from numba import njit, prange

from hhrnet.errors import InputError
from hhrnet.kernels.group import group_jm
from hhrnet.kernels.params import DecodeParams
from hhrnet.kernels.peaks import peaks_blocks_jhw, peaks_blocks_jhw_parallel
from hhrnet.kernels.posenms import suppress
from hhrnet.kernels.refine import (
    GRID_COST,
    TILE,
    adjust_pj,
    refine_pj,
    refine_pj_parallel,
    scores_pj,
    summarize,
    summarize_parallel,
)


@njit(cache=True)
def decode_peaks_jhw(
    det: np.ndarray,
    tags: np.ndarray,
    vals: np.ndarray,
    inds: np.ndarray,
    tag_k: np.ndarray,
    det_max: np.ndarray,
    tag_lo: np.ndarray,
    tag_hi: np.ndarray,
    joint_order: np.ndarray,
    max_num_people: int,
    detection_threshold: float,
    tag_threshold: float,
    use_detection_val: bool,
    ignore_too_much: bool,
    unique_keys: bool,
    max_persons: int,
    do_adjust: bool,
    do_refine: bool,
    ties_positive: bool,
    grid_cost: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Everything after the peak step: group -> adjust -> score -> refine, from vals (J, M), flat inds (J, M)
    and tag_k (J, M, T) (the kernel's own peaks, or a peaks graph's top-k); det_max, tag_lo, tag_hi: the
    block summaries of :func:`hhrnet.kernels.refine.summarize` (used by refine only)."""
    persons = group_jm(
        vals,
        inds,
        tag_k,
        det.shape[2],
        joint_order,
        max_num_people,
        detection_threshold,
        tag_threshold,
        use_detection_val,
        ignore_too_much,
        unique_keys,
        max_persons,
    )
    if do_adjust:
        adjust_pj(persons, det, ties_positive)
    scores = scores_pj(persons)
    if do_refine:
        refine_pj(persons, det, tags, inds, det_max, tag_lo, tag_hi, ties_positive, grid_cost)
    return persons, scores


def _decode_one(
    det: np.ndarray,
    tags: np.ndarray,
    det_max: np.ndarray,
    tag_lo: np.ndarray,
    tag_hi: np.ndarray,
    pad: int,
    joint_order: np.ndarray,
    max_num_people: int,
    detection_threshold: float,
    tag_threshold: float,
    use_detection_val: bool,
    ignore_too_much: bool,
    unique_keys: bool,
    max_persons: int,
    do_adjust: bool,
    do_refine: bool,
    ties_positive: bool,
    grid_cost: float,
) -> tuple[np.ndarray, np.ndarray]:
    """det (J, H, W) f32, tags (J, H, W, T) f32, block summaries -> poses (P, J, 3+T) f32, scores (P,) f32."""
    vals, inds, tag_k = peaks_blocks_jhw(det, tags, max_num_people, pad, det_max, TILE)  # (J, M), (J, M), (J, M, T)
    return decode_peaks_jhw(
        det,
        tags,
        vals,
        inds,
        tag_k,
        det_max,
        tag_lo,
        tag_hi,
        joint_order,
        max_num_people,
        detection_threshold,
        tag_threshold,
        use_detection_val,
        ignore_too_much,
        unique_keys,
        max_persons,
        do_adjust,
        do_refine,
        ties_positive,
        grid_cost,
    )


def _decode_one_parallel(
    det: np.ndarray,
    tags: np.ndarray,
    det_max: np.ndarray,
    tag_lo: np.ndarray,
    tag_hi: np.ndarray,
    pad: int,
    joint_order: np.ndarray,
    max_num_people: int,
    detection_threshold: float,
    tag_threshold: float,
    use_detection_val: bool,
    ignore_too_much: bool,
    unique_keys: bool,
    max_persons: int,
    do_adjust: bool,
    do_refine: bool,
    ties_positive: bool,
    grid_cost: float,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode_jhw` with peaks and refine spread over the joints (all cores)."""
    vals, inds, tag_k = peaks_blocks_jhw_parallel(det, tags, max_num_people, pad, det_max, TILE)
    persons = group_jm(
        vals,
        inds,
        tag_k,
        det.shape[2],
        joint_order,
        max_num_people,
        detection_threshold,
        tag_threshold,
        use_detection_val,
        ignore_too_much,
        unique_keys,
        max_persons,
    )
    if do_adjust:
        adjust_pj(persons, det, ties_positive)
    scores = scores_pj(persons)
    if do_refine:
        refine_pj_parallel(persons, det, tags, inds, det_max, tag_lo, tag_hi, ties_positive, grid_cost)
    return persons, scores


decode_jhw = njit(cache=True, nogil=True)(_decode_one)  # nogil: overlapped stages run beside it
decode_jhw_parallel = njit(cache=False, nogil=True)(_decode_one_parallel)  # calls parallel kernels: never cached


def _count_non_finite(a: np.ndarray) -> int:
    flat = a.reshape(-1)
    n = 0
    for i in prange(flat.shape[0]):
        x = flat[i]
        if x - x != 0:  # NaN and +-inf (inf - inf is NaN)
            n += 1
    return n


count_non_finite = njit(cache=True, nogil=True)(_count_non_finite)
count_non_finite_parallel = njit(parallel=True, cache=False)(_count_non_finite)


def check_finite(name: str, a: np.ndarray, axes: tuple[str, ...], parallel: bool = False, at_image: int = -1) -> None:
    """Raise InputError naming how many values of ``a`` are NaN or infinite, and where the first one is
    (``at_image`` >= 0: ``a`` is that image of a batch)."""
    bad = (count_non_finite_parallel if parallel else count_non_finite)(a)
    if bad == 0:
        return
    where = np.argwhere(~np.isfinite(a))[0]
    value = a[tuple(where)]
    at = ", ".join(f"{axis} {int(i)}" for axis, i in zip(axes, where, strict=False))
    at = f"image {at_image}, {at}" if at_image >= 0 else at
    raise InputError(
        f"{name} has {bad} non-finite value{'s' if bad > 1 else ''} (NaN or infinite); the first is {value} at "
        f"{at}. Decoding needs finite maps: check the network output."
    )


def prepare(
    det: np.ndarray,
    tags: np.ndarray,
    params: DecodeParams,
    batched: bool,
    parallel: bool = False,
    check: bool = True,
) -> tuple[np.ndarray, np.ndarray, DecodeParams]:
    """Validate shapes and values (NaN / infinite values are an InputError; ``check=False`` leaves the values
    to :func:`summaries`), make C-contiguous float32 copies where needed, add T = 1 to (.., J, H, W) tags."""
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
    if check:
        check_values(det, tags, batched, parallel)
    if det.shape[-3] != params.num_joints:
        params = params.with_joints(det.shape[-3])
    return det, tags, params


def check_values(det: np.ndarray, tags: np.ndarray, batched: bool, parallel: bool = False, at_image: int = -1) -> None:
    """InputError naming the first NaN or infinite value of det, then of tags."""
    axes = ("image", "joint", "y", "x", "tag dim")[(0 if batched else 1) :]
    check_finite("det", det, axes, parallel, at_image)
    check_finite("tags", tags, axes, parallel, at_image)


Summaries = tuple[np.ndarray, np.ndarray, np.ndarray]  # det_max (J, th, tw), tag_lo, tag_hi (J, th, tw, T)


def summaries(
    det: np.ndarray, tags: np.ndarray, params: DecodeParams, parallel: bool = False, at_image: int = -1
) -> Summaries:
    """The block summaries refine searches with (:func:`hhrnet.kernels.refine.summarize`), for one image's
    det (J, H, W), tags (J, H, W, T). Their pass reads every value once, so it is also the finiteness check
    (NaN / infinite values are an InputError; ``at_image`` >= 0 names the image of a batch). Without refine:
    the plain check and empty summaries."""
    if not params.refine:
        check_values(det, tags, batched=False, parallel=parallel, at_image=at_image)
        j_count, t_count = det.shape[0], tags.shape[-1]
        no_tags = np.empty((j_count, 0, 0, t_count), np.float32)
        return np.empty((j_count, 0, 0), np.float32), no_tags, no_tags
    det_max, tag_lo, tag_hi, finite = (summarize_parallel if parallel else summarize)(det, tags)
    if not finite:
        check_values(det, tags, batched=False, at_image=at_image)
    return det_max, tag_lo, tag_hi


def kernel_args(params: DecodeParams) -> tuple[Any, ...]:
    """The trailing arguments every CPU decode kernel takes, in their order (joint order, the grouping
    parameters, adjust, refine, ties, the refine search's cost model): the one place the list is spelled out."""
    order = np.asarray(params.joint_order, np.int64)
    return (order, *params.grouping_args(), params.adjust, params.refine, params.ties_positive, GRID_COST)


def _run(
    det: np.ndarray, tags: np.ndarray, params: DecodeParams, parallel: bool = False, at_image: int = -1
) -> tuple[np.ndarray, np.ndarray]:
    kernel = decode_jhw_parallel if parallel else decode_jhw
    return kernel(
        det,
        tags,
        *summaries(det, tags, params, parallel, at_image),
        params.nms_padding,
        *kernel_args(params),
    )


def decode(
    det: np.ndarray, tags: np.ndarray, params: DecodeParams, parallel: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """One image: det (J, H, W), tags (J, H, W, T) or (J, H, W) -> poses (P, J, 3+T) f32, scores (P,) f32.

    poses rows are [x, y, val, tag_0..] in map pixels, persons in the official order. A J other than
    ``params.num_joints`` uses that J's default joint order. ``params.pose_nms`` > 0 drops duplicate persons
    (:mod:`.posenms`; not official). ``parallel``: peaks and refine run over the
    joints on all of Numba's threads (``numba.set_num_threads``); the output is the same.
    """
    det, tags, params = prepare(det, tags, params, batched=False, parallel=parallel, check=False)
    return suppress(*_run(det, tags, params, parallel), params.pose_nms)


def decode_from_peaks(
    det: np.ndarray, tags: np.ndarray, vals: np.ndarray, inds: np.ndarray, tag_k: np.ndarray, params: DecodeParams
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`decode` with the NMS + top-k step already done (vals (J, M), flat inds (J, M), tag_k (J, M, T)).

    Equal to :func:`decode` when the peaks equal :func:`hhrnet.kernels.peaks.peaks_jhw`'s; a runtime's TopK
    may order tied values differently, which changes grouping only among equal peaks.
    """
    det, tags, params = prepare(det, tags, params, batched=False, check=False)
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
    check_finite("peak values", vals, ("joint", "k"))
    check_finite("peak tags", tag_k, ("joint", "k", "tag dim"))
    poses, scores = decode_peaks_jhw(
        det,
        tags,
        vals,
        inds,
        tag_k,
        *summaries(det, tags, params),
        *kernel_args(params),
    )
    return suppress(poses, scores, params.pose_nms)


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


def decode_batch(
    det: np.ndarray, tags: np.ndarray, params: DecodeParams, capacity: int = 512, parallel: bool = False
) -> DecodedBatch:
    """det (B, J, H, W), tags (B, J, H, W, T) -> :class:`DecodedBatch` with C = ``capacity`` slots per image.

    The first C persons of each image (official order) are kept; ``overflow`` flags images that had more.
    Pose NMS (``params.pose_nms``) then runs on those C persons.
    """
    if capacity < 1:
        raise InputError(f"capacity must be >= 1, got {capacity}")
    det, tags, params = prepare(det, tags, params, batched=True, parallel=parallel, check=False)
    out = empty_batch(det.shape[0], capacity, det.shape[1], tags.shape[-1])
    for b in range(det.shape[0]):
        poses, scores = _run(det[b], tags[b], params, parallel, at_image=b)
        overflow = len(poses) > capacity
        poses, scores = suppress(poses[:capacity], scores[:capacity], params.pose_nms)  # as the CUDA decoder
        n = len(poses)
        out.poses[b, :n] = poses[:n]
        out.scores[b, :n] = scores[:n]
        out.counts[b] = n
        out.overflow[b] = overflow
    return out


def warmup(parallel: bool = False) -> None:
    """Compile (or load from cache) every CPU entry point for T = 1 and 2, both top-k paths, both refine
    searches; ``parallel`` also compiles the all-core kernels (never cached: seconds in every process)."""
    rng = np.random.default_rng(0)
    for h, w in ((8, 8), (48, 48)):  # nth_element path, partial_sort path
        det = rng.random((3, h, w)).astype(np.float32)
        for t in (1, 2):
            tags = (rng.random((3, h, w, t)) * 20).astype(np.float32)  # many persons: the grid search runs
            for par in (False, True) if parallel else (False,):
                decode(det, tags, DecodeParams(num_joints=3), parallel=par)


def warmup_in_child(**popen: Any) -> subprocess.Popen[bytes]:
    """:func:`warmup` in a child process (``popen``: :class:`subprocess.Popen` options), filling Numba's on-disk
    cache for this process and others to load. A process waiting on the child is interrupted by Ctrl-C at once,
    where a long LLVM compile in the process itself never returns to Python's bytecode loop to see it; and a job
    can go on with other work while the child compiles on one core."""
    return subprocess.Popen([sys.executable, "-c", "from hhrnet.kernels.decode import warmup; warmup()"], **popen)
