"""Grouping: the official ``match_by_tag`` as a Numba kernel, plus the exact-arithmetic helpers it shares
with refine.

Bit-parity rules kept here (docs/official.md §8, D2):

* candidate rows [x, y, val, tag...] are float64 (int64 locations concatenated with float32 values);
* a person's mean tag is NumPy's float32 ``np.mean(list_of_tags, axis=0)``: for T = 1 NumPy sums the
  column with its 8-way pairwise loop, for T >= 2 row by row (:func:`mean_tags`);
* distance = float64 L2 over T, cost = ``round_half_even(dist) * 100 - val``, padded with 1e10 columns;
* Munkres is munkres 1.1.4's (:mod:`hhrnet.kernels.munkres`); pairs are read in row-major order;
* persons live in creation order with the official float32 key ``tag[0]``: a new person whose key equals
  an existing one's overwrites that person's joint and resets its tag list (docs/official.md B1, unless
  ``unique_keys``); only the first M persons can absorb candidates (docs/official.md B2; ``max_persons`` caps creation).

The kernel takes every buffer from its caller and allocates nothing, so the CUDA grouping kernel (one
thread per image) runs this very function; :func:`group_jm` is the CPU wrapper that allocates.
Products go through :func:`mul_rn`, which the CUDA module maps to non-contractible device multiplies so
the GPU cannot fuse them into FMAs.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.extending import overload

from hhrnet.errors import InputError
from hhrnet.kernels.munkres import NOT_CONVERGED, STAR, solve_square
from hhrnet.kernels.peaks import imax, imin

PAD_COST = 1e10  # the official padding value for surplus candidates
_TWO52 = 4503599627370496.0
_TWO23 = np.float32(8388608.0)


def mul_rn(a: float, b: float) -> float:
    """a * b rounded once (never fused with a following add). Plain Python for the CUDA simulator."""
    return a * b


@overload(mul_rn, target="cpu")
def _mul_rn_cpu(a, b):  # type: ignore[no-untyped-def]  # numba overload hook
    return lambda a, b: a * b


@njit(cache=True)
def round_half_even64(x: float) -> float:
    """``np.round`` of a float64 (round half to even) by the 2**52 trick: the add rounds to an integer."""
    if x >= 0.0:
        return (x + _TWO52) - _TWO52 if x < _TWO52 else x
    if x > -_TWO52:
        return -((-x + _TWO52) - _TWO52)
    return x


@njit(cache=True)
def round_half_even32(x: np.float32) -> np.float32:
    """``np.round`` of a float32 in float32 arithmetic (2**23 trick)."""
    if x >= np.float32(0.0):
        return (x + _TWO23) - _TWO23 if x < _TWO23 else x
    if x > -_TWO23:
        return -((-x + _TWO23) - _TWO23)
    return x


@njit(cache=True)
def pairwise_sum32(a: np.ndarray, n: int) -> np.float32:
    """NumPy's float32 sum of a[:n] (a 1-D view, any stride): 8 running sums when n >= 8 (n <= 128)."""
    if n < 8:
        s = np.float32(0.0)
        for i in range(n):
            s = s + a[i]
        return s
    r0 = a[0]
    r1 = a[1]
    r2 = a[2]
    r3 = a[3]
    r4 = a[4]
    r5 = a[5]
    r6 = a[6]
    r7 = a[7]
    i = 8
    end = n - n % 8
    while i < end:
        r0 = r0 + a[i]
        r1 = r1 + a[i + 1]
        r2 = r2 + a[i + 2]
        r3 = r3 + a[i + 3]
        r4 = r4 + a[i + 4]
        r5 = r5 + a[i + 5]
        r6 = r6 + a[i + 6]
        r7 = r7 + a[i + 7]
        i += 8
    s = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        s = s + a[i]
        i += 1
    return s


@njit(cache=True)
def mean_tags(rows: np.ndarray, n: int, out: np.ndarray) -> None:
    """out (T,) = ``np.mean(rows[:n], axis=0)`` in float32, as NumPy computes it for a list of (T,) tags."""
    t_count = out.shape[0]
    if t_count == 1:
        out[0] = pairwise_sum32(rows[:, 0], n) / np.float32(n)
        return
    for t in range(t_count):
        s = np.float32(0.0)
        for i in range(n):
            s = s + rows[i, t]
        out[t] = s / np.float32(n)


@njit(cache=True)
def _new_person(
    key: np.float32,
    idx: int,
    r: int,
    rows: np.ndarray,
    ctags: np.ndarray,
    n: int,
    persons: np.ndarray,
    keys: np.ndarray,
    tag_rows: np.ndarray,
    tag_count: np.ndarray,
    unique_keys: bool,
    max_persons: int,
) -> int:
    """The official ``setdefault(key, empty)[idx] = row; tags[key] = [tag]``. Returns the person count."""
    p = -1
    if not unique_keys:
        for q in range(n):
            if keys[q] == key:
                p = q
                break
    if p < 0:
        if max_persons > 0 and n >= max_persons:
            return n  # B2 cap: the candidate is dropped
        p = n
        n += 1
        keys[p] = key
        for j in range(persons.shape[1]):
            for c in range(persons.shape[2]):
                persons[p, j, c] = 0.0
    for c in range(persons.shape[2]):
        persons[p, idx, c] = rows[r, c]
    for t in range(ctags.shape[1]):
        tag_rows[p, 0, t] = ctags[r, t]
    tag_count[p] = 1
    return n


@njit(cache=True)
def group_image(
    vals: np.ndarray,
    inds: np.ndarray,
    tag_k: np.ndarray,
    width: int,
    joint_order: np.ndarray,
    max_num_people: int,
    detection_threshold: float,
    tag_threshold: float,
    use_detection_val: bool,
    ignore_too_much: bool,
    unique_keys: bool,
    max_persons: int,
    persons: np.ndarray,
    keys: np.ndarray,
    tag_rows: np.ndarray,
    tag_count: np.ndarray,
    rows: np.ndarray,
    ctags: np.ndarray,
    means: np.ndarray,
    raw: np.ndarray,
    cost: np.ndarray,
    marks: np.ndarray,
    row_cover: np.ndarray,
    col_cover: np.ndarray,
    path: np.ndarray,
) -> int:
    """Official match_by_tag of one image; returns the person count P (persons[:P] in official order), or
    -1 when an assignment did not converge (only non-finite values can cause it).

    Inputs: vals (J, M) f32, inds (J, M) int64 flat peak indices, tag_k (J, M, T) f32, joint_order (J,).
    Outputs: persons (cap, J, 3+T) f64 rows [x, y, val, tag...], keys (cap,) f32, tag_rows (cap, J, T) f32,
    tag_count (cap,) int64, with cap >= J * M (or >= max_persons when that is set).
    Work, with M = max_num_people: rows (M, 3+T) f64, ctags (M, T) f32, means (M, T) f32, raw (M, M) f64,
    cost/marks (M, M) f64/int8, row_cover/col_cover (M,) bool, path (2M + 1, 2) int64.
    """
    j_count, m = vals.shape
    t_count = tag_k.shape[2]
    n = 0
    for i in range(j_count):
        idx = joint_order[i]
        r_count = 0
        for k in range(m):
            val = vals[idx, k]
            if np.float64(val) > detection_threshold:
                y = inds[idx, k] // width
                rows[r_count, 0] = np.float64(inds[idx, k] - y * width)
                rows[r_count, 1] = np.float64(y)
                rows[r_count, 2] = np.float64(val)
                for t in range(t_count):
                    rows[r_count, 3 + t] = np.float64(tag_k[idx, k, t])
                    ctags[r_count, t] = tag_k[idx, k, t]
                r_count += 1
        if r_count == 0:
            continue
        if i == 0 or n == 0:  # the first joint type with candidates seeds one person per candidate
            for r in range(r_count):
                n = _new_person(
                    ctags[r, 0], idx, r, rows, ctags, n, persons, keys, tag_rows, tag_count, unique_keys, max_persons
                )
            continue
        g_count = imin(n, max_num_people)
        if ignore_too_much and g_count == max_num_people:
            continue
        for g in range(g_count):
            mean_tags(tag_rows[g], tag_count[g], means[g])
        size = imax(r_count, g_count)
        for r in range(r_count):
            for g in range(g_count):
                s = 0.0
                for t in range(t_count):
                    d = rows[r, 3 + t] - np.float64(means[g, t])
                    s = s + mul_rn(d, d)
                dist = math.sqrt(s)
                raw[r, g] = dist
                if use_detection_val:
                    cost[r, g] = mul_rn(round_half_even64(dist), 100.0) - rows[r, 2]
                else:
                    cost[r, g] = dist
            for g in range(g_count, size):
                cost[r, g] = PAD_COST
        for r in range(r_count, size):  # munkres 1.1.4 pads missing rows with zeros
            for g in range(size):
                cost[r, g] = 0.0
        if not solve_square(cost, size, marks, row_cover, col_cover, path):
            return -1  # cannot happen with finite maps (the decoders check them); never loop forever
        for r in range(r_count):
            for g in range(size):
                if marks[r, g] != STAR:
                    continue
                if g < g_count and raw[r, g] < tag_threshold:
                    for c in range(3 + t_count):
                        persons[g, idx, c] = rows[r, c]
                    for t in range(t_count):
                        tag_rows[g, tag_count[g], t] = ctags[r, t]
                    tag_count[g] += 1
                else:
                    n = _new_person(
                        ctags[r, 0],
                        idx,
                        r,
                        rows,
                        ctags,
                        n,
                        persons,
                        keys,
                        tag_rows,
                        tag_count,
                        unique_keys,
                        max_persons,
                    )
    return n


@njit(cache=True)
def group_jm(
    vals: np.ndarray,
    inds: np.ndarray,
    tag_k: np.ndarray,
    width: int,
    joint_order: np.ndarray,
    max_num_people: int,
    detection_threshold: float,
    tag_threshold: float,
    use_detection_val: bool,
    ignore_too_much: bool,
    unique_keys: bool,
    max_persons: int,
) -> np.ndarray:
    """CPU wrapper of :func:`group_image`: -> persons (P, J, 3+T) f32 in official order."""
    j_count, m = vals.shape
    t_count = tag_k.shape[2]
    cap = j_count * m
    if max_persons > 0:
        cap = min(cap, max_persons)
    persons = np.zeros((cap, j_count, 3 + t_count), np.float64)
    keys = np.zeros(cap, np.float32)
    tag_rows = np.zeros((cap, j_count, t_count), np.float32)
    tag_count = np.zeros(cap, np.int64)
    m = max(m, max_num_people)
    rows = np.empty((m, 3 + t_count), np.float64)
    ctags = np.empty((m, t_count), np.float32)
    means = np.empty((m, t_count), np.float32)
    raw = np.empty((m, m), np.float64)
    cost = np.empty((m, m), np.float64)
    marks = np.empty((m, m), np.int8)
    row_cover = np.empty(m, np.bool_)
    col_cover = np.empty(m, np.bool_)
    path = np.empty((2 * m + 1, 2), np.int64)
    n = group_image(
        vals,
        inds,
        tag_k,
        width,
        joint_order,
        max_num_people,
        detection_threshold,
        tag_threshold,
        use_detection_val,
        ignore_too_much,
        unique_keys,
        max_persons,
        persons,
        keys,
        tag_rows,
        tag_count,
        rows,
        ctags,
        means,
        raw,
        cost,
        marks,
        row_cover,
        col_cover,
        path,
    )
    if n < 0:
        raise InputError(NOT_CONVERGED)
    return persons[:n].astype(np.float32)
