"""Affine warps that give the same bytes on every x86-64 CPU with AVX2.

OpenCV's ``warpAffine`` takes Intel IPP's path when IPP is available, and IPP's result depends on the CPU: on an
AVX-512 or AVX2 CPU it differs from OpenCV's own kernel by one grey level on ~0.01 % of the pixels, and IPP's SSE4.2
kernel differs again. OpenCV's own kernel gives identical bytes on AVX2 and AVX-512 CPUs (checked with
``OPENCV_CPU_DISABLE``); only CPUs without AVX2 (and other architectures) round a few pixels differently. So every
warp of the product (training augmentation, the official resize, the letterbox) runs with IPP off: the training
data and the network input are then the same on every AVX2 machine. The cost is small next to the network: a
640x480 -> 512x512 bilinear warp took 1.6 ms instead of 0.7 ms (median of 100, Sapphire Rapids-class 2-core
machine, 2026-12-05), against ~100 ms per image for a training step of the tiny preset.

``cv2.ipp.setUseIPP`` is thread-local in OpenCV, so switching it around one call is safe in worker threads.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def warp_affine(image: np.ndarray, matrix: np.ndarray, size: Sequence[int], *, border_value: float = 0.0) -> np.ndarray:
    """``cv2.warpAffine(image, matrix, size)`` (bilinear, constant border) on OpenCV's own kernel, IPP off."""
    import cv2

    previous = cv2.ipp.useIPP()
    cv2.ipp.setUseIPP(False)
    try:
        return cv2.warpAffine(
            image, matrix, (int(size[0]), int(size[1])), flags=cv2.INTER_LINEAR, borderValue=border_value
        )
    finally:
        cv2.ipp.setUseIPP(previous)
