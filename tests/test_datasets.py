"""The dataset facts (hhrnet/datasets.py) against their published forms."""

from __future__ import annotations

import pytest

from hhrnet.datasets import COCO, CROWDPOSE, DATASETS, dataset_facts, facts_for_joints
from hhrnet.errors import ConfigError

# person_keypoints_val2017.json "skeleton" (1-based), as COCO publishes it
COCO_PUBLISHED_SKELETON = [
    [16, 14], [14, 12], [17, 15], [15, 13], [12, 13], [6, 12], [7, 13], [6, 7], [6, 8], [7, 9],
    [8, 10], [9, 11], [2, 3], [1, 2], [1, 3], [2, 4], [3, 5], [4, 6], [5, 7],
]  # fmt: skip
PYCOCOTOOLS_SIGMAS = [0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107,
                      0.087, 0.087, 0.089, 0.089]  # fmt: skip


def _mirrored(name: str) -> str:
    for a, b in (("left", "right"), ("right", "left")):
        if name.startswith(a):
            return b + name[len(a) :]
    return name


@pytest.mark.parametrize("facts", list(DATASETS.values()), ids=list(DATASETS))
def test_flip_index_swaps_left_and_right_by_name(facts) -> None:  # type: ignore[no-untyped-def]
    for i, j in enumerate(facts.flip_index):
        assert facts.keypoints[j] == _mirrored(facts.keypoints[i])


def test_published_values() -> None:
    assert COCO.coco_skeleton() == COCO_PUBLISHED_SKELETON
    assert COCO.oks_sigmas == pytest.approx(PYCOCOTOOLS_SIGMAS, abs=1e-15)
    assert (COCO.num_joints, CROWDPOSE.num_joints) == (17, 14)
    assert facts_for_joints(14) is CROWDPOSE and facts_for_joints(18) is None
    with pytest.raises(ConfigError, match="coco, crowdpose"):
        dataset_facts("mpii")
