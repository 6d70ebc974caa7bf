"""A literal NumPy port of the official ``HeatmapParser.parse`` (lib/core/group.py), for tests and benchmarks.

It keeps the official algorithm's structure and therefore its costs (docs/official.md S1-S4): a dict of persons keyed
by float tags, pure-Python Munkres (the ``munkres`` package when installed, as the official code, else
:func:`hhrnet.kernels.munkres.assign`), a Python loop for adjust, and a refine that searches every joint of
every person over the full map and discards the detected ones. Only torch is gone: the max-pool NMS is a
NumPy sliding-window max and ``torch.topk`` is replaced by :func:`hhrnet.kernels.peaks.topk_flat`, which
reproduces its CPU order. The fast decoder is benchmarked against this port, and must equal it.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hhrnet.kernels.params import DecodeParams
from hhrnet.kernels.peaks import topk_flat


def _solver() -> Callable[[np.ndarray], np.ndarray]:
    try:
        from munkres import Munkres
    except ImportError:
        from hhrnet.kernels.munkres import assign

        return assign

    def solve(cost: np.ndarray) -> np.ndarray:
        return np.array(Munkres().compute(cost)).astype(np.int32)

    return solve


def top_k(det: np.ndarray, tag: np.ndarray, params: DecodeParams) -> dict[str, np.ndarray]:
    """det (B, J, H, W), tag (B, J, H, W, T) -> tag_k (B, J, M, T), loc_k (B, J, M, 2), val_k (B, J, M)."""
    pad = params.nms_padding
    padded = np.pad(det, ((0, 0), (0, 0), (pad, pad), (pad, pad)), constant_values=-np.inf)
    window = np.lib.stride_tricks.sliding_window_view(padded, (2 * pad + 1, 2 * pad + 1), axis=(2, 3))
    maxm = (window.max(axis=(-2, -1)) == det).astype(np.float32)
    det = det * maxm
    b, j, h, w = det.shape
    flat = det.reshape(b, j, -1)
    m = min(params.max_num_people, h * w)
    val_k = np.empty((b, j, m), np.float32)
    ind = np.empty((b, j, m), np.int64)
    for i in range(b):
        for k in range(j):
            val_k[i, k], ind[i, k] = topk_flat(np.ascontiguousarray(flat[i, k]), m)
    tag = tag.reshape(b, j, w * h, -1)
    tag_k = np.stack([np.take_along_axis(tag[:, :, :, i], ind, 2) for i in range(tag.shape[3])], axis=3)
    x = ind % w
    y = (ind / w).astype(np.int64)
    return {"tag_k": tag_k, "loc_k": np.stack((x, y), axis=3), "val_k": val_k}


def match_by_tag(inp: tuple[np.ndarray, np.ndarray, np.ndarray], params: DecodeParams) -> np.ndarray:
    tag_k, loc_k, val_k = inp
    solve = _solver()
    default_ = np.zeros((params.num_joints, 3 + tag_k.shape[2]))
    joint_dict: dict[np.float32, np.ndarray] = {}
    tag_dict: dict[np.float32, list[np.ndarray]] = {}
    for i in range(params.num_joints):
        idx = params.joint_order[i]
        tags = tag_k[idx]
        joints = np.concatenate((loc_k[idx], val_k[idx, :, None], tags), 1)
        mask = joints[:, 2] > params.detection_threshold
        tags = tags[mask]
        joints = joints[mask]
        if joints.shape[0] == 0:
            continue
        if i == 0 or len(joint_dict) == 0:
            for tag, joint in zip(tags, joints, strict=True):
                key = tag[0]
                joint_dict.setdefault(key, np.copy(default_))[idx] = joint
                tag_dict[key] = [tag]
            continue
        grouped_keys = list(joint_dict.keys())[: params.max_num_people]
        grouped_tags = [np.mean(tag_dict[k], axis=0) for k in grouped_keys]
        if params.ignore_too_much and len(grouped_keys) == params.max_num_people:
            continue
        diff = joints[:, None, 3:] - np.array(grouped_tags)[None, :, :]
        diff_normed = np.linalg.norm(diff, ord=2, axis=2)
        diff_saved = np.copy(diff_normed)
        if params.use_detection_val:
            diff_normed = np.round(diff_normed) * 100 - joints[:, 2:3]
        num_added, num_grouped = diff.shape[0], diff.shape[1]
        if num_added > num_grouped:
            diff_normed = np.concatenate((diff_normed, np.zeros((num_added, num_added - num_grouped)) + 1e10), axis=1)
        for row, col in solve(diff_normed):
            if row < num_added and col < num_grouped and diff_saved[row][col] < params.tag_threshold:
                key = grouped_keys[col]
                joint_dict[key][idx] = joints[row]
                tag_dict[key].append(tags[row])
            else:
                key = tags[row][0]
                joint_dict.setdefault(key, np.copy(default_))[idx] = joints[row]
                tag_dict[key] = [tags[row]]
    return np.array([joint_dict[k] for k in joint_dict]).astype(np.float32)


def adjust(ans: list[np.ndarray], det: np.ndarray) -> list[np.ndarray]:
    for batch_id, people in enumerate(ans):
        for people_id, person in enumerate(people):
            for joint_id, joint in enumerate(person):
                if joint[2] > 0:
                    y, x = joint[0:2]  # the official names are swapped; the arithmetic is right
                    xx, yy = int(x), int(y)
                    tmp = det[batch_id][joint_id]
                    if tmp[xx, min(yy + 1, tmp.shape[1] - 1)] > tmp[xx, max(yy - 1, 0)]:
                        y += 0.25
                    else:
                        y -= 0.25
                    if tmp[min(xx + 1, tmp.shape[0] - 1), yy] > tmp[max(0, xx - 1), yy]:
                        x += 0.25
                    else:
                        x -= 0.25
                    ans[batch_id][people_id, joint_id, 0:2] = (y + 0.5, x + 0.5)
    return ans


def refine(det: np.ndarray, tag: np.ndarray, keypoints: np.ndarray) -> np.ndarray:
    """Every joint searched over the whole map; only the missing ones are written."""
    if len(tag.shape) == 3:
        tag = tag[:, :, :, None]
    tags = []
    for i in range(keypoints.shape[0]):
        if keypoints[i, 2] > 0:
            x, y = keypoints[i][:2].astype(np.int32)
            tags.append(tag[i, y, x])
    prev_tag = np.mean(tags, axis=0)
    ans = []
    for i in range(keypoints.shape[0]):
        tmp = det[i, :, :]
        tt = ((tag[i, :, :] - prev_tag[None, None, :]) ** 2).sum(axis=2) ** 0.5
        tmp2 = tmp - np.round(tt)
        yy, xx = (int(i) for i in np.unravel_index(np.argmax(tmp2), tmp.shape))
        val = tmp[yy, xx]
        x = xx + 0.5
        y = yy + 0.5
        if tmp[yy, min(xx + 1, tmp.shape[1] - 1)] > tmp[yy, max(xx - 1, 0)]:
            x += 0.25
        else:
            x -= 0.25
        if tmp[min(yy + 1, tmp.shape[0] - 1), xx] > tmp[max(0, yy - 1), xx]:
            y += 0.25
        else:
            y -= 0.25
        ans.append((x, y, val))
    found = np.array(ans)
    for i in range(det.shape[0]):
        if found[i, 2] > 0 and keypoints[i, 2] == 0:
            keypoints[i, :2] = found[i, :2]
            keypoints[i, 2] = found[i, 2]
    return keypoints


def parse(
    det: np.ndarray, tag: np.ndarray, params: DecodeParams, adjust_: bool = True, refine_: bool = True
) -> tuple[list[np.ndarray], list[np.float32]]:
    """det (1, J, H, W) f32, tag (1, J, H, W, T) f32 -> ([persons (P, J, 3+T)], scores), as the official."""
    k = top_k(det, tag, params)
    ans = [match_by_tag(x, params) for x in zip(k["tag_k"], k["loc_k"], k["val_k"], strict=True)]
    if adjust_:
        ans = adjust(ans, det)
    scores = [p[:, 2].mean() for p in ans[0]]
    if refine_:
        people = ans[0]
        for i in range(len(people)):
            people[i] = refine(det[0], tag[0], people[i])
        ans = [people]
    return ans, scores


def decode_official(det: np.ndarray, tags: np.ndarray, params: DecodeParams) -> tuple[np.ndarray, np.ndarray]:
    """The port with the decoders' signature: det (J, H, W), tags (J, H, W, T) -> poses (P, J, 3+T), scores (P,)."""
    det = np.ascontiguousarray(det, np.float32)
    tags = np.ascontiguousarray(tags, np.float32)
    if tags.ndim == 3:
        tags = tags[..., None]
    params = params.with_joints(det.shape[0])
    ans, scores = parse(det[None], tags[None], params, params.adjust, params.refine)
    poses = ans[0]
    if poses.ndim != 3:  # the official np.array([]) of an image without persons
        poses = np.zeros((0, det.shape[0], 3 + tags.shape[3]), np.float32)
    return poses, np.array(scores, dtype=np.float32)
