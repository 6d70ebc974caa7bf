"""CUDA decode kernels: under NUMBA_ENABLE_CUDASIM=1 (CI, tiny inputs) and, where a GPU exists, for real.
The output must equal the reference decoder's exactly."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from numba import cuda

from hhrnet.kernels.decode import decode_batch
from hhrnet.kernels.params import DecodeParams
from hhrnet.kernels.reference import decode_reference

SIMULATOR = os.environ.get("NUMBA_ENABLE_CUDASIM") == "1"
pytestmark = pytest.mark.skipif(not cuda.is_available(), reason="needs a CUDA GPU or NUMBA_ENABLE_CUDASIM=1")


def _scene(seed: int, b: int, j: int, h: int, w: int, t: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    det = np.zeros((b, j, h, w), np.float32)
    tags = np.zeros((b, j, h, w, t), np.float32)
    for i in range(b):
        for p in range(2):
            for k in range(j):
                if rng.random() < 0.75:  # some joints missing: refine runs
                    y, x = int(rng.integers(1, h - 1)), int(rng.integers(1, w - 1))
                    det[i, k, y, x] = 0.5 + 0.4 * rng.random()
                    det[i, k, y, x - 1] = 0.3
                    tags[i, k, max(0, y - 1) : y + 2, max(0, x - 1) : x + 2] = 2.0 * p + rng.normal(0, 0.1, t)
    det += (rng.random(det.shape) * 0.05).astype(np.float32)
    return det, tags


@pytest.mark.parametrize(("seed", "t"), [(0, 2), (1, 1)])
def test_cuda_decode_equals_reference_tiny(seed: int, t: int) -> None:
    from hhrnet.kernels.cuda import decode_cuda

    det, tags = _scene(seed, 2, 3, 16, 16, t)
    params = DecodeParams(num_joints=3)
    got = decode_cuda(det, tags, params, capacity=8)
    cpu = decode_batch(det, tags, params, capacity=8)
    np.testing.assert_array_equal(got.counts, cpu.counts)
    filled = 0
    for b in range(2):
        poses, scores = decode_reference(det[b], tags[b], params)
        assert len(poses) >= 1
        np.testing.assert_array_equal(got.image(b)[0], poses)
        np.testing.assert_array_equal(got.image(b)[1], scores)
        unrefined, _ = decode_reference(det[b], tags[b], DecodeParams(num_joints=3, refine=False))
        filled += int((poses[..., 2] > 0).sum() - (unrefined[..., 2] > 0).sum())
    assert filled > 0  # the refine kernel ran and wrote joints


def test_device_arrays_are_accepted() -> None:
    from hhrnet.kernels.cuda import decode_cuda

    det, tags = _scene(2, 1, 3, 16, 16, 2)
    d_det, d_tags = cuda.to_device(det), cuda.to_device(tags)
    got = decode_cuda(d_det, d_tags, DecodeParams(num_joints=3), capacity=8)
    ref = decode_reference(det[0], tags[0], DecodeParams(num_joints=3))
    np.testing.assert_array_equal(got.image(0)[0], ref[0])


@pytest.mark.gpu
@pytest.mark.skipif(SIMULATOR, reason="real GPU only (the simulator is too slow at this size)")
def test_cuda_decode_golden_on_gpu(shared: Path) -> None:
    from hhrnet.kernels.cuda import decode_cuda

    g = np.load(shared / "golden" / "infer_planted_official_8people.npz")
    got = decode_cuda(g["final_heatmaps"], g["tags"], DecodeParams(), capacity=64)
    np.testing.assert_array_equal(got.image(0)[0], g["grouped"])
    np.testing.assert_array_equal(got.image(0)[1], g["scores"])
