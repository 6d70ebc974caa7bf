"""Reference decoder: the official ``HeatmapParser.parse(adjust=True, refine=True)`` in plain NumPy.

This is the readable statement of what every decoder here must return (the fast Numba and CUDA decoders
equal it bit for bit). Steps, as in the official lib/core/group.py (docs/official.md §8):

1. NMS: keep pixels equal to the max of their 5x5 window (plateaus survive), zero the rest.
2. top-k: M peaks per joint, in torch.topk's CPU order for equal values
   (:func:`hhrnet.kernels.peaks.topk_flat` reproduces the libstdc++ algorithms torch runs).
3. match by tag, joint type by joint type in ``joint_order``: candidates with val > threshold become float64
   rows [x, y, val, tag...]; the first joint type with candidates seeds persons; later ones are matched to
   the first M persons by munkres 1.1.4 on ``round(||tag - mean tag||) * 100 - val`` (1e10 padding) and
   accepted when the raw distance is below ``tag_threshold``; any other candidate starts a person keyed by
   its float32 ``tag[0]`` in a dict, so an equal key merges into the existing person (docs/official.md B1).
4. adjust: quarter pixel towards the larger neighbour (ties -0.25, docs/official.md B3), then +0.5.
5. score: float32 mean of the J values per person, before refine.
6. refine: each missing joint at the first-occurrence argmax of ``det - round(||tag - person tag||)``,
   written only where det > 0 (docs/official.md B4).

Options (off = official): ``max_persons`` (B2: persons past the cap are not created), ``unique_person_keys``
(B1: no key merging), ``ties_positive`` (B3: equal neighbours give no offset), ``pose_nms`` (OKS NMS of the
persons after refine, :mod:`hhrnet.kernels.posenms`).

Shapes: det (J, H, W) f32, tags (J, H, W, T) f32 -> poses (P, J, 3+T) f32 [x, y, val, tags], scores (P,) f32.
"""

from __future__ import annotations

import itertools

import numpy as np

from hhrnet.errors import InputError
from hhrnet.kernels.munkres import assign
from hhrnet.kernels.params import DecodeParams
from hhrnet.kernels.peaks import topk_flat
from hhrnet.kernels.posenms import suppress


def nms(det: np.ndarray, pad: int) -> np.ndarray:
    """(J, H, W) -> (J, H, W): det where det equals its window max (-inf padding), det * 0 elsewhere."""
    padded = np.pad(det, ((0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * pad + 1, 2 * pad + 1), axis=(1, 2))
    window_max = windows.max(axis=(-2, -1))  # (J, H, W)
    return det * (window_max == det).astype(np.float32)


def top_k(det: np.ndarray, tags: np.ndarray, params: DecodeParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> tag_k (J, M, T) f32, loc_k (J, M, 2) int64 [x, y], val_k (J, M) f32."""
    j_count, h, w = det.shape
    kept = nms(det, params.nms_padding).reshape(j_count, h * w)  # (J, H*W)
    m = min(params.max_num_people, h * w)
    picks = [topk_flat(np.ascontiguousarray(kept[j]), m) for j in range(j_count)]
    val_k = np.stack([v for v, _ in picks])  # (J, M)
    ind = np.stack([i for _, i in picks])  # (J, M)
    tag_k = np.take_along_axis(tags.reshape(j_count, h * w, -1), ind[:, :, None], axis=1)  # (J, M, T)
    loc_k = np.stack((ind % w, ind // w), axis=2)  # (J, M, 2)
    return tag_k, loc_k, val_k


def match_by_tag(tag_k: np.ndarray, loc_k: np.ndarray, val_k: np.ndarray, params: DecodeParams) -> np.ndarray:
    """-> persons (P, J, 3+T) f32, in creation (dict insertion) order."""
    j_count, _, t_count = tag_k.shape
    persons: dict[object, np.ndarray] = {}  # key -> (J, 3+T) float64
    person_tags: dict[object, list[np.ndarray]] = {}  # key -> float32 (T,) tags of its matched joints
    serial = itertools.count()

    def start_person(tag: np.ndarray, joint_type: int, row: np.ndarray) -> None:
        key: object = ("person", next(serial)) if params.unique_person_keys else tag[0]
        if key not in persons:
            if params.max_persons and len(persons) >= params.max_persons:
                return
            persons[key] = np.zeros((j_count, 3 + t_count))
        persons[key][joint_type] = row
        person_tags[key] = [tag]

    for step, joint_type in enumerate(params.joint_order):
        tags = tag_k[joint_type]  # (M, T) f32
        rows = np.concatenate((loc_k[joint_type], val_k[joint_type, :, None], tags), axis=1)  # (M, 3+T) f64
        keep = rows[:, 2] > params.detection_threshold
        tags, rows = tags[keep], rows[keep]
        if len(rows) == 0:
            continue
        if step == 0 or not persons:
            for tag, row in zip(tags, rows, strict=True):
                start_person(tag, joint_type, row)
            continue
        keys = list(persons)[: params.max_num_people]
        if params.ignore_too_much and len(keys) == params.max_num_people:
            continue
        mean_tags = np.array([np.mean(person_tags[k], axis=0) for k in keys])  # (G, T) f32
        dist = np.linalg.norm(rows[:, None, 3:] - mean_tags[None, :, :], ord=2, axis=2)  # (R, G) f64
        cost = np.round(dist) * 100 - rows[:, 2:3] if params.use_detection_val else np.copy(dist)
        n_rows, n_persons = dist.shape
        if n_rows > n_persons:
            cost = np.concatenate((cost, np.full((n_rows, n_rows - n_persons), 1e10)), axis=1)
        for r, g in assign(cost):
            if g < n_persons and dist[r, g] < params.tag_threshold:
                persons[keys[g]][joint_type] = rows[r]
                person_tags[keys[g]].append(tags[r])
            else:
                start_person(tags[r], joint_type, rows[r])
    if not persons:
        return np.zeros((0, j_count, 3 + t_count), np.float32)
    return np.array(list(persons.values())).astype(np.float32)


def _offset(ahead: np.float32, behind: np.float32, ties_positive: bool) -> float:
    if ahead > behind:
        return 0.25
    return 0.0 if ties_positive and ahead == behind else -0.25


def _quarter_step(det_j: np.ndarray, y: int, x: int, ties_positive: bool) -> tuple[float, float]:
    """(dx, dy): a quarter pixel towards the larger horizontal / vertical neighbour."""
    h, w = det_j.shape
    dx = _offset(det_j[y, min(x + 1, w - 1)], det_j[y, max(x - 1, 0)], ties_positive)
    dy = _offset(det_j[min(y + 1, h - 1), x], det_j[max(y - 1, 0), x], ties_positive)
    return dx, dy


def adjust(persons: np.ndarray, det: np.ndarray, params: DecodeParams) -> None:
    """In place on persons (P, J, 3+T) f32."""
    for person in persons:
        for j, joint in enumerate(person):
            if joint[2] > 0:
                x, y = joint[0], joint[1]  # float32 integers
                dx, dy = _quarter_step(det[j], int(y), int(x), params.ties_positive)
                joint[0] = x + np.float32(dx) + np.float32(0.5)
                joint[1] = y + np.float32(dy) + np.float32(0.5)


def refine(det: np.ndarray, tags: np.ndarray, person: np.ndarray, params: DecodeParams) -> None:
    """In place on person (J, 3+T) f32: fill missing joints at the best tag-consistent position."""
    detected = [tags[j, int(y), int(x)] for j, (x, y) in enumerate(person[:, :2].astype(np.int32)) if person[j, 2] > 0]
    # (T,) f32; a person without detected joints (only possible with a negative threshold) gets NaN
    person_tag = np.mean(detected, axis=0) if detected else np.full(tags.shape[3], np.nan, np.float32)
    for j in np.flatnonzero(person[:, 2] == 0):
        dist = (((tags[j] - person_tag[None, None, :]) ** 2).sum(axis=2)) ** 0.5  # (H, W) f32
        y, x = np.unravel_index(np.argmax(det[j] - np.round(dist)), dist.shape)
        if det[j, y, x] > 0:
            dx, dy = _quarter_step(det[j], int(y), int(x), params.ties_positive)
            person[j, :3] = (x + 0.5 + dx, y + 0.5 + dy, det[j, y, x])


def decode_reference(det: np.ndarray, tags: np.ndarray, params: DecodeParams) -> tuple[np.ndarray, np.ndarray]:
    """Official parse of one image: det (J, H, W), tags (J, H, W, T) -> poses (P, J, 3+T), scores (P,)."""
    det = np.ascontiguousarray(det, dtype=np.float32)
    tags = np.ascontiguousarray(tags, dtype=np.float32)
    if tags.ndim == 3:
        tags = tags[..., None]
    for name, a in (("det", det), ("tags", tags)):  # NaN would make munkres loop forever, as officially
        if not np.isfinite(a).all():
            bad = np.argwhere(~np.isfinite(a))[0]
            raise InputError(
                f"{name} has {int((~np.isfinite(a)).sum())} non-finite values (NaN or infinite); the "
                f"first is {a[tuple(bad)]} at index {tuple(int(i) for i in bad)}"
            )
    params = params.with_joints(det.shape[0])
    persons = match_by_tag(*top_k(det, tags, params), params)
    if params.adjust:
        adjust(persons, det, params)
    scores = np.array([person[:, 2].mean() for person in persons], dtype=np.float32)
    if params.refine:
        for person in persons:
            refine(det, tags, person, params)
    return suppress(persons, scores, params.pose_nms)  # opt-in, after refine; 0 = official (no-op)
