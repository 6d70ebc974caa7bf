"""Peaks: the official 5x5 max-pool NMS and per-joint top-k, in ``torch.topk``'s exact CPU order.

The official ``top_k`` keeps every pixel equal to the max of its window (plateaus survive), zeroes the
rest by multiplying with the 0/1 mask, and takes ``torch.topk(M)`` of each flattened joint map. Equal
values (plateaus, zeros) make the order of the result an implementation detail of torch's CPU kernel,
and that order decides which candidate starts which person. torch sorts (value, index) pairs with
libstdc++ algorithms and a "greater than" comparison:

* ``64 * M <= H * W`` (every real map size): ``std::partial_sort`` = heap select over the first M, then
  sort-heap;
* smaller maps: ``std::nth_element`` (introselect) on the (M-1)-th place, then ``std::sort`` (introsort)
  of the first M - 1 entries.

Both are reproduced step for step below (checked against torch in the tests). Layers: heap/sort helpers on
(value, index) arrays -> ``_hw`` (one map) -> ``_jhw`` (all joints of one image). The helpers allocate
nothing, so the CUDA peak kernel calls them too. NumPy + Numba only; NaN maps are not supported.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

PARTIAL_SORT_FACTOR = 64  # torch uses partial_sort when k * 64 <= n
SORT_THRESHOLD = 16  # libstdc++ _S_threshold


@njit(cache=True)
def imin(a: int, b: int) -> int:
    """min() for the kernels shared with the CUDA target (its builtin min/max overloads do not compile)."""
    return a if a < b else b


@njit(cache=True)
def imax(a: int, b: int) -> int:
    return a if a > b else b


# ---- libstdc++ heap on (value, index) pairs, comparison "a > b" ------------------------------------


@njit(cache=True)
def _sift(v: np.ndarray, ix: np.ndarray, base: int, hole: int, length: int, val: np.float32, vid: np.int64) -> None:
    """__adjust_heap + __push_heap on the heap v[base : base + length]."""
    top = hole
    child = hole
    while child < (length - 1) // 2:
        child = 2 * (child + 1)
        if v[base + child] > v[base + child - 1]:
            child -= 1
        v[base + hole] = v[base + child]
        ix[base + hole] = ix[base + child]
        hole = child
    if (length & 1) == 0 and child == (length - 2) // 2:
        child = 2 * (child + 1)
        v[base + hole] = v[base + child - 1]
        ix[base + hole] = ix[base + child - 1]
        hole = child - 1
    parent = (hole - 1) // 2
    while hole > top and v[base + parent] > val:
        v[base + hole] = v[base + parent]
        ix[base + hole] = ix[base + parent]
        hole = parent
        parent = (hole - 1) // 2
    v[base + hole] = val
    ix[base + hole] = vid


@njit(cache=True)
def _make_heap(v: np.ndarray, ix: np.ndarray, base: int, length: int) -> None:
    if length < 2:
        return
    parent = (length - 2) // 2
    while True:
        _sift(v, ix, base, parent, length, v[base + parent], ix[base + parent])
        if parent == 0:
            return
        parent -= 1


@njit(cache=True)
def _sort_heap(v: np.ndarray, ix: np.ndarray, base: int, length: int) -> None:
    """Pops the heap one by one to its back: the range ends sorted in descending value."""
    last = length
    while last > 1:
        last -= 1
        val = v[base + last]
        vid = ix[base + last]
        v[base + last] = v[base]
        ix[base + last] = ix[base]
        _sift(v, ix, base, 0, last, val, vid)


@njit(cache=True)
def _heap_select(v: np.ndarray, ix: np.ndarray, first: int, middle: int, last: int) -> None:
    _make_heap(v, ix, first, middle - first)
    for i in range(middle, last):
        if v[i] > v[first]:
            val = v[i]
            vid = ix[i]
            v[i] = v[first]
            ix[i] = ix[first]
            _sift(v, ix, first, 0, middle - first, val, vid)


# ---- libstdc++ introselect / introsort ---------------------------------------------------------------


@njit(cache=True)
def _swap(v: np.ndarray, ix: np.ndarray, a: int, b: int) -> None:
    tv = v[a]
    v[a] = v[b]
    v[b] = tv
    ti = ix[a]
    ix[a] = ix[b]
    ix[b] = ti


@njit(cache=True)
def floor_log2(n: int) -> int:
    r = 0
    while n > 1:
        n >>= 1
        r += 1
    return r


@njit(cache=True)
def _partition_pivot(v: np.ndarray, ix: np.ndarray, first: int, last: int) -> int:
    """__unguarded_partition_pivot: median of three moved to ``first``, then Hoare partition."""
    a = first + 1
    b = first + (last - first) // 2
    c = last - 1
    if v[a] > v[b]:
        if v[b] > v[c]:
            _swap(v, ix, first, b)
        elif v[a] > v[c]:
            _swap(v, ix, first, c)
        else:
            _swap(v, ix, first, a)
    elif v[a] > v[c]:
        _swap(v, ix, first, a)
    elif v[b] > v[c]:
        _swap(v, ix, first, c)
    else:
        _swap(v, ix, first, b)
    lo = first + 1
    hi = last
    while True:
        while v[lo] > v[first]:
            lo += 1
        hi -= 1
        while v[first] > v[hi]:
            hi -= 1
        if not lo < hi:
            return lo
        _swap(v, ix, lo, hi)
        lo += 1


@njit(cache=True)
def _linear_insert(v: np.ndarray, ix: np.ndarray, pos: int) -> None:
    val = v[pos]
    vid = ix[pos]
    prev = pos - 1
    while val > v[prev]:
        v[pos] = v[prev]
        ix[pos] = ix[prev]
        pos = prev
        prev -= 1
    v[pos] = val
    ix[pos] = vid


@njit(cache=True)
def _insertion_sort(v: np.ndarray, ix: np.ndarray, first: int, last: int) -> None:
    for i in range(first + 1, last):
        if v[i] > v[first]:
            val = v[i]
            vid = ix[i]
            for q in range(i, first, -1):
                v[q] = v[q - 1]
                ix[q] = ix[q - 1]
            v[first] = val
            ix[first] = vid
        else:
            _linear_insert(v, ix, i)


@njit(cache=True)
def _nth_element(v: np.ndarray, ix: np.ndarray, first: int, nth: int, last: int) -> None:
    if first == last or nth == last:
        return
    depth = 2 * floor_log2(last - first)
    while last - first > 3:
        if depth == 0:
            _heap_select(v, ix, first, nth + 1, last)
            _swap(v, ix, first, nth)
            return
        depth -= 1
        cut = _partition_pivot(v, ix, first, last)
        if cut <= nth:
            first = cut
        else:
            last = cut
    _insertion_sort(v, ix, first, last)


@njit(cache=True)
def _sort(v: np.ndarray, ix: np.ndarray, first: int, last: int, stack: np.ndarray) -> None:
    """std::sort. The recursion of __introsort_loop is an explicit stack of disjoint ranges (their order
    of processing does not change the result); ``stack`` needs (2 * log2(n) + 2, 3) int64 rows."""
    if last - first < 2:
        return
    top = 0
    stack[0, 0] = first
    stack[0, 1] = last
    stack[0, 2] = 2 * floor_log2(last - first)
    while top >= 0:
        lo = stack[top, 0]
        hi = stack[top, 1]
        depth = stack[top, 2]
        top -= 1
        while hi - lo > SORT_THRESHOLD:
            if depth == 0:
                _heap_select(v, ix, lo, hi, hi)
                _sort_heap(v, ix, lo, hi - lo)
                break
            depth -= 1
            cut = _partition_pivot(v, ix, lo, hi)
            top += 1
            stack[top, 0] = cut
            stack[top, 1] = hi
            stack[top, 2] = depth
            hi = cut
    if last - first > SORT_THRESHOLD:
        _insertion_sort(v, ix, first, first + SORT_THRESHOLD)
        for i in range(first + SORT_THRESHOLD, last):
            _linear_insert(v, ix, i)
    else:
        _insertion_sort(v, ix, first, last)


# ---- top-k ---------------------------------------------------------------------------------------------


@njit(cache=True)
def topk_select(v: np.ndarray, ix: np.ndarray, n: int, k: int, stack: np.ndarray) -> None:
    """torch.topk(k, largest, sorted) CPU order over the pairs (v[:n], ix[:n]): the result is v[:k], ix[:k]."""
    if k * PARTIAL_SORT_FACTOR <= n:
        _heap_select(v, ix, 0, k, n)
        _sort_heap(v, ix, 0, k)
    else:
        _nth_element(v, ix, 0, k - 1, n)
        _sort(v, ix, 0, k - 1, stack)


@njit(cache=True)
def topk_flat(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-k of a 1-D f32 array: (vals (k,) f32 descending, indices (k,) int64) in torch.topk's CPU order."""
    n = values.shape[0]
    k = min(k, n)
    v = values.astype(np.float32)  # a copy: the selection permutes it
    ix = np.arange(n).astype(np.int64)
    stack = np.empty((2 * floor_log2(max(n, 2)) + 2, 3), np.int64)
    topk_select(v, ix, n, k, stack)
    return v[:k].copy(), ix[:k].copy()


@njit(cache=True)
def nms_value(det: np.ndarray, y: int, x: int, pad: int) -> np.float32:
    """NMS output at one pixel: det * (det == max of its (2 pad + 1)^2 window), as the official max-pool.

    A larger pixel anywhere in the window suppresses it; the 4-neighbours, where a slope shows first, are
    looked at before the rest of the window and the scan stops at the first larger value.
    """
    h, w = det.shape
    v = det[y, x]
    zero = v * np.float32(0.0)  # the official det * 0: -0.0 for negative det
    if (x + 1 < w and det[y, x + 1] > v) or (x > 0 and det[y, x - 1] > v):
        return zero
    if (y + 1 < h and det[y + 1, x] > v) or (y > 0 and det[y - 1, x] > v):
        return zero
    for yy in range(imax(0, y - pad), imin(h, y + pad + 1)):
        for xx in range(imax(0, x - pad), imin(w, x + pad + 1)):
            if det[yy, xx] > v:
                return zero
    return v


@njit(cache=True)
def nms_hw(det: np.ndarray, pad: int) -> np.ndarray:
    """(H, W) f32 -> (H, W) f32: the whole NMS map (separable max, for tests and small maps)."""
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
            out[y, x] = det[y, x] * (np.float32(1.0) if det[y, x] == m else np.float32(0.0))
    return out


@njit(cache=True)
def topk_nms_hw(det: np.ndarray, k: int, pad: int, v: np.ndarray, ix: np.ndarray, stack: np.ndarray) -> None:
    """``topk(nms(det).ravel(), k)`` into v[:k], ix[:k] (torch order) without building the NMS map.

    Heap-select path: a pixel acts only if its NMS value beats the heap minimum; that value is det or
    det * 0, so a pixel with det <= minimum (minimum >= 0) cannot act and its window is never read. Same
    visits, same order, same result, one comparison per pixel. Small maps (the nth_element path) fill
    all H*W pairs: v and ix then need H*W entries, else k.
    """
    h, w = det.shape
    n = h * w
    k = imin(k, n)
    if k * PARTIAL_SORT_FACTOR > n:
        for i in range(n):
            y = i // w
            v[i] = nms_value(det, y, i - y * w, pad)
            ix[i] = i
        topk_select(v, ix, n, k, stack)
        return
    for i in range(k):
        y = i // w
        v[i] = nms_value(det, y, i - y * w, pad)
        ix[i] = i
    _make_heap(v, ix, 0, k)
    for y in range(h):
        for x in range(w):
            i = y * w + x
            if i < k:
                continue
            top = v[0]
            if det[y, x] > top or top < 0:
                nv = nms_value(det, y, x, pad)
                if nv > top:
                    _sift(v, ix, 0, 0, k, nv, np.int64(i))
    _sort_heap(v, ix, 0, k)


@njit(cache=True)
def topk_nms_blocks_hw(
    det: np.ndarray,
    det_max: np.ndarray,
    tile: int,
    k: int,
    pad: int,
    v: np.ndarray,
    ix: np.ndarray,
    stack: np.ndarray,
) -> None:
    """:func:`topk_nms_hw` given det_max (th, tw), the max det of each ``tile`` x ``tile`` block: on the
    heap-select path a row run of a block is skipped whole when its max is <= the heap minimum (>= 0). The
    minimum never decreases, so no skipped pixel could have acted later either: same visits, same result."""
    h, w = det.shape
    n = h * w
    k = imin(k, n)
    if k * PARTIAL_SORT_FACTOR > n or det_max.shape[0] * tile < h or det_max.shape[1] * tile < w:
        topk_nms_hw(det, k, pad, v, ix, stack)
        return
    for i in range(k):
        y = i // w
        v[i] = nms_value(det, y, i - y * w, pad)
        ix[i] = i
    _make_heap(v, ix, 0, k)
    for y in range(h):
        ty = y // tile
        for tx in range(det_max.shape[1]):
            x0 = tx * tile
            top = v[0]
            if top >= 0 and det_max[ty, tx] <= top and y * w + x0 >= k:
                continue
            for x in range(x0, imin(x0 + tile, w)):
                i = y * w + x
                if i < k:
                    continue
                top = v[0]
                if det[y, x] > top or top < 0:
                    nv = nms_value(det, y, x, pad)
                    if nv > top:
                        _sift(v, ix, 0, 0, k, nv, np.int64(i))
    _sort_heap(v, ix, 0, k)


@njit(cache=True)
def scratch_size(h: int, w: int, k: int) -> int:
    """Entries topk_nms_hw needs in v and ix."""
    k = min(k, h * w)
    return h * w if k * PARTIAL_SORT_FACTOR > h * w else k


def _peaks_blocks(
    det: np.ndarray, tags: np.ndarray, k: int, pad: int, det_max: np.ndarray, tile: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """det (J, H, W) f32, tags (J, H, W, T) f32 -> vals (J, M) f32, flat indices (J, M) int64, tags (J, M, T).
    Joints are independent (``prange``); each has its own scratch. det_max (J, th, tw): the max det of each
    ``tile`` x ``tile`` block, to skip blocks (:func:`topk_nms_blocks_hw`); (J, 0, 0) when there is none."""
    j_count, h, w = det.shape
    t_count = tags.shape[3]
    m = min(k, h * w)
    vals = np.empty((j_count, m), np.float32)
    inds = np.empty((j_count, m), np.int64)
    tag_k = np.empty((j_count, m, t_count), np.float32)
    size = scratch_size(h, w, m)
    rows = 2 * floor_log2(max(size, 2)) + 2
    for j in prange(j_count):
        v = np.empty(size, np.float32)
        ix = np.empty(size, np.int64)
        stack = np.empty((rows, 3), np.int64)
        topk_nms_blocks_hw(det[j], det_max[j], tile, m, pad, v, ix, stack)
        for i in range(m):
            vals[j, i] = v[i]
            inds[j, i] = ix[i]
            y = ix[i] // w
            x = ix[i] - y * w
            for t in range(t_count):
                tag_k[j, i, t] = tags[j, y, x, t]
    return vals, inds, tag_k


peaks_blocks_jhw = njit(cache=True)(_peaks_blocks)
peaks_blocks_jhw_parallel = njit(parallel=True, cache=False)(_peaks_blocks)  # never cache parallel kernels


@njit(cache=True)
def peaks_jhw(det: np.ndarray, tags: np.ndarray, k: int, pad: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """det (J, H, W) f32, tags (J, H, W, T) f32 -> vals (J, M) f32, flat indices (J, M) int64, tags (J, M, T)."""
    return peaks_blocks_jhw(det, tags, k, pad, np.empty((det.shape[0], 0, 0), np.float32), 1)


@njit(cache=False)  # calls a parallel kernel: never cached
def peaks_jhw_parallel(
    det: np.ndarray, tags: np.ndarray, k: int, pad: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """:func:`peaks_jhw` over the joints on all of Numba's threads."""
    return peaks_blocks_jhw_parallel(det, tags, k, pad, np.empty((det.shape[0], 0, 0), np.float32), 1)
