"""CUDA decode with Numba: maps stay on the device, only peaks and poses cross to the host.

Input: det (B, J, H, W) f32 and tags (B, J, H, W, T) f32 as any ``__cuda_array_interface__`` producer
(torch, CuPy, a TensorRT output buffer) or host arrays. Steps:

1. ``peaks_kernel``   one thread per (image, joint), grid-stride: the same lazy-NMS heap select as the CPU
                      kernel (:func:`hhrnet.kernels.peaks.topk_nms_hw`) — its device functions are compiled
                      from the very same Python source — giving M peaks per joint in torch.topk's order.
2. grouping           the (B, J, M) peak tensors (values, indices, tags: a few KB) come to the host, where
                      :func:`hhrnet.kernels.decode.group_jm` runs the exact munkres-1.1.4 matching. It is
                      sequential by nature (joint after joint) and takes ~0.2 ms per image on a CPU core.
3. ``adjust_kernel``  one thread per (image, person, joint): the quarter-pixel offsets, reading the device maps.
4. ``prev_tag_kernel`` then ``refine_kernel``: one thread per (image, person, missing joint) scans the full map
                      for the first-occurrence argmax of det - round(|tag - person tag|), skipping pixels
                      whose det cannot beat the best so far.
5. poses (B, C, J, 3+T) come back to the host.

Runs under ``NUMBA_ENABLE_CUDASIM=1`` (CI, tiny inputs) and on a real GPU. Not run on a GPU by this project yet:
the tests compare the simulator's output with the reference decoder. On hardware, float32 ``a*a + b`` may be
contracted to an FMA by the CUDA compiler, which can move a refine distance across a rounding boundary; the
GPU parity test (``@pytest.mark.gpu``) is the check for that.
"""

from __future__ import annotations

import math
import types
from typing import Any

import numpy as np
from numba import cuda

from hhrnet.kernels import peaks as _peaks
from hhrnet.kernels.decode import DecodedBatch, group_jm, scores_pj
from hhrnet.kernels.params import DecodeParams


def _device(dispatcher: Any, **rebind: Any) -> Any:
    """Compile a CPU kernel's Python source as a CUDA device function, its callees rebound to device ones."""
    fn = dispatcher.py_func
    glob = dict(fn.__globals__)
    glob.update(rebind)
    return cuda.jit(device=True)(types.FunctionType(fn.__code__, glob, fn.__name__))


_sift_d = _device(_peaks._sift)
_make_heap_d = _device(_peaks._make_heap, _sift=_sift_d)
_sort_heap_d = _device(_peaks._sort_heap, _sift=_sift_d)
_nms_value_d = _device(_peaks._nms_value)


@cuda.jit
def peaks_kernel(det: Any, k: int, pad: int, vals: Any, inds: Any) -> None:  # pragma: no cover - device code
    b_count, j_count, h, w = det.shape
    start = cuda.grid(1)
    for t in range(start, b_count * j_count, cuda.gridsize(1)):
        b = t // j_count
        j = t - b * j_count
        m = det[b, j]
        v = vals[b, j]
        ix = inds[b, j]
        for i in range(k):
            y = i // w
            v[i] = _nms_value_d(m, y, i - y * w, pad)
            ix[i] = i
        _make_heap_d(v, ix, k)
        for i in range(k, h * w):
            y = i // w
            x = i - y * w
            top = v[0]
            if m[y, x] > top or top < 0:
                nv = _nms_value_d(m, y, x, pad)
                if nv > top:
                    _sift_d(v, ix, 0, k, nv, i)
        _sort_heap_d(v, ix, k)


@cuda.jit
def gather_tags_kernel(tags: Any, inds: Any, out: Any) -> None:  # pragma: no cover - device code
    """out[b, j, m, :] = tags[b, j, y, x, :] at each peak: only B*J*M*T values ever leave the device."""
    b_count, j_count, m_count = inds.shape
    w = tags.shape[3]
    for t in range(cuda.grid(1), b_count * j_count * m_count, cuda.gridsize(1)):
        b = t // (j_count * m_count)
        j = (t // m_count) % j_count
        m = t % m_count
        y = inds[b, j, m] // w
        x = inds[b, j, m] - y * w
        for d in range(tags.shape[4]):
            out[b, j, m, d] = tags[b, j, y, x, d]


@cuda.jit(device=True)
def _offset_d(a: float, b: float, ties_positive: bool) -> float:  # pragma: no cover - device code
    if a > b:
        return 0.25
    if ties_positive and a == b:
        return 0.0
    return -0.25


@cuda.jit
def adjust_kernel(persons: Any, counts: Any, det: Any, ties_positive: bool) -> None:  # pragma: no cover
    b_count, cap, j_count = persons.shape[0], persons.shape[1], persons.shape[2]
    h, w = det.shape[2], det.shape[3]
    for t in range(cuda.grid(1), b_count * cap * j_count, cuda.gridsize(1)):
        b = t // (cap * j_count)
        p = (t // j_count) % cap
        j = t % j_count
        if p >= counts[b] or not persons[b, p, j, 2] > 0:
            continue
        x = persons[b, p, j, 0]
        y = persons[b, p, j, 1]
        xi = int(x)
        yi = int(y)
        dx = _offset_d(det[b, j, yi, min(xi + 1, w - 1)], det[b, j, yi, max(xi - 1, 0)], ties_positive)
        dy = _offset_d(det[b, j, min(yi + 1, h - 1), xi], det[b, j, max(yi - 1, 0), xi], ties_positive)
        persons[b, p, j, 0] = np.float32(np.float32(x + np.float32(dx)) + np.float32(0.5))
        persons[b, p, j, 1] = np.float32(np.float32(y + np.float32(dy)) + np.float32(0.5))


@cuda.jit
def prev_tag_kernel(persons: Any, counts: Any, tags: Any, prev: Any) -> None:  # pragma: no cover
    """Mean tag of each person's detected joints (float32, joint order), before any joint is refined."""
    b_count, cap, j_count = persons.shape[0], persons.shape[1], persons.shape[2]
    t_count = tags.shape[4]
    for t in range(cuda.grid(1), b_count * cap, cuda.gridsize(1)):
        b = t // cap
        p = t - b * cap
        if p >= counts[b]:
            continue
        found = 0
        for d in range(t_count):
            prev[b, p, d] = np.float32(0.0)
        for j in range(j_count):
            if persons[b, p, j, 2] > 0:
                px = int(persons[b, p, j, 0])
                py = int(persons[b, p, j, 1])
                for d in range(t_count):
                    prev[b, p, d] = np.float32(prev[b, p, d] + tags[b, j, py, px, d])
                found += 1
        for d in range(t_count):
            prev[b, p, d] = np.float32(prev[b, p, d] / np.float32(found))


@cuda.jit(device=True)
def _round_half_even(x: float) -> float:  # pragma: no cover - device code
    r = math.floor(x + 0.5)  # x is a float32 value: x + 0.5 is exact in float64
    if r - x == 0.5 and r % 2 != 0:
        r -= 1.0
    return r


@cuda.jit
def refine_kernel(
    persons: Any, counts: Any, det: Any, tags: Any, prev: Any, ties_positive: bool
) -> None:  # pragma: no cover
    b_count, cap, j_count = persons.shape[0], persons.shape[1], persons.shape[2]
    h, w = det.shape[2], det.shape[3]
    t_count = tags.shape[4]
    for t in range(cuda.grid(1), b_count * cap * j_count, cuda.gridsize(1)):
        b = t // (cap * j_count)
        p = (t // j_count) % cap
        j = t % j_count
        if p >= counts[b] or persons[b, p, j, 2] != 0:
            continue
        best = -math.inf
        by = 0
        bx = 0
        for y in range(h):
            for x in range(w):
                d = det[b, j, y, x]
                if not d > best:
                    continue
                s = np.float32(0.0)
                for k in range(t_count):
                    e = np.float32(tags[b, j, y, x, k] - prev[b, p, k])
                    s = np.float32(s + np.float32(e * e))
                dist = np.float32(math.sqrt(s))
                v = np.float32(d - np.float32(_round_half_even(dist)))
                if v > best:
                    best = v
                    by = y
                    bx = x
        val = det[b, j, by, bx]
        if val > 0:
            dx = _offset_d(det[b, j, by, min(bx + 1, w - 1)], det[b, j, by, max(bx - 1, 0)], ties_positive)
            dy = _offset_d(det[b, j, min(by + 1, h - 1), bx], det[b, j, max(by - 1, 0), bx], ties_positive)
            persons[b, p, j, 0] = np.float32(bx + 0.5 + dx)
            persons[b, p, j, 1] = np.float32(by + 0.5 + dy)
            persons[b, p, j, 2] = val


def _launch(total: int) -> tuple[int, int]:
    threads = 128
    return max(1, min(1024, (total + threads - 1) // threads)), threads


def _on_device(x: Any) -> bool:
    return hasattr(x, "__cuda_array_interface__")


def decode_cuda(det: Any, tags: Any, params: DecodeParams, capacity: int = 512, stream: Any = 0) -> DecodedBatch:
    """Batched decode on the GPU; the result equals :func:`hhrnet.kernels.decode.decode_batch`."""
    d_det = det if _on_device(det) else cuda.to_device(np.ascontiguousarray(det, np.float32), stream=stream)
    if not _on_device(tags):
        tags = np.ascontiguousarray(tags, np.float32)
        if tags.ndim == 4:
            tags = tags[..., None]
    d_tags = tags if _on_device(tags) else cuda.to_device(tags, stream=stream)
    wrap = getattr(cuda, "as_cuda_array", None)  # absent in the simulator, where arrays are already wrapped
    if wrap is not None:
        d_det, d_tags = wrap(d_det), wrap(d_tags)
    b_count, j_count, h, w = d_det.shape
    t_count = d_tags.shape[4]
    if j_count != params.num_joints:
        params = params.with_joints(j_count)
    m = min(params.max_num_people, h * w)
    d_vals = cuda.device_array((b_count, j_count, m), np.float32, stream=stream)
    d_inds = cuda.device_array((b_count, j_count, m), np.int64, stream=stream)
    grid, block = _launch(b_count * j_count)
    peaks_kernel[grid, block, stream](d_det, m, params.nms_padding, d_vals, d_inds)
    d_tagk = cuda.device_array((b_count, j_count, m, t_count), np.float32, stream=stream)
    grid, block = _launch(b_count * j_count * m)
    gather_tags_kernel[grid, block, stream](d_tags, d_inds, d_tagk)
    vals, inds = d_vals.copy_to_host(stream=stream), d_inds.copy_to_host(stream=stream)
    tag_k = d_tagk.copy_to_host(stream=stream)
    order = np.asarray(params.joint_order, np.int64)
    poses = np.zeros((b_count, capacity, j_count, 3 + t_count), np.float32)
    scores = np.zeros((b_count, capacity), np.float32)
    counts = np.zeros(b_count, np.int32)
    overflow = np.zeros(b_count, np.bool_)
    for b in range(b_count):
        persons = group_jm(vals[b], inds[b], tag_k[b], w, order, params.max_num_people, params.detection_threshold,
                           params.tag_threshold, params.use_detection_val, params.ignore_too_much,
                           params.unique_person_keys, params.max_persons)  # fmt: skip
        n = min(len(persons), capacity)
        poses[b, :n], counts[b], overflow[b] = persons[:n], n, len(persons) > capacity
        scores[b, :n] = scores_pj(persons[:n])
    d_poses = cuda.to_device(poses, stream=stream)
    d_counts = cuda.to_device(counts, stream=stream)
    grid, block = _launch(b_count * capacity * j_count)
    if params.adjust:
        adjust_kernel[grid, block, stream](d_poses, d_counts, d_det, params.ties_positive)
    if params.refine:
        d_prev = cuda.device_array((b_count, capacity, t_count), np.float32, stream=stream)
        pgrid, pblock = _launch(b_count * capacity)
        prev_tag_kernel[pgrid, pblock, stream](d_poses, d_counts, d_tags, d_prev)
        refine_kernel[grid, block, stream](d_poses, d_counts, d_det, d_tags, d_prev, params.ties_positive)
    poses = d_poses.copy_to_host(stream=stream)
    return DecodedBatch(counts, poses, scores, overflow)
