"""The throughput benchmark: sequential and overlapped passes give the same poses, the official pipeline is
timed beside them, and the CLI refuses bad arguments in one line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from hhrnet import samples


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hhrnet.checkpoint import make_payload, save_checkpoint
    from hhrnet.config import preset
    from hhrnet.model import build_model

    cfg = preset("tiny")
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pth", make_payload(build_model(cfg), cfg))


@pytest.mark.slow
def test_rows_sequential_overlapped_and_official(tiny: Path) -> None:
    from hhrnet.benchmarks.throughput import photos, run
    from hhrnet.cli.common import open_model

    model = open_model(checkpoint=tiny)
    paths = photos(samples.folder("coco"), 3)
    rows = run(model.predictor(), paths, model.predictor(), rounds=1, label="torch tiny")
    assert [(r["pipeline"], r["mode"]) for r in rows] == [("torch tiny", "sequential"), ("torch tiny", "overlapped"),
                                                          ("official", "sequential")]  # fmt: skip
    assert all(r["same_poses"] and r["images"] == 3 and r["images_per_s"] > 0 for r in rows)
    assert rows[2]["speedup_vs_official"] == 1.0


def test_photos_and_cli_errors(tmp_path: Path) -> None:
    from hhrnet.benchmarks.throughput import photos
    from hhrnet.errors import InputError

    assert [p.suffix for p in photos(samples.folder("coco"), 2)] == [".jpg", ".jpg"]
    with pytest.raises(InputError, match="no images"):
        photos(tmp_path)
    env = dict(os.environ, CI="true", NUMBA_DISABLE_CUDA="1", COLUMNS="80")
    for args, needle in ((), "give --onnx and/or --checkpoint"), (("--onnx", "x.onnx", "--rounds", "0"), "--rounds"):
        proc = subprocess.run([sys.executable, "-m", "hhrnet", "bench", "throughput", *args], capture_output=True,
                              text=True, cwd=tmp_path, env=env)  # fmt: skip
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert proc.stderr.strip().splitlines()[-1].startswith("error: ") and needle in proc.stderr, proc.stderr
