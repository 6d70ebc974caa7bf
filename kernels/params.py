"""Decoding parameters: the official grouping ``Params`` (lib/core/group.py) plus our opt-in fixes.

No torch and no Numba here: the object is read by the reference decoder, the Numba CPU decoder and the
CUDA decoder alike. Every default is the official behaviour; the ``docs/official.md §11`` fixes and the pose NMS are
off. The kernels take the joint order as data: the official order is defined here (:data:`OFFICIAL_COCO_ORDER`),
never imported from the configuration layer above.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hhrnet.errors import ConfigError

MAX_JOINTS = 128  # numpy's float32 pairwise sum is reproduced for up to this many joints per person
# The official grouping order (HigherHRNet lib/core/group.py, Params.joint_order): head, shoulders, hips,
# then the limbs outwards. CrowdPose uses its first 14 entries (docs/official.md B5).
OFFICIAL_COCO_ORDER: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 11, 12, 7, 8, 9, 10, 13, 14, 15, 16)


def default_joint_order(num_joints: int, center_first: bool = False) -> tuple[int, ...]:
    """Official grouping order (from :data:`OFFICIAL_COCO_ORDER`).

    COCO's order truncated to the first J entries when J <= 17 (CrowdPose's 14 joints, docs/official.md B5); a plain
    0..J-1 otherwise, or when the truncated COCO order is not a permutation of 0..J-1 (the official code
    would index past the joints there). ``center_first``: the official order when a centre joint is
    appended as the last channel and kept (``WITH_CENTER`` without ``IGNORE_CENTER``).
    """
    if center_first:
        return (num_joints - 1, *default_joint_order(num_joints - 1))
    if num_joints <= len(OFFICIAL_COCO_ORDER):
        order = tuple(OFFICIAL_COCO_ORDER[:num_joints])
        if sorted(order) == list(range(num_joints)):
            return order
    return tuple(range(num_joints))


def person_capacity(num_joints: int, m: int, max_persons: int) -> int:
    """Persons one image can produce: every candidate starts at most one (J * M), or the B2 cap."""
    full = num_joints * m
    return min(full, max_persons) if max_persons > 0 else full


@dataclass(frozen=True)
class DecodeParams:
    """How heatmaps and tags become poses. ``joint_order=()`` means the official order for ``num_joints``."""

    num_joints: int = 17  # J
    max_num_people: int = 30  # M: peaks kept per joint, and how many persons a candidate can be matched to
    detection_threshold: float = 0.1  # candidates need val > this
    tag_threshold: float = 1.0  # a match needs ||tag - person mean tag|| < this
    use_detection_val: bool = True  # cost round(dist) * 100 - val (else the raw distance)
    ignore_too_much: bool = False  # skip matching a joint once M persons exist
    nms_kernel: int = 5  # max-pool window; must be 2 * nms_padding + 1
    nms_padding: int = 2
    adjust: bool = True  # quarter-pixel offset towards the larger neighbour, then +0.5
    refine: bool = True  # fill missing joints by a tag-guided global search
    joint_order: tuple[int, ...] = ()  # grouping order; () = default_joint_order(num_joints)
    # deliberate departures from the official decoder (docs/official.md §11); the defaults are official
    max_persons: int = 0  # B2: 0 = unbounded; >0 = a new person past this count is dropped
    unique_person_keys: bool = False  # B1: a new person never merges into one whose tag key is equal
    ties_positive: bool = False  # B3: equal neighbours give no quarter offset (official: -0.25)
    pose_nms: float = 0.0  # OKS threshold of person-level NMS after refine (0 = off, official); e.g. 0.9

    def __post_init__(self) -> None:
        if not 1 <= self.num_joints <= MAX_JOINTS:
            raise ConfigError(f"num_joints must be in 1..{MAX_JOINTS}, got {self.num_joints}")
        if self.max_num_people < 1:
            raise ConfigError(f"max_num_people must be >= 1, got {self.max_num_people}")
        if self.nms_padding < 0 or self.nms_kernel != 2 * self.nms_padding + 1:
            raise ConfigError(
                f"nms_kernel ({self.nms_kernel}) must equal 2 * nms_padding + 1 ({self.nms_padding}): "
                "the official max-pool must keep the map size"
            )
        if not 0.0 <= self.pose_nms <= 1.0:
            raise ConfigError(f"pose_nms is an OKS threshold in [0, 1] (0 = off), got {self.pose_nms}")
        if self.max_persons < 0:
            raise ConfigError(f"max_persons must be >= 0 (0 = unbounded), got {self.max_persons}")
        if not self.joint_order:
            object.__setattr__(self, "joint_order", default_joint_order(self.num_joints))
        else:
            object.__setattr__(self, "joint_order", tuple(int(j) for j in self.joint_order))
        if sorted(self.joint_order) != list(range(self.num_joints)):
            raise ConfigError(f"joint_order {self.joint_order} is not a permutation of 0..{self.num_joints - 1}")

    @classmethod
    def official(cls, num_joints: int = 17, center_first: bool = False, **options: Any) -> DecodeParams:
        """The official parameters for ``num_joints`` with the official grouping order spelled out
        (``center_first``: a kept centre joint, the last channel, is grouped first); ``options`` override
        any other field."""
        return cls(num_joints=num_joints, joint_order=default_joint_order(num_joints, center_first), **options)

    def grouping_args(self) -> tuple[int, float, float, bool, bool, bool, int]:
        """The grouping kernels' parameters after the joint order, in their order (CPU and CUDA)."""
        return (
            self.max_num_people,
            self.detection_threshold,
            self.tag_threshold,
            self.use_detection_val,
            self.ignore_too_much,
            self.unique_person_keys,
            self.max_persons,
        )

    @property
    def person_capacity(self) -> int:
        """Persons one image can produce with these parameters: the result rows a fixed-capacity decoder
        (CUDA) needs so that it never drops anyone."""
        return person_capacity(self.num_joints, self.max_num_people, self.max_persons)

    def with_joints(self, num_joints: int) -> DecodeParams:
        """The same settings for another joint count, with that count's default order."""
        if num_joints == self.num_joints:
            return self
        return replace(self, num_joints=num_joints, joint_order=())
