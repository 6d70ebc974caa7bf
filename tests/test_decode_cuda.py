"""CUDA decoder: under NUMBA_ENABLE_CUDASIM=1 (CI, tiny inputs: J = 3, 16x16, 2 people) and on a real GPU.
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
pytestmark = pytest.mark.skipif(not (SIMULATOR or cuda.is_available()), reason="needs a GPU or NUMBA_ENABLE_CUDASIM=1")


def tiny_scene(seed: int, b: int, t: int, j: int = 3, h: int = 16, w: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """Two people per image with some joints missing (refine has work), a plateau, and low noise."""
    rng = np.random.default_rng(seed)
    det = (rng.random((b, j, h, w)) * 0.05).astype(np.float32)
    tags = np.zeros((b, j, h, w, t), np.float32)
    for i in range(b):
        for p in range(2):
            for k in range(j):
                if rng.random() < 0.7:
                    y, x = int(rng.integers(1, h - 1)), int(rng.integers(1, w - 1))
                    det[i, k, y, x] = det[i, k, y, x - 1] = np.float32(0.5 + 0.4 * rng.random())  # a plateau
                    tags[i, k, y - 1 : y + 2, x - 2 : x + 2] = 2.0 * p + rng.normal(0, 0.1, t)
    return det, tags


def assert_equals_reference(got: object, det: np.ndarray, tags: np.ndarray, params: DecodeParams) -> int:
    """Per image: poses and scores bit-identical to decode_reference; returns how many joints refine filled."""
    filled = 0
    for b in range(det.shape[0]):
        poses, scores = decode_reference(det[b], tags[b], params)
        got_poses, got_scores = got.image(b)  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got_poses, poses)
        np.testing.assert_array_equal(got_scores, scores)
        unrefined, _ = decode_reference(det[b], tags[b], DecodeParams(num_joints=det.shape[1], refine=False))
        filled += int((poses[..., 2] > 0).sum() - (unrefined[..., 2] > 0).sum())
    return filled


@pytest.mark.parametrize(("seed", "t"), [(0, 2), (1, 1)])
def test_cuda_equals_reference_on_tiny_maps(seed: int, t: int) -> None:
    from hhrnet.kernels.cuda import decode_cuda

    det, tags = tiny_scene(seed, 2, t)
    params = DecodeParams(num_joints=3)
    got = decode_cuda(det, tags, params, capacity=8)
    assert got.poses.shape == (2, 8, 3, 3 + t) and not got.overflow.any()
    assert (got.counts >= 2).all()
    assert assert_equals_reference(got, det, tags, params) > 0  # the refine kernel ran and wrote joints
    cpu = decode_batch(det, tags, params, capacity=8)
    np.testing.assert_array_equal(got.poses, cpu.poses)
    np.testing.assert_array_equal(got.scores, cpu.scores)


def test_device_arrays_options_and_overflow() -> None:
    from hhrnet.kernels.cuda import decode_cuda

    det, tags = tiny_scene(2, 1, 2)
    params = DecodeParams(num_joints=3, ties_positive=True, unique_person_keys=True)
    got = decode_cuda(cuda.to_device(det), cuda.to_device(tags), params, capacity=1)  # maps already on the device
    full, full_scores = decode_reference(det[0], tags[0], params)
    assert len(full) > 1 and got.counts[0] == 1 and got.overflow[0]
    np.testing.assert_array_equal(got.image(0)[0], full[:1])
    np.testing.assert_array_equal(got.image(0)[1], full_scores[:1])


@pytest.mark.gpu
@pytest.mark.skipif(SIMULATOR, reason="real GPU only (the simulator is far too slow at this size)")
def test_cuda_golden_on_gpu(golden_dir: Path) -> None:
    from hhrnet.kernels.cuda import decode_cuda

    g = np.load(golden_dir / "infer_planted_official_8people.npz")
    got = decode_cuda(g["final_heatmaps"], g["tags"], DecodeParams(), capacity=64)
    np.testing.assert_array_equal(got.image(0)[0], g["grouped"])
    np.testing.assert_array_equal(got.image(0)[1], g["scores"])
