"""After grouping: the official ``adjust``, person score and ``refine`` as Numba kernels.

* adjust: a detected joint moves a quarter pixel towards its larger neighbour (x and y separately; equal
  neighbours give -0.25, docs/official.md B3, unless ``ties_positive``), then +0.5; float32.
* score: NumPy's float32 mean of the J values (0 for missing joints), after adjust and before refine.
* refine: a person's tag is the float32 mean of ``tag[j, int(y), int(x)]`` over its detected joints; each
  missing joint goes to the first-occurrence argmax of ``det - round(||tag - person tag||)`` over the whole
  map (float32, round half to even) when det there is > 0, with the same quarter offset; the tag columns of
  refined joints stay 0 (docs/official.md B4).

The official code searches every joint of every person and throws the detected ones away, and converts
the maps per person (docs/official.md S1). Here person tags are taken once, then each joint is refined for all the
persons missing it (joints in parallel with ``prange``), and a pixel is only evaluated when it can beat the
best (value, index) so far. Since value = det - round(distance) and round(distance) >= 0, det bounds the
value, and a box of tags bounds the distance:

0. :func:`summarize` reads det and tags once, before peaks (it is the decoder's finiteness check too): the
   max det and the tag range of every 8x8 block;
1. the joint's NMS peaks are tried first (they usually hold the answer);
2. max first: the joint's blocks are bucketed by det level once, shared by every person missing the joint;
   a search visits the levels highest first and stops at the first level below its best value (nothing
   there can win), and skips a block whose tag range rules it out. A person then reads only the few blocks
   that could still hold its answer, so a realistic scene costs about what a clean one does;
3. when the searches of a joint have read as much as a grid would cost and predict more (tags with no
   spatial structure defeat the block bounds), the remaining persons share one tag-space grid of that
   joint (cells of >= 0.5 tag units, det levels inside), searched ring by ring around each person's tag
   until the distance alone rules out the rest. A joint then costs O(H W) however many persons miss it.

Ties are broken by the flat index, so the answer is np.argmax's first occurrence, the official one.
The per-pixel helpers allocate nothing and are shared with the CUDA kernels.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

from hhrnet.kernels.group import mean_tags, mul_rn, pairwise_sum32, round_half_even32
from hhrnet.kernels.peaks import imax, imin


@njit(cache=True)
def quarter(towards: np.float32, away: np.float32, ties_positive: bool) -> float:
    """+0.25 if the neighbour ahead is larger, else -0.25 (0 on a tie with ``ties_positive``)."""
    if towards > away:
        return 0.25
    if ties_positive and towards == away:
        return 0.0
    return -0.25


@njit(cache=True)
def adjust_joint(persons: np.ndarray, p: int, j: int, det_j: np.ndarray, ties_positive: bool) -> None:
    """persons (P, J, 3+T) f32, det_j (H, W) f32: the official adjust of one detected joint, in place."""
    h, w = det_j.shape
    x = persons[p, j, 0]
    y = persons[p, j, 1]
    xi = int(x)
    yi = int(y)
    dx = quarter(det_j[yi, imin(xi + 1, w - 1)], det_j[yi, imax(xi - 1, 0)], ties_positive)
    dy = quarter(det_j[imin(yi + 1, h - 1), xi], det_j[imax(yi - 1, 0), xi], ties_positive)
    persons[p, j, 0] = (x + np.float32(dx)) + np.float32(0.5)
    persons[p, j, 1] = (y + np.float32(dy)) + np.float32(0.5)


@njit(cache=True)
def person_score(persons: np.ndarray, p: int) -> np.float32:
    """NumPy's ``persons[p, :, 2].mean()`` in float32."""
    j_count = persons.shape[1]
    return pairwise_sum32(persons[p, :, 2], j_count) / np.float32(j_count)


@njit(cache=True)
def person_tag(persons: np.ndarray, p: int, tags: np.ndarray, found: np.ndarray, out: np.ndarray) -> int:
    """out (T,) = mean tag at the person's detected joints (joint order 0..J-1); found (J, T) f32 work.
    Returns how many joints were detected (0 gives NaN, as the official mean of nothing)."""
    j_count = persons.shape[1]
    t_count = out.shape[0]
    n = 0
    for j in range(j_count):
        if persons[p, j, 2] > 0:
            x = np.int32(persons[p, j, 0])
            y = np.int32(persons[p, j, 1])
            for t in range(t_count):
                found[n, t] = tags[j, y, x, t]
            n += 1
    if n == 0:
        for t in range(t_count):
            out[t] = np.float32(np.nan)
        return 0
    mean_tags(found, n, out)
    return n


@njit(cache=True)
def refine_value(d: np.float32, tags_j: np.ndarray, y: int, x: int, ptag: np.ndarray) -> np.float32:
    """det - round(||tag[y, x] - person tag||) at one pixel, in the official float32 arithmetic."""
    s = np.float32(0.0)
    for t in range(ptag.shape[0]):
        e = tags_j[y, x, t] - ptag[t]
        s = s + mul_rn(e, e)
    dist = np.float32(math.sqrt(np.float64(s)))  # the float32 sqrt, correctly rounded
    return d - round_half_even32(dist)


@njit(cache=True)
def place_refined(
    persons: np.ndarray, p: int, j: int, det_j: np.ndarray, by: int, bx: int, ties_positive: bool
) -> None:
    """Write the found position (with its quarter offset and +0.5) if det there is > 0."""
    h, w = det_j.shape
    val = det_j[by, bx]
    if val > 0:
        dx = quarter(det_j[by, imin(bx + 1, w - 1)], det_j[by, imax(bx - 1, 0)], ties_positive)
        dy = quarter(det_j[imin(by + 1, h - 1), bx], det_j[imax(by - 1, 0), bx], ties_positive)
        persons[p, j, 0] = np.float32((bx + 0.5) + dx)
        persons[p, j, 1] = np.float32((by + 0.5) + dy)
        persons[p, j, 2] = val


@njit(cache=True)
def adjust_pj(persons: np.ndarray, det: np.ndarray, ties_positive: bool) -> None:
    """persons (P, J, 3+T) f32 in place, det (J, H, W) f32."""
    for p in range(persons.shape[0]):
        for j in range(persons.shape[1]):
            if persons[p, j, 2] > 0:
                adjust_joint(persons, p, j, det[j], ties_positive)


@njit(cache=True)
def scores_pj(persons: np.ndarray) -> np.ndarray:
    """persons (P, J, 3+T) f32 -> (P,) f32."""
    out = np.empty(persons.shape[0], np.float32)
    for p in range(persons.shape[0]):
        out[p] = person_score(persons, p)
    return out


TILE = 8  # refine bounds: the maps are summarised in blocks of TILE x TILE pixels
LEVELS_BLOCKS = 64  # det levels the blocks of a joint are bucketed into, searched highest first


@njit(cache=True)
def blocks_of(h: int, w: int) -> tuple[int, int]:
    """(th, tw): TILE x TILE blocks covering an H x W map (the last row / column may be partial)."""
    return (h + TILE - 1) // TILE, (w + TILE - 1) // TILE


@njit(cache=True)
def summarize_joint(
    det_j: np.ndarray, tags_j: np.ndarray, det_max: np.ndarray, tag_lo: np.ndarray, tag_hi: np.ndarray
) -> bool:
    """One pass over det_j (H, W) and tags_j (H, W, T): det_max (th, tw) the max det of each block, tag_lo /
    tag_hi (th, tw, T) its tag range. Returns False when a value is NaN or infinite (the summaries are then
    meaningless). Rows are reduced element-wise first (vectorised), blocks then read one reduced row."""
    h, w = det_j.shape
    t_count = tags_j.shape[2]
    wt = w * t_count
    flat_t = tags_j.reshape(h, wt)  # (H, W T)
    dmax = np.empty(w, np.float32)
    lo = np.empty(wt, np.float32)
    hi = np.empty(wt, np.float32)
    bad = np.zeros(w, np.float32)  # v - v is 0 for finite v, NaN for NaN and +-inf
    bad_t = np.zeros(wt, np.float32)
    for ty in range(det_max.shape[0]):
        y0 = ty * TILE
        for x in range(w):
            dmax[x] = det_j[y0, x]
        for x in range(wt):
            lo[x] = flat_t[y0, x]
            hi[x] = flat_t[y0, x]
        for y in range(y0, min(y0 + TILE, h)):
            for x in range(w):
                v = det_j[y, x]
                m = dmax[x]
                dmax[x] = v if v > m else m
                bad[x] += v - v
            for x in range(wt):
                v = flat_t[y, x]
                a = lo[x]
                b = hi[x]
                lo[x] = v if v < a else a
                hi[x] = v if v > b else b
                bad_t[x] += v - v
        for tx in range(det_max.shape[1]):
            x0 = tx * TILE
            x1 = imin(x0 + TILE, w)
            m = dmax[x0]
            for x in range(x0 + 1, x1):
                m = dmax[x] if dmax[x] > m else m
            det_max[ty, tx] = m
            for t in range(t_count):
                a = lo[x0 * t_count + t]
                b = hi[x0 * t_count + t]
                for x in range(x0 + 1, x1):
                    a = min(a, lo[x * t_count + t])
                    b = max(b, hi[x * t_count + t])
                tag_lo[ty, tx, t] = a
                tag_hi[ty, tx, t] = b
    for x in range(w):
        if bad[x] != 0:
            return False
    for x in range(wt):
        if bad_t[x] != 0:
            return False
    return True


def _summarize_all(det: np.ndarray, tags: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """det (J, H, W), tags (J, H, W, T) -> det_max (J, th, tw), tag_lo, tag_hi (J, th, tw, T), all finite.
    Reads every value once: it is the decoder's finiteness check too."""
    j_count, h, w = det.shape
    th, tw = blocks_of(h, w)
    det_max = np.empty((j_count, th, tw), np.float32)
    tag_lo = np.empty((j_count, th, tw, tags.shape[3]), np.float32)
    tag_hi = np.empty((j_count, th, tw, tags.shape[3]), np.float32)
    finite = np.zeros(j_count, np.bool_)
    for j in prange(j_count):
        finite[j] = summarize_joint(det[j], tags[j], det_max[j], tag_lo[j], tag_hi[j])
    return det_max, tag_lo, tag_hi, bool(finite.all())


summarize = njit(cache=True, nogil=True)(_summarize_all)
summarize_parallel = njit(parallel=True, cache=False, nogil=True)(_summarize_all)


@njit(cache=True)
def upper_bound(d_max: np.float32, lo: np.ndarray, hi: np.ndarray, ptag: np.ndarray) -> np.float32:
    """An upper bound of refine_value over a block: the same float32 operations on the tag of the block's
    tag box nearest to ptag (every step is monotonic, so rounding cannot break the bound)."""
    s = np.float32(0.0)
    for t in range(ptag.shape[0]):
        if ptag[t] < lo[t]:
            e = lo[t] - ptag[t]
        elif ptag[t] > hi[t]:
            e = ptag[t] - hi[t]
        else:
            e = np.float32(0.0)
        s = s + mul_rn(e, e)
    return d_max - round_half_even32(np.float32(math.sqrt(np.float64(s))))


@njit(cache=True)
def _cannot_win(bound: np.float32, first_index: int, best: np.float32, best_i: int) -> bool:
    return bool(bound < best or (bound == best and first_index > best_i))


@njit(cache=True)
def search_seeds(det_j: np.ndarray, tags_j: np.ndarray, ptag: np.ndarray, seeds: np.ndarray) -> tuple[np.float32, int]:
    """Best (value, flat index) over the seed pixels; (-inf, H*W) when there are none."""
    h, w = det_j.shape
    best = np.float32(-np.inf)
    best_i = h * w
    for k in range(seeds.shape[0]):
        i = seeds[k]
        y = i // w
        x = i - y * w
        v = refine_value(det_j[y, x], tags_j, y, x, ptag)
        if v > best or (v == best and i < best_i):
            best = v
            best_i = i
    return best, best_i


@njit(cache=True)
def block_levels(det_max: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The blocks of one joint bucketed by det max into ``LEVELS_BLOCKS`` equal steps (a counting sort: flat
    block order inside a level). Returns order (th tw,) int32 block indices, start (L + 1,) int64 offsets,
    level_max (L,) f32 the largest det max of each level (-inf when empty). Levels are monotonic: every
    block of a level has det max <= the smallest of the next level up."""
    flat = det_max.reshape(-1)
    n = flat.shape[0]
    lo = np.inf
    hi = -np.inf
    for b in range(n):
        lo = min(lo, np.float64(flat[b]))
        hi = max(hi, np.float64(flat[b]))
    inv = LEVELS_BLOCKS / (hi - lo) if hi > lo else 0.0
    level = np.empty(n, np.int32)
    start = np.zeros(LEVELS_BLOCKS + 1, np.int64)
    level_max = np.full(LEVELS_BLOCKS, -np.inf, np.float32)
    for b in range(n):
        lv = imin(int((np.float64(flat[b]) - lo) * inv), LEVELS_BLOCKS - 1)
        level[b] = lv
        start[lv + 1] += 1
        level_max[lv] = max(level_max[lv], flat[b])
    for lv in range(LEVELS_BLOCKS):
        start[lv + 1] += start[lv]
    fill = start[:LEVELS_BLOCKS].copy()
    order = np.empty(n, np.int32)
    for b in range(n):
        lv = level[b]
        order[fill[lv]] = b
        fill[lv] += 1
    return order, start, level_max


@njit(cache=True)
def search_levels(
    det_j: np.ndarray,
    tags_j: np.ndarray,
    ptag: np.ndarray,
    best: np.float32,
    best_i: int,
    det_max: np.ndarray,
    tag_lo: np.ndarray,
    tag_hi: np.ndarray,
    order: np.ndarray,
    start: np.ndarray,
    level_max: np.ndarray,
    limit: float = np.inf,
) -> tuple[np.float32, int, float]:
    """Continue the search over the whole map, max first: blocks by det level, highest first, and stop at the
    first level whose det max is below the best value (the penalty round(distance) is never negative, so
    nothing below can win). A block is read only if its det max, and the bound from its tag range, can win.

    Returns (best, index, work): work counts block bounds evaluated (1 each) and pixels of blocks read. Past
    ``limit`` work it stops early (work > limit then says the search is unfinished; the (best, index) so far is
    still a value of the map). A NaN person tag compares with nothing: returned as given."""
    for t in range(ptag.shape[0]):
        if ptag[t] != ptag[t]:
            return best, best_i, 0.0
    h, w = det_j.shape
    tw = det_max.shape[1]
    work = 0.0
    for lv in range(LEVELS_BLOCKS - 1, -1, -1):
        k0 = start[lv]
        k1 = start[lv + 1]
        if k0 == k1:
            continue
        if level_max[lv] < best:
            break  # every block from here down has det max < best
        for k in range(k0, k1):
            b = order[k]
            ty = b // tw
            tx = b - ty * tw
            y0 = ty * TILE
            x0 = tx * TILE
            first = y0 * w + x0  # the smallest flat index of the block
            d_max = det_max[ty, tx]
            if _cannot_win(d_max, first, best, best_i):
                continue
            work += 1.0
            if _cannot_win(upper_bound(d_max, tag_lo[ty, tx], tag_hi[ty, tx], ptag), first, best, best_i):
                continue
            work += TILE * TILE
            if work > limit:
                return best, best_i, work
            for y in range(y0, imin(y0 + TILE, h)):
                for x in range(x0, imin(x0 + TILE, w)):
                    d = det_j[y, x]
                    i = y * w + x
                    if _cannot_win(d, i, best, best_i):
                        continue
                    v = refine_value(d, tags_j, y, x, ptag)
                    if v > best or (v == best and i < best_i):
                        best = v
                        best_i = i
    return best, best_i, work


# ---- tag-space grid: one index per joint, shared by every person missing that joint ----------------------

GRID_COST = 24.0  # a tag grid costs about this many maps of block-search work (pixels read in blocks not skipped)
CELL = 0.5  # smallest grid cell side in tag units: the k = 0 disk (radius 0.5) touches at most 3 x 3 cells
GRID_MAX = 64  # cells per gridded tag dimension (wider tag ranges get wider cells)
LEVELS = 16  # det levels inside each tag cell: a search reads only the levels that can still win


@njit(cache=True)
def tag_grid(
    det_j: np.ndarray, tags_j: np.ndarray, floor: np.float32
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bucket the pixels of one joint map with det >= ``floor`` by tag cell (the first two tag dimensions)
    and, inside a cell, by det level (``LEVELS`` equal steps). A counting sort: pixels keep index order
    inside a bucket. A pixel below ``floor`` cannot beat a search that already holds a value >= floor.

    Returns origin (2,) f64 and size (2,) f64 of the tag cells, shape (2,) int64 (cells per dimension; 1
    when T = 1); cell_lo/cell_hi (C, T) f32, a box holding every tag of a cell (widened outwards past any
    rounding; +-inf in the dimensions past the second); per bucket (cell * LEVELS + level): start
    (C L + 1,) int64 offsets, bucket_max (C L,) f32 max det; per sorted pixel: order (N,) int32 flat
    index, ds (N,) f32 det.
    """
    h, w = det_j.shape
    n = h * w
    t_count = tags_j.shape[2]
    flat_d = det_j.reshape(n)
    flat_t = tags_j.reshape(n, t_count)
    two = t_count >= 2
    lo0 = np.inf
    hi0 = -np.inf
    lo1 = 0.0
    hi1 = 0.0
    d_lo = np.inf
    d_hi = -np.inf
    kept = 0
    if two:
        lo1 = np.inf
        hi1 = -np.inf
    for i in range(n):
        d = flat_d[i]
        if not d >= floor:
            continue
        kept += 1
        d_lo = min(d_lo, np.float64(d))
        d_hi = max(d_hi, np.float64(d))
        v = np.float64(flat_t[i, 0])
        lo0 = min(lo0, v)
        hi0 = max(hi0, v)
        if two:
            v = np.float64(flat_t[i, 1])
            lo1 = min(lo1, v)
            hi1 = max(hi1, v)
    if kept == 0:
        lo0 = hi0 = lo1 = hi1 = d_lo = d_hi = 0.0
    origin = np.array([lo0, lo1])
    size = np.array([max(CELL, (hi0 - lo0) / GRID_MAX), max(CELL, (hi1 - lo1) / GRID_MAX)])
    shape = np.array([imin(GRID_MAX, int((hi0 - lo0) / size[0]) + 1), imin(GRID_MAX, int((hi1 - lo1) / size[1]) + 1)])
    inv0 = 1.0 / size[0]
    inv1 = 1.0 / size[1]
    d_inv = LEVELS / (d_hi - d_lo) if d_hi > d_lo else 0.0
    cells = shape[0] * shape[1]
    buckets = cells * LEVELS
    bucket_of = np.empty(n, np.int32)
    start = np.zeros(buckets + 1, np.int64)
    bucket_max = np.full(buckets, -np.inf, np.float32)
    for i in range(n):
        d = flat_d[i]
        if not d >= floor:
            bucket_of[i] = -1
            continue
        c = imin(int((np.float64(flat_t[i, 0]) - lo0) * inv0), shape[0] - 1) * shape[1]
        if two:
            c += imin(int((np.float64(flat_t[i, 1]) - lo1) * inv1), shape[1] - 1)
        c = c * LEVELS + imin(int((np.float64(d) - d_lo) * d_inv), LEVELS - 1)
        bucket_of[i] = c
        start[c + 1] += 1
        bucket_max[c] = max(bucket_max[c], d)
    for c in range(buckets):
        start[c + 1] += start[c]
    fill = start[:buckets].copy()
    order = np.empty(kept, np.int32)
    ds = np.empty(kept, np.float32)
    for i in range(n):
        c = bucket_of[i]
        if c >= 0:
            pos = fill[c]
            fill[c] = pos + 1
            order[pos] = i
            ds[pos] = flat_d[i]
    cell_lo = np.full((cells, t_count), -np.inf, np.float32)
    cell_hi = np.full((cells, t_count), np.inf, np.float32)
    for a in range(shape[0]):
        for b in range(shape[1]):
            c = a * shape[1] + b
            for dim in range(2 if two else 1):
                q = a if dim == 0 else b
                edge = 1e-9 * (abs(origin[dim]) + size[dim] * (shape[dim] + 1))
                lo = origin[dim] + q * size[dim] - edge
                hi = origin[dim] + (q + 1) * size[dim] + edge
                if q > 0:  # the first and last cells also hold the extremes (clamped): leave them open
                    cell_lo[c, dim] = np.float32(lo - (abs(lo) * 1e-6 + 1e-6))
                if q < shape[dim] - 1:
                    cell_hi[c, dim] = np.float32(hi + (abs(hi) * 1e-6 + 1e-6))
    return origin, size, shape, cell_lo, cell_hi, start, bucket_max, order, ds


@njit(cache=True)
def _search_cell(
    cell: int,
    det_j: np.ndarray,
    tags_j: np.ndarray,
    ptag: np.ndarray,
    best: np.float32,
    best_i: int,
    cell_lo: np.ndarray,
    cell_hi: np.ndarray,
    start: np.ndarray,
    bucket_max: np.ndarray,
    order: np.ndarray,
    ds: np.ndarray,
) -> tuple[np.float32, int]:
    """Every det level of one tag cell, highest first; a bucket is read only if its bound can win."""
    w = det_j.shape[1]
    for level in range(LEVELS - 1, -1, -1):
        c = cell * LEVELS + level
        s0 = start[c]
        s1 = start[c + 1]
        if s0 == s1 or _cannot_win(bucket_max[c], order[s0], best, best_i):
            continue
        if _cannot_win(upper_bound(bucket_max[c], cell_lo[cell], cell_hi[cell], ptag), order[s0], best, best_i):
            continue
        for pos in range(s0, s1):
            d = ds[pos]
            if d < best:
                continue
            i = np.int64(order[pos])
            if d == best and i > best_i:
                continue
            y = i // w
            v = refine_value(d, tags_j, y, i - y * w, ptag)
            if v > best or (v == best and i < best_i):
                best = v
                best_i = int(i)
    return best, best_i


@njit(cache=True)
def search_grid(
    det_j: np.ndarray,
    tags_j: np.ndarray,
    ptag: np.ndarray,
    best: np.float32,
    best_i: int,
    det_top: np.float32,
    origin: np.ndarray,
    size: np.ndarray,
    shape: np.ndarray,
    cell_lo: np.ndarray,
    cell_hi: np.ndarray,
    start: np.ndarray,
    bucket_max: np.ndarray,
    order: np.ndarray,
    ds: np.ndarray,
) -> tuple[np.float32, int]:
    """Continue the search over the grid of :func:`tag_grid`, ring by ring (Chebyshev distance in cells)
    around the person tag's cell. A bucket is skipped when its det max, or the bound from its cell's tag
    box, cannot win. Ring r lies at least (r - 1) cells away in tag space, so its values are at most
    ``det_top - (r - 1) * cell + 0.5`` (round half to even, plus a float margin); the rings stop once that
    is below the best value. A NaN person tag compares with nothing (np.argmax then answers 0)."""
    for t in range(ptag.shape[0]):
        if ptag[t] != ptag[t]:
            return best, best_i
    big = np.float64(1 << 40)
    pc = np.zeros(2, np.int64)
    reach = 0
    slack = 1e-3 + 1e-5 * abs(np.float64(det_top))
    step = np.inf
    for a in range(2):
        if a == 1 and ptag.shape[0] == 1:
            break
        q = (np.float64(ptag[a]) - origin[a]) / size[a]
        pc[a] = int(math.floor(min(max(q, -big), big)))
        reach = max(reach, int(max(pc[a], shape[a] - 1 - pc[a])))
        slack += 1e-5 * (abs(np.float64(ptag[a])) + abs(origin[a]) + size[a] * shape[a])
        step = min(step, size[a])
    first = 0
    for a in range(2):  # the first ring that touches the grid
        if pc[a] < 0:
            first = max(first, -pc[a])
        elif pc[a] >= shape[a]:
            first = max(first, pc[a] - shape[a] + 1)
    for r in range(first, reach + 1):
        if (r - 1) * step * (1.0 - 1e-5) - 0.5 - slack > np.float64(det_top) - np.float64(best):
            break
        for a in (pc[0] - r, pc[0] + r):  # top and bottom rows of the ring
            if 0 <= a < shape[0]:
                for b in range(max(pc[1] - r, 0), min(pc[1] + r + 1, shape[1])):
                    best, best_i = _search_cell(
                        a * shape[1] + b,
                        det_j,
                        tags_j,
                        ptag,
                        best,
                        best_i,
                        cell_lo,
                        cell_hi,
                        start,
                        bucket_max,
                        order,
                        ds,
                    )
            if r == 0:
                break
        if r == 0:
            continue
        for b in (pc[1] - r, pc[1] + r):  # left and right columns, without the corners
            if 0 <= b < shape[1]:
                for a in range(max(pc[0] - r + 1, 0), min(pc[0] + r, shape[0])):
                    best, best_i = _search_cell(
                        a * shape[1] + b,
                        det_j,
                        tags_j,
                        ptag,
                        best,
                        best_i,
                        cell_lo,
                        cell_hi,
                        start,
                        bucket_max,
                        order,
                        ds,
                    )
    return best, best_i


# ---- refine of one image ----------------------------------------------------------------------------------


@njit(cache=True)
def person_tags(persons: np.ndarray, tags: np.ndarray) -> np.ndarray:
    """(P, T) f32: every person's tag from its detected joints, before any joint is refined."""
    p_count, j_count = persons.shape[0], persons.shape[1]
    t_count = tags.shape[3]
    out = np.empty((p_count, t_count), np.float32)
    found = np.empty((j_count, t_count), np.float32)
    for p in range(p_count):
        person_tag(persons, p, tags, found, out[p])
    return out


@njit(cache=True)
def refine_joint(
    persons: np.ndarray,
    j: int,
    det_j: np.ndarray,
    tags_j: np.ndarray,
    seeds_j: np.ndarray,
    ptags: np.ndarray,
    det_max: np.ndarray,
    tag_lo: np.ndarray,
    tag_hi: np.ndarray,
    ties_positive: bool,
    grid_cost: float,
) -> None:
    """Refine joint j of every person missing it; det_max (th, tw), tag_lo / tag_hi (th, tw, T) are the
    joint's block summaries (:func:`summarize`).

    Each search compares (value, flat index) pairs: a larger value wins, an equal value wins with a smaller
    index, so the visiting order is free and the answer is np.argmax's first occurrence. A search starts at
    the joint's NMS peaks ``seeds_j`` (usually the answer), then covers the whole map max first over blocks
    bucketed by det level (:func:`search_levels`: it stops at the first level that cannot win, and skips a
    block by its tag range; the levels are built once and shared by every person). When the searches so far
    predict that the remaining persons would read more than ``grid_cost`` maps' worth of pixels (unstructured
    tags defeat the block bounds), the remaining persons share one tag-space grid instead (:func:`tag_grid`,
    about ``grid_cost`` maps' worth to build, then a small search per person): a joint costs O(H W) however
    many persons miss it. ``grid_cost`` < 0: the grid from the start.
    """
    p_count = persons.shape[0]
    h, w = det_j.shape
    todo = np.empty(p_count, np.int64)
    n = 0
    for p in range(p_count):
        if persons[p, j, 2] == 0:
            todo[n] = p
            n += 1
    if n == 0:
        return
    best = np.empty(n, np.float32)
    best_i = np.empty(n, np.int64)
    for q in range(n):
        best[q], best_i[q] = search_seeds(det_j, tags_j, ptags[todo[q]], seeds_j)
    budget = grid_cost * h * w
    work = 0.0  # block bounds evaluated and pixels read by this joint's level searches
    q = 0
    if grid_cost >= 0:
        order, level_start, level_max = block_levels(det_max)
        while q < n:
            # ski rental: switch once the searches have cost as much as the grid would, or earlier when they
            # have read a quarter map and their average predicts more than the grid for the persons left
            if work > budget or (work * 4 > h * w and work / q * (n - q) > budget):
                break
            limit = max(h * w / 16, budget / (n - q))  # one search this long: the grid is the better deal
            best[q], best_i[q], done = search_levels(
                det_j,
                tags_j,
                ptags[todo[q]],
                best[q],
                best_i[q],
                det_max,
                tag_lo,
                tag_hi,
                order,
                level_start,
                level_max,
                limit,
            )
            work += done
            if done > limit:
                break  # unfinished: this person continues in the grid from its best so far
            q += 1
    if q < n:
        floor = best[q]
        for r in range(q + 1, n):
            floor = min(floor, best[r])
        origin, size, shape, cell_lo, cell_hi, start, bucket_max, order_g, ds = tag_grid(det_j, tags_j, floor)
        det_top = np.float32(-np.inf)
        for c in range(bucket_max.shape[0]):
            det_top = max(det_top, bucket_max[c])
        for r in range(q, n):
            best[r], best_i[r] = search_grid(
                det_j,
                tags_j,
                ptags[todo[r]],
                best[r],
                best_i[r],
                det_top,
                origin,
                size,
                shape,
                cell_lo,
                cell_hi,
                start,
                bucket_max,
                order_g,
                ds,
            )
    for q in range(n):
        found = best_i[q] if best_i[q] < h * w else 0  # nothing comparable (NaN): np.argmax answers index 0
        by = found // w
        place_refined(persons, todo[q], j, det_j, by, found - by * w, ties_positive)


def _refine_all(
    persons: np.ndarray,
    det: np.ndarray,
    tags: np.ndarray,
    seeds: np.ndarray,
    det_max: np.ndarray,
    tag_lo: np.ndarray,
    tag_hi: np.ndarray,
    ties_positive: bool,
    grid_cost: float,
) -> None:
    """persons (P, J, 3+T) f32 in place; det (J, H, W) f32; tags (J, H, W, T) f32; seeds (J, S) flat indices;
    det_max (J, th, tw), tag_lo / tag_hi (J, th, tw, T) the block summaries of :func:`summarize`.

    Person tags are taken first (as the official code does, from the detected joints only), then the joints
    are independent: joint j writes only persons[:, j], so the joints run in parallel under ``prange``.
    """
    ptags = person_tags(persons, tags)
    for j in prange(persons.shape[1]):
        refine_joint(
            persons, j, det[j], tags[j], seeds[j], ptags, det_max[j], tag_lo[j], tag_hi[j], ties_positive, grid_cost
        )


refine_pj = njit(cache=True)(_refine_all)
refine_pj_parallel = njit(parallel=True, cache=False)(_refine_all)  # never cache parallel kernels
