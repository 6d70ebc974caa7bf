"""Export parity: does the exported artifact, run through its own pipeline, give what PyTorch gives?

Both sides run the same :class:`~hhrnet.codec.Codec` (the artifact's) on the same images: PyTorch with
host aggregation in torch's exact arithmetic, the artifact with whatever its graph does in the graph.
Compared: the decoder's input maps, and the decoded poses (same persons, same joint positions).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hhrnet.errors import InputError


@dataclass
class ParitySummary:
    images: int
    max_map_error: float  # decoder input maps (heatmaps and tags), artifact vs PyTorch
    identical: bool  # same persons and bit-equal joint positions on every image
    differing: int  # images whose poses differ
    max_pose_px: float  # largest joint position difference where the person counts agree
    max_value_diff: float  # heatmap values carried with the joints


def sample_images(folder: str | Path | None, count: int = 4) -> list[np.ndarray]:
    """Real images from ``folder`` (default: the COCO photos shipped in :mod:`hhrnet.samples`)."""
    from hhrnet import samples
    from hhrnet.images import read_image

    if folder is None:
        candidates = samples.images("coco")
    else:
        root = Path(folder)
        if not root.is_dir():
            raise InputError(f"sample folder not found: {root}")
        candidates = sorted(p for p in root.rglob("*") if p.suffix.lower() in samples.IMAGE_SUFFIXES)
    if not candidates:
        raise InputError(f"no images in {folder}")
    return [read_image(p) for p in candidates[:count]]


def decoded_parity(model: Any, session: Any, samples: str | Path | None = None, count: int = 4) -> ParitySummary:
    """PyTorch (exact host pipeline) vs ``session`` (an artifact runtime) under the artifact's codec."""
    from hhrnet.inference import Predictor, torch_network

    codec = session.artifact.codec
    exact = Predictor(torch_network(model), codec)
    deployed = Predictor(session, codec)
    images = sample_images(samples, count)
    worst_map, worst_px, worst_val, differing = 0.0, 0.0, 0.0, 0
    for image in images:
        prepared = codec.preprocess(image)
        ma, mb = exact.maps(prepared), deployed.maps(prepared)
        worst_map = max(
            worst_map, float(np.abs(ma.heatmaps - mb.heatmaps).max()), float(np.abs(ma.tags - mb.tags).max())
        )
        hw = ma.heatmaps.shape[1:]
        pa = exact.postprocess(*exact.decode(ma), prepared, hw)
        pb = deployed.postprocess(*deployed.decode(mb), prepared, hw)
        if pa.keypoints.shape != pb.keypoints.shape:
            differing += 1
            continue
        worst_val = max(worst_val, float(np.abs(pa.keypoints[..., 2] - pb.keypoints[..., 2]).max(initial=0.0)))
        if not np.array_equal(pa.keypoints[..., :2], pb.keypoints[..., :2]):
            differing += 1
            worst_px = max(worst_px, float(np.abs(pa.keypoints[..., :2] - pb.keypoints[..., :2]).max(initial=0.0)))
    return ParitySummary(len(images), worst_map, differing == 0, differing, worst_px, worst_val)
