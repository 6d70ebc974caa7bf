"""kernels.munkres must return exactly what munkres 1.1.4 returns (the official solver), ties included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from hhrnet.kernels.munkres import assign

munkres = pytest.importorskip("munkres", reason="munkres==1.1.4 is the test oracle")


def oracle(cost: np.ndarray) -> np.ndarray:
    return np.array(munkres.Munkres().compute(cost.tolist()), dtype=np.int64).reshape(-1, 2)


def grouping_cost(rng: np.random.Generator, rows: int, cols: int) -> np.ndarray:
    """As the official grouping builds it: round(dist) * 100 - val, surplus candidates padded with 1e10."""
    dist = rng.random((rows, cols)) * rng.choice([1.5, 3.0, 6.0])
    val = rng.random((rows, 1)).astype(np.float32).astype(np.float64)
    cost = np.round(dist) * 100 - val
    if rows > cols:
        cost = np.concatenate((cost, np.zeros((rows, rows - cols)) + 1e10), axis=1)
    return cost


def test_oracle_is_munkres_1_1_4() -> None:
    assert munkres.__version__ == "1.1.4"


def test_thousands_of_random_and_tie_heavy_matrices() -> None:
    rng = np.random.default_rng(0)
    kinds = 0
    for trial in range(2400):
        rows, cols = int(rng.integers(1, 12)), int(rng.integers(1, 12))
        kind = trial % 4
        if kind == 0:  # few distinct values: ties everywhere
            cost = rng.integers(0, 3, (rows, cols)).astype(np.float64)
        elif kind == 1:
            cost = grouping_cost(rng, rows, cols)
        elif kind == 2:
            cost = rng.random((rows, cols))
        else:  # rectangular without padding: munkres pads with zeros itself
            cost = rng.integers(-2, 3, (rows, cols)) * 100 - rng.choice([0.25, 0.5], (rows, cols))
        kinds += 1
        np.testing.assert_array_equal(assign(cost), oracle(cost), err_msg=f"trial {trial}\n{cost}")
    assert kinds == 2400


def test_official_call_with_a_numpy_matrix() -> None:
    # the official code hands the NumPy array itself to Munkres().compute (rows become views)
    rng = np.random.default_rng(1)
    for _ in range(200):
        cost = grouping_cost(rng, int(rng.integers(1, 9)), int(rng.integers(1, 9)))
        expect = np.array(munkres.Munkres().compute(cost.copy()), dtype=np.int64).reshape(-1, 2)
        np.testing.assert_array_equal(assign(cost), expect)


def test_ties_are_broken_as_munkres_1_1_4_not_just_optimally() -> None:
    # all-equal costs: every permutation is optimal; munkres 1.1.4 stars the diagonal
    np.testing.assert_array_equal(assign(np.zeros((3, 3))), [[0, 0], [1, 1], [2, 2]])
    # a case where the package's cyclic "last zero in the row" search decides
    cost = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 0.0, 0.0]])
    np.testing.assert_array_equal(assign(cost), oracle(cost))
    # the input is not modified
    before = cost.copy()
    assign(cost)
    np.testing.assert_array_equal(cost, before)


@settings(max_examples=300, deadline=None)
@given(
    arrays(
        np.float64,
        st.tuples(st.integers(1, 8), st.integers(1, 8)),
        elements=st.sampled_from([0.0, 1.0, 2.0, 100.0, 99.5, -0.5, 1e10]),
    )
)
def test_property_identical_to_munkres_1_1_4(cost: np.ndarray) -> None:
    got = assign(cost)
    np.testing.assert_array_equal(got, oracle(cost))
    assert len(got) == min(cost.shape)
    assert len(set(got[:, 0])) == len(got) and len(set(got[:, 1])) == len(got)
