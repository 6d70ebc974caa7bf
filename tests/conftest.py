"""Shared fixtures. Everything the tests read is inside the repository: the official code's golden outputs
(compacted) and the official experiment YAMLs under ``tests/data/``, real photos in :mod:`hhrnet.samples`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

DATA = Path(__file__).resolve().parent / "data"
GOLDEN = DATA / "golden"
EXPERIMENTS = DATA / "official-experiments"


@pytest.fixture(scope="session")
def golden_dir() -> Path:
    return GOLDEN


@pytest.fixture(scope="session")
def fp32(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The tiny test model (128 px) exported once per session: the aggregate graph and the raw one."""
    from test_export import TINY_128, tiny_model

    from hhrnet.export.onnx import export_onnx

    root = tmp_path_factory.mktemp("prec")
    model, cfg = tiny_model(TINY_128)
    export_onnx(model, cfg, root / "agg.onnx", sample_size=(128, 128))
    export_onnx(model, cfg, root / "raw.onnx", graph="raw", sample_size=(128, 128))
    return {"aggregate": root / "agg.onnx", "raw": root / "raw.onnx"}


def opencv_avx2() -> bool:
    """OpenCV's own kernels run their AVX2 (or wider) code here (a feature switched off prints as ``AVX2?``)."""
    import cv2

    return any(token.lstrip("*") == "AVX2" for token in cv2.getCPUFeaturesLine().split())


def assert_warp_equal(actual: np.ndarray, expected: np.ndarray, grey_level: float) -> None:
    """Warped images (or their normalised values) equal bit for bit where OpenCV's warp runs its AVX2 code.

    OpenCV's own bilinear kernel gives identical bytes with AVX2 and AVX-512; its SSE4 code (CPUs without AVX2,
    or ``OPENCV_CPU_DISABLE=AVX2``) rounds ~0.004 % of the pixels one grey level differently (34 of 786,432 on the
    golden warp). There the check allows one grey level on at most 0.05 % of the values: a wrong matrix,
    interpolation or channel order changes far more.
    """
    if opencv_avx2():
        np.testing.assert_array_equal(actual, expected)
        return
    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    assert diff.max() <= grey_level * 1.0001, f"a value differs by {diff.max() / grey_level:.2f} grey levels"
    assert np.count_nonzero(diff) <= 5e-4 * diff.size, f"{np.count_nonzero(diff)} of {diff.size} values differ"


def torch_simd() -> bool:
    """torch's CPU kernels run their AVX2 / AVX-512 code (``ATEN_CPU_CAPABILITY``): the code our FMA-exact
    aggregation reproduces bit for bit. Without AVX2 (or forced to ``default``) torch rounds differently."""
    import torch

    return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")


def assert_torch_equal(actual: np.ndarray, expected: np.ndarray) -> None:
    """Equal bit for bit to torch's vectorised kernels; within 2e-4 of the values' magnitude of its scalar ones.

    The scalar kernels compute the source coordinate without a fused multiply-add, so an interpolation weight
    differs by about eps x the coordinate (seen: 3.5e-5 on values of magnitude 4 at 150 -> 704 columns); a wrong
    half-pixel offset or corner rule is off by ~0.1.
    """
    if torch_simd():
        np.testing.assert_array_equal(actual, expected)
    else:
        scale = max(1.0, float(np.abs(expected).max()))
        np.testing.assert_allclose(actual, expected, rtol=0, atol=2e-4 * scale)


def default_sigint() -> None:
    """``preexec_fn`` for a child a test stops with SIGINT: a shell starts background jobs (``cmd &``, CI runners)
    with SIGINT ignored, an ignored signal stays ignored across exec, and Python then installs no
    KeyboardInterrupt handler: the child would never see the test's Ctrl-C."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
