"""Reference decoder: the official ``HeatmapParser.parse`` (adjust + refine) written plainly in NumPy.

It keeps the official structure and costs on purpose — persons in a dict keyed by their first tag value,
pure-Python Munkres, and a full-map refine of every joint of every person — so it doubles as the
literal port that the fast decoder is benchmarked against. Its output is the contract the fast Numba
and CUDA decoders reproduce bit for bit. Steps (SPEC §8):

1. NMS: keep pixels equal to their 5x5 window max (plateaus survive), zero the rest.
2. top-k: M peaks per joint in torch.topk's CPU order (:func:`hhrnet.kernels.peaks.topk_flat`).
3. match by tag, joint by joint in ``joint_order``: candidates with val > threshold become float64 rows
   [x, y, val, tag...]; the first joint with candidates seeds persons; later joints are assigned to the
   first M persons by Munkres on ``round(||tag - mean tag||) * 100 - val`` and accepted when the raw
   distance is below ``tag_threshold``; others start a person keyed by ``tag[0]`` (SPEC B1).
4. adjust: quarter-pixel step towards the larger neighbour (ties: -0.25, SPEC B3), then +0.5.
5. score: mean of the J values per person (0 for missing joints), before refine.
6. refine: for missing joints, global first-occurrence argmax of ``det - round(||tag - person tag||)``.

Shapes: det (J, H, W) f32, tags (J, H, W, T) f32 -> poses (P, J, 3+T) f32 [x, y, val, tags], scores (P,) f32.
"""

from __future__ import annotations

import numpy as np

from hhrnet.kernels.munkres import assign
from hhrnet.kernels.params import DecodeParams
from hhrnet.kernels.peaks import topk_flat


def nms(det: np.ndarray, pad: int) -> np.ndarray:
    """(J, H, W): max-pool with -inf padding; keep pixels equal to their window max."""
    padded = np.pad(det, ((0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    windows = np.lib.stride_tricks.sliding_window_view(padded, (2 * pad + 1, 2 * pad + 1), axis=(1, 2))
    maxm = windows.max(axis=(-2, -1))  # (J, H, W)
    return det * (maxm == det).astype(np.float32)


def top_k(det: np.ndarray, tags: np.ndarray, params: DecodeParams) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> tag_k (J, M, T) f32, loc_k (J, M, 2) int64 [x, y], val_k (J, M) f32."""
    j_count, h, w = det.shape
    kept = nms(det, params.nms_padding).reshape(j_count, -1)
    m = min(params.max_num_people, h * w)
    val_k = np.empty((j_count, m), np.float32)
    ind = np.empty((j_count, m), np.int64)
    for j in range(j_count):
        val_k[j], ind[j] = topk_flat(np.ascontiguousarray(kept[j]), m)
    flat_tags = tags.reshape(j_count, h * w, -1)
    tag_k = np.stack([np.take_along_axis(flat_tags[:, :, t], ind, 1) for t in range(flat_tags.shape[2])], axis=2)
    loc_k = np.stack((ind % w, ind // w), axis=2)
    return tag_k, loc_k, val_k


def _mean_rows(rows: list[np.ndarray]) -> np.ndarray:
    return np.mean(rows, axis=0)  # float32 rows: float32 sequential sum / n


def match_by_tag(tag_k: np.ndarray, loc_k: np.ndarray, val_k: np.ndarray, params: DecodeParams) -> np.ndarray:
    """-> persons (P, J, 3+T) f32 in creation order."""
    j_count = params.num_joints
    t_count = tag_k.shape[2]
    empty = np.zeros((j_count, 3 + t_count))
    persons: dict[object, np.ndarray] = {}
    person_tags: dict[object, list[np.ndarray]] = {}
    counter = 0

    def new_key(tag0: np.float32) -> object:
        nonlocal counter
        if params.unique_person_keys:
            counter += 1
            return ("person", counter)
        return tag0

    def place(key: object, idx: int, joint: np.ndarray, tag: np.ndarray) -> None:
        if key not in persons:
            if params.max_persons and len(persons) >= params.max_persons:
                return  # bounded person count (B2 option): candidates past the cap are dropped
            persons[key] = np.copy(empty)
        persons[key][idx] = joint
        person_tags[key] = [tag]

    for i in range(j_count):
        idx = params.joint_order[i]
        tags = tag_k[idx]
        joints = np.concatenate((loc_k[idx], val_k[idx, :, None], tags), 1)  # float64 rows
        keep = joints[:, 2] > params.detection_threshold
        tags, joints = tags[keep], joints[keep]
        if joints.shape[0] == 0:
            continue
        if i == 0 or not persons:
            for tag, joint in zip(tags, joints, strict=True):
                place(new_key(tag[0]), idx, joint, tag)
            continue
        keys = list(persons)[: params.max_num_people]
        if params.ignore_too_much and len(keys) == params.max_num_people:
            continue
        mean_tags = np.array([_mean_rows(person_tags[k]) for k in keys])  # (G, T) f32
        diff = np.linalg.norm(joints[:, None, 3:] - mean_tags[None, :, :], ord=2, axis=2)  # (R, G) f64
        raw = np.copy(diff)
        if params.use_detection_val:
            diff = np.round(diff) * 100 - joints[:, 2:3]
        added, grouped = diff.shape
        if added > grouped:
            diff = np.concatenate((diff, np.zeros((added, added - grouped)) + 1e10), axis=1)
        for row, col in assign(diff):
            if row < added and col < grouped and raw[row, col] < params.tag_threshold:
                key = keys[col]
                persons[key][idx] = joints[row]
                person_tags[key].append(tags[row])
            else:
                place(new_key(tags[row][0]), idx, joints[row], tags[row])
    if not persons:
        return np.zeros((0, j_count, 3 + t_count), np.float32)
    return np.array(list(persons.values())).astype(np.float32)


def _quarter(det: np.ndarray, y: int, x: int, ties_positive: bool) -> tuple[float, float]:
    """Quarter-pixel offsets (dx, dy) towards the larger neighbour; official ties go to -0.25."""
    h, w = det.shape
    right, left = det[y, min(x + 1, w - 1)], det[y, max(x - 1, 0)]
    down, up = det[min(y + 1, h - 1), x], det[max(y - 1, 0), x]
    dx = 0.25 if right > left else (0.0 if ties_positive and right == left else -0.25)
    dy = 0.25 if down > up else (0.0 if ties_positive and down == up else -0.25)
    return dx, dy


def adjust(persons: np.ndarray, det: np.ndarray, params: DecodeParams) -> np.ndarray:
    for person in persons:
        for j, joint in enumerate(person):
            if joint[2] > 0:
                x, y = joint[0], joint[1]  # float32
                dx, dy = _quarter(det[j], int(y), int(x), params.ties_positive)
                joint[0] = x + np.float32(dx) + np.float32(0.5)
                joint[1] = y + np.float32(dy) + np.float32(0.5)
    return persons


def refine(det: np.ndarray, tags: np.ndarray, person: np.ndarray, params: DecodeParams) -> np.ndarray:
    """Fill the person's missing joints at the best tag-consistent position (every joint is searched,
    as the official code does; only missing ones are written)."""
    found = []
    for j in range(person.shape[0]):
        if person[j, 2] > 0:
            x, y = person[j, :2].astype(np.int32)
            found.append(tags[j, y, x])
    prev_tag = np.mean(found, axis=0)  # (T,) f32
    best = []
    for j in range(person.shape[0]):
        score = det[j]
        dist = ((tags[j] - prev_tag[None, None, :]) ** 2).sum(axis=2) ** 0.5  # (H, W) f32
        y, x = np.unravel_index(np.argmax(score - np.round(dist)), score.shape)
        dx, dy = _quarter(score, int(y), int(x), params.ties_positive)
        best.append((x + 0.5 + dx, y + 0.5 + dy, score[y, x]))
    ans = np.array(best)
    for j in range(person.shape[0]):
        if ans[j, 2] > 0 and person[j, 2] == 0:
            person[j, :2] = ans[j, :2]
            person[j, 2] = ans[j, 2]
    return person


def person_scores(persons: np.ndarray) -> np.ndarray:
    return np.array([p[:, 2].mean() for p in persons], dtype=np.float32)


def decode_reference(det: np.ndarray, tags: np.ndarray, params: DecodeParams) -> tuple[np.ndarray, np.ndarray]:
    """Official parse of one image: det (J, H, W), tags (J, H, W, T) -> poses (P, J, 3+T), scores (P,)."""
    det = np.ascontiguousarray(det, dtype=np.float32)
    tags = np.ascontiguousarray(tags, dtype=np.float32)
    if tags.ndim == 3:
        tags = tags[..., None]
    if det.shape[0] != params.num_joints:
        params = params.with_joints(det.shape[0])
    persons = match_by_tag(*top_k(det, tags, params), params)
    if params.adjust:
        persons = adjust(persons, det, params)
    scores = person_scores(persons)
    if params.refine:
        for i in range(len(persons)):
            persons[i] = refine(det, tags, persons[i], params)
    return persons, scores
