"""Backend parity: do two backends give the same network outputs and the same decoded poses?"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class ParitySummary:
    images: int
    max_output_error: float
    identical: bool  # same persons, same joint positions (bit-exact x, y) on every image
    differing: int
    max_pose_px: float
    max_value_diff: float  # heatmap values carried with the joints differ at float precision across runtimes


def sample_images(folder: str | Path | None, count: int = 4) -> list[np.ndarray]:
    """Real images from ``folder`` (default: the COCO photos shipped in :mod:`hhrnet.samples`)."""
    from hhrnet import samples
    from hhrnet.errors import InputError
    from hhrnet.inference import read_image

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


def decoded_parity(model: Any, cfg: Any, onnx_path: str | Path, samples: str | Path | None = None) -> ParitySummary:
    """Run PyTorch and ONNX Runtime through the same pipeline and compare outputs and decoded poses."""
    from hhrnet.export.backends import OnnxRuntimeBackend, TorchBackend, max_output_error
    from hhrnet.inference import Predictor

    torch_net = TorchBackend(model)
    ort_net = OnnxRuntimeBackend(onnx_path)
    images = sample_images(samples)
    a = Predictor(torch_net, cfg)
    b = Predictor(ort_net, cfg)
    worst_out, worst_px, worst_val, differing = 0.0, 0.0, 0.0, 0
    for image in images:
        prepared = a.preprocess(image)
        x = prepared.inputs[0][1][None]
        worst_out = max(worst_out, max_output_error(torch_net(x), ort_net(x)))
        pa, pb = a.predict(image), b.predict(image)
        if pa.keypoints.shape != pb.keypoints.shape:
            differing += 1
            worst_px = float("inf")
            continue
        worst_val = max(worst_val, float(np.abs(pa.keypoints[..., 2] - pb.keypoints[..., 2]).max(initial=0.0)))
        if not np.array_equal(pa.keypoints[..., :2], pb.keypoints[..., :2]):
            differing += 1
            worst_px = max(worst_px, float(np.abs(pa.keypoints[..., :2] - pb.keypoints[..., :2]).max(initial=0.0)))
    return ParitySummary(len(images), worst_out, differing == 0, differing, worst_px, worst_val)
