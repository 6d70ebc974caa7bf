"""Benchmark scenes: deterministic, built from the real sample poses, with the realism they claim (missing,
occluded and truncated joints, background noise, tag jitter); the decode benchmark's rows on them."""

from __future__ import annotations

import numpy as np
import pytest

from hhrnet.benchmarks import scenes
from hhrnet.kernels.decode import decode
from hhrnet.kernels.params import DecodeParams
from hhrnet.kernels.reference import decode_reference

SMALL = (17, 128, 176)


def test_scenes_are_deterministic_and_shaped() -> None:
    for kind, people in (("crowd", 7), ("coco", 40083), ("noise", 0), ("planted", 4)):
        a, b = scenes.scene(kind, people, SMALL, 2, seed=3), scenes.scene(kind, people, SMALL, 2, seed=3)
        assert a.kind == kind and a.det.shape == SMALL and a.tags.shape == (*SMALL, 2)
        assert a.det.dtype == np.float32 and a.tags.dtype == np.float32
        np.testing.assert_array_equal(a.det, b.det)
        np.testing.assert_array_equal(a.tags, b.tags)
    assert not np.array_equal(scenes.crowd(7, SMALL, seed=1).det, scenes.crowd(7, SMALL, seed=2).det)
    with pytest.raises(ValueError, match="unknown scene kind"):
        scenes.scene("nope")


def test_coco_scene_holds_the_real_annotation() -> None:
    poses = {img: kps for img, _, _, kps in scenes.sample_poses()}
    assert sorted(poses) == [785, 40083, 196141, 197388] and sum(len(k) for k in poses.values()) == 12
    sc = scenes.coco(197388, (17, 512, 704))
    assert sc.people == 5 and sc.name == "coco-197388"
    vis = poses[197388][..., 2]
    np.testing.assert_array_equal(sc.keypoints[..., 2], vis)  # all inside the map: the annotated visibility
    scale = min(704 / 640, 512 / 392)
    np.testing.assert_allclose(
        np.ptp(sc.keypoints[0, vis[0] > 0, 0]), np.ptp(poses[197388][0, vis[0] > 0, 0]) * scale, rtol=1e-5
    )


def test_crowd_realism() -> None:
    sc = scenes.crowd(30, (17, 256, 352), seed=0)
    v = sc.keypoints[..., 2]
    assert 20 <= sc.people <= 30  # some people fully truncated at the border
    labelled = (v > 0).mean()
    assert 0.3 < labelled < 0.75  # COCO-like: many joints missing
    assert 0.15 < (v == 1).sum() / (v > 0).sum() < 0.35  # occluded share of the labelled joints
    background = sc.det[sc.det < 0.02]
    assert background.size > 0.8 * sc.det.size and background.std() > 0.002  # noisy, not zero
    params = DecodeParams()
    poses, _ = decode(sc.det, sc.tags, params)
    unrefined, _ = decode(sc.det, sc.tags, DecodeParams(refine=False))
    assert (unrefined[..., 2] == 0).sum() > 3 * len(poses)  # refine has work: several missing joints a person


def test_noise_scene_makes_many_persons_and_all_decoders_agree() -> None:
    sc = scenes.noise((17, 64, 88))
    fast = decode(sc.det, sc.tags, DecodeParams())
    assert len(fast[0]) > 60 and sc.people == 0
    ref = decode_reference(sc.det, sc.tags, DecodeParams())
    np.testing.assert_array_equal(fast[0], ref[0])


@pytest.mark.slow
def test_decode_benchmark_rows() -> None:
    from hhrnet.benchmarks.decode import COLUMNS, run, table

    rows = run(shape=(17, 64, 88), cases=(("crowd", 6), ("noise", 0), ("coco", 785)), repeats=2, port_repeats=1)
    assert [r["kind"] for r in rows] == ["crowd", "noise", "coco"]
    assert all(r["identical"] and r["speedup_1t"] > 1 and r["port_ms"] > r["fast_1t_ms"] for r in rows)
    assert [r["vs_clean"] is None for r in rows] == [False, True, False]  # realistic kinds have a clean twin
    assert all(r["clean_1t_ms"] > 0 for r in rows if r["vs_clean"] is not None)
    for r in rows:  # x_floor comes from the unrounded times; the table's ms fields are rounded to 0.01 ms, which at
        # this small shape (a floor of ~0.07 ms) moves their ratio by ~10 %: bound it by the rounding instead
        assert r["floor_ms"] > 0.005
        low = (r["fast_1t_ms"] - 0.005) / (r["floor_ms"] + 0.005)
        high = (r["fast_1t_ms"] + 0.005) / (r["floor_ms"] - 0.005)
        assert low - 0.05 <= r["x_floor"] <= high + 0.05, r
    assert table(rows, COLUMNS).count("\n") == 5
