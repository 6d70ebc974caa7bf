"""Where a model's skeletons across figures come from: its heatmaps decoded with its own tags and with *ideal* tags
built from the labels, refine on and off (benchmarks/TRAINING.md, "ideal tags"). Not an official measure.

Ideal tags, per joint j: a pixel within ``radius`` map pixels of a person's labelled joint j carries that person's
tag (the nearest such person), any other pixel the tag of the person whose outline covers it (the last one listed,
as drawn last), a background pixel a tag of its own; people's tags ``spacing`` apart, so the decoder's matching
cannot confuse them. What still joins figures with them comes from the heatmaps and from refine, not from tags.

    python -m hhrnet.benchmarks.joining --checkpoint runs/tiny/model_best.pth --data-root data/synth
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

BACKGROUND = 1000.0  # tags of background pixels start here, each pixel its own


def ideal_tags(
    people: Sequence[tuple[np.ndarray | None, np.ndarray | None]],
    num_joints: int,
    hw: tuple[int, int],
    radius: float = 6.0,
    spacing: float = 10.0,
) -> np.ndarray:
    """(J, H, W) f32 tags for ``people`` = [(outline (H, W) bool or None, keypoints (J, 3) in map pixels or None)]
    in drawing order: person n's tag is ``spacing * (n + 1)``."""
    h, w = hw
    yy, xx = np.mgrid[0:h, 0:w]
    base = BACKGROUND + spacing * (yy * w + xx).astype(np.float64)
    for n, (outline, _) in enumerate(people):
        if outline is not None:
            base[outline] = spacing * (n + 1)
    tags = np.empty((num_joints, h, w), np.float32)
    for j in range(num_joints):
        t = base.copy()
        best = np.full((h, w), np.inf)
        for n, (_, kp) in enumerate(people):
            if kp is None or kp[j, 2] <= 0:
                continue
            d = np.hypot(xx - kp[j, 0], yy - kp[j, 1])
            near = (d <= radius) & (d < best)
            t[near] = spacing * (n + 1)
            best[near] = d[near]
        tags[j] = t
    return tags


def _map_frame(prepared: Any, hw: tuple[int, int], tag_dims: int) -> tuple[float, float, float, float]:
    """(sx, sy, ox, oy) with image = map * s + o: the decoder's own map -> image transform (scale and shift)."""
    from hhrnet.codec import to_image_coords

    h, w = hw
    grid = np.zeros((1, 2, 3 + tag_dims), np.float32)
    grid[0, 1, :2] = (w - 1, h - 1)
    xy = to_image_coords(grid, prepared.center, prepared.scale, (w, h))[0, :, :2]
    return (
        float(xy[1, 0] - xy[0, 0]) / max(w - 1, 1),
        float(xy[1, 1] - xy[0, 1]) / max(h - 1, 1),
        float(xy[0, 0]),
        float(xy[0, 1]),
    )


def _people_in_map(
    anns: Sequence[dict[str, Any]],
    image_hw: tuple[int, int],
    frame: tuple[float, float, float, float],
    hw: tuple[int, int],
) -> list[tuple[np.ndarray | None, np.ndarray | None]]:
    import cv2

    from hhrnet.evaluate import segmentation_mask

    sx, sy, ox, oy = frame
    to_map = np.array([[1 / sx, 0, -ox / sx], [0, 1 / sy, -oy / sy]], np.float32)
    people: list[tuple[np.ndarray | None, np.ndarray | None]] = []
    for a in anns:
        if a.get("iscrowd", 0):
            continue
        outline = None
        if a.get("segmentation"):
            full = segmentation_mask(a["segmentation"], *image_hw).astype(np.uint8)
            outline = cv2.warpAffine(full, to_map, (hw[1], hw[0]), flags=cv2.INTER_NEAREST) > 0
        kp = np.asarray(a.get("keypoints") or [], np.float64).reshape(-1, 3)
        labelled = None
        if len(kp) and (kp[:, 2] > 0).any():
            labelled = kp.copy()
            labelled[:, 0] = (kp[:, 0] - ox) / sx
            labelled[:, 1] = (kp[:, 1] - oy) / sy
        people.append((outline, labelled))
    return people


def run(checkpoint: str | Path, data_root: str | Path, max_images: int | None = None) -> list[dict[str, Any]]:
    """Rows (tags, refine, AP, AP50, poses, joining) for the val split of ``data_root``."""
    from hhrnet.checkpoint import load_model
    from hhrnet.codec import resolve_codec
    from hhrnet.config import apply_overrides
    from hhrnet.evaluate import evaluate_predictions, figure_mixing, result_entries
    from hhrnet.images import read_image
    from hhrnet.inference import Maps, Predictor, torch_network

    root = Path(data_root)
    model, cfg = load_model(checkpoint)
    network = torch_network(model)
    codec = resolve_codec(cfg)
    decoders = {
        True: Predictor(network, codec),
        False: Predictor(network, resolve_codec(apply_overrides(cfg, ["test.refine=false"]))),
    }
    gt = json.loads((root / "annotations" / "person_keypoints_val.json").read_text())
    images = gt["images"][:max_images] if max_images else gt["images"]
    results: dict[tuple[str, bool], list[dict[str, Any]]] = {
        (t, r): [] for t in ("network", "ideal") for r in (True, False)
    }
    for im in images:
        prepared = decoders[True].preprocess(read_image(root / "images" / "val" / im["file_name"]))
        maps = decoders[True].maps(prepared)
        j, h, w = maps.heatmaps.shape
        frame = _map_frame(prepared, (h, w), maps.tags.shape[-1])
        anns = [a for a in gt["annotations"] if a["image_id"] == im["id"]]
        people = _people_in_map(anns, (int(im["height"]), int(im["width"])), frame, (h, w))
        ideal = np.repeat(ideal_tags(people, j, (h, w))[..., None], maps.tags.shape[-1], axis=3)
        for (kind, refine), out in results.items():
            use = maps if kind == "network" else Maps(maps.heatmaps, ideal)
            poses = decoders[refine].maps_decoder.poses(use, prepared)
            out += result_entries(im["id"], poses.keypoints, poses.scores)
    ids = {i["id"] for i in images}
    subset = {**gt, "images": images, "annotations": [a for a in gt["annotations"] if a["image_id"] in ids]}
    rows = []
    for (kind, refine), res in results.items():
        stats = evaluate_predictions(res, subset)
        mix = figure_mixing(res, subset, min_score=0.2)
        rows.append(
            {
                "tags": kind,
                "refine": refine,
                "AP": round(float(stats["AP"]), 4),
                "AP50": round(float(stats["AP .5"]), 4),
                "poses": mix["poses"],
                "joining": mix["joining"],
                "share": round(mix["joining"] / max(mix["poses"], 1), 3),
            }
        )
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hhrnet.benchmarks.joining", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data-root", required=True, help="a COCO-layout dataset with a val split (hhrnet synth)")
    parser.add_argument("--max-images", type=int, default=None)
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args(argv)
    rows = run(args.checkpoint, args.data_root, args.max_images)
    print("tags\trefine\tAP\tAP50\tposes\tjoining\tshare")
    for r in rows:
        print("\t".join(str(r[k]) for k in ("tags", "refine", "AP", "AP50", "poses", "joining", "share")))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
