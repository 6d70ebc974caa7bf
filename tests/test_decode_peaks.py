"""Peaks in torch.topk's exact CPU order, NMS as the official max-pool, and the float32 numerics that the
decoders share with NumPy (pairwise sums, round half to even). torch is only the oracle here."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numba import njit

from hhrnet.kernels.group import mean_tags, pairwise_sum32, round_half_even32, round_half_even64
from hhrnet.kernels.peaks import nms_hw, peaks_jhw, scratch_size, topk_flat, topk_nms_hw
from hhrnet.kernels.reference import nms

torch = pytest.importorskip("torch")


def torch_topk(values: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    v, i = torch.from_numpy(values).topk(k)
    return v.numpy(), i.numpy()


def tie_heavy(rng: np.random.Generator, n: int, kind: int) -> np.ndarray:
    if kind == 0:  # sparse peaks on zeros, few distinct values
        v = np.zeros(n, np.float32)
        idx = rng.choice(n, int(rng.integers(1, min(n, 80))), replace=False)
        v[idx] = rng.choice(np.array([0.5, 0.7, 0.9, 0.3], np.float32), len(idx))
        return v
    if kind == 1:
        return rng.integers(0, 3, n).astype(np.float32)
    if kind == 2:
        return (rng.integers(-2, 3, n) * (rng.random(n) < 0.5)).astype(np.float32)
    return rng.random(n).astype(np.float32)


@pytest.mark.parametrize("n", [30, 40, 100, 256, 1919, 1920, 4096, 16384])
def test_topk_order_equals_torch_on_ties(n: int) -> None:
    # n < 64 * k uses torch's nth_element + sort path, n >= 64 * k its partial_sort path
    rng = np.random.default_rng(n)
    for trial in range(60):
        v = tie_heavy(rng, n, trial % 4)
        k = min(30, n)
        got_v, got_i = topk_flat(v, k)
        want_v, want_i = torch_topk(v, k)
        np.testing.assert_array_equal(got_i, want_i)
        np.testing.assert_array_equal(got_v, want_v)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(1, 3000),
    k=st.integers(1, 40),
    distinct=st.integers(1, 6),
    seed=st.integers(0, 2**32 - 1),
)
def test_topk_property(n: int, k: int, distinct: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    v = rng.integers(0, distinct, n).astype(np.float32) / np.float32(distinct)
    k = min(k, n)
    got_v, got_i = topk_flat(v, k)
    want_v, want_i = torch_topk(v, k)
    np.testing.assert_array_equal(got_i, want_i)
    np.testing.assert_array_equal(got_v, want_v)


def torch_nms(det: np.ndarray) -> np.ndarray:
    t = torch.from_numpy(det)[None]
    pooled = torch.nn.functional.max_pool2d(t, 5, 1, 2)
    return (t * torch.eq(pooled, t).float())[0].numpy()


@pytest.mark.parametrize("shape", [(3, 40, 50), (2, 130, 150)])
def test_nms_and_lazy_topk_equal_torch(shape: tuple[int, int, int]) -> None:
    rng = np.random.default_rng(2)
    det = np.round(rng.random(shape) * 4).astype(np.float32) / 4 - 0.25  # plateaus and negative values
    ref = torch_nms(det)
    np.testing.assert_array_equal(nms(det, 2), ref)
    j, h, w = shape
    size = scratch_size(h, w, 30)
    v = np.empty(size, np.float32)
    ix = np.empty(size, np.int64)
    stack = np.empty((64, 3), np.int64)
    for k in range(j):
        np.testing.assert_array_equal(nms_hw(det[k], 2), ref[k])
        topk_nms_hw(det[k], 30, 2, v, ix, stack)
        want_v, want_i = torch_topk(ref[k].reshape(-1), 30)
        np.testing.assert_array_equal(ix[:30], want_i)
        np.testing.assert_array_equal(v[:30], want_v)


def test_peaks_gather_tags_at_the_peaks() -> None:
    rng = np.random.default_rng(3)
    det = rng.random((2, 64, 64)).astype(np.float32)
    tags = rng.random((2, 64, 64, 2)).astype(np.float32)
    vals, inds, tag_k = peaks_jhw(det, tags, 30, 2)
    for j in range(2):
        want_v, want_i = torch_topk(torch_nms(det)[j].reshape(-1), 30)
        np.testing.assert_array_equal(inds[j], want_i)
        np.testing.assert_array_equal(vals[j], want_v)
        np.testing.assert_array_equal(tag_k[j], tags[j].reshape(-1, 2)[want_i])


@pytest.mark.parametrize("shape", [(4, 130, 150), (3, 64, 96), (2, 200, 61)])
def test_block_skipping_topk_equals_plain(shape: tuple[int, int, int]) -> None:
    # partial blocks at the right and bottom edges, plateaus, negative maps (the heap minimum stays < 0)
    from hhrnet.kernels.peaks import peaks_blocks_jhw
    from hhrnet.kernels.refine import TILE, summarize

    rng = np.random.default_rng(shape[1])
    det = (np.round(rng.random(shape) ** 4 * 8) / 8).astype(np.float32)
    det[1] = -det[1]
    det[-1] = rng.random(shape[1:]).astype(np.float32)  # distinct values: the heap minimum rises smoothly
    tags = rng.random((*shape, 2)).astype(np.float32)
    det_max = summarize(det, tags)[0]
    for k in (1, 30, 60):
        got = peaks_blocks_jhw(det, tags, k, 2, det_max, TILE)
        want = peaks_jhw(det, tags, k, 2)
        for a, b in zip(got, want, strict=True):
            np.testing.assert_array_equal(a, b)


@njit(cache=True)
def _round_all(x64: np.ndarray, x32: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.empty_like(x64)
    b = np.empty_like(x32)
    for i in range(x64.shape[0]):
        a[i] = round_half_even64(x64[i])
        b[i] = round_half_even32(x32[i])
    return a, b


def test_round_half_even_equals_numpy() -> None:
    rng = np.random.default_rng(4)
    x = np.concatenate(
        [np.arange(-20, 20, 0.25), rng.normal(0, 1e3, 20000), rng.normal(0, 1e9, 200), [0.49999997, 2.5, 1e30, np.inf]]
    )
    a, b = _round_all(x, x.astype(np.float32))
    np.testing.assert_array_equal(a, np.round(x))
    np.testing.assert_array_equal(b, np.round(x.astype(np.float32)))
    assert a[np.flatnonzero(x == 2.5)[0]] == 2.0  # half to even, not away from zero


def test_float32_means_and_sums_follow_numpy() -> None:
    # np.mean over a list of (T,) float32 tags: pairwise (8 running sums) for T = 1, row by row for T = 2
    rng = np.random.default_rng(5)
    mismatch_if_sequential = 0
    for _ in range(600):
        n = int(rng.integers(1, 18))
        t = int(rng.integers(1, 3))
        rows = rng.normal(0, 3, (n, t)).astype(np.float32)
        out = np.empty(t, np.float32)
        mean_tags(rows, n, out)
        np.testing.assert_array_equal(out, np.mean(list(rows), axis=0))
        if t == 1:
            seq = np.float32(0)
            for r in rows[:, 0]:
                seq = np.float32(seq + r)
            mismatch_if_sequential += seq / np.float32(n) != out[0]
        vals = rng.random(n + 8).astype(np.float32)
        assert pairwise_sum32(vals, len(vals)) == vals.sum()
    assert mismatch_if_sequential > 0  # the pairwise rule is observable, so this test can fail
