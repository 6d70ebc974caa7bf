"""Peak extraction: 5x5 max-pool NMS and per-joint top-k in ``torch.topk``'s exact CPU order.

The official ``top_k`` keeps every pixel equal to the max of its window (plateaus survive), zeroes the
rest by multiplying with the 0/1 mask, and calls ``torch.topk(M)`` on each flattened joint map. For equal
values the order of ``torch.topk`` on CPU is that of libstdc++'s ``std::partial_sort`` (heap select, then
sort-heap) over (value, index) pairs, used whenever ``64 * M <= H * W`` (every real map size); that
algorithm is reproduced here step for step so that plateau peaks come out in the official order. (For maps
smaller than 64*M pixels torch switches to ``nth_element``; tie order may then differ.)

Layers: ``_hw`` (one map) -> ``_jhw`` (all joints of one image). NumPy + Numba only.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def nms_hw(det: np.ndarray, pad: int) -> np.ndarray:
    """(H, W) f32 -> (H, W) f32: det where det equals its (2*pad+1)^2 window max, else det * 0."""
    h, w = det.shape
    rowmax = np.empty_like(det)
    for y in range(h):
        for x in range(w):
            m = det[y, x]
            for xx in range(max(0, x - pad), min(w, x + pad + 1)):
                if det[y, xx] > m:
                    m = det[y, xx]
            rowmax[y, x] = m
    out = np.empty_like(det)
    for y in range(h):
        for x in range(w):
            m = rowmax[y, x]
            for yy in range(max(0, y - pad), min(h, y + pad + 1)):
                if rowmax[yy, x] > m:
                    m = rowmax[yy, x]
            keep = np.float32(1.0) if det[y, x] == m else np.float32(0.0)
            out[y, x] = det[y, x] * keep
    return out


@njit(cache=True)
def _sift(v: np.ndarray, ix: np.ndarray, hole: int, length: int, val: np.float32, vid: np.int64) -> None:
    # libstdc++ __adjust_heap + __push_heap with comp(a, b) = a > b (a min-heap on value)
    top = hole
    second = hole
    while second < (length - 1) // 2:
        second = 2 * (second + 1)
        if v[second] > v[second - 1]:
            second -= 1
        v[hole] = v[second]
        ix[hole] = ix[second]
        hole = second
    if (length & 1) == 0 and second == (length - 2) // 2:
        second = 2 * (second + 1)
        v[hole] = v[second - 1]
        ix[hole] = ix[second - 1]
        hole = second - 1
    parent = (hole - 1) // 2
    while hole > top and v[parent] > val:
        v[hole] = v[parent]
        ix[hole] = ix[parent]
        hole = parent
        parent = (hole - 1) // 2
    v[hole] = val
    ix[hole] = vid


@njit(cache=True)
def _make_heap(v: np.ndarray, ix: np.ndarray, k: int) -> None:
    """libstdc++ make_heap over the first k entries."""
    if k >= 2:
        parent = (k - 2) // 2
        while True:
            _sift(v, ix, parent, k, v[parent], ix[parent])
            if parent == 0:
                break
            parent -= 1


@njit(cache=True)
def _sort_heap(v: np.ndarray, ix: np.ndarray, k: int) -> None:
    """libstdc++ sort_heap: the heap becomes descending by value (comp is greater-than)."""
    last = k
    while last > 1:
        last -= 1
        val = v[last]
        vid = ix[last]
        v[last] = v[0]
        ix[last] = ix[0]
        _sift(v, ix, 0, last, val, vid)


@njit(cache=True)
def topk_flat(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of a 1-D f32 array: (vals (k,) f32 descending, indices (k,) int64) in torch.topk's CPU order."""
    n = values.shape[0]
    k = min(k, n)
    v = np.empty(k, np.float32)
    ix = np.empty(k, np.int64)
    for i in range(k):
        v[i] = values[i]
        ix[i] = i
    _make_heap(v, ix, k)
    for i in range(k, n):  # heap select: replace the top by anything larger
        if values[i] > v[0]:
            _sift(v, ix, 0, k, values[i], np.int64(i))
    _sort_heap(v, ix, k)
    return v, ix


@njit(cache=True)
def _nms_value(det: np.ndarray, y: int, x: int, pad: int) -> np.float32:
    """NMS output at one pixel: det * (det == max of its window), exactly as the full-map version.

    Any larger pixel in the window suppresses it, so the 4-neighbours (where a slope shows first) are
    checked before the rest of the window, and the scan stops at the first larger value.
    """
    h, w = det.shape
    v = det[y, x]
    zero = v * np.float32(0.0)
    if (x + 1 < w and det[y, x + 1] > v) or (x > 0 and det[y, x - 1] > v):
        return zero
    if (y + 1 < h and det[y + 1, x] > v) or (y > 0 and det[y - 1, x] > v):
        return zero
    for yy in range(max(0, y - pad), min(h, y + pad + 1)):
        for xx in range(max(0, x - pad), min(w, x + pad + 1)):
            if det[yy, xx] > v:
                return zero
    if v != v:  # NaN: the max-pool max is NaN too, and NaN != NaN suppresses it
        return zero
    return v


@njit(cache=True)
def topk_nms_hw(det: np.ndarray, k: int, pad: int) -> tuple[np.ndarray, np.ndarray]:
    """``topk_flat(nms_hw(det).ravel(), k)`` without computing the NMS map.

    The heap select only acts on a value larger than the current heap minimum. A pixel's NMS value is
    either det or det * 0, so when det <= minimum (and the minimum is not negative, which would let a
    suppressed +-0 in) the pixel cannot act and its window is never read. Same visits, same order, same
    result; cost drops from a window scan per pixel to one comparison per pixel.
    """
    h, w = det.shape
    n = h * w
    k = min(k, n)
    v = np.empty(k, np.float32)
    ix = np.empty(k, np.int64)
    for i in range(k):
        y = i // w
        v[i] = _nms_value(det, y, i - y * w, pad)
        ix[i] = i
    _make_heap(v, ix, k)
    flat = det.reshape(-1)
    for i in range(k, n):
        top = v[0]
        if flat[i] > top or top < 0:
            y = i // w
            nv = _nms_value(det, y, i - y * w, pad)
            if nv > top:
                _sift(v, ix, 0, k, nv, np.int64(i))
    _sort_heap(v, ix, k)
    return v, ix


@njit(cache=True)
def peaks_jhw(det: np.ndarray, tags: np.ndarray, k: int, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """det (J, H, W) f32, tags (J, H, W, T) f32 -> vals (J, M) f32, flat indices (J, M) int64, tags (J, M, T)."""
    j_count, h, w = det.shape
    t_count = tags.shape[3]
    m = min(k, h * w)
    vals = np.empty((j_count, m), np.float32)
    inds = np.empty((j_count, m), np.int64)
    tag_k = np.empty((j_count, m, t_count), np.float32)
    for j in range(j_count):
        v, ix = topk_nms_hw(det[j], m, pad)
        vals[j] = v
        inds[j] = ix
        for i in range(m):
            y = ix[i] // w
            x = ix[i] - y * w
            for t in range(t_count):
                tag_k[j, i, t] = tags[j, y, x, t]
    return vals, inds, tag_k
