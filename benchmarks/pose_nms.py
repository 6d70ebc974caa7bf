"""AP effect of the opt-in pose NMS (``DecodeParams.pose_nms``) on a crowded, occluded synthetic val set.

The val set is :func:`hhrnet.benchmarks.scenes.crowd` scenes (real sample poses, COCO-like visibility with
occluded joints as weak peaks, truncation, background noise, tag jitter): ground truth in COCO format (map
pixels; area = 0.53 x the labelled keypoints' box, as CrowdPose's rule), predictions from the fast decoder,
scored with pycocotools through :func:`hhrnet.evaluate.evaluate_predictions` (COCO rules, maxDets 20).

    python -m hhrnet.benchmarks.pose_nms [--images 40] [--thresholds 0 0.5 0.7 0.8 0.9]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from hhrnet.benchmarks import scenes
from hhrnet.benchmarks.common import environment
from hhrnet.benchmarks.decode import table
from hhrnet.evaluate import evaluate_predictions, result_entries
from hhrnet.kernels.decode import decode
from hhrnet.kernels.params import DecodeParams

SHAPE = (17, 256, 352)  # a 640x480 image at input size 256: quick, same statistics


def val_set(images: int, shape: tuple[int, int, int] = SHAPE, t: int = 2) -> tuple[list[scenes.Scene], dict[str, Any]]:
    """``images`` crowd scenes with 5 to 30 people, and their COCO-format ground truth."""
    people = np.linspace(5, 30, images).round().astype(int)
    val = [scenes.crowd(int(n), shape, t, seed=i) for i, n in enumerate(people)]
    anns: list[dict[str, Any]] = []
    for i, sc in enumerate(val):
        for kp in sc.keypoints:
            vis = kp[:, 2] > 0
            if not vis.any():
                continue
            x0, y0 = kp[vis, :2].min(axis=0)
            x1, y1 = kp[vis, :2].max(axis=0)
            w, h = float(x1 - x0), float(y1 - y0)
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": 1,
                    "iscrowd": 0,
                    "keypoints": [float(v) for v in kp.reshape(-1)],
                    "num_keypoints": int(vis.sum()),
                    "bbox": [float(x0), float(y0), w, h],
                    "area": max(w * h * 0.53, 1.0),
                }
            )
    gt = {
        "images": [{"id": i, "width": shape[2], "height": shape[1]} for i in range(len(val))],
        "annotations": anns,
        "categories": [{"id": 1, "name": "person"}],
    }
    return val, gt


def run(images: int = 40, thresholds: Sequence[float] = (0.0, 0.5, 0.7, 0.8, 0.9)) -> list[dict[str, Any]]:
    """Rows per threshold (0 = off, official): AP, AP .5, AP .75, AR, persons per image, people per image."""
    val, gt = val_set(images)
    env = environment("cpu")
    rows = []
    for thr in thresholds:
        params = DecodeParams(pose_nms=thr)
        results: list[dict[str, Any]] = []
        persons = 0
        for i, sc in enumerate(val):
            poses, scores = decode(sc.det, sc.tags, params)
            persons += len(poses)
            results += result_entries(i, poses[..., :3], scores)
        stats = evaluate_predictions(results, gt, "coco")
        rows.append(
            {
                "benchmark": "pose_nms",
                "pose_nms": thr if thr > 0 else "off (official)",
                "images": len(val),
                "people_per_image": round(len(gt["annotations"]) / len(val), 1),
                "persons_per_image": round(persons / len(val), 1),
                "AP": round(stats["AP"], 4),
                "AP .5": round(stats["AP .5"], 4),
                "AP .75": round(stats["AP .75"], 4),
                "AR": round(stats["AR"], 4),
                **env,
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hhrnet.benchmarks.pose_nms")
    parser.add_argument("--images", type=int, default=40)
    parser.add_argument("--thresholds", type=float, nargs="*", default=[0.0, 0.5, 0.7, 0.8, 0.9])
    args = parser.parse_args(argv)
    rows = run(args.images, args.thresholds)
    sys.stdout.write(
        table(rows, ("pose_nms", "images", "people_per_image", "persons_per_image", "AP", "AP .5", "AP .75", "AR"))
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
