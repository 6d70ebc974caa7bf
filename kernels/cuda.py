"""CUDA decoder (Numba): the official parse on the GPU, output identical to the CPU decoders.

Input: det (B, J, H, W) f32 and tags (B, J, H, W, T) or (B, J, H, W) f32, as any ``__cuda_array_interface__``
producer (torch, CuPy, a TensorRT output buffer) or host arrays. The maps never leave the device; the host
wrapper does every transfer, and only the fixed-capacity result comes back. Kernels (grid-stride loops):

1. ``peaks_kernel``    one thread per (image, joint): lazy NMS + top-k in torch.topk's CPU order
                       (:func:`hhrnet.kernels.peaks.topk_nms_hw`), peak tags gathered.
2. ``group_kernel``    one thread per image: the exact munkres-1.1.4 grouping
                       (:func:`hhrnet.kernels.group.group_image`), the person scores, the first C persons.
3. ``adjust_kernel``   one thread per (image, person, joint): quarter-pixel offsets.
4. ``person_tag_kernel`` one thread per (image, person): mean tag of the detected joints, before refine.
5. ``refine_kernel``   one block per (image, person, missing joint): the threads scan the map with pruning
                       and a shared-memory reduction keeps (value, flat index) maxima, so the result is the
                       first-occurrence argmax.

Steps 1-4 call the very Numba functions the CPU decoder runs (Numba compiles them for the device), so the
algorithm is written once. The CUDA compiler contracts ``a * b + c`` into FMAs by default, which would move
rounding boundaries; every product in the shared code goes through :func:`hhrnet.kernels.group.mul_rn`,
mapped here to the non-contractible ``__fmul_rn`` / ``__dmul_rn``; divisions and square roots are IEEE
(no fastmath).

Import this module only where ``numba.cuda.is_available()`` or under ``NUMBA_ENABLE_CUDASIM=1`` (the CI
runs the kernels in the simulator on tiny inputs); elsewhere importing it raises ImportError.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np
from numba import cuda, types
from numba.extending import overload

from hhrnet.errors import InputError
from hhrnet.kernels.decode import DecodedBatch
from hhrnet.kernels.group import group_image, mul_rn
from hhrnet.kernels.munkres import NOT_CONVERGED
from hhrnet.kernels.params import DecodeParams, person_capacity
from hhrnet.kernels.peaks import floor_log2, scratch_size, topk_nms_hw
from hhrnet.kernels.posenms import suppress
from hhrnet.kernels.refine import adjust_joint, person_score, person_tag, place_refined, refine_value

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
if not (SIMULATOR or cuda.is_available()):
    raise ImportError("hhrnet.kernels.cuda needs a CUDA GPU (or NUMBA_ENABLE_CUDASIM=1)")

THREADS = 8 if SIMULATOR else 128  # threads per block (a power of 2); each simulated thread is slow
MAX_BLOCKS = 64 if SIMULATOR else 4096

if not SIMULATOR:
    from numba.cuda import libdevice

    @overload(mul_rn, target="cuda")
    def _mul_rn_cuda(a, b):  # type: ignore[no-untyped-def]  # numba overload hook
        if a == types.float32 and b == types.float32:
            return lambda a, b: libdevice.fmul_rn(a, b)
        return lambda a, b: libdevice.dmul_rn(a, b)

    @cuda.jit(device=True, inline=True)
    def _local(a: Any) -> Any:
        return a

else:

    def _local(a: Any) -> Any:
        """The simulator wraps arrays in kernel arguments; the shared Numba functions need the NumPy array."""
        return a._item._ary


@cuda.jit
def peaks_kernel(
    det: Any, tags: Any, k: int, pad: int, work_v: Any, work_i: Any, stack: Any, vals: Any, inds: Any, tag_k: Any
) -> None:
    """det (B, J, H, W), tags (B, J, H, W, T) -> vals/inds (B, J, M), tag_k (B, J, M, T); work (B, J, S)."""
    det = _local(det)
    tags = _local(tags)
    work_v = _local(work_v)
    work_i = _local(work_i)
    stack = _local(stack)
    b_count, j_count, _, w = det.shape
    for task in range(cuda.grid(1), b_count * j_count, cuda.gridsize(1)):
        b = task // j_count
        j = task - b * j_count
        topk_nms_hw(det[b, j], k, pad, work_v[b, j], work_i[b, j], stack[b, j])
        for m in range(k):
            vals[b, j, m] = work_v[b, j, m]
            inds[b, j, m] = work_i[b, j, m]
            y = work_i[b, j, m] // w
            x = work_i[b, j, m] - y * w
            for t in range(tags.shape[4]):
                tag_k[b, j, m, t] = tags[b, j, y, x, t]


@cuda.jit
def group_kernel(
    vals: Any,
    inds: Any,
    tag_k: Any,
    width: int,
    joint_order: Any,
    max_num_people: int,
    detection_threshold: float,
    tag_threshold: float,
    use_detection_val: bool,
    ignore_too_much: bool,
    unique_keys: bool,
    max_persons: int,
    persons: Any,
    keys: Any,
    tag_rows: Any,
    tag_count: Any,
    rows: Any,
    ctags: Any,
    means: Any,
    raw: Any,
    cost: Any,
    marks: Any,
    row_cover: Any,
    col_cover: Any,
    path: Any,
    poses: Any,
    scores: Any,
    counts: Any,
    overflow: Any,
) -> None:
    """One thread per image: grouping into the work persons (B, cap, J, 3+T), then the first C into poses."""
    vals = _local(vals)
    inds = _local(inds)
    tag_k = _local(tag_k)
    joint_order = _local(joint_order)
    persons = _local(persons)
    keys = _local(keys)
    tag_rows = _local(tag_rows)
    tag_count = _local(tag_count)
    rows = _local(rows)
    ctags = _local(ctags)
    means = _local(means)
    raw = _local(raw)
    cost = _local(cost)
    marks = _local(marks)
    row_cover = _local(row_cover)
    col_cover = _local(col_cover)
    path = _local(path)
    poses = _local(poses)
    capacity = poses.shape[1]
    for b in range(cuda.grid(1), vals.shape[0], cuda.gridsize(1)):
        n = group_image(
            vals[b],
            inds[b],
            tag_k[b],
            width,
            joint_order,
            max_num_people,
            detection_threshold,
            tag_threshold,
            use_detection_val,
            ignore_too_much,
            unique_keys,
            max_persons,
            persons[b],
            keys[b],
            tag_rows[b],
            tag_count[b],
            rows[b],
            ctags[b],
            means[b],
            raw[b],
            cost[b],
            marks[b],
            row_cover[b],
            col_cover[b],
            path[b],
        )
        kept = n if n < capacity else capacity  # n = -1: grouping gave up (non-finite input), reported
        for p in range(kept):
            for j in range(poses.shape[2]):
                for c in range(poses.shape[3]):
                    poses[b, p, j, c] = np.float32(persons[b, p, j, c])
            scores[b, p] = person_score(poses[b], p)
        counts[b] = kept
        overflow[b] = n > capacity


@cuda.jit
def adjust_kernel(poses: Any, counts: Any, det: Any, ties_positive: bool) -> None:
    """One thread per (image, person, joint)."""
    poses = _local(poses)
    det = _local(det)
    b_count, capacity, j_count = poses.shape[0], poses.shape[1], poses.shape[2]
    for task in range(cuda.grid(1), b_count * capacity * j_count, cuda.gridsize(1)):
        b = task // (capacity * j_count)
        p = (task // j_count) % capacity
        j = task % j_count
        if p < counts[b] and poses[b, p, j, 2] > 0:
            adjust_joint(poses[b], p, j, det[b, j], ties_positive)


@cuda.jit
def person_tag_kernel(poses: Any, counts: Any, tags: Any, found: Any, ptag: Any) -> None:
    """One thread per (image, person): ptag (B, C, T) from the detected joints, before any joint is refined."""
    poses = _local(poses)
    tags = _local(tags)
    found = _local(found)
    ptag = _local(ptag)
    b_count, capacity = poses.shape[0], poses.shape[1]
    for task in range(cuda.grid(1), b_count * capacity, cuda.gridsize(1)):
        b = task // capacity
        p = task - b * capacity
        if p < counts[b]:
            person_tag(poses[b], p, tags[b], found[b, p], ptag[b, p])


@cuda.jit(device=True)
def _better(v: float, i: int, best: float, best_i: int) -> bool:
    """(v, i) beats (best, best_i): larger value, or equal value at a smaller flat index."""
    return v > best or (v == best and i < best_i)


@cuda.jit
def refine_kernel(poses: Any, counts: Any, det: Any, tags: Any, ptag: Any, ties_positive: bool) -> None:
    """One block per (image, person, joint) task, grid-stride over tasks; missing joints only."""
    poses = _local(poses)
    det = _local(det)
    tags = _local(tags)
    ptag = _local(ptag)
    best_v = cuda.shared.array(THREADS, np.float32)
    best_n = cuda.shared.array(THREADS, np.int64)
    b_count, capacity, j_count = poses.shape[0], poses.shape[1], poses.shape[2]
    h, w = det.shape[2], det.shape[3]
    tid = cuda.threadIdx.x
    for task in range(cuda.blockIdx.x, b_count * capacity * j_count, cuda.gridDim.x):
        b = task // (capacity * j_count)
        p = (task // j_count) % capacity
        j = task % j_count
        if p >= counts[b] or poses[b, p, j, 2] != 0:  # the same for every thread of the block
            continue
        det_j = det[b, j]
        tags_j = tags[b, j]
        person = ptag[b, p]
        best = np.float32(-math.inf)
        best_i = h * w  # "none yet": larger than every index
        for i in range(tid, h * w, THREADS):
            y = i // w
            x = i - y * w
            d = det_j[y, x]
            if d < best or (d == best and i > best_i):  # round(distance) >= 0: det bounds the value
                continue
            v = refine_value(d, tags_j, y, x, person)
            if _better(v, i, best, best_i):
                best = v
                best_i = i
        best_v[tid] = best
        best_n[tid] = best_i
        cuda.syncthreads()
        step = THREADS // 2
        while step > 0:
            if tid < step and _better(best_v[tid + step], best_n[tid + step], best_v[tid], best_n[tid]):
                best_v[tid] = best_v[tid + step]
                best_n[tid] = best_n[tid + step]
            cuda.syncthreads()
            step //= 2
        if tid == 0:
            found = best_n[0] if best_n[0] < h * w else 0  # np.argmax of nothing comparable: index 0
            by = found // w
            place_refined(poses[b], p, j, det_j, by, found - by * w, ties_positive)
        cuda.syncthreads()


@cuda.jit
def non_finite_kernel(a: Any, out: Any) -> None:
    """out[0] += how many values of the flat array a are NaN or infinite (grid-stride)."""
    a = _local(a)
    n = 0
    for i in range(cuda.grid(1), a.shape[0], cuda.gridsize(1)):
        x = a[i]
        if x - x != 0:
            n += 1
    if n > 0:
        cuda.atomic.add(out, 0, n)


def _check_finite(name: str, arr: Any, stream: Any) -> None:
    """InputError when a device array holds NaN or infinite values (one reduction on the device)."""
    flat = arr.reshape((int(np.prod(arr.shape)),))
    count = cuda.to_device(np.zeros(1, np.int64), stream=stream)
    non_finite_kernel[_grid(flat.shape[0]), THREADS, stream](flat, count)
    bad = int(count.copy_to_host(stream=stream)[0])
    if bad:
        raise InputError(
            f"{name} has {bad} non-finite value{'s' if bad > 1 else ''} (NaN or infinite) on the device. "
            "Decoding needs finite maps: check the network output."
        )


def _grid(tasks: int) -> int:
    return max(1, min(MAX_BLOCKS, (tasks + THREADS - 1) // THREADS))


def _as_device(x: Any, name: str, stream: Any) -> Any:
    """Any __cuda_array_interface__ object is used in place; a host array is copied over once."""
    if SIMULATOR and hasattr(x, "copy_to_host"):  # a simulator device array
        arr = x
    elif hasattr(x, "__cuda_array_interface__"):
        arr = cuda.as_cuda_array(x)
    else:
        arr = cuda.to_device(np.ascontiguousarray(x, np.float32), stream=stream)
    if arr.dtype != np.float32:
        raise InputError(f"{name} must be float32 on the device, got {arr.dtype}")
    return arr


def decode_cuda(det: Any, tags: Any, params: DecodeParams, capacity: int = 512, stream: Any = 0) -> DecodedBatch:
    """det (B, J, H, W), tags (B, J, H, W, T) on the GPU (or host) -> :class:`DecodedBatch` (host).

    Equal to :func:`hhrnet.kernels.decode.decode_batch` with the same capacity.
    """
    if capacity < 1:
        raise InputError(f"capacity must be >= 1, got {capacity}")
    d_det = _as_device(det, "det", stream)
    d_tags = _as_device(tags, "tags", stream)
    if len(d_det.shape) != 4:
        raise InputError(f"det must be (B, J, H, W), got {tuple(d_det.shape)}")
    if len(d_tags.shape) == 4:
        d_tags = d_tags.reshape((*d_tags.shape, 1))
    if tuple(d_tags.shape[:4]) != tuple(d_det.shape) or len(d_tags.shape) != 5:
        raise InputError(f"tags {tuple(d_tags.shape)} do not match det {tuple(d_det.shape)}")
    _check_finite("det", d_det, stream)
    _check_finite("tags", d_tags, stream)
    b_count, j_count, h, w = (int(s) for s in d_det.shape)
    t_count = int(d_tags.shape[4])
    params = params.with_joints(j_count)
    m = min(params.max_num_people, h * w)
    mw = max(m, params.max_num_people)
    cap = person_capacity(j_count, m, params.max_persons)
    size = scratch_size(h, w, m)

    def dev(shape: tuple[int, ...], dtype: Any) -> Any:
        return cuda.device_array(shape, dtype, stream=stream)

    vals, inds, tag_k = (
        dev((b_count, j_count, m), np.float32),
        dev((b_count, j_count, m), np.int64),
        dev((b_count, j_count, m, t_count), np.float32),
    )
    stack_rows = 2 * floor_log2(max(size, 2)) + 2
    peaks_kernel[_grid(b_count * j_count), THREADS, stream](
        d_det,
        d_tags,
        m,
        params.nms_padding,
        dev((b_count, j_count, size), np.float32),
        dev((b_count, j_count, size), np.int64),
        dev((b_count, j_count, stack_rows, 3), np.int64),
        vals,
        inds,
        tag_k,
    )

    poses = cuda.to_device(np.zeros((b_count, capacity, j_count, 3 + t_count), np.float32), stream=stream)
    scores = cuda.to_device(np.zeros((b_count, capacity), np.float32), stream=stream)
    counts = dev((b_count,), np.int32)
    overflow = dev((b_count,), np.bool_)
    group_kernel[_grid(b_count), THREADS, stream](
        vals,
        inds,
        tag_k,
        w,
        cuda.to_device(np.asarray(params.joint_order, np.int64), stream=stream),
        *params.grouping_args(),
        dev((b_count, cap, j_count, 3 + t_count), np.float64),
        dev((b_count, cap), np.float32),
        dev((b_count, cap, j_count, t_count), np.float32),
        dev((b_count, cap), np.int64),
        dev((b_count, mw, 3 + t_count), np.float64),
        dev((b_count, mw, t_count), np.float32),
        dev((b_count, mw, t_count), np.float32),
        dev((b_count, mw, mw), np.float64),
        dev((b_count, mw, mw), np.float64),
        dev((b_count, mw, mw), np.int8),
        dev((b_count, mw), np.bool_),
        dev((b_count, mw), np.bool_),
        dev((b_count, 2 * mw + 1, 2), np.int64),
        poses,
        scores,
        counts,
        overflow,
    )
    if (counts.copy_to_host(stream=stream) < 0).any():  # only non-finite maps can make grouping give up
        raise InputError(f"on the device: {NOT_CONVERGED}")
    if params.adjust:
        adjust_kernel[_grid(b_count * capacity * j_count), THREADS, stream](poses, counts, d_det, params.ties_positive)
    if params.refine:
        ptag = dev((b_count, capacity, t_count), np.float32)
        person_tag_kernel[_grid(b_count * capacity), THREADS, stream](
            poses, counts, d_tags, dev((b_count, capacity, j_count, t_count), np.float32), ptag
        )
        refine_kernel[min(MAX_BLOCKS, b_count * capacity * j_count), THREADS, stream](
            poses, counts, d_det, d_tags, ptag, params.ties_positive
        )
    out = DecodedBatch(
        counts=counts.copy_to_host(stream=stream),
        poses=poses.copy_to_host(stream=stream),
        scores=scores.copy_to_host(stream=stream),
        overflow=overflow.copy_to_host(stream=stream),
    )
    if params.pose_nms > 0:  # opt-in, on the host: the C persons per image are small
        for b in range(b_count):
            kept_poses, kept_scores = suppress(*out.image(b), params.pose_nms)
            n = len(kept_poses)
            out.poses[b, :n], out.scores[b, :n] = kept_poses, kept_scores
            out.poses[b, n:], out.scores[b, n:] = 0, 0
            out.counts[b] = n
    return out
