"""After grouping: the official ``adjust``, person score and ``refine`` as Numba kernels.

* adjust: a detected joint moves a quarter pixel towards its larger neighbour (x and y separately; equal
  neighbours give -0.25, SPEC B3, unless ``ties_positive``), then +0.5; float32.
* score: NumPy's float32 mean of the J values (0 for missing joints), after adjust and before refine.
* refine: a person's tag is the float32 mean of ``tag[j, int(y), int(x)]`` over its detected joints; each
  missing joint goes to the first-occurrence argmax of ``det - round(||tag - person tag||)`` over the whole
  map (float32, round half to even) when det there is > 0, with the same quarter offset; the tag columns of
  refined joints stay 0 (SPEC B4).

The official code searches every joint of every person and throws the detected ones away, and converts
the maps per person (SPEC S1); here only missing joints are searched, and a pixel is only evaluated when
it can beat the best value so far: the joint's NMS peaks are tried first; when they give a value of at
least the detection threshold, only the (listed) pixels above it can still win; otherwise 8x8 blocks (and
64x64 super-blocks) are skipped whole when their max det, or the bound from their tag range, cannot win.
Ties are broken by the flat index, so the answer is np.argmax's first occurrence, the official one.

The per-joint helpers allocate nothing and are shared with the CUDA kernels.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

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


LIST_MIN_SEARCHES = 8  # a joint missing from this many persons gets its sorted pixel list
TILE = 8  # refine bounds: blocks of TILE x TILE pixels, grouped again into TILE x TILE super-blocks


@njit(cache=True)
def block_max(det_j: np.ndarray, det_max: np.ndarray, det_max2: np.ndarray) -> None:
    """Max det per TILE x TILE block (th, tw) and per super-block of TILE x TILE blocks (sh, sw)."""
    h, w = det_j.shape
    th, tw = det_max.shape
    for ty in range(th):
        y0 = ty * TILE
        for tx in range(tw):
            x0 = tx * TILE
            m = det_j[y0, x0]
            for y in range(y0, min(y0 + TILE, h)):
                for x in range(x0, min(x0 + TILE, w)):
                    m = max(m, det_j[y, x])
            det_max[ty, tx] = m
    for sy in range(det_max2.shape[0]):
        for sx in range(det_max2.shape[1]):
            m = det_max[sy * TILE, sx * TILE]
            for ty in range(sy * TILE, min(sy * TILE + TILE, th)):
                for tx in range(sx * TILE, min(sx * TILE + TILE, tw)):
                    m = max(m, det_max[ty, tx])
            det_max2[sy, sx] = m


@njit(cache=True)
def block_tag_range(tags_j: np.ndarray, ty: int, tx: int, lo: np.ndarray, hi: np.ndarray) -> None:
    """lo, hi (T,): per-dimension tag range of one TILE x TILE block."""
    h, w = tags_j.shape[0], tags_j.shape[1]
    y0 = ty * TILE
    x0 = tx * TILE
    for t in range(tags_j.shape[2]):
        a = tags_j[y0, x0, t]
        b = a
        for y in range(y0, min(y0 + TILE, h)):
            for x in range(x0, min(x0 + TILE, w)):
                v = tags_j[y, x, t]
                a = min(a, v)
                b = max(b, v)
        lo[t] = a
        hi[t] = b


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
def strong_pixels(det_j: np.ndarray, cut: float, out: np.ndarray) -> int:
    """Flat indices of the pixels with det >= cut into out, by det descending (equal det: index ascending);
    returns how many."""
    h, w = det_j.shape
    flat = det_j.reshape(h * w)
    n = 0
    for i in range(h * w):
        if flat[i] >= cut:
            out[n] = i
            n += 1
    order = np.argsort(-flat[out[:n]], kind="mergesort")  # stable: equal det keep index order
    picked = out[:n][order]
    out[:n] = picked
    return n


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
def search_list(
    det_j: np.ndarray, tags_j: np.ndarray, ptag: np.ndarray, pixels: np.ndarray, n: int, best: np.float32, best_i: int
) -> tuple[np.float32, int]:
    """Continue the search over listed pixels sorted by det descending (valid when every unlisted pixel
    has det < best): it stops at the first det below the best value."""
    w = det_j.shape[1]
    for k in range(n):
        i = pixels[k]
        y = i // w
        x = i - y * w
        d = det_j[y, x]
        if d < best:
            break
        if d == best and i > best_i:
            continue
        v = refine_value(d, tags_j, y, x, ptag)
        if v > best or (v == best and i < best_i):
            best = v
            best_i = i
    return best, best_i


@njit(cache=True)
def search_blocks(
    det_j: np.ndarray, tags_j: np.ndarray, ptag: np.ndarray, best: np.float32, best_i: int, det_max: np.ndarray,
    det_max2: np.ndarray, tag_lo: np.ndarray, tag_hi: np.ndarray, have_range: np.ndarray,
) -> tuple[np.float32, int]:  # fmt: skip
    """Continue the search over the whole map: super-blocks, blocks and pixels in nested row-major order,
    each skipped when its det maximum cannot win (the penalty round(distance) is never negative), a block
    also when the upper bound from its tag range cannot. Tag ranges (tag_lo/tag_hi (th, tw, T)) are
    computed on first use and cached (have_range)."""
    h, w = det_j.shape
    span = TILE * TILE
    for sy in range(det_max2.shape[0]):
        for sx in range(det_max2.shape[1]):
            if _cannot_win(det_max2[sy, sx], sy * span * w + sx * span, best, best_i):
                continue
            for ty in range(sy * TILE, min(sy * TILE + TILE, det_max.shape[0])):
                for tx in range(sx * TILE, min(sx * TILE + TILE, det_max.shape[1])):
                    y0 = ty * TILE
                    x0 = tx * TILE
                    first = y0 * w + x0
                    if _cannot_win(det_max[ty, tx], first, best, best_i):
                        continue
                    if not have_range[ty, tx]:
                        block_tag_range(tags_j, ty, tx, tag_lo[ty, tx], tag_hi[ty, tx])
                        have_range[ty, tx] = True
                    if _cannot_win(upper_bound(det_max[ty, tx], tag_lo[ty, tx], tag_hi[ty, tx], ptag), first, best,
                                   best_i):  # fmt: skip
                        continue
                    for y in range(y0, min(y0 + TILE, h)):
                        for x in range(x0, min(x0 + TILE, w)):
                            d = det_j[y, x]
                            i = y * w + x
                            if _cannot_win(d, i, best, best_i):
                                continue
                            v = refine_value(d, tags_j, y, x, ptag)
                            if v > best or (v == best and i < best_i):
                                best = v
                                best_i = i
    return best, best_i


@njit(cache=True)
def refine_pj(
    persons: np.ndarray, det: np.ndarray, tags: np.ndarray, seeds: np.ndarray, cut: float, ties_positive: bool
) -> None:
    """persons (P, J, 3+T) f32 in place; det (J, H, W) f32; tags (J, H, W, T) f32. Missing joints only.

    The search for a missing joint compares (value, flat index) pairs: a larger value wins, an equal value
    wins with a smaller index, so the visiting order is free and the answer is np.argmax's first occurrence.
    It starts at ``seeds`` (J, S) (flat indices; the NMS peaks, which usually hold the answer). Then the
    whole map is searched block by block (:func:`search_blocks`), except for joints missing from many
    persons: when the seed value is >= ``cut``, only pixels with det >= cut can still win, and those are
    listed once per joint by det descending, so the search stops at the first det below the best value.
    """
    p_count, j_count = persons.shape[0], persons.shape[1]
    h, w = det.shape[1], det.shape[2]
    t_count = tags.shape[3]
    th = (h + TILE - 1) // TILE
    tw = (w + TILE - 1) // TILE
    sh = (th + TILE - 1) // TILE
    sw = (tw + TILE - 1) // TILE
    ptag = np.empty(t_count, np.float32)
    found = np.empty((j_count, t_count), np.float32)
    strong = np.empty((j_count, h * w), np.int32)  # untouched pages cost nothing
    strong_n = np.full(j_count, -1, np.int64)
    det_max = np.empty((j_count, th, tw), np.float32)
    det_max2 = np.empty((j_count, sh, sw), np.float32)
    tag_lo = np.empty((j_count, th, tw, t_count), np.float32)
    tag_hi = np.empty((j_count, th, tw, t_count), np.float32)
    have_range = np.zeros((j_count, th, tw), np.bool_)
    have_blocks = np.zeros(j_count, np.bool_)
    searches = np.zeros(j_count, np.int64)
    for p in range(p_count):
        for j in range(j_count):
            if persons[p, j, 2] == 0:
                searches[j] += 1
    for p in range(p_count):
        missing = 0
        for j in range(j_count):
            if persons[p, j, 2] == 0:
                missing += 1
        if missing == 0:
            continue
        person_tag(persons, p, tags, found, ptag)
        for j in range(j_count):
            if persons[p, j, 2] != 0:
                continue
            best, best_i = search_seeds(det[j], tags[j], ptag, seeds[j])
            if best >= cut and searches[j] >= LIST_MIN_SEARCHES:
                if strong_n[j] < 0:
                    strong_n[j] = strong_pixels(det[j], cut, strong[j])
                best, best_i = search_list(det[j], tags[j], ptag, strong[j], strong_n[j], best, best_i)
            else:
                if not have_blocks[j]:
                    block_max(det[j], det_max[j], det_max2[j])
                    have_blocks[j] = True
                best, best_i = search_blocks(det[j], tags[j], ptag, best, best_i, det_max[j], det_max2[j], tag_lo[j],
                                             tag_hi[j], have_range[j])  # fmt: skip
            if best_i == h * w:  # nothing comparable (all -inf / NaN): np.argmax answers index 0
                best_i = 0
            by = best_i // w
            place_refined(persons, p, j, det[j], by, best_i - by * w, ties_positive)
