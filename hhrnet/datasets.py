"""Facts about the keypoint datasets, in one place: joints, their names, the flip permutation, OKS sigmas, the
skeleton and the image normalisation defaults. Config, codec, evaluation, pose NMS, drawing, training transforms
and the synthetic data all read them here.

A leaf module (standard library only), so that even the kernels may read it.

Sources: COCO's person keypoints and sigmas (pycocotools ``COCOeval``), CrowdPose's (crowdposetools), the
official flip permutations (HigherHRNet ``dataset/transforms/build.py``) and the official ImageNet normalisation
(docs/official.md §6).
"""

from __future__ import annotations

from dataclasses import dataclass

from hhrnet.choices import DatasetName
from hhrnet.errors import ConfigError

# ImageNet statistics of the official Normalize step (RGB order, after /255)
IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
# OKS sigma for joints of a dataset this module does not know (pose NMS only)
DEFAULT_OKS_SIGMA = 0.08


@dataclass(frozen=True)
class DatasetFacts:
    """One dataset's keypoint layout. ``skeleton`` pairs are 0-based joint indices."""

    name: DatasetName
    keypoints: tuple[str, ...]
    flip_index: tuple[int, ...]  # joint i of a flipped image is joint flip_index[i] of the original
    oks_sigmas: tuple[float, ...]  # per joint, as the evaluators use them (already divided by 10)
    skeleton: tuple[tuple[int, int], ...]

    def __post_init__(self) -> None:
        j = len(self.keypoints)
        assert len(self.flip_index) == j and sorted(self.flip_index) == list(range(j)), self.name
        assert len(self.oks_sigmas) == j and all(0 <= a < j and 0 <= b < j for a, b in self.skeleton), self.name

    @property
    def num_joints(self) -> int:
        return len(self.keypoints)

    def coco_skeleton(self) -> list[list[int]]:
        """The skeleton as a COCO annotation file writes it (1-based)."""
        return [[a + 1, b + 1] for a, b in self.skeleton]


def _pairs(text: str) -> tuple[tuple[int, int], ...]:
    """``"15-13 13-11"`` -> ((15, 13), (13, 11))."""
    return tuple((int(a), int(b)) for a, b in (p.split("-") for p in text.split()))


def _sigmas(tenths: tuple[float, ...]) -> tuple[float, ...]:
    return tuple(v / 10.0 for v in tenths)  # as the evaluators compute them: np.array([...]) / 10.0


COCO = DatasetFacts(
    name="coco",
    keypoints=tuple(
        (
            "nose left_eye right_eye left_ear right_ear left_shoulder right_shoulder left_elbow right_elbow "
            "left_wrist right_wrist left_hip right_hip left_knee right_knee left_ankle right_ankle"
        ).split()
    ),
    flip_index=(0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15),
    oks_sigmas=_sigmas(
        (0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89)
    ),
    skeleton=_pairs("15-13 13-11 16-14 14-12 11-12 5-11 6-12 5-6 5-7 6-8 7-9 8-10 1-2 0-1 0-2 1-3 2-4 3-5 4-6"),
)

CROWDPOSE = DatasetFacts(
    name="crowdpose",
    keypoints=tuple(
        (
            "left_shoulder right_shoulder left_elbow right_elbow left_wrist right_wrist left_hip right_hip "
            "left_knee right_knee left_ankle right_ankle head neck"
        ).split()
    ),
    flip_index=(1, 0, 3, 2, 5, 4, 7, 6, 9, 8, 11, 10, 12, 13),
    oks_sigmas=_sigmas((0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89, 0.79, 0.79)),
    skeleton=_pairs("12-13 13-0 13-1 0-2 2-4 1-3 3-5 13-6 13-7 6-8 8-10 7-9 9-11 6-7"),
)

DATASETS: dict[str, DatasetFacts] = {d.name: d for d in (COCO, CROWDPOSE)}


def dataset_facts(name: str) -> DatasetFacts:
    """The facts of dataset ``name``; ConfigError naming the known ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}") from None


def facts_for_joints(num_joints: int) -> DatasetFacts | None:
    """The dataset with this many joints (17 COCO, 14 CrowdPose), None for any other count."""
    return next((d for d in DATASETS.values() if d.num_joints == num_joints), None)


__all__ = [
    "COCO",
    "CROWDPOSE",
    "DATASETS",
    "DEFAULT_OKS_SIGMA",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "DatasetFacts",
    "dataset_facts",
    "facts_for_joints",
]
