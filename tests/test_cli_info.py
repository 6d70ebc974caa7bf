"""CLI start-up cost and error style: --help never imports torch/tensorrt/onnx/NumPy; errors are one line, no
traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def _run(code: str) -> str:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()


def test_help_does_not_import_heavy_modules() -> None:
    for argv in (["--help"], ["info", "--help"], ["export", "--help"], ["predict", "--help"]):
        out = _run(
            "import sys\n"
            "from hhrnet.cli.app import main\n"
            f"code = main({argv!r})\n"
            "print(code, *(m in sys.modules for m in ('torch', 'tensorrt', 'onnx', 'numpy')))"
        )
        assert out.splitlines()[-1] == "0 False False False False", (argv, out)


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hhrnet", *args], capture_output=True, text=True)


def test_info_reports_model_and_backends() -> None:
    proc = _cli("info", "--config", "tiny", "--set", "data.input_size=128")
    assert proc.returncode == 0, proc.stderr
    from hhrnet.config import preset
    from hhrnet.model import build_model

    count = sum(p.numel() for p in build_model(preset("tiny")).parameters())
    assert f"{count:,}" in proc.stdout  # the tiny preset's parameter count (1,187,507 today)
    assert "multiply-adds at 128x128" in proc.stdout
    for name in ("torch", "onnxruntime", "tensorrt", "numba"):
        assert name in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["info", "--config", "coco_w32_521"], "did you mean 'coco_w32_512'"),
        (["info", "--config", "tiny", "--set", "train.lrr=1"], "unknown config key 'train.lrr'"),
        (["info", "--config", "tiny", "--checkpoint", "/nonexistent/w.pth"], "checkpoint not found"),
    ],
)
def test_errors_are_one_line_without_traceback(args: list[str], message: str) -> None:
    proc = _cli(*args)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()  # progress lines may precede it; the error is one line, last
    errors = [line for line in lines if line.startswith("error: ")]
    assert errors == [lines[-1]] and message in lines[-1], proc.stderr


def test_debug_flag_shows_traceback() -> None:
    proc = _cli("--debug", "info", "--config", "nope")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_info_checks_a_checkpoint(tmp_path: Path) -> None:
    import torch

    from hhrnet.config import preset
    from hhrnet.model import build_model

    torch.save(build_model(preset("tiny")).state_dict(), tmp_path / "t.pth")
    proc = _cli("info", "--config", "tiny", "--checkpoint", str(tmp_path / "t.pth"))
    assert proc.returncode == 0 and "loads (strict)" in proc.stdout
    proc = _cli("info", "--config", "coco_w32_512", "--checkpoint", str(tmp_path / "t.pth"))
    assert proc.returncode == 2 and "does not match the model" in proc.stderr
