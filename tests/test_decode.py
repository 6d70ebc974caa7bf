"""Decoders: golden parity of the reference, fast == reference bit for bit, munkres == munkres 1.1.4,
peaks in torch.topk's CPU order, batch outputs, official-bug options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hhrnet.kernels.decode import decode, decode_batch
from hhrnet.kernels.munkres import assign, assign_nb
from hhrnet.kernels.params import DecodeParams
from hhrnet.kernels.peaks import nms_hw, topk_flat, topk_nms_hw
from hhrnet.kernels.reference import decode_reference, nms


def _golden(shared: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.lib.npyio.NpzFile]:
    g = np.load(shared / "golden" / f"{name}.npz")
    if name.startswith("infer"):
        return g["final_heatmaps"][0], g["tags"][0], g
    return g["det"], g["tags"], g


@pytest.mark.parametrize("name", ["group_official_10people", "infer_planted_official_8people"])
@pytest.mark.parametrize("fn", [decode_reference, decode], ids=["reference", "fast"])
def test_golden_official_parse(shared: Path, name: str, fn: object) -> None:
    det, tags, g = _golden(shared, name)
    poses, scores = fn(det, tags, DecodeParams())  # type: ignore[operator]
    assert poses.shape == g["grouped"].shape  # 11 persons (one spurious) / 8 persons, same order
    assert np.abs(poses - g["grouped"]).max() <= 1e-3
    assert np.abs(scores - g["scores"]).max() <= 1e-5
    np.testing.assert_array_equal(poses, g["grouped"])  # in fact bit-identical


def planted(rng: np.random.Generator, people: int, j: int, h: int, w: int, t: int, sigma: float) -> tuple:
    """Gaussian peaks per person and joint, tags spaced 2.0 apart per person (as SPEC §10)."""
    ys, xs = np.mgrid[0:h, 0:w]
    det = np.zeros((j, h, w), np.float32)
    tags = np.zeros((j, h, w, t), np.float32)
    for p in range(people):
        for k in range(j):
            if rng.random() < 0.1:
                continue
            cy, cx = rng.uniform(0, h - 1), rng.uniform(0, w - 1)
            g = np.exp(-((ys - cy) ** 2 + (xs - cx) ** 2) / (2 * sigma**2)).astype(np.float32)
            det[k] = np.maximum(det[k], g * rng.uniform(0.3, 1.0))
            near = g > 0.05
            tags[k][near] = 2.0 * p + rng.normal(0, 0.1, size=(int(near.sum()), t))
    return det, tags


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    people=st.integers(0, 12),
    joints=st.sampled_from([17, 14]),
    t=st.sampled_from([1, 2]),
    size=st.sampled_from([(48, 48), (64, 40), (56, 72)]),
    quantize=st.booleans(),
)
def test_fast_equals_reference_on_random_maps(seed: int, people: int, joints: int, t: int, size: tuple,
                                              quantize: bool) -> None:  # fmt: skip
    rng = np.random.default_rng(seed)
    det, tags = planted(rng, people, joints, size[0], size[1], t, 2.0)
    det += rng.random(det.shape).astype(np.float32) * 0.12  # noise above the detection threshold
    if quantize:  # plateaus, equal values, equal tags: every tie-breaking rule is exercised
        det = np.round(det * 8) / 8
        tags = np.round(tags)
    params = DecodeParams(num_joints=joints)
    a = decode(det, tags, params)
    b = decode_reference(det, tags, params)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])


def test_pure_noise_is_bounded_and_identical() -> None:
    rng = np.random.default_rng(0)
    det = rng.random((17, 96, 96)).astype(np.float32)
    tags = (rng.random((17, 96, 96, 2)) * 5).astype(np.float32)
    a = decode(det, tags, DecodeParams())
    b = decode_reference(det, tags, DecodeParams())
    assert len(a[0]) > 100  # the official unbounded person count (B2)
    np.testing.assert_array_equal(a[0], b[0])
    capped = decode(det, tags, DecodeParams(max_persons=30))
    assert len(capped[0]) == 30
    np.testing.assert_array_equal(capped[0], decode_reference(det, tags, DecodeParams(max_persons=30))[0])


def test_munkres_matches_munkres_1_1_4_on_ties() -> None:
    from munkres import Munkres

    rng = np.random.default_rng(0)
    for trial in range(600):
        r, c = int(rng.integers(1, 10)), int(rng.integers(1, 10))
        kind = trial % 3
        if kind == 0:
            m = rng.integers(0, 3, (r, c)).astype(float)
        elif kind == 1:
            m = np.round(rng.random((r, c)) * 3) * 100 - rng.choice([0.5, 0.7, 0.9], (r, c))
        else:
            m = rng.random((r, c))
        if r > c and trial % 2:
            m = np.concatenate([m, np.zeros((r, r - c)) + 1e10], 1)
        ref = np.array(Munkres().compute(m.tolist()), dtype=np.int64).reshape(-1, 2)
        np.testing.assert_array_equal(assign(m), ref)
        np.testing.assert_array_equal(assign_nb(m), ref)


def test_scipy_style_optimum_is_not_enough() -> None:
    # an all-ties matrix: munkres 1.1.4 takes the anti-diagonal-first order its zero scan produces
    m = np.zeros((3, 3))
    from munkres import Munkres

    ref = np.array(Munkres().compute(m.tolist()))
    np.testing.assert_array_equal(assign(m), ref)


def test_peaks_follow_torch_topk_order() -> None:
    import torch

    rng = np.random.default_rng(1)
    for trial in range(60):
        n = int(rng.choice([1920, 4096, 64 * 64 * 2]))
        v = np.zeros(n, np.float32)
        idx = rng.choice(n, int(rng.integers(1, 60)), replace=False)
        v[idx] = rng.choice(np.array([0.5, 0.7, 0.9, 0.3], np.float32), len(idx))
        if trial % 3 == 0:
            v += (rng.random(n) < 0.3) * np.float32(0.2)
        tv, ti = torch.from_numpy(v).topk(30)
        mv, mi = topk_flat(v, 30)
        np.testing.assert_array_equal(mi, ti.numpy())
        np.testing.assert_array_equal(mv, tv.numpy())


def test_nms_variants_agree_with_torch_maxpool() -> None:
    import torch

    rng = np.random.default_rng(2)
    det = np.round(rng.random((3, 40, 50)) * 4).astype(np.float32) / 4 - 0.25
    pooled = torch.nn.functional.max_pool2d(torch.from_numpy(det)[None], 5, 1, 2)[0]
    ref = (torch.from_numpy(det) * torch.eq(pooled, torch.from_numpy(det)).float()).numpy()
    np.testing.assert_array_equal(nms(det, 2), ref)
    for j in range(3):
        np.testing.assert_array_equal(nms_hw(det[j], 2), ref[j])
        a = topk_nms_hw(det[j], 30, 2)
        b = topk_flat(ref[j].reshape(-1), 30)
        np.testing.assert_array_equal(a[1], b[1])


def test_batch_capacity_and_overflow() -> None:
    rng = np.random.default_rng(3)
    det, tags = planted(rng, 6, 17, 64, 64, 2, 2.0)
    det2 = rng.random((17, 64, 64)).astype(np.float32)
    tags2 = rng.random((17, 64, 64, 2)).astype(np.float32) * 5
    batch = decode_batch(np.stack([det, det2]), np.stack([tags, tags2]), DecodeParams(), capacity=40)
    p0, s0 = decode(det, tags, DecodeParams())
    got0 = batch.image(0)
    np.testing.assert_array_equal(got0[0], p0)
    np.testing.assert_array_equal(got0[1], s0)
    assert not batch.overflow[0] and batch.overflow[1] and batch.counts[1] == 40
    assert (batch.poses[0, len(p0) :] == 0).all()


def test_unique_keys_fixes_tag_collision() -> None:
    # two l_eye candidates share a tag key with the nose person: officially the second overwrites (B1)
    det = np.zeros((3, 32, 32), np.float32)
    tags = np.zeros((3, 32, 32, 1), np.float32)
    det[0, 5, 5] = 0.9
    tags[0, 5, 5] = 1.0  # person keyed 1.0
    det[1, 6, 6] = 0.9
    tags[1, 6, 6] = 1.0  # matches the person
    det[1, 25, 25] = 0.5
    tags[1, 25, 25] = 1.0  # unmatched duplicate with the same key -> overwrites the matched eye
    params = DecodeParams(num_joints=3, refine=False, adjust=False)
    official, _ = decode(det, tags, params)
    fixed, _ = decode(det, tags, DecodeParams(num_joints=3, refine=False, adjust=False, unique_person_keys=True))
    assert len(official) == 1 and official[0, 1, 0] == 25  # the far duplicate replaced the right eye
    assert len(fixed) == 2 and fixed[0, 1, 0] == 6
    np.testing.assert_array_equal(official, decode_reference(det, tags, params)[0])


def test_ties_positive_option() -> None:
    det = np.zeros((1, 16, 16), np.float32)
    det[0, 8, 8] = 1.0
    det[0, 8, 7] = det[0, 8, 9] = 0.5  # equal left/right neighbours
    det[0, 7, 8] = det[0, 9, 8] = 0.5
    tags = np.zeros((1, 16, 16, 1), np.float32)
    p = DecodeParams(num_joints=1, refine=False)
    assert decode(det, tags, p)[0][0, 0, :2].tolist() == [8.25, 8.25]  # official: ties go to -0.25
    q = DecodeParams(num_joints=1, refine=False, ties_positive=True)
    assert decode(det, tags, q)[0][0, 0, :2].tolist() == [8.5, 8.5]
    assert decode_reference(det, tags, q)[0][0, 0, :2].tolist() == [8.5, 8.5]


def test_empty_maps() -> None:
    det = np.zeros((17, 32, 32), np.float32)
    tags = np.zeros((17, 32, 32, 2), np.float32)
    for fn in (decode, decode_reference):
        poses, scores = fn(det, tags, DecodeParams())
        assert poses.shape == (0, 17, 5) and scores.shape == (0,)
