"""The ideal-tag diagnostic (benchmarks/joining.py): tags from labels, planted maps decoded with them."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from hhrnet.benchmarks.joining import BACKGROUND, _people_in_map, ideal_tags, run
from hhrnet.kernels.decode import decode
from hhrnet.kernels.params import DecodeParams


def _figure(cx: float, cy: float, rng: np.random.Generator, hw: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """A person: 17 labelled joints scattered around (cx, cy) and an outline of discs around them."""
    kp = np.zeros((17, 3))
    kp[:, 0] = cx + rng.uniform(-9, 9, 17)
    kp[:, 1] = cy + rng.uniform(-14, 14, 17)
    kp[:, 2] = 2
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    outline = np.zeros(hw, bool)
    for x, y, _ in kp:
        outline |= np.hypot(xx - x, yy - y) <= 6
    return outline, kp


def test_ideal_tags_follow_the_labels() -> None:
    rng = np.random.default_rng(0)
    hw = (64, 80)
    a, b = _figure(24, 32, rng, hw), _figure(52, 32, rng, hw)
    tags = ideal_tags([a, b], 17, hw, radius=3.0, spacing=10.0)
    for n, (_, kp) in enumerate((a, b)):
        for j, (x, y, _) in enumerate(kp):
            assert tags[j, int(round(y)), int(round(x))] == 10.0 * (n + 1)
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    far = np.ones(hw, bool)  # beyond every labelled joint's radius
    for _, kp in (a, b):
        for x, y, _ in kp:
            far &= np.hypot(xx - x, yy - y) > 3
    background = tags[0][far & ~(a[0] | b[0])]
    assert background.min() >= BACKGROUND and len(np.unique(background)) == background.size  # one tag each
    only_a = a[0] & ~b[0] & far  # a's outline away from every labelled joint: a's tag for every joint type
    assert only_a.any() and (tags[:, only_a] == 10.0).all()


def test_planted_people_decode_into_their_own_skeletons() -> None:
    """Heatmap peaks at two overlapping people's joints, ideal tags, refine off: two poses, each one person."""
    rng = np.random.default_rng(1)
    hw = (64, 80)
    people = [_figure(30, 32, rng, hw), _figure(46, 32, rng, hw)]  # overlapping outlines
    yy, xx = np.mgrid[0 : hw[0], 0 : hw[1]]
    det = np.zeros((17, *hw), np.float32)
    for _, kp in people:
        for j, (x, y, _) in enumerate(kp):
            det[j] = np.maximum(det[j], np.exp(-((xx - round(x)) ** 2 + (yy - round(y)) ** 2) / 2.0))
    tags = ideal_tags(people, 17, hw)[..., None]
    poses, _ = decode(det, tags, replace(DecodeParams(), refine=False))
    assert len(poses) == 2
    for pose in poses:
        owners = set()
        for j in range(17):
            d = [np.hypot(pose[j, 0] - 0.5 - kp[j, 0], pose[j, 1] - 0.5 - kp[j, 1]) for _, kp in people]
            assert min(d) <= 1.5
            owners.add(int(np.argmin(d)))
        assert len(owners) == 1


def test_run_decodes_a_val_split_four_ways(tmp_path: Path) -> None:
    from hhrnet.checkpoint import make_payload, save_checkpoint
    from hhrnet.config import preset
    from hhrnet.data.synth import synthesize
    from hhrnet.model import build_model

    synthesize(tmp_path / "data", num_train=1, num_val=2, seed=3)
    cfg = preset("tiny")
    ckpt = save_checkpoint(tmp_path / "tiny.pth", make_payload(build_model(cfg), cfg))
    rows = run(ckpt, tmp_path / "data")
    assert [(r["tags"], r["refine"]) for r in rows] == [
        ("network", True),
        ("network", False),
        ("ideal", True),
        ("ideal", False),
    ]
    assert all(0 <= r["joining"] <= r["poses"] and 0.0 <= r["AP"] <= 1.0 for r in rows)


def test_people_are_mapped_into_the_decoder_frame() -> None:
    """A map at twice the image size: keypoints scale by 2, outlines are resized with them."""
    seg = [[10.0, 10.0, 20.0, 10.0, 20.0, 30.0, 10.0, 30.0]]
    kp = [0.0] * 51
    kp[0:3] = [15.0, 12.0, 2]
    anns = [{"segmentation": seg, "keypoints": kp, "iscrowd": 0}, {"segmentation": seg, "iscrowd": 1}]
    people = _people_in_map(anns, (40, 40), (0.5, 0.5, 0.0, 0.0), (80, 80))
    assert len(people) == 1  # crowds are not people
    outline, labelled = people[0]
    assert labelled is not None and labelled[0, :2].tolist() == [30.0, 24.0]
    assert outline is not None and outline[40, 30] and not outline[70, 70]
