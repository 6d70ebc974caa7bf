"""The fast Numba decoder equals the reference decoder bit for bit: planted people, noise, plateaus and
ties, T = 1 / 2, J = 17 / 14, many map sizes, every option; fixed-capacity batches; input checks."""

from __future__ import annotations

import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hhrnet.benchmarks.decode import planted_maps
from hhrnet.benchmarks.official_port import decode_official
from hhrnet.errors import InputError
from hhrnet.kernels.decode import decode, decode_batch, warmup
from hhrnet.kernels.params import DecodeParams
from hhrnet.kernels.reference import decode_reference


def scene(rng: np.random.Generator, people: int, j: int, h: int, w: int, t: int, sigma: float) -> tuple:
    """Gaussian people with some joints left out (so refine works), tags 2.0 apart per person."""
    ys, xs = np.mgrid[0:h, 0:w]
    det = np.zeros((j, h, w), np.float32)
    tags = np.zeros((j, h, w, t), np.float32)
    for p in range(people):
        for k in range(j):
            if rng.random() < 0.15:
                continue
            cy, cx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
            g = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2)).astype(np.float32)
            det[k] = np.maximum(det[k], g * np.float32(rng.uniform(0.3, 1.0)))
            near = g > 0.05
            tags[k][near] = 2.0 * p + rng.normal(0, 0.3, size=(int(near.sum()), t))
    return det, tags


def assert_same(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray]) -> None:
    assert a[0].shape == b[0].shape
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    people=st.integers(0, 12),
    joints=st.sampled_from([17, 14]),
    t=st.sampled_from([1, 2]),
    size=st.sampled_from([(48, 48), (64, 40), (56, 72), (20, 24), (33, 17)]),  # small ones: torch's other top-k
    noise=st.sampled_from([0.0, 0.05, 0.12]),
    quantize=st.booleans(),
)
def test_fast_equals_reference_on_random_maps(
    seed: int, people: int, joints: int, t: int, size: tuple[int, int], noise: float, quantize: bool
) -> None:
    rng = np.random.default_rng(seed)
    det, tags = scene(rng, people, joints, size[0], size[1], t, 2.0)
    det += rng.random(det.shape).astype(np.float32) * np.float32(noise)
    if quantize:  # plateaus, equal values, equal tags and equal keys: every tie rule is exercised
        det = np.round(det * 8) / np.float32(8)
        tags = np.round(tags)
    params = DecodeParams(num_joints=joints)
    assert_same(decode(det, tags, params), decode_reference(det, tags, params))


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    max_num_people=st.sampled_from([1, 5, 30]),
    detection_threshold=st.sampled_from([0.1, 0.3]),
    tag_threshold=st.sampled_from([0.5, 1.0, 3.0]),
    use_detection_val=st.booleans(),
    ignore_too_much=st.booleans(),
    adjust=st.booleans(),
    refine=st.booleans(),
    max_persons=st.sampled_from([0, 3]),
    unique_person_keys=st.booleans(),
    ties_positive=st.booleans(),
)
def test_fast_equals_reference_for_every_option(seed: int, **options: object) -> None:
    rng = np.random.default_rng(seed)
    det, tags = scene(rng, int(rng.integers(1, 8)), 5, 40, 48, 2, 1.5)
    det = np.round(det * 16) / np.float32(16)
    tags = np.round(tags * 2) / np.float32(2)
    params = DecodeParams(num_joints=5, **options)  # type: ignore[arg-type]
    assert_same(decode(det, tags, params), decode_reference(det, tags, params))


@pytest.mark.parametrize(("shape", "people", "t"), [((17, 64, 64), 6, 2), ((17, 96, 80), 12, 1)])
def test_fast_equals_the_literal_official_port(shape: tuple[int, int, int], people: int, t: int) -> None:
    det, tags = planted_maps(shape, people, t, seed=3)
    assert_same(decode(det, tags, DecodeParams()), decode_official(det, tags, DecodeParams()))


def test_pure_noise_is_identical_and_fast() -> None:
    warmup()
    rng = np.random.default_rng(0)
    det = rng.random((17, 128, 128)).astype(np.float32)
    tags = (rng.random((17, 128, 128, 2)) * 100).astype(np.float32)  # every candidate its own person
    start = time.perf_counter()
    fast = decode(det, tags, DecodeParams())
    elapsed = time.perf_counter() - start
    assert len(fast[0]) > 450  # the official unbounded person count (B2): seconds, not the official minutes
    assert elapsed < 20.0
    small = (det[:, :64, :64].copy(), (tags[:, :64, :64] / 20).astype(np.float32))
    assert_same(decode(*small, DecodeParams()), decode_reference(*small, DecodeParams()))


def test_batch_capacity_and_overflow() -> None:
    rng = np.random.default_rng(3)
    det, tags = scene(rng, 6, 17, 64, 64, 2, 2.0)
    det2 = rng.random((17, 64, 64)).astype(np.float32)
    tags2 = (rng.random((17, 64, 64, 2)) * 20).astype(np.float32)
    batch = decode_batch(np.stack([det, det2]), np.stack([tags, tags2]), DecodeParams(), capacity=40)
    assert batch.poses.shape == (2, 40, 17, 5) and batch.counts.dtype == np.int32
    assert_same(batch.image(0), decode(det, tags, DecodeParams()))
    full = decode(det2, tags2, DecodeParams())
    assert len(full[0]) > 40 and batch.counts[1] == 40 and batch.overflow.tolist() == [False, True]
    assert_same(batch.image(1), (full[0][:40], full[1][:40]))
    assert (batch.poses[0, batch.counts[0] :] == 0).all() and (batch.scores[0, batch.counts[0] :] == 0).all()


def test_shapes_and_inputs() -> None:
    det = np.zeros((17, 32, 32), np.float32)
    for fn in (decode, decode_reference):
        poses, scores = fn(det, np.zeros((17, 32, 32, 2), np.float32), DecodeParams())
        assert poses.shape == (0, 17, 5) and scores.shape == (0,)
    rng = np.random.default_rng(1)
    det, tags = scene(rng, 3, 17, 48, 48, 1, 2.0)
    assert_same(decode(det, tags[..., 0], DecodeParams()), decode(det, tags, DecodeParams()))  # T = 1 implied
    assert_same(decode(det.astype(np.float64), tags, DecodeParams()), decode(det, tags, DecodeParams()))
    with pytest.raises(InputError, match="match det"):
        decode(det, tags[:, :40], DecodeParams())
    with pytest.raises(InputError, match="dimensions"):
        decode(det[0], tags[0], DecodeParams())
    with pytest.raises(InputError, match="capacity"):
        decode_batch(det[None], tags[None], DecodeParams(), capacity=0)


def _levels(det_j: np.ndarray, tags_j: np.ndarray) -> tuple[np.ndarray, ...]:
    """The block summaries of one joint and their det levels: det_max, tag_lo, tag_hi, order, start, level_max."""
    from hhrnet.kernels.refine import block_levels, blocks_of, summarize_joint

    th, tw = blocks_of(*det_j.shape)
    det_max = np.empty((th, tw), np.float32)
    tag_lo = np.empty((th, tw, tags_j.shape[2]), np.float32)
    tag_hi = np.empty((th, tw, tags_j.shape[2]), np.float32)
    assert summarize_joint(det_j, tags_j, det_max, tag_lo, tag_hi)
    return (det_max, tag_lo, tag_hi, *block_levels(det_max))


def test_block_summaries_equal_numpy() -> None:
    from hhrnet.kernels.refine import TILE, block_levels, summarize

    rng = np.random.default_rng(3)
    for h, w, t in ((5, 7, 1), (16, 24, 2), (33, 17, 2), (70, 41, 3)):
        det = rng.normal(0, 1, (3, h, w)).astype(np.float32)
        tags = rng.normal(0, 5, (3, h, w, t)).astype(np.float32)
        det_max, tag_lo, tag_hi, finite = summarize(det, tags)
        assert finite
        th, tw = -(-h // TILE), -(-w // TILE)
        pad = ((0, 0), (0, th * TILE - h), (0, tw * TILE - w))
        d = np.pad(det, pad, constant_values=-np.inf).reshape(3, th, TILE, tw, TILE)
        np.testing.assert_array_equal(det_max, d.max(axis=(2, 4)))
        g = np.pad(tags, (*pad, (0, 0)), constant_values=np.nan).reshape(3, th, TILE, tw, TILE, t)
        np.testing.assert_array_equal(tag_lo, np.nanmin(g, axis=(2, 4)))
        np.testing.assert_array_equal(tag_hi, np.nanmax(g, axis=(2, 4)))
        order, start, level_max = block_levels(det_max[1])
        assert sorted(order) == list(range(th * tw))
        levels = [det_max[1].reshape(-1)[order[start[k] : start[k + 1]]] for k in range(len(start) - 1)]
        filled = [lv for lv in levels if len(lv)]
        assert all(a.max() <= b.min() for a, b in zip(filled, filled[1:], strict=False))  # monotonic levels
        assert [lv.max() for lv in filled] == [m for m in level_max if m > -np.inf]
        for bad, where in ((np.nan, "det"), (np.inf, "tags"), (-np.inf, "det")):
            d2, g2 = det.copy(), tags.copy()
            (d2 if where == "det" else g2)[2, h - 1, w - 1] = bad  # the last pixel of the last joint
            assert not summarize(d2, g2)[3]


@pytest.mark.parametrize("t", [1, 2, 3])
def test_refine_searches_equal_numpy_first_argmax(t: int) -> None:
    from hhrnet.kernels.refine import search_grid, search_levels, search_seeds, tag_grid

    rng = np.random.default_rng(t)
    floors = 0
    for trial in range(80):
        h, w = int(rng.integers(5, 90)), int(rng.integers(5, 90))
        det_j = (np.round(rng.random((h, w)) ** 3 * 8) / 8).astype(np.float32)  # plateaus: many equal values
        spread = [0.5, 2.0, 40.0][trial % 3]  # tags within one cell, a few cells, wide cells
        tags_j = (np.round(rng.normal(0, spread, (h, w, t)) * 2) / 2).astype(np.float32)
        if trial % 4 == 0:
            tags_j = tags_j[:, :, :1].repeat(t, axis=2)  # the flip copy equal: tags on the diagonal
        ptag = (np.round(rng.normal(0, spread * 1.5, t) * 2) / 2).astype(np.float32)  # sometimes off the grid
        dist = (((tags_j - ptag[None, None, :]) ** 2).sum(axis=2)) ** 0.5
        want = int(np.argmax(det_j - np.round(dist)))
        seeds = rng.choice(h * w, int(rng.integers(0, 30)), replace=False).astype(np.int64)
        some = int(rng.integers(h * w))  # a search holding one pixel's value
        value = (det_j - np.round(dist).astype(np.float32)).reshape(-1)[some]
        starts = [search_seeds(det_j, tags_j, ptag, seeds), (np.float32(-np.inf), h * w), (value, some)]
        values = (det_j - np.round(dist).astype(np.float32)).reshape(-1)
        for start in starts:
            levels = _levels(det_j, tags_j)
            assert search_levels(det_j, tags_j, ptag, start[0], start[1], *levels)[1] == want, trial
            best, best_i, work = search_levels(det_j, tags_j, ptag, start[0], start[1], *levels, 64.0)
            if work > 64:  # stopped early: what it holds is still a value of the map, no better than the answer
                assert best_i == h * w or values[best_i] == best
                assert best <= values[want]
            # the grid holds only pixels >= floor: valid whenever the search already holds a value >= floor
            floor = start[0] if trial % 2 else np.float32(-np.inf)
            floors += bool(np.isfinite(floor) and (det_j < floor).any())
            origin, size, shape, lo, hi, first, bucket_max, order, ds = tag_grid(det_j, tags_j, floor)
            assert len(order) == int((det_j >= floor).sum())
            top = bucket_max.max() if len(order) else np.float32(-np.inf)
            got = search_grid(
                det_j, tags_j, ptag, start[0], start[1], top, origin, size, shape, lo, hi, first, bucket_max, order, ds
            )
            assert got[1] == want, trial
    assert floors > 5


def test_grid_search_with_far_and_nan_person_tags() -> None:
    from hhrnet.kernels.refine import search_grid, tag_grid

    rng = np.random.default_rng(5)
    det_j = rng.random((40, 50)).astype(np.float32)
    tags_j = (rng.random((40, 50, 2)) * 100).astype(np.float32)  # 64 x 64 cells wider than CELL
    grid = tag_grid(det_j, tags_j, np.float32(-np.inf))
    assert tuple(grid[2]) == (64, 64)
    for ptag in ([1e6, -3.0], [-1e30, 1e30], [50.0, 50.0], [0.0, 100.0]):
        p = np.asarray(ptag, np.float32)
        want = int(np.argmax(det_j - np.round((((tags_j - p) ** 2).sum(axis=2)) ** 0.5)))
        got = search_grid(det_j, tags_j, p, np.float32(-np.inf), 2000, det_j.max(), *grid)
        assert got[1] == want, ptag
    nan = np.array([np.nan, 1.0], np.float32)
    assert search_grid(det_j, tags_j, nan, np.float32(-np.inf), 2000, det_j.max(), *grid) == (-np.inf, 2000)


@pytest.mark.parametrize("grid_cost", [-1.0, 0.0, 24.0, np.inf])
def test_refine_paths_equal_reference(grid_cost: float) -> None:
    # grid from the start / after one block search / by cost / never: the same answers
    from hhrnet.kernels.decode import decode_jhw, kernel_args
    from hhrnet.kernels.refine import summarize

    for seed in range(6):
        rng = np.random.default_rng(seed)
        det, tags = scene(rng, 8, 17, 40, 52, 2, 2.0)
        det += rng.random(det.shape).astype(np.float32) * np.float32(0.05)
        if seed % 2:
            tags = (rng.random(tags.shape) * 30).astype(np.float32)  # unstructured tags: the grid's case
        p = DecodeParams()
        args = kernel_args(p)[:-1]  # the cost model is the parameter under test
        got = decode_jhw(det, tags, *summarize(det, tags)[:3], p.nms_padding, *args, grid_cost)
        assert_same(got, decode_reference(det, tags, p))


def test_joint_missing_from_many_persons() -> None:
    # one joint type absent from everybody: every person refines it (the sorted-list search) and the
    # far-tagged persons fall back to the block search
    rng = np.random.default_rng(7)
    det, tags = scene(rng, 14, 17, 72, 72, 2, 2.0)
    det[5] = (rng.random((72, 72)) ** 4 * 0.6).astype(np.float32)
    tags[5] = rng.normal(0, 8, (72, 72, 2)).astype(np.float32)
    assert_same(decode(det, tags, DecodeParams()), decode_reference(det, tags, DecodeParams()))
