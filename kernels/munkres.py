"""Munkres (Hungarian) assignment that returns exactly what PyPI ``munkres`` 1.1.4 returns.

The official grouping solves ``round(dist) * 100 - val`` with ``Munkres().compute``. That cost has many
equally optimal assignments, and which one comes back is decided by the solver's scan order (docs/official.md §8), so
"an optimal assignment" (scipy, munkres 3.0) is not enough. This module follows the classic six-step
algorithm with munkres 1.1.4's conventions, in float64:

* the matrix is made square by zero padding (extra rows or extra columns);
* initial stars: row by row, the first zero whose row and column carry no star yet;
* the uncovered-zero search resumes at the (row, column) where the previous one stopped, visits rows
  cyclically and, inside the first row that has any uncovered zero, keeps the *last* one met while
  walking the columns cyclically from the resume column;
* the shift step adds the smallest uncovered value to covered rows and then subtracts it from uncovered
  columns, element by element (two roundings where both apply, as in the package);
* the answer is the starred cells of the original rows and columns, in row-major order.

The solver can never loop without bound: a NaN cost (which the decoders reject up front) would make the
package loop forever, so :func:`solve_square` counts its steps and gives up past :func:`step_limit`, far
above what a finite matrix needs (at most n augmentations, each after at most n primes and n + 1 shifts).

The kernels take preallocated work arrays and allocate nothing, so the CUDA grouping kernel calls the very
same functions (Numba compiles them for the device).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from hhrnet.errors import InputError

NOT_CONVERGED = (
    "grouping did not converge: the assignment costs are not finite or too large to compare "
    "(NaN, infinite or huge peak values or tags)"
)

_NO_VALUE = 9.223372036854775807e18  # munkres 1.1.4 starts its minimum search at sys.maxsize
STAR = 1
PRIME = 2


@njit(cache=True)
def _uncovered_zero(c: np.ndarray, n: int, row_cover: np.ndarray, col_cover: np.ndarray, r0: int, c0: int) -> int:
    """Flat index r * n + col of the uncovered zero munkres 1.1.4 picks next, or -1."""
    r = r0
    for _ in range(n):
        hit = -1
        col = c0
        for _ in range(n):
            if c[r, col] == 0 and not row_cover[r] and not col_cover[col]:
                hit = col  # no break: the package keeps scanning and returns the last one in this row
            col += 1
            if col == n:
                col = 0
        if hit >= 0:
            return r * n + hit
        r += 1
        if r == n:
            r = 0
    return -1


@njit(cache=True)
def _first_in_row(marks: np.ndarray, n: int, r: int, kind: int) -> int:
    for col in range(n):
        if marks[r, col] == kind:
            return col
    return -1


@njit(cache=True)
def _first_in_col(marks: np.ndarray, n: int, col: int, kind: int) -> int:
    for r in range(n):
        if marks[r, col] == kind:
            return r
    return -1


@njit(cache=True)
def step_limit(n: int) -> int:
    """Prime/shift steps allowed for an n x n problem: 4x the n (2n + 2) a finite matrix can need."""
    return 4 * n * (2 * n + 2) + 64


@njit(cache=True)
def solve_square(
    c: np.ndarray, n: int, marks: np.ndarray, row_cover: np.ndarray, col_cover: np.ndarray, path: np.ndarray
) -> bool:
    """Solve the zero-padded square problem held in ``c[:n, :n]`` (modified in place).

    Work arrays: marks (>= n, >= n) int8, row_cover/col_cover (>= n,) bool, path (>= 2n + 1, 2) int64.
    Returns True when solved (``marks[r, col] == STAR`` marks the assignment); False when the step limit was
    reached, which only a non-finite cost can cause (the callers raise).
    """
    for r in range(n):
        lowest = c[r, 0]
        for col in range(1, n):
            if c[r, col] < lowest:
                lowest = c[r, col]
        for col in range(n):
            c[r, col] = c[r, col] - lowest
        row_cover[r] = False
        col_cover[r] = False
        for col in range(n):
            marks[r, col] = 0
    for r in range(n):
        for col in range(n):
            if c[r, col] == 0 and not row_cover[r] and not col_cover[col]:
                marks[r, col] = STAR
                row_cover[r] = True
                col_cover[col] = True
                break
    for r in range(n):
        row_cover[r] = False
        col_cover[r] = False

    steps = 0
    limit = step_limit(n)
    while True:
        # cover every column holding a star; n covered columns = a complete assignment
        covered = 0
        for r in range(n):
            for col in range(n):
                if marks[r, col] == STAR and not col_cover[col]:
                    col_cover[col] = True
                    covered += 1
        if covered >= n:
            return True
        # prime uncovered zeros until a primed zero has no star in its row (then augment)
        zr = 0
        zc = 0
        while True:
            steps += 1
            if steps > limit:
                return False
            flat = _uncovered_zero(c, n, row_cover, col_cover, zr, zc)
            if flat < 0:
                # no uncovered zero: shift by the smallest uncovered value and search again
                smallest = _NO_VALUE
                for r in range(n):
                    for col in range(n):
                        if not row_cover[r] and not col_cover[col] and smallest > c[r, col]:
                            smallest = c[r, col]
                for r in range(n):
                    for col in range(n):
                        if row_cover[r]:
                            c[r, col] = c[r, col] + smallest
                        if not col_cover[col]:
                            c[r, col] = c[r, col] - smallest
                zr = 0  # the package restarts its zero search at (0, 0) after a shift
                zc = 0
                continue
            zr = flat // n
            zc = flat - zr * n
            marks[zr, zc] = PRIME
            star = _first_in_row(marks, n, zr, STAR)
            if star < 0:
                break
            zc = star
            row_cover[zr] = True
            col_cover[star] = False
        # alternating path prime -> star (same column) -> prime (same row) ...
        length = 0
        path[0, 0] = zr
        path[0, 1] = zc
        while True:
            r = _first_in_col(marks, n, path[length, 1], STAR)
            if r < 0:
                break
            length += 1
            path[length, 0] = r
            path[length, 1] = path[length - 1, 1]
            length += 1
            path[length, 0] = r
            path[length, 1] = _first_in_row(marks, n, r, PRIME)
        for k in range(length + 1):
            pr = path[k, 0]
            pc = path[k, 1]
            marks[pr, pc] = 0 if marks[pr, pc] == STAR else STAR
        for r in range(n):
            row_cover[r] = False
            col_cover[r] = False
            for col in range(n):
                if marks[r, col] == PRIME:
                    marks[r, col] = 0


@njit(cache=True)
def assign(cost: np.ndarray) -> np.ndarray:
    """``Munkres().compute(cost)`` of munkres 1.1.4 for a (R, C) float64 matrix -> (K, 2) int64 (row, col).
    Raises InputError when the solver cannot converge (a NaN cost)."""
    rows, cols = cost.shape
    n = max(rows, cols)
    c = np.zeros((n, n), np.float64)
    c[:rows, :cols] = cost
    marks = np.zeros((n, n), np.int8)
    row_cover = np.zeros(n, np.bool_)
    col_cover = np.zeros(n, np.bool_)
    path = np.zeros((2 * n + 1, 2), np.int64)
    if not solve_square(c, n, marks, row_cover, col_cover, path):
        raise InputError(NOT_CONVERGED)
    out = np.empty((min(rows, cols), 2), np.int64)
    k = 0
    for r in range(rows):
        for col in range(cols):
            if marks[r, col] == STAR:
                out[k, 0] = r
                out[k, 1] = col
                k += 1
    return out[:k]
