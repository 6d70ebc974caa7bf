"""The reference decoder, the literal official port and the fast decoder against the official golden
outputs; the opt-in fixes (docs/official.md B1-B3); DecodeParams."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from hhrnet.benchmarks.official_port import decode_official
from hhrnet.codec import Codec
from hhrnet.config import apply_overrides, preset
from hhrnet.errors import ConfigError
from hhrnet.kernels.decode import decode
from hhrnet.kernels.params import DecodeParams, default_joint_order
from hhrnet.kernels.reference import decode_reference

Decoder = Callable[[np.ndarray, np.ndarray, DecodeParams], tuple[np.ndarray, np.ndarray]]
DECODERS: dict[str, Decoder] = {"reference": decode_reference, "fast": decode, "port": decode_official}


def golden(golden_dir: Path, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    g = np.load(golden_dir / f"{name}.npz")
    if name.startswith("infer"):
        return g["final_heatmaps"][0], g["tags"][0], g["grouped"], g["scores"]
    return g["det"], g["tags"], g["grouped"], g["scores"]


@pytest.mark.parametrize("name", ["group_official_10people", "infer_planted_official_8people"])
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_golden_official_parse(golden_dir: Path, name: str, decoder: str) -> None:
    det, tags, grouped, scores = golden(golden_dir, name)
    poses, got_scores = DECODERS[decoder](det, tags, DecodeParams())
    # 11 persons (one spurious, as munkres 1.1.4 makes it) / 8 persons, in the official order
    assert poses.shape == grouped.shape == ((11, 17, 5) if name.startswith("group") else (8, 17, 5))
    assert np.abs(poses - grouped).max() <= 1e-3 and np.abs(got_scores - scores).max() <= 1e-5
    np.testing.assert_array_equal(poses, grouped)  # in fact bit-identical
    np.testing.assert_array_equal(got_scores, scores)


def test_golden_needs_refine_and_adjust(golden_dir: Path) -> None:
    # the golden output is sensitive to each step, so the comparisons above can fail
    det, tags, grouped, _ = golden(golden_dir, "group_official_10people")
    unrefined, _ = decode_reference(det, tags, DecodeParams(refine=False))
    assert (unrefined[..., 2] == 0).sum() > (grouped[..., 2] == 0).sum()
    unadjusted, _ = decode_reference(det, tags, DecodeParams(adjust=False))
    assert not np.array_equal(unadjusted[..., :2], grouped[..., :2])


def _collision_maps() -> tuple[np.ndarray, np.ndarray]:
    det = np.zeros((3, 32, 32), np.float32)
    tags = np.zeros((3, 32, 32, 1), np.float32)
    det[0, 5, 5], tags[0, 5, 5] = 0.9, 1.0  # nose: a person keyed 1.0
    det[1, 6, 6], tags[1, 6, 6] = 0.9, 1.0  # an eye that matches it
    det[1, 25, 25], tags[1, 25, 25] = 0.5, 1.0  # a far duplicate with the same tag: unmatched, same key
    return det, tags


@pytest.mark.parametrize("decoder", list(DECODERS))
def test_b1_float_key_collision_is_official(decoder: str) -> None:
    det, tags = _collision_maps()
    poses, _ = DECODERS[decoder](det, tags, DecodeParams(num_joints=3, refine=False, adjust=False))
    assert len(poses) == 1 and poses[0, 1, :3].tolist() == [25, 25, 0.5]  # the far duplicate overwrote the eye


@pytest.mark.parametrize("decoder", ["reference", "fast"])
def test_b1_fix_unique_person_keys(decoder: str) -> None:
    det, tags = _collision_maps()
    params = DecodeParams(num_joints=3, refine=False, adjust=False, unique_person_keys=True)
    poses, _ = DECODERS[decoder](det, tags, params)
    assert len(poses) == 2
    np.testing.assert_array_equal(poses[:, 1, :3], np.array([[6, 6, 0.9], [25, 25, 0.5]], np.float32))


@pytest.mark.parametrize("decoder", ["reference", "fast"])
def test_b2_max_persons(decoder: str) -> None:
    rng = np.random.default_rng(0)
    det = rng.random((17, 64, 64)).astype(np.float32)
    tags = (rng.random((17, 64, 64, 2)) * 50).astype(np.float32)
    unbounded, _ = DECODERS[decoder](det, tags, DecodeParams())
    capped, scores = DECODERS[decoder](det, tags, DecodeParams(max_persons=25))
    assert len(unbounded) > 100 and len(capped) == 25 == len(scores)
    assert np.array_equal(capped[:, 0], unbounded[:25, 0])  # the first joint type seeds the same persons


@pytest.mark.parametrize("decoder", ["reference", "fast"])
def test_b3_ties_positive(decoder: str) -> None:
    det = np.zeros((1, 16, 16), np.float32)
    det[0, 8, 8] = 1.0
    det[0, 8, 7] = det[0, 8, 9] = det[0, 7, 8] = det[0, 9, 8] = 0.5  # equal neighbours both ways
    tags = np.zeros((1, 16, 16, 1), np.float32)
    official, _ = DECODERS[decoder](det, tags, DecodeParams(num_joints=1))
    fixed, _ = DECODERS[decoder](det, tags, DecodeParams(num_joints=1, ties_positive=True))
    assert official[0, 0, :2].tolist() == [8.25, 8.25]  # ties go to -0.25, then +0.5
    assert fixed[0, 0, :2].tolist() == [8.5, 8.5]


def test_refine_fills_missing_joints_by_tag_and_leaves_tags_zero() -> None:
    det = np.zeros((2, 24, 24), np.float32)
    tags = np.zeros((2, 24, 24, 1), np.float32)
    det[0, 4, 4], tags[0, 4, 4] = 0.9, 5.0  # joint 0 of a person tagged 5
    det[1, 10, 10], tags[1, 10, 10] = 0.05, 5.0  # below the detection threshold, the person's tag: 0.05 - 0
    det[1, 20, 20], tags[1, 20, 20] = 0.08, 0.0  # a larger det with a far tag: 0.08 - round(5) loses
    params = DecodeParams(num_joints=2)
    for decoder in ("reference", "fast", "port"):
        poses, scores = DECODERS[decoder](det, tags, params)
        assert poses[0, 1].tolist() == [10.25, 10.25, np.float32(0.05), 0.0]  # equal neighbours: -0.25 + 0.5
        assert scores[0] == np.float32(0.45)  # mean of (0.9, 0) before refine


def test_joint_order_and_params() -> None:
    assert DecodeParams().joint_order == (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)
    # CrowdPose: the first 14 entries of COCO's order (docs/official.md B5)
    assert DecodeParams(num_joints=14).joint_order == (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13)
    assert default_joint_order(20) == tuple(range(20))
    assert default_joint_order(8) == tuple(range(8))  # the truncated COCO order is not a permutation
    assert default_joint_order(18, center_first=True)[:2] == (17, 0)
    assert DecodeParams().with_joints(14) == DecodeParams(num_joints=14)
    with pytest.raises(ConfigError, match="permutation"):
        DecodeParams(num_joints=3, joint_order=(0, 1, 1))
    with pytest.raises(ConfigError, match="nms_kernel"):
        DecodeParams(nms_kernel=3, nms_padding=2)


def test_params_from_config() -> None:
    coco = Codec.from_config(preset("coco_w32_512")).decode
    assert coco == DecodeParams()
    crowd = Codec.from_config(preset("crowdpose_w32_512")).decode
    assert crowd.num_joints == 14 and crowd.joint_order == DecodeParams(num_joints=14).joint_order
    cfg = apply_overrides(
        preset("coco_w32_512"),
        [
            "model.num_joints=18",
            "data.num_joints=18",
            "data.with_center=True",
            "data.max_num_people=20",
            "test.max_persons=40",
            "test.ties_positive=True",
        ],
    )
    p = Codec.from_config(cfg).decode
    assert (p.num_joints, p.max_num_people, p.max_persons, p.ties_positive) == (17, 20, 40, True)


def test_official_order_lives_in_the_kernels_and_matches_the_config() -> None:
    import subprocess
    import sys

    from hhrnet.config import COCO_JOINT_ORDER
    from hhrnet.kernels.params import OFFICIAL_COCO_ORDER

    assert OFFICIAL_COCO_ORDER is COCO_JOINT_ORDER  # one definition, owned by the decoder's parameters
    assert DecodeParams.official() == DecodeParams() and DecodeParams.official().joint_order == OFFICIAL_COCO_ORDER
    assert DecodeParams.official(14).joint_order == OFFICIAL_COCO_ORDER[:14]
    assert DecodeParams.official(18, center_first=True).joint_order == (17, *OFFICIAL_COCO_ORDER)
    assert DecodeParams.official(refine=False).refine is False
    code = (
        "import sys; import hhrnet.kernels.decode, hhrnet.kernels.reference, hhrnet.kernels.params;"
        "bad = [m for m in ('hhrnet.config', 'torch') if m in sys.modules]; print(bad); sys.exit(bool(bad))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr  # kernels never import the config layer or torch
