"""Built-in synthetic multi-person keypoint dataset in COCO (or CrowdPose) format — no downloads.

Each image holds articulated human-like figures drawn from a small kinematic model with the COCO-17
skeleton: a torso, a head with eyes and ears, and two-segment limbs at random angles, in random clothing
colours, at varied scale (small people included), overlapping (joints hidden by a figure drawn later are
labelled v=1), partly outside the frame (v=0 outside), over textured backgrounds. Some images carry a crowd
region (many tiny figures annotated once with ``iscrowd=1`` and an RLE mask) and tiny unlabelled people
(``num_keypoints=0`` with a polygon), so the training masks are exercised as on COCO.

Left and right are made learnable the way they are in real photos, where clothing and lighting differ
by side: every figure faces the camera (its left side on the image right), its left limbs are drawn
darker than its right limbs, and wrists and ankles carry a side-specific marker colour.

Layout (the official COCO layout with split names ``train`` / ``val``)::

    root/images/train/000000000001.jpg ...
    root/images/val/...
    root/annotations/person_keypoints_train.json
    root/annotations/person_keypoints_val.json

The CrowdPose variant writes 14 joints in CrowdPose order, a ``crowdIndex`` per image and no ``area``
field, like the real CrowdPose json.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from hhrnet.choices import DatasetName
from hhrnet.datasets import dataset_facts
from hhrnet.errors import ConfigError, InputError
from hhrnet.images import encode_jpeg
from hhrnet.io import atomic_write_bytes, atomic_write_text


@dataclass(frozen=True)
class SynthSummary:
    root: Path
    images: dict[str, int]
    people: dict[str, int]
    annotation_files: dict[str, Path] = field(default_factory=dict)


@dataclass
class _Figure:
    """Joint positions (17, 2) plus what is needed to draw the figure (all in image pixels)."""

    joints: np.ndarray  # (17, 2) COCO order
    head_top: np.ndarray  # (2,)
    neck: np.ndarray  # (2,)
    height: float
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    skin: tuple[int, int, int]


def _rot(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s], [s, c]])


def _pose_figure(rng: np.random.Generator, cx: float, cy: float, height: float) -> _Figure:
    """A figure facing the camera: its left side is on the image right (larger x)."""
    h = height
    tilt = rng.uniform(-0.25, 0.25)  # whole-body lean (radians)
    down = np.array([0.0, 1.0])

    def local(x: float, y: float) -> np.ndarray:
        return np.array([x * h, y * h])

    neck = local(0, -0.30)
    pelvis = local(0, 0.05)
    j = np.zeros((17, 2))
    j[5], j[6] = neck + local(0.12, 0.02), neck + local(-0.12, 0.02)  # shoulders: left on image right
    j[11], j[12] = pelvis + local(0.08, 0), pelvis + local(-0.08, 0)  # hips
    head = neck + local(rng.uniform(-0.02, 0.02), -0.11)
    j[0] = head + local(0, 0.015)  # nose
    j[1], j[2] = head + local(0.03, -0.015), head + local(-0.03, -0.015)  # eyes
    j[3], j[4] = head + local(0.065, 0.0), head + local(-0.065, 0.0)  # ears
    head_top = head + local(0, -0.08)

    def limb(start: np.ndarray, a1: float, l1: float, a2: float, l2: float) -> tuple[np.ndarray, np.ndarray]:
        mid = start + _rot(a1) @ down * l1 * h
        end = mid + _rot(a1 + a2) @ down * l2 * h
        return mid, end

    # arms: angle from hanging down; positive angle swings the limb towards -x
    for side, (sh, el, wr) in ((1, (5, 7, 9)), (-1, (6, 8, 10))):
        upper = -side * rng.uniform(0.1, 1.9)
        j[el], j[wr] = limb(j[sh], upper, 0.17, -side * rng.uniform(-0.3, 1.8), 0.15)
    for side, (hp, kn, an) in ((1, (11, 13, 15)), (-1, (12, 14, 16))):
        j[kn], j[an] = limb(j[hp], -side * rng.uniform(-0.05, 0.45), 0.23, side * rng.uniform(-0.05, 0.5), 0.22)

    rot = _rot(tilt)
    centre = np.array([cx, cy])
    joints = (rot @ j.T).T + centre
    return _Figure(
        joints=joints,
        head_top=rot @ head_top + centre,
        neck=rot @ neck + centre,
        height=h,
        shirt=tuple(int(c) for c in rng.integers(30, 230, 3)),  # type: ignore[arg-type]
        trousers=tuple(int(c) for c in rng.integers(20, 200, 3)),  # type: ignore[arg-type]
        skin=tuple(int(c) for c in (rng.uniform(0.6, 1.0) * np.array([225, 185, 150]))),  # type: ignore[arg-type]
    )


def _shade(color: tuple[int, int, int], factor: float) -> tuple[int, int, int]:
    return tuple(int(min(255, c * factor)) for c in color)  # type: ignore[return-value]


LEFT_MARK = (40, 90, 255)  # RGB: bluish wrist/ankle marker on the figure's left side
RIGHT_MARK = (255, 150, 30)  # orange on the right side


def _draw_figure(canvas: np.ndarray, mask: np.ndarray, fig: _Figure) -> None:
    """Draw the figure on ``canvas`` (RGB) and set its pixels in ``mask`` (uint8)."""
    j = fig.joints
    t = max(2, int(round(fig.height * 0.055)))

    def pt(p: np.ndarray) -> tuple[int, int]:
        return int(round(p[0])), int(round(p[1]))

    def line(a: np.ndarray, b: np.ndarray, color: tuple[int, int, int], width: int) -> None:
        cv2.line(canvas, pt(a), pt(b), color, width, cv2.LINE_AA)
        cv2.line(mask, pt(a), pt(b), 1, width)

    def disc(c: np.ndarray, r: int, color: tuple[int, int, int]) -> None:
        cv2.circle(canvas, pt(c), r, color, -1, cv2.LINE_AA)
        cv2.circle(mask, pt(c), r, 1, -1)

    # legs (trousers), left darker than right
    for (a, b, c), f in (((11, 13, 15), 0.6), ((12, 14, 16), 1.15)):
        line(j[a], j[b], _shade(fig.trousers, f), t + 1)
        line(j[b], j[c], _shade(fig.trousers, f * 0.9), t)
    torso = np.array([pt(j[5]), pt(j[6]), pt(j[12]), pt(j[11])], np.int32)
    cv2.fillConvexPoly(canvas, torso, fig.shirt, cv2.LINE_AA)
    cv2.fillConvexPoly(mask, torso, 1)
    line(fig.neck, (j[11] + j[12]) / 2, _shade(fig.shirt, 0.85), max(1, t // 2))
    for (a, b, c), f in (((5, 7, 9), 0.6), ((6, 8, 10), 1.2)):  # arms in the shirt colour, shaded by side
        line(j[a], j[b], _shade(fig.shirt, f), t)
        line(j[b], j[c], _shade(fig.skin, f), max(2, t - 1))
    r_mark = max(2, t // 2 + 1)
    for idx, colour in ((9, LEFT_MARK), (15, LEFT_MARK), (10, RIGHT_MARK), (16, RIGHT_MARK)):
        disc(j[idx], r_mark, colour)
    line(fig.neck, (j[3] + j[4]) / 2, fig.skin, max(2, t - 1))
    head_c = (j[3] + j[4]) / 2
    head_r = max(3, int(round(np.linalg.norm(j[3] - j[4]) / 2 * 1.05)))
    disc(head_c, head_r, fig.skin)
    eye_r = max(1, head_r // 5)
    for idx in (1, 2):
        cv2.circle(canvas, pt(j[idx]), eye_r, (20, 20, 20), -1, cv2.LINE_AA)
    cv2.circle(canvas, pt(j[0]), max(1, eye_r), (170, 80, 70), -1, cv2.LINE_AA)
    for idx, colour in ((3, (120, 60, 40)), (4, (200, 140, 110))):  # ears differ by side too
        disc(j[idx], max(1, head_r // 4), colour)


def _background(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.uniform(40, 215, 3), rng.uniform(40, 215, 3)
    angle = rng.uniform(0, 2 * math.pi)
    ramp = (np.cos(angle) * xs / w + np.sin(angle) * ys / h + 1) / 2
    img = c0[None, None, :] * (1 - ramp[..., None]) + c1[None, None, :] * ramp[..., None]
    img += rng.normal(0, rng.uniform(3, 14), (h, w, 1))
    out = np.clip(img, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(3, 9)):  # clutter: rectangles, circles and lines
        colour = tuple(int(c) for c in rng.integers(0, 255, 3))
        kind = rng.integers(0, 3)
        p = (int(rng.integers(0, w)), int(rng.integers(0, h)))
        if kind == 0:
            q = (int(p[0] + rng.integers(-w // 3, w // 3)), int(p[1] + rng.integers(-h // 3, h // 3)))
            cv2.rectangle(out, p, q, colour, -1)
        elif kind == 1:
            cv2.circle(out, p, int(rng.integers(4, max(5, w // 8))), colour, -1)
        else:
            q = (int(rng.integers(0, w)), int(rng.integers(0, h)))
            cv2.line(out, p, q, colour, int(rng.integers(1, 4)))
    return out


def _to_crowdpose(joints: np.ndarray, vis: np.ndarray, fig: _Figure) -> tuple[np.ndarray, np.ndarray]:
    """COCO-17 joints -> CrowdPose-14 (12 limb joints, head top, neck)."""
    coco_idx = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    j14 = np.concatenate([joints[coco_idx], fig.head_top[None], fig.neck[None]])
    v14 = np.concatenate([vis[coco_idx], vis[[0]], np.minimum(vis[[5]], vis[[6]])])
    return j14, v14


def _crowd_index(boxes: list[np.ndarray], joints: list[np.ndarray], vis: list[np.ndarray]) -> float:
    """CrowdPose-style crowd index: per person, joints of others inside its box / its own joints; mean."""
    ratios = []
    for i, box in enumerate(boxes):
        x0, y0, bw, bh = box
        own = int((vis[i] > 0).sum())
        if own == 0:
            continue
        others = 0
        for k in range(len(boxes)):
            if k == i:
                continue
            inside = (
                (joints[k][:, 0] >= x0)
                & (joints[k][:, 0] <= x0 + bw)
                & (joints[k][:, 1] >= y0)
                & (joints[k][:, 1] <= y0 + bh)
                & (vis[k] > 0)
            )
            others += int(inside.sum())
        ratios.append(others / own)
    return round(float(np.mean(ratios)) if ratios else 0.0, 2)


def _mask_polygon(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
    return [p for p in polys if len(p) >= 6]


# With ``max_overlap`` < 1 a figure is placed up to this many times, keeping the first placement within the bound
# (else the least overlapping one).
PLACEMENT_TRIES = 20


def _figure_box(fig: _Figure) -> np.ndarray:
    """(x0, y0, x1, y1) of the figure's joints and head top."""
    pts = np.concatenate([fig.joints, fig.head_top[None]])
    return np.concatenate([pts.min(axis=0), pts.max(axis=0)])


def _box_overlap(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection of two boxes over the smaller one's area: 1 when one lies inside the other."""
    iw = min(a[2], b[2]) - max(a[0], b[0])
    ih = min(a[3], b[3]) - max(a[1], b[1])
    if iw <= 0 or ih <= 0:
        return 0.0
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return float(iw * ih / max(smaller, 1e-9))


def _make_image(
    rng: np.random.Generator,
    w: int,
    h: int,
    dataset: DatasetName,
    min_people: int,
    max_people: int,
    image_id: int,
    min_keypoint_area: float = 0.0,
    max_overlap: float = 1.0,
) -> tuple[np.ndarray, list[dict[str, Any]], float]:
    canvas = _background(rng, w, h)
    annotations: list[dict[str, Any]] = []
    count = int(rng.integers(min_people, max_people + 1))
    figures: list[_Figure] = []
    for _ in range(count):
        small = rng.random() < 0.2
        height = h * (rng.uniform(0.16, 0.28) if small else rng.uniform(0.3, 0.85))
        best: tuple[float, _Figure] | None = None
        for _ in range(1 if max_overlap >= 1.0 else PLACEMENT_TRIES):  # the size stays: only the place is redrawn
            cx = rng.uniform(-0.05, 1.05) * w
            cy = rng.uniform(0.25, 0.85) * h
            fig = _pose_figure(rng, cx, cy, height)
            overlap = max((_box_overlap(_figure_box(fig), _figure_box(f)) for f in figures), default=0.0)
            if best is None or overlap < best[0]:
                best = (overlap, fig)
            if overlap <= max_overlap:
                break
        assert best is not None
        figures.append(best[1])
    masks = []
    for fig in figures:  # draw in order: later figures occlude earlier ones
        m = np.zeros((h, w), np.uint8)
        _draw_figure(canvas, m, fig)
        masks.append(m)
    for i, fig in enumerate(figures):
        occluder = np.zeros((h, w), np.uint8)
        for m in masks[i + 1 :]:
            occluder |= m
        visible_mask = masks[i] & (1 - occluder)
        xi = np.clip(np.round(fig.joints[:, 0]).astype(int), 0, w - 1)
        yi = np.clip(np.round(fig.joints[:, 1]).astype(int), 0, h - 1)
        inside = (fig.joints[:, 0] >= 0) & (fig.joints[:, 0] < w) & (fig.joints[:, 1] >= 0) & (fig.joints[:, 1] < h)
        vis = np.zeros(17, np.int64)
        for k in np.flatnonzero(inside):
            vis[k] = 1 if occluder[yi[k], xi[k]] else 2
        if visible_mask.sum() < 0.25 * max(1, masks[i].sum()):  # mostly hidden: unlabelled, not a person
            vis[:] = 0
        joints, v = fig.joints, vis
        if dataset == "crowdpose":
            joints, v = _to_crowdpose(fig.joints, vis, fig)
            inside_cp = (joints[:, 0] >= 0) & (joints[:, 0] < w) & (joints[:, 1] >= 0) & (joints[:, 1] < h)
            v = np.where(inside_cp, v, 0)
        kps = np.zeros((len(joints), 3))
        kps[:, :2] = np.where(v[:, None] > 0, np.round(joints, 2), 0)
        kps[:, 2] = v
        ys, xs = np.nonzero(visible_mask)
        if len(xs) == 0:
            continue
        box = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
        ann: dict[str, Any] = {
            "image_id": image_id,
            "category_id": 1,
            "iscrowd": 0,
            "num_keypoints": int((v > 0).sum()),
            "keypoints": [float(x) if i % 3 != 2 else int(x) for i, x in enumerate(kps.reshape(-1))],
            "bbox": box,
        }
        if dataset == "coco":
            ann["segmentation"] = _mask_polygon(visible_mask)
            ann["area"] = float(visible_mask.sum())
            if ann["area"] < min_keypoint_area:  # too small to label, as in COCO: an ignore region
                ann["num_keypoints"], ann["keypoints"] = 0, [0] * len(ann["keypoints"])
        annotations.append(ann)

    if dataset == "coco" and rng.random() < 0.25:  # a crowd region of tiny figures, annotated once
        crowd = np.zeros((h, w), np.uint8)
        x0, y0 = rng.uniform(0.05, 0.6) * w, rng.uniform(0.05, 0.5) * h
        for _ in range(int(rng.integers(5, 10))):
            fig = _pose_figure(rng, x0 + rng.uniform(0, 0.3) * w, y0 + rng.uniform(0, 0.2) * h, h * 0.09)
            _draw_figure(canvas, crowd, fig)
        if crowd.any():
            from pycocotools import mask as mask_utils

            rle = mask_utils.encode(np.asfortranarray(crowd))
            ys, xs = np.nonzero(crowd)
            annotations.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 1,
                    "num_keypoints": 0,
                    "keypoints": [0] * 51,
                    "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)],
                    "segmentation": {"size": [h, w], "counts": rle["counts"].decode("ascii")},
                    "area": float(crowd.sum()),
                }
            )
    if dataset == "coco" and rng.random() < 0.25:  # a tiny unlabelled person (num_keypoints 0, polygon)
        tiny = np.zeros((h, w), np.uint8)
        where = (rng.uniform(0.1, 0.9) * w, rng.uniform(0.2, 0.8) * h)
        _draw_figure(canvas, tiny, _pose_figure(rng, where[0], where[1], h * 0.08))
        poly = _mask_polygon(tiny)
        if poly:
            ys, xs = np.nonzero(tiny)
            annotations.append(
                {
                    "image_id": image_id,
                    "category_id": 1,
                    "iscrowd": 0,
                    "num_keypoints": 0,
                    "keypoints": [0] * 51,
                    "bbox": [float(xs.min()), float(ys.min()), float(np.ptp(xs) + 1), float(np.ptp(ys) + 1)],
                    "segmentation": poly,
                    "area": float(tiny.sum()),
                }
            )
    crowd_index = 0.0
    if dataset == "crowdpose":
        people = [a for a in annotations if a["iscrowd"] == 0]
        kp = [np.array(a["keypoints"], float).reshape(-1, 3) for a in people]
        crowd_index = _crowd_index([np.array(a["bbox"]) for a in people], [k[:, :2] for k in kp], [k[:, 2] for k in kp])
    return canvas, annotations, crowd_index


def categories(dataset: DatasetName) -> list[dict[str, Any]]:
    facts = dataset_facts(dataset)
    return [
        {
            "supercategory": "person",
            "id": 1,
            "name": "person",
            "keypoints": list(facts.keypoints),
            "skeleton": facts.coco_skeleton(),
        }
    ]


# COCO labels no keypoints on people whose area is under its "small" bound, 32^2 px; ``hhrnet synth`` and the
# demo do the same (an ignore region for training, ignored by the evaluation).
COCO_MIN_KEYPOINT_AREA = 32.0**2


def synthesize(
    root: str | Path,
    *,
    num_train: int = 400,
    num_val: int = 100,
    image_size: int | tuple[int, int] = 256,
    dataset: DatasetName = "coco",
    seed: int = 0,
    min_people: int = 1,
    max_people: int = 6,
    force: bool = False,
    quality: int = 95,
    min_keypoint_area: float = 0.0,
    max_overlap: float = 1.0,
) -> SynthSummary:
    """Write the dataset under ``root``; deterministic for a given seed. Returns counts and paths.

    ``min_keypoint_area``: people whose visible area (px) is below it get no keypoints (``num_keypoints`` 0,
    their polygon kept), as COCO leaves people under 32^2 px unlabelled: an ignore region for training, and
    ignored by the evaluation. 0 labels everyone.

    ``max_overlap`` < 1: each figure is placed again (up to :data:`PLACEMENT_TRIES` times) while its box (joints
    and head top) overlaps an earlier figure's box by more than this fraction of the smaller box, and the least
    overlapping placement is kept when none is within the bound: overlaps stay, total overlaps become rare.
    1 (the default) places every figure where it first falls."""
    root = Path(root)
    w, h = (image_size, image_size) if isinstance(image_size, int) else image_size
    try:
        dataset_facts(dataset)
    except ConfigError as exc:
        raise InputError(str(exc)) from None
    if root.exists() and any(root.iterdir()) and not force:
        raise InputError(f"{root} is not empty; use --force to overwrite it")
    images: dict[str, int] = {}
    people: dict[str, int] = {}
    files: dict[str, Path] = {}
    next_ann = 1
    for split, count, offset in (("train", num_train, 1), ("val", num_val, 1_000_001)):
        rng = np.random.default_rng([seed, 0 if split == "train" else 1])
        img_dir = root / "images" / split
        img_dir.mkdir(parents=True, exist_ok=True)
        entries, anns = [], []
        for i in range(count):
            image_id = offset + i
            canvas, image_anns, crowd_index = _make_image(
                rng, w, h, dataset, min_people, max_people, image_id, min_keypoint_area, max_overlap
            )
            name = f"{image_id:012d}.jpg"
            atomic_write_bytes(img_dir / name, encode_jpeg(canvas, quality))
            entry: dict[str, Any] = {"id": image_id, "file_name": name, "width": w, "height": h}
            if dataset == "crowdpose":
                entry["crowdIndex"] = crowd_index
            entries.append(entry)
            for ann in image_anns:
                ann["id"] = next_ann
                next_ann += 1
                anns.append(ann)
        doc = {
            "info": {
                "description": f"hhrnet synthetic {dataset} keypoints",
                "seed": seed,
                "num_train": num_train,
                "num_val": num_val,
                "image_size": [w, h],
                "max_people": max_people,
                "min_keypoint_area": min_keypoint_area,
                "max_overlap": max_overlap,
            },
            "images": entries,
            "annotations": anns,
            "categories": categories(dataset),
        }
        ann_path = root / "annotations" / f"person_keypoints_{split}.json"
        atomic_write_text(ann_path, json.dumps(doc))
        images[split] = count
        people[split] = sum(1 for a in anns if a["iscrowd"] == 0 and a["num_keypoints"] > 0)
        files[split] = ann_path
    return SynthSummary(root=root, images=images, people=people, annotation_files=files)
