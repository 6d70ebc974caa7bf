"""Realistic decode scenes: heatmaps and tags as a trained network would give them, with ground truth.

Every scene is deterministic for its seed. Kinds (the name every speed claim carries):

* ``planted``: every person has all J joints, full-strength Gaussians, one clean tag per person, zero
  background (the idealised maps of docs/official.md §10; :func:`planted` keeps the historic generator).
* ``coco``: the real poses of one COCO val2017 sample image (``hhrnet.samples``, ``test_coco.json``) scaled
  into the map, with their annotated visibility (v=1 occluded joints are weak, v=0 absent), background noise
  and tag jitter.
* ``crowd``: N people built from the real sample poses (random scale, position, mirror), COCO-like joint
  visibility (:data:`LABELLED`, :data:`OCCLUDED`), truncation at the border, weak false-positive blobs,
  background noise and tag jitter.
* ``noise``: what a network gives on an image it cannot read: smooth noise with many local maxima above the
  detection threshold and tags without structure (the official decoder finds ~100-200 "persons").

Maps: det (J, H, W) f32, tags (J, H, W, T) f32 (T = 2: the flip test's second tag map, close to the first),
``keypoints`` (P, J, 3) ground truth in map pixels (v = 0 absent, 1 occluded, 2 visible).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from hhrnet import samples

COCO_FLIP = (0, 2, 1, 4, 3, 6, 5, 8, 7, 10, 9, 12, 11, 14, 13, 16, 15)
# Approximate share of COCO person instances with the joint labelled, per joint (nose, eyes, ears,
# shoulders, elbows, wrists, hips, knees, ankles): the face and the legs are missing most often.
LABELLED = np.array(
    [0.70, 0.62, 0.62, 0.50, 0.50, 0.80, 0.80, 0.66, 0.66, 0.58, 0.58, 0.70, 0.70, 0.55, 0.55, 0.45, 0.45]
)
OCCLUDED = 0.25  # share of labelled joints that are occluded (v = 1): a weak, often sub-threshold peak
KINDS = ("planted", "coco", "crowd", "noise")


@dataclass(frozen=True)
class Scene:
    """One decode input with its ground truth."""

    kind: str  # planted | coco | crowd | noise
    name: str  # e.g. crowd-20, coco-197388
    det: np.ndarray  # (J, H, W) f32
    tags: np.ndarray  # (J, H, W, T) f32
    keypoints: np.ndarray  # (P, J, 3) f32 ground truth in map pixels [x, y, v]

    @property
    def people(self) -> int:
        """Ground-truth people with at least one joint in the map."""
        return int((self.keypoints[..., 2] > 0).any(axis=1).sum())


@lru_cache(maxsize=1)
def sample_poses() -> tuple[tuple[int, int, int, np.ndarray], ...]:
    """The COCO sample annotations: (image_id, width, height, keypoints (P, 17, 3)) per image, people with
    at least one labelled joint only."""
    data = json.loads((samples.folder("coco") / "test_coco.json").read_text())
    out = []
    for img in sorted(data["images"], key=lambda i: i["id"]):
        kps = [
            np.asarray(a["keypoints"], np.float32).reshape(17, 3)
            for a in data["annotations"]
            if a["image_id"] == img["id"] and a["num_keypoints"] > 0
        ]
        out.append((int(img["id"]), int(img["width"]), int(img["height"]), np.stack(kps)))
    return tuple(out)


def _templates() -> list[np.ndarray]:
    """Every sample pose normalised to its labelled joints' box: (17, 3) [u, v, visibility], height 1."""
    out = []
    for _, _, _, kps in sample_poses():
        for kp in kps:
            vis = kp[:, 2] > 0
            if vis.sum() < 8:
                continue
            xy = kp[:, :2]
            lo, hi = xy[vis].min(axis=0), xy[vis].max(axis=0)
            height = max(float(hi[1] - lo[1]), 1.0)
            t = kp.copy()
            t[:, 0] = (xy[:, 0] - (lo[0] + hi[0]) / 2) / height
            t[:, 1] = (xy[:, 1] - (lo[1] + hi[1]) / 2) / height
            out.append(t)
    return out


def smooth_field(rng: np.random.Generator, h: int, w: int, cell: int) -> np.ndarray:
    """(H, W) f32 smooth noise, about N(0, 1): a coarse random grid, bilinearly upsampled."""
    gh, gw = h // cell + 2, w // cell + 2
    grid = rng.normal(0.0, 1.0, (gh, gw))
    ys = np.arange(h) / cell
    xs = np.arange(w) / cell
    y0 = ys.astype(np.int64)
    x0 = xs.astype(np.int64)
    fy = (ys - y0)[:, None]
    fx = (xs - x0)[None, :]
    a = grid[y0][:, x0]
    b = grid[y0][:, x0 + 1]
    c = grid[y0 + 1][:, x0]
    d = grid[y0 + 1][:, x0 + 1]
    top = a * (1 - fx) + b * fx
    bottom = c * (1 - fx) + d * fx
    return (top * (1 - fy) + bottom * fy).astype(np.float32)


class _Canvas:
    """Draws joints (Gaussian peaks with their tags) over a noisy background."""

    def __init__(
        self, rng: np.random.Generator, j: int, h: int, w: int, t: int, tag_range: float, bg_std: float = 0.012
    ) -> None:
        self.rng = rng
        self.det = np.empty((j, h, w), np.float32)
        self.tags = np.empty((j, h, w, t), np.float32)
        self.owner = np.zeros((j, h, w), np.float32)  # the strongest Gaussian drawn at each pixel
        for k in range(j):  # network outputs are upsampled: det from 1/2, tags from 1/4 of the input size
            self.det[k] = (smooth_field(rng, h, w, 24) + smooth_field(rng, h, w, 2) * np.float32(0.5)) * bg_std
            base = smooth_field(rng, h, w, 48) * np.float32(tag_range / 2) + smooth_field(rng, h, w, 4) * 0.3
            for d in range(t):
                self.tags[k, :, :, d] = base + smooth_field(rng, h, w, 4) * np.float32(0.05)

    def joint(self, k: int, x: float, y: float, amp: float, sigma: float, tag: np.ndarray) -> None:
        _, h, w = self.det.shape
        r = int(3 * sigma) + 1
        y0, y1 = max(int(y) - r, 0), min(int(y) + r + 1, h)
        x0, x1 = max(int(x) - r, 0), min(int(x) + r + 1, w)
        if y0 >= y1 or x0 >= x1:
            return
        yy, xx = np.mgrid[y0:y1, x0:x1]
        g = (amp * np.exp(-((yy - y) ** 2 + (xx - x) ** 2) / (2 * sigma**2))).astype(np.float32)
        own = self.owner[k, y0:y1, x0:x1]
        win = g > own
        self.det[k, y0:y1, x0:x1] = np.maximum(self.det[k, y0:y1, x0:x1], g)
        own[win] = g[win]
        patch = self.tags[k, y0:y1, x0:x1]
        jitter = self.rng.normal(0, 0.03, patch.shape).astype(np.float32)
        patch[win] = tag[None, :] + jitter[win]


def _person_tags(rng: np.random.Generator, n: int, t: int) -> np.ndarray:
    """(n, T) tags: one value per person, about 1 apart (some closer: grouping errors happen), the flip
    copy within 0.1."""
    base = np.sort(rng.uniform(-0.5, 0.5, n) * max(n, 2)) + rng.normal(0, 0.1, n)
    tags = np.repeat(base[:, None], t, axis=1) + rng.normal(0, 0.05, (n, t))
    return tags.astype(np.float32)


def _draw_people(canvas: _Canvas, kps: np.ndarray, sigmas: np.ndarray, t: int) -> None:
    """kps (P, J, 3) [x, y, v] in map pixels; visible joints strong, occluded ones weak; tag jitter per joint."""
    rng = canvas.rng
    person_tags = _person_tags(rng, len(kps), t)
    for p, kp in enumerate(kps):
        for k in range(kp.shape[0]):
            v = kp[k, 2]
            if v <= 0:
                continue
            amp = rng.uniform(0.55, 1.0) if v >= 2 else rng.uniform(0.04, 0.45)
            tag = person_tags[p] + rng.normal(0, 0.15, t).astype(np.float32)
            canvas.joint(k, float(kp[k, 0]), float(kp[k, 1]), amp, float(sigmas[p]), tag)


def _false_positives(canvas: _Canvas, count: int, tag_range: float) -> None:
    j, h, w = canvas.det.shape
    rng = canvas.rng
    for _ in range(count):
        tag = np.full(canvas.tags.shape[3], rng.uniform(-tag_range, tag_range), np.float32)
        canvas.joint(
            int(rng.integers(j)),
            rng.uniform(0, w),
            rng.uniform(0, h),
            rng.uniform(0.03, 0.3),
            rng.uniform(2.0, 4.0),
            tag,
        )


def _in_map(kps: np.ndarray, h: int, w: int) -> np.ndarray:
    inside = (kps[..., 0] >= 0) & (kps[..., 0] < w) & (kps[..., 1] >= 0) & (kps[..., 1] < h)
    out = kps.copy()
    out[..., 2] = np.where(inside, out[..., 2], 0)
    return out


def coco(image_id: int | None = None, shape: tuple[int, int, int] = (17, 512, 704), t: int = 2, seed: int = 0) -> Scene:
    """The real poses of one sample image (default: the 5-person 197388), scaled to fit the map."""
    j, h, w = shape
    picked = [s for s in sample_poses() if image_id is None or s[0] == image_id]
    if not picked:
        raise ValueError(f"no sample image {image_id}; have {[s[0] for s in sample_poses()]}")
    img_id, iw, ih, kps = picked[-1] if image_id is None else picked[0]
    rng = np.random.default_rng(seed)
    scale = min(w / iw, h / ih)
    kps = kps.copy()
    kps[..., :2] = kps[..., :2] * scale + np.array([(w - iw * scale) / 2, (h - ih * scale) / 2], np.float32)
    kps = _in_map(kps[:, :j], h, w)
    heights = np.array([np.ptp(k[k[:, 2] > 0, 1]) for k in kps])
    canvas = _Canvas(rng, j, h, w, t, tag_range=max(2.0, len(kps) / 2))
    _draw_people(canvas, kps, np.clip(1.5 + heights / 100, 2.0, 5.0), t)
    _false_positives(canvas, j, max(2.0, len(kps) / 2))
    return Scene("coco", f"coco-{img_id}", canvas.det, canvas.tags, kps)


def crowd(people: int, shape: tuple[int, int, int] = (17, 512, 704), t: int = 2, seed: int = 0) -> Scene:
    """``people`` real sample poses at random places and sizes, COCO-like visibility, truncation, noise."""
    j, h, w = shape
    rng = np.random.default_rng(seed + 1000 * people)
    templates = _templates()
    kps = np.zeros((people, 17, 3), np.float32)
    heights = np.empty(people)
    for p in range(people):
        tpl = templates[int(rng.integers(len(templates)))].copy()
        if rng.random() < 0.5:  # mirror: x flips, left and right joints swap
            tpl[:, 0] = -tpl[:, 0]
            tpl = tpl[list(COCO_FLIP)]
        height = h * rng.uniform(0.25, 0.8) / (1 + people / 12)
        heights[p] = height
        cx, cy = rng.uniform(-0.05, 1.05) * w, rng.uniform(0.05, 0.95) * h  # some cross the border
        kps[p, :, 0] = cx + tpl[:, 0] * height
        kps[p, :, 1] = cy + tpl[:, 1] * height
        labelled = (tpl[:, 2] > 0) & (rng.random(17) < LABELLED)
        kps[p, :, 2] = np.where(labelled, np.where(rng.random(17) < OCCLUDED, 1, 2), 0)
    kps = _in_map(kps[:, :j], h, w)
    tag_range = max(2.0, people / 2)
    canvas = _Canvas(rng, j, h, w, t, tag_range)
    _draw_people(canvas, kps, np.clip(1.5 + heights / 100, 2.0, 5.0), t)
    _false_positives(canvas, j, tag_range)
    return Scene("crowd", f"crowd-{people}", canvas.det, canvas.tags, kps)


def noise(shape: tuple[int, int, int] = (17, 512, 704), t: int = 2, seed: int = 0, level: float = 0.12) -> Scene:
    """A network's output on an image it cannot read: smooth det noise around ``level`` (many local maxima
    above the threshold) and unstructured tags; no ground truth."""
    j, h, w = shape
    rng = np.random.default_rng(seed + 7)
    det = np.empty(shape, np.float32)
    tags = np.empty((*shape, t), np.float32)
    for k in range(j):
        det[k] = level * (0.6 + smooth_field(rng, h, w, 12) * 0.5) + smooth_field(rng, h, w, 2) * 0.01
        field = smooth_field(rng, h, w, 16) * np.float32(3.0) + smooth_field(rng, h, w, 4) * np.float32(0.5)
        for d in range(t):
            tags[k, :, :, d] = field + smooth_field(rng, h, w, 4) * np.float32(0.1)
    return Scene("noise", f"noise-{level:g}", det, tags, np.zeros((0, j, 3), np.float32))


def planted(people: int, shape: tuple[int, int, int] = (17, 512, 704), t: int = 2, seed: int = 0) -> Scene:
    """The idealised maps: all J joints of every person at full strength, zero background (docs/official.md §10)."""
    det, tags, kps = planted_maps(shape, people, t, seed)
    return Scene("planted", f"planted-{people}", det, tags, kps)


def planted_maps(
    shape: tuple[int, int, int], people: int, t: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gaussian peaks (sigma 2 at 128/256, 4 at 512) with a distinct tag per person, spaced 2.0 (docs/official.md §10).
    Returns det, tags and the planted keypoints (P, J, 3)."""
    j, h, w = shape
    sigma = 4.0 if h >= 512 else 2.0
    rng = np.random.default_rng(seed)
    det = np.zeros(shape, np.float32)
    tags = np.zeros((j, h, w, t), np.float32)
    kps = np.zeros((people, j, 3), np.float32)
    r = int(3 * sigma) + 1
    oy, ox = np.mgrid[-r : r + 1, -r : r + 1]
    g = np.exp(-(oy**2 + ox**2) / (2 * sigma**2)).astype(np.float32)
    for p in range(people):
        cy, cx = rng.uniform(0.1, 0.9) * h, rng.uniform(0.1, 0.9) * w
        for k in range(j):
            y = int(np.clip(cy + rng.normal(0, h / 12), r, h - r - 1))
            x = int(np.clip(cx + rng.normal(0, w / 12), r, w - r - 1))
            patch = det[k, y - r : y + r + 1, x - r : x + r + 1]
            np.maximum(patch, g * rng.uniform(0.6, 1.0), out=patch)
            tags[k, y - r : y + r + 1, x - r : x + r + 1] = 2.0 * p + rng.normal(0, 0.05, t)
            kps[p, k] = (x, y, 2)
    return det, tags, kps


def scene(kind: str, people: int = 0, shape: tuple[int, int, int] = (17, 512, 704), t: int = 2, seed: int = 0) -> Scene:
    """One scene by kind: ``people`` is the crowd / planted size, the sample image id for ``coco`` (0 = the
    default image) and ignored for ``noise``."""
    if kind == "planted":
        return planted(people, shape, t, seed)
    if kind == "crowd":
        return crowd(people, shape, t, seed)
    if kind == "coco":
        return coco(people or None, shape, t, seed)
    if kind == "noise":
        return noise(shape, t, seed)
    raise ValueError(f"unknown scene kind {kind!r}; expected one of {KINDS}")
