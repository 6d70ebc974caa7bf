"""Munkres (Hungarian) assignment with the exact tie-breaking of PyPI ``munkres`` 1.1.4.

The official grouping calls ``Munkres().compute`` on a cost ``round(dist) * 100 - val``, which has many
equally optimal assignments; which one comes back depends on the solver's scan order (SPEC §8). This is
the textbook six-step algorithm with that package's conventions:

* a non-square matrix is padded with zeros to square;
* step 2 stars, row by row, the first uncovered zero of each row;
* step 4's zero search starts at the last (row, column) visited, takes the first row (cyclically) that
  holds an uncovered zero and, within it, the *last* uncovered zero in cyclic column order;
* step 6 adds the smallest uncovered value to covered rows and subtracts it from uncovered columns,
  element by element in row-major order (so float64 results are bit-identical);
* the result lists (row, column) pairs of starred zeros in row-major order, original rows/columns only.

``assign`` is plain Python over NumPy arrays (readable, and what the reference decoder uses);
``assign_nb`` is the same function compiled by Numba for the fast decoder.
"""

from __future__ import annotations

import numpy as np
from numba import njit


def _find_zero(c: np.ndarray, rcov: np.ndarray, ccov: np.ndarray, i0: int, j0: int) -> tuple[int, int]:
    n = c.shape[0]
    i = i0
    while True:
        row = -1
        col = -1
        j = j0
        while True:
            if c[i, j] == 0 and not rcov[i] and not ccov[j]:
                row = i
                col = j
            j = (j + 1) % n
            if j == j0:
                break
        if row >= 0:
            return row, col
        i = (i + 1) % n
        if i == i0:
            return -1, -1


def assign(cost: np.ndarray) -> np.ndarray:
    """Optimal assignment of a (R, C) float64 cost matrix; returns (K, 2) int64 (row, column) pairs."""
    rows, cols = cost.shape
    n = max(rows, cols)
    c = np.zeros((n, n), dtype=np.float64)
    c[:rows, :cols] = cost
    marked = np.zeros((n, n), dtype=np.int8)  # 1 = star, 2 = prime
    rcov = np.zeros(n, dtype=np.bool_)
    ccov = np.zeros(n, dtype=np.bool_)
    path = np.zeros((2 * n + 1, 2), dtype=np.int64)
    # step 1: subtract each row's minimum
    for i in range(n):
        m = c[i, 0]
        for j in range(1, n):
            if c[i, j] < m:
                m = c[i, j]
        for j in range(n):
            c[i, j] -= m
    # step 2: star the first uncovered zero of each row
    for i in range(n):
        for j in range(n):
            if c[i, j] == 0 and not ccov[j] and not rcov[i]:
                marked[i, j] = 1
                ccov[j] = True
                rcov[i] = True
                break
    rcov[:] = False
    ccov[:] = False
    step = 3
    z_r = 0
    z_c = 0
    while True:
        if step == 3:  # cover starred columns; done when all are covered
            count = 0
            for i in range(n):
                for j in range(n):
                    if marked[i, j] == 1 and not ccov[j]:
                        ccov[j] = True
                        count += 1
            if count >= n:
                break
            step = 4
        elif step == 4:  # prime uncovered zeros until one has no star in its row
            row = 0
            col = 0
            while True:
                row, col = _find_zero(c, rcov, ccov, row, col)
                if row < 0:
                    step = 6
                    break
                marked[row, col] = 2
                star = -1
                for j in range(n):
                    if marked[row, j] == 1:
                        star = j
                        break
                if star >= 0:
                    col = star
                    rcov[row] = True
                    ccov[col] = False
                else:
                    z_r = row
                    z_c = col
                    step = 5
                    break
        elif step == 5:  # augment along the alternating prime/star path
            count = 0
            path[0, 0] = z_r
            path[0, 1] = z_c
            while True:
                r = -1
                for i in range(n):
                    if marked[i, path[count, 1]] == 1:
                        r = i
                        break
                if r < 0:
                    break
                count += 1
                path[count, 0] = r
                path[count, 1] = path[count - 1, 1]
                cc = -1
                for j in range(n):
                    if marked[path[count, 0], j] == 2:
                        cc = j
                        break
                count += 1
                path[count, 0] = path[count - 1, 0]
                path[count, 1] = cc
            for k in range(count + 1):
                if marked[path[k, 0], path[k, 1]] == 1:
                    marked[path[k, 0], path[k, 1]] = 0
                else:
                    marked[path[k, 0], path[k, 1]] = 1
            rcov[:] = False
            ccov[:] = False
            for i in range(n):
                for j in range(n):
                    if marked[i, j] == 2:
                        marked[i, j] = 0
            step = 3
        else:  # step 6: shift by the smallest uncovered value
            m = np.inf
            for i in range(n):
                for j in range(n):
                    if not rcov[i] and not ccov[j] and c[i, j] < m:
                        m = c[i, j]
            for i in range(n):
                for j in range(n):
                    if rcov[i]:
                        c[i, j] += m
                    if not ccov[j]:
                        c[i, j] -= m
            step = 4
    out = np.empty((min(rows, cols), 2), dtype=np.int64)
    k = 0
    for i in range(rows):
        for j in range(cols):
            if marked[i, j] == 1:
                out[k, 0] = i
                out[k, 1] = j
                k += 1
    return out[:k]


_find_zero_nb = njit(cache=True)(_find_zero)


def _make_nb():  # type: ignore[no-untyped-def]
    # Compile `assign` with its helper resolved to the compiled `_find_zero`.
    import types

    glob = dict(assign.__globals__)
    glob["_find_zero"] = _find_zero_nb
    fn = types.FunctionType(assign.__code__, glob, "assign_nb")
    return njit(cache=False)(fn)


assign_nb = _make_nb()
