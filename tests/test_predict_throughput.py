"""bench throughput's predict rows: hhrnet predict itself on photos and a video made from them, --sequential vs
overlapped in one run, the same bytes written by both."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from hhrnet import samples


@pytest.fixture(scope="module")
def predictor(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    import torch

    from hhrnet.checkpoint import make_payload, save_checkpoint
    from hhrnet.config import preset
    from hhrnet.load import open_model
    from hhrnet.model import build_model

    cfg = preset("tiny")
    ckpt = save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pth", make_payload(build_model(cfg), cfg))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield open_model(checkpoint=ckpt).predictor("fast")
    finally:
        torch.set_num_threads(threads)


def test_make_video_has_every_photo_repeated(tmp_path: Path) -> None:
    import cv2

    from hhrnet.benchmarks.throughput import make_video

    clip = make_video(samples.images("coco")[:3], tmp_path / "c.avi", size=(320, 240), repeat=2)
    cap = cv2.VideoCapture(str(clip))
    shapes = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        shapes.append(frame.shape)
    cap.release()
    assert shapes == [(240, 320, 3)] * 6


def test_predict_rows_sequential_and_overlapped(tmp_path: Path, predictor: Any) -> None:
    from hhrnet.benchmarks.throughput import make_video, predict_rows

    paths = samples.images("coco")[:2]
    clip = make_video(paths, tmp_path / "c.avi", size=(320, 240), repeat=1)
    rows = predict_rows(predictor, paths, clip, tmp_path / "work", rounds=1, label="tiny", official_s_per_image=10.0)
    assert [(r["pipeline"], r["mode"], r["images"]) for r in rows] == [
        ("predict tiny (photos)", "sequential", 2),
        ("predict tiny (photos)", "overlapped", 2),
        ("predict tiny (video)", "sequential", 2),
        ("predict tiny (video)", "overlapped", 2),
    ]
    assert all(r["same_output"] for r in rows)
    photos = rows[0]
    assert photos["speedup_vs_official"] == pytest.approx(10.0 / photos["s_per_image"], rel=0.02)
    assert rows[2]["speedup_vs_official"] is None  # the official pipeline is timed on the photos only
    (drawn,) = (tmp_path / "work" / "video-overlapped").iterdir()  # the drawn video, no temporary left
    assert drawn.stem == "c_pose" and drawn.stat().st_size > 0
