"""Decoding parameters (the official ``Params`` of group.py plus our opt-in fixes). No torch here."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from hhrnet.config import COCO_JOINT_ORDER


def default_joint_order(num_joints: int) -> tuple[int, ...]:
    """Official grouping order: COCO's, truncated to the first J entries (CrowdPose, SPEC B5); else 0..J-1."""
    if num_joints <= len(COCO_JOINT_ORDER):
        order = COCO_JOINT_ORDER[:num_joints]
        if sorted(order) == list(range(num_joints)):
            return order
    return tuple(range(num_joints))


@dataclass(frozen=True)
class DecodeParams:
    num_joints: int = 17  # J
    max_num_people: int = 30  # M: peaks kept per joint, and persons a candidate can be matched to
    detection_threshold: float = 0.1
    tag_threshold: float = 1.0
    use_detection_val: bool = True
    ignore_too_much: bool = False
    nms_kernel: int = 5
    nms_padding: int = 2
    adjust: bool = True
    refine: bool = True
    joint_order: tuple[int, ...] = COCO_JOINT_ORDER
    # deliberate departures from the official decoder (off = official behaviour)
    max_persons: int = 0  # B2: >0 keeps at most this many persons (later new persons are dropped)
    unique_person_keys: bool = False  # B1: a new person never merges into one whose tag key is equal
    ties_positive: bool = False  # B3: equal neighbours give no quarter offset (official: -0.25)

    def __post_init__(self) -> None:
        if sorted(self.joint_order) != list(range(self.num_joints)):
            object.__setattr__(self, "joint_order", default_joint_order(self.num_joints))
        if self.nms_kernel != 2 * self.nms_padding + 1:
            raise ValueError("nms_kernel must equal 2 * nms_padding + 1 (a same-size max-pool)")

    @classmethod
    def from_config(cls, cfg: Any) -> DecodeParams:
        """From a :class:`hhrnet.config.Config` (or anything with ``.test``, ``.model``, ``.data``)."""
        t = cfg.test
        joints = int(cfg.model.num_joints)
        if getattr(cfg.data, "with_center", False) and t.ignore_center:
            joints -= 1
        return cls(
            num_joints=joints,
            max_num_people=int(cfg.data.max_num_people),
            detection_threshold=float(t.detection_threshold),
            tag_threshold=float(t.tag_threshold),
            use_detection_val=bool(t.use_detection_val),
            ignore_too_much=bool(t.ignore_too_much),
            nms_kernel=int(t.nms_kernel),
            nms_padding=int(t.nms_padding),
            adjust=bool(t.adjust),
            refine=bool(t.refine),
            joint_order=default_joint_order(joints),
            max_persons=int(t.max_persons),
            unique_person_keys=bool(t.unique_person_keys),
            ties_positive=bool(t.ties_positive),
        )

    def with_joints(self, num_joints: int) -> DecodeParams:
        return replace(self, num_joints=num_joints, joint_order=default_joint_order(num_joints))
