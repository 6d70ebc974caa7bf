"""Bad maps never hang a decoder: NaN / +-inf are one clear InputError (fast, reference, CUDA), finite values
decode (the decoders agree; at +-3e38 Munkres may give up with an InputError, in both alike), and Munkres
gives up instead of looping on a NaN cost."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from numba import cuda

from hhrnet.errors import InputError
from hhrnet.kernels.decode import decode, decode_batch
from hhrnet.kernels.group import group_jm
from hhrnet.kernels.munkres import assign, solve_square, step_limit
from hhrnet.kernels.params import DecodeParams
from hhrnet.kernels.reference import decode_reference

SPECIAL = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf, "huge": 3.0e38, "-huge": -3.0e38, "big": 1.0e6}
HAS_CUDA = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1" or cuda.is_available()


def poisoned(seed: int, j: int, h: int, w: int, t: int, where: str, kind: str, count: int) -> tuple:
    """Small maps with a few people, then ``count`` values of ``kind`` planted in det or tags (or both)."""
    rng = np.random.default_rng(seed)
    det = (rng.random((j, h, w)) * 0.05).astype(np.float32)
    tags = rng.normal(0, 0.2, (j, h, w, t)).astype(np.float32)
    for p in range(3):
        for k in range(j):
            y, x = int(rng.integers(h)), int(rng.integers(w))
            det[k, y, x] = 0.5 + 0.4 * rng.random()
            tags[k, y, x] = 2.0 * p
    for target in (det, tags) if where == "both" else ((det,) if where == "det" else (tags,)):
        flat = target.reshape(-1)
        flat[rng.choice(flat.size, count, replace=False)] = SPECIAL[kind]
    return det, tags


def outcome(fn, *args) -> object:  # type: ignore[no-untyped-def]  # any decoder
    try:
        return fn(*args)
    except InputError as exc:
        return exc


@pytest.mark.timeout(300)  # a hang fails here instead of blocking the suite
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    t=st.sampled_from([1, 2]),
    where=st.sampled_from(["det", "tags", "both"]),
    kind=st.sampled_from(list(SPECIAL)),
    count=st.sampled_from([1, 3, 40]),
)
def test_fast_and_reference_return_or_raise_input_error(seed: int, t: int, where: str, kind: str, count: int) -> None:
    det, tags = poisoned(seed, 4, 14, 12, t, where, kind, count)
    params = DecodeParams(num_joints=4)
    fast = outcome(decode, det, tags, params)
    ref = outcome(decode_reference, det, tags, params)
    if kind in ("nan", "+inf", "-inf"):
        assert isinstance(fast, InputError) and isinstance(ref, InputError)
        assert "non-finite" in str(fast) and ("det" if where != "tags" else "tags") in str(fast)
    elif isinstance(fast, InputError):
        # +-3e38 costs beside small ones round away Munkres' zeros (munkres 1.1.4 runs the same arithmetic): both
        # decoders give up in the step limit, with the same error
        assert kind in ("huge", "-huge") and "did not converge" in str(fast) and str(ref) == str(fast)
    else:  # finite: both decode, to the same output
        assert not isinstance(ref, InputError)
        np.testing.assert_array_equal(fast[0], ref[0])  # type: ignore[index]
        np.testing.assert_array_equal(fast[1], ref[1])  # type: ignore[index]


@pytest.mark.timeout(60)
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_all_non_finite_maps_and_the_message(value: float) -> None:
    det = np.full((17, 16, 16), value, np.float32)
    tags = np.zeros((17, 16, 16, 2), np.float32)
    with pytest.raises(InputError, match=r"det has 4352 non-finite values .* joint 0, y 0, x 0"):
        decode(det, tags, DecodeParams())
    with pytest.raises(InputError, match="det has 4352 non-finite"):
        decode_reference(det, tags, DecodeParams())
    with pytest.raises(InputError, match="image 0, joint 0"):
        decode_batch(det[None], tags[None], DecodeParams())
    det = np.zeros((17, 16, 16), np.float32)
    tags[3, 5, 7, 1] = value
    with pytest.raises(InputError, match=r"tags has 1 non-finite value .* joint 3, y 5, x 7, tag dim 1"):
        decode(det, tags, DecodeParams(), parallel=True)


@pytest.mark.timeout(60)
def test_munkres_gives_up_on_nan_instead_of_looping() -> None:
    cost = np.array([[1.0, np.nan, 3.0], [2.0, 1.0, np.nan], [np.nan, 0.5, 1.0]])
    with pytest.raises(InputError, match="did not converge"):
        assign(cost)
    n = 3
    ok = solve_square(
        cost.copy(),
        n,
        np.zeros((n, n), np.int8),
        np.zeros(n, np.bool_),
        np.zeros(n, np.bool_),
        np.zeros((2 * n + 1, 2), np.int64),
    )
    assert ok is False
    assert step_limit(30) > 4 * 30 * 30  # far above what a finite 30 x 30 problem needs
    # grouping on NaN peak tags: the same error, not a hang
    vals = np.array([[0.9, 0.8], [0.9, 0.7]], np.float32)
    inds = np.array([[1, 5], [2, 9]], np.int64)
    tag_k = np.array([[[0.0], [1.0]], [[np.nan], [1.0]]], np.float32)
    with pytest.raises(InputError, match="grouping did not converge"):
        group_jm(vals, inds, tag_k, 4, np.array([0, 1]), 2, 0.1, 1.0, True, False, False, 0)


def test_munkres_step_limit_is_never_reached_on_finite_costs() -> None:
    rng = np.random.default_rng(0)
    for trial in range(300):
        n = int(rng.integers(1, 31))
        cost = np.round(rng.random((n, n)) * [1.5, 3.0, 6.0][trial % 3]) * 100 - rng.random((n, 1))
        if trial % 5 == 0:
            cost = np.round(cost / 100)  # ties everywhere
        assert len(assign(cost)) == n


@pytest.mark.skipif(not HAS_CUDA, reason="needs a GPU or NUMBA_ENABLE_CUDASIM=1")
@pytest.mark.timeout(600)
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 2**31 - 1), where=st.sampled_from(["det", "tags"]), kind=st.sampled_from(list(SPECIAL)))
def test_cuda_returns_or_raises_input_error(seed: int, where: str, kind: str) -> None:
    from hhrnet.kernels.cuda import decode_cuda

    det, tags = poisoned(seed, 2, 8, 8, 1, where, kind, 2)
    params = DecodeParams(num_joints=2, max_num_people=4)
    got = outcome(decode_cuda, det[None], tags[None], params, 8)
    if kind in ("nan", "+inf", "-inf"):
        assert isinstance(got, InputError) and where in str(got)
    elif isinstance(got, InputError):  # Munkres gave up at +-3e38, as the CPU decoders do
        assert kind in ("huge", "-huge") and isinstance(outcome(decode_reference, det, tags, params), InputError)
    else:
        poses, scores = decode_reference(det, tags, params)
        np.testing.assert_array_equal(got.image(0)[0], poses)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got.image(0)[1], scores)  # type: ignore[attr-defined]
