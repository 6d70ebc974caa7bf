"""Opt-in pose NMS: OKS against a naive NumPy twin, duplicates dropped in score order with the official order
kept, off by default, the same in every decoder."""

from __future__ import annotations

import numpy as np
import pytest

from hhrnet.benchmarks import scenes
from hhrnet.errors import ConfigError
from hhrnet.kernels.decode import decode, decode_batch
from hhrnet.kernels.params import DecodeParams
from hhrnet.kernels.posenms import oks, pose_nms, sigmas_for, suppress
from hhrnet.kernels.reference import decode_reference


def naive_oks(a: np.ndarray, b: np.ndarray, sigmas: np.ndarray) -> float:
    both = (a[:, 2] > 0) & (b[:, 2] > 0)
    if not both.any():
        return 0.0

    def area(p: np.ndarray) -> float:
        xy = p[p[:, 2] > 0, :2].astype(np.float64)
        return float(np.prod(xy.max(axis=0) - xy.min(axis=0))) if len(xy) else 0.0

    s = max((area(a) + area(b)) / 2, 1.0)
    d2 = ((a[:, :2].astype(np.float64) - b[:, :2]) ** 2).sum(axis=1)
    return float(np.exp(-d2 / (2 * s * (2 * sigmas) ** 2))[both].mean())


def test_oks_equals_the_naive_twin() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        a = np.concatenate([rng.random((17, 2)) * 100, (rng.random((17, 1)) > 0.3)], axis=1).astype(np.float32)
        b = a.copy()
        b[:, :2] += rng.normal(0, rng.choice([0.5, 5, 50]), (17, 2)).astype(np.float32)
        b[:, 2] = rng.random(17) > 0.3
        assert oks(a, b, sigmas_for(17)) == pytest.approx(naive_oks(a, b, sigmas_for(17)), rel=1e-12, abs=1e-15)
    assert oks(a, a, sigmas_for(17)) == pytest.approx(1.0)
    assert sigmas_for(14)[0] == pytest.approx(0.079) and sigmas_for(5).tolist() == [0.08] * 5


def test_duplicates_dropped_by_score_official_order_kept() -> None:
    rng = np.random.default_rng(1)
    base = np.zeros((4, 17, 5), np.float32)
    for p in range(4):
        base[p, :, :2] = rng.random((17, 2)) * 40 + p * 100  # four people far apart
        base[p, :, 2] = 0.5
    dup = base[2].copy()
    dup[:, :2] += 0.3  # a near copy of person 2, with a higher score
    poses = np.concatenate([base, dup[None]])
    scores = np.array([0.5, 0.4, 0.3, 0.2, 0.35], np.float32)
    assert pose_nms(poses, scores.astype(np.float64), sigmas_for(17), 0.9).tolist() == [0, 1, 3, 4]
    kept, kept_scores = suppress(poses, scores, 0.9)
    np.testing.assert_array_equal(kept, poses[[0, 1, 3, 4]])
    np.testing.assert_array_equal(kept_scores, scores[[0, 1, 3, 4]])
    assert suppress(poses, scores, 0.0)[0] is poses  # off: untouched
    with pytest.raises(ConfigError, match="pose_nms"):
        DecodeParams(pose_nms=1.5)


def test_every_decoder_applies_it_alike() -> None:
    sc = scenes.crowd(12, (17, 96, 128), 2, seed=3)
    on = DecodeParams(pose_nms=0.5)
    official = decode(sc.det, sc.tags, DecodeParams())
    fast = decode(sc.det, sc.tags, on)
    assert len(fast[0]) < len(official[0])  # this crowd has duplicates at OKS 0.5
    ref = decode_reference(sc.det, sc.tags, on)
    np.testing.assert_array_equal(fast[0], ref[0])
    np.testing.assert_array_equal(fast[1], ref[1])
    batch = decode_batch(sc.det[None], sc.tags[None], on, capacity=64)
    np.testing.assert_array_equal(batch.image(0)[0], fast[0])
    assert (batch.poses[0, batch.counts[0] :] == 0).all()
