"""predict with its stages overlapped: the same bytes as one step after another (folder and video), results in
input order with a failing image in the middle, images in flight bounded, Ctrl-C leaves nothing that looks
complete, and --sequential keeps the old path."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from hhrnet import samples


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from hhrnet.checkpoint import make_payload, save_checkpoint
    from hhrnet.config import preset
    from hhrnet.model import build_model

    cfg = preset("tiny")
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny.pth", make_payload(build_model(cfg), cfg))


@pytest.fixture()
def predictor(tiny_ckpt: Path) -> Iterator[Any]:
    import torch

    from hhrnet.load import open_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared 2-core machine: torch's spinning threads would only slow these tests
    try:
        yield open_model(checkpoint=tiny_ckpt).predictor("fast")
    finally:
        torch.set_num_threads(threads)


def _stage_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("stage-")]


def _folder(tmp_path: Path) -> Path:
    """a.jpg, b.jpg, c_broken.jpg (not an image), d.jpg: the failure sits in the middle of the input order."""
    src = tmp_path / "in"
    src.mkdir()
    photos = samples.images("coco")
    for name, photo in (("a", photos[0]), ("b", photos[1]), ("d", photos[2])):
        (src / f"{name}.jpg").write_bytes(photo.read_bytes())
    (src / "c_broken.jpg").write_bytes(b"not a jpeg at all")
    return src


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_folder_overlapped_equals_sequential_in_order_with_a_failure(tmp_path: Path, predictor: Any) -> None:
    from hhrnet.evaluate import result_entries
    from hhrnet.images import read_image
    from hhrnet.predict import collect_sources, run_predict

    files = collect_sources(_folder(tmp_path))
    seq = run_predict(files, predictor, tmp_path / "seq", overlap=False)
    ovl = run_predict(files, predictor, tmp_path / "ovl", overlap=True, depth=1)
    assert _files(tmp_path / "seq") == _files(tmp_path / "ovl")  # drawings, predictions.json(l): byte for byte
    assert sorted(_files(tmp_path / "ovl")) == [
        "a_pose.jpg",
        "b_pose.jpg",
        "d_pose.jpg",
        "predictions.json",
        "predictions.jsonl",
    ]
    lines = [json.loads(line) for line in (tmp_path / "ovl" / "predictions.jsonl").read_text().splitlines()]
    assert [Path(r["file"]).name for r in lines] == ["a.jpg", "b.jpg", "c_broken.jpg", "d.jpg"]
    assert "error" in lines[2] and all("people" in r for r in lines[:2] + lines[3:])
    doc = json.loads((tmp_path / "ovl" / "predictions.json").read_text())
    assert {k: doc[k] for k in ("complete", "inputs", "finished", "failed", "not_run")} == {
        "complete": True,
        "inputs": 4,
        "finished": 3,
        "failed": 1,
        "not_run": 0,
    }
    assert ovl.failures == seq.failures and Path(ovl.failures[0][0]).name == "c_broken.jpg"
    alone = predictor.predict(read_image(files[3]))  # the poses are those of predict() on the image alone
    assert json.dumps(lines[3]["people"]) == json.dumps(result_entries(0, alone.keypoints, alone.scores))
    assert not _stage_threads()


def _video(path: Path, frames: int = 4) -> Path:
    import cv2

    from hhrnet.images import read_image

    photos = [cv2.resize(read_image(p), (320, 240))[:, :, ::-1] for p in samples.images("coco")[:2]]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (320, 240))  # type: ignore[attr-defined]
    for i in range(frames):
        writer.write(np.ascontiguousarray(photos[i % 2]))
    writer.release()
    return path


def test_video_overlapped_equals_sequential(tmp_path: Path, predictor: Any) -> None:
    from hhrnet.predict import predict_video

    video = _video(tmp_path / "clip.avi")
    got = {}
    for mode in ("seq", "ovl"):
        out = tmp_path / mode
        out.mkdir()
        seen: list[int] = []
        frames, drawn = predict_video(
            video, predictor, out, 0.05, overlap=mode == "ovl", on_frame=lambda r, seen=seen: seen.append(r["frame"])
        )
        assert seen == [0, 1, 2, 3] and [f[0]["image_id"] for f in frames if f] == [
            i for i, f in enumerate(frames) if f
        ]
        got[mode] = (json.dumps(frames), drawn.name, drawn.read_bytes())
        assert sorted(p.name for p in out.iterdir()) == [drawn.name]  # no temporary left
    assert got["seq"] == got["ovl"]
    assert len(json.loads(got["ovl"][0])) == 4
    assert not _stage_threads()


def test_images_in_flight_stay_bounded(tmp_path: Path, predictor: Any) -> None:
    """A slow network and fast reads: without bounded queues every image of the folder would be read ahead."""
    from hhrnet.images import read_image
    from hhrnet.predict import run_predict

    src = tmp_path / "in"
    src.mkdir()
    photo = samples.images("coco")[0].read_bytes()
    for i in range(24):
        (src / f"p{i:02d}.jpg").write_bytes(photo)
    maps = predictor.maps(predictor.preprocess(read_image(samples.images("coco")[0])))
    lock = threading.Lock()
    count = {"read": 0, "done": 0, "most": 0}
    real_preprocess = predictor.preprocess

    def preprocess(image: np.ndarray) -> Any:
        with lock:
            count["read"] += 1
            count["most"] = max(count["most"], count["read"] - count["done"])
        return real_preprocess(image)

    def slow_network(prepared: Any) -> Any:
        time.sleep(0.08)
        return maps

    def finished(_: str) -> None:
        with lock:
            count["done"] += 1

    predictor.preprocess, predictor.maps = preprocess, slow_network
    depth = 2
    report = run_predict(sorted(src.iterdir()), predictor, tmp_path / "o", draw=False, progress=finished, depth=depth)
    assert report.done == 24 and count["done"] == 24
    # held: one in each of the 3 stages' hands, the consumer's, and `depth` in each of the 3 queues after reading
    assert 2 <= count["most"] <= 3 * depth + 4, count


def test_ctrl_c_leaves_nothing_that_looks_complete(tmp_path: Path, predictor: Any) -> None:
    from hhrnet.predict import collect_sources, predict_video, run_predict

    files = collect_sources(_folder(tmp_path))

    def interrupt_second(path: str) -> None:
        if Path(path).name == "b.jpg":
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_predict(files, predictor, tmp_path / "o", progress=interrupt_second)
    doc = json.loads((tmp_path / "o" / "predictions.json").read_text())
    assert {k: doc[k] for k in ("complete", "interrupted", "finished", "not_run")} == {
        "complete": False,
        "interrupted": True,
        "finished": 2,
        "not_run": 2,
    }
    assert not _stage_threads()

    video = _video(tmp_path / "clip.avi", frames=6)
    out = tmp_path / "v"
    out.mkdir()

    def interrupt_frame_2(path: str, done: int, total: int) -> None:
        if done == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_video(video, predictor, out, 0.05, progress=interrupt_frame_2)
    assert list(out.iterdir()) == []  # neither a finished-looking video nor its temporary
    assert not _stage_threads()


def test_cli_sequential_switch(tmp_path: Path, tiny_ckpt: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    import hhrnet.predict
    from hhrnet.cli.app import app

    def no_overlap(*args: object, **kwargs: object) -> None:
        raise AssertionError("overlapped used")

    monkeypatch.setattr(hhrnet.predict, "overlapped", no_overlap)
    photo = str(samples.images("coco")[0])
    args = ["predict", photo, "--checkpoint", str(tiny_ckpt), "--out", str(tmp_path / "o")]
    done = CliRunner().invoke(app, [*args, "--sequential"])
    assert done.exit_code == 0 and (tmp_path / "o" / f"{Path(photo).stem}_pose.jpg").is_file(), done.output
    overlapping = CliRunner().invoke(app, args)
    assert isinstance(overlapping.exception, AssertionError)


def test_batches_overlapped_a_failing_batch_fails_only_its_bad_image(tmp_path: Path, tiny_ckpt: Path) -> None:
    """--batch-size with a letterbox: one network call per chunk; when the batched call is refused, the chunk is
    retried image by image, so only the image the network refuses fails, in its place."""
    from hhrnet.errors import BackendError
    from hhrnet.images import read_image
    from hhrnet.load import open_model
    from hhrnet.predict import collect_sources, run_predict

    src = tmp_path / "in"
    src.mkdir()
    photos = samples.images("coco")
    for i in range(5):
        (src / f"p{i}.jpg").write_bytes(photos[i % 2].read_bytes())
    files = collect_sources(src)
    predictor = open_model(checkpoint=tiny_ckpt, letterbox=256).predictor("fast")
    run_predict(files, predictor, tmp_path / "seq", batch_size=2, overlap=False)
    run_predict(files, predictor, tmp_path / "ovl", batch_size=2, overlap=True)
    assert _files(tmp_path / "seq") == _files(tmp_path / "ovl")

    calls: list[int] = []
    real_batch, real_one = predictor.batch_maps, predictor.maps
    bad = predictor.preprocess(read_image(files[0])).inputs[0][1]

    def batch_maps(batch: np.ndarray, project: Any) -> Any:
        calls.append(len(batch))
        if any(np.array_equal(x, bad) for x in batch):
            raise BackendError("the network refused this batch")
        return real_batch(batch, project)

    def maps(prepared: Any) -> Any:
        if np.array_equal(prepared.inputs[0][1], bad):
            raise BackendError("the network refused this image")
        return real_one(prepared)

    predictor.batch_maps, predictor.maps = batch_maps, maps
    report = run_predict(files, predictor, tmp_path / "bad", batch_size=2, overlap=True)
    # p0+p1 refused as a batch, then p1 alone (maps() runs a batch of one; p0 is refused before it), the same
    # for p2+p3; p4 is a chunk of one, refused by maps() itself
    assert calls == [2, 1, 2, 1]
    assert [Path(f).name for f, _ in report.failures] == ["p0.jpg", "p2.jpg", "p4.jpg"]  # photos[0]'s pixels
    assert [Path(r["file"]).name for r in report.records] == ["p1.jpg", "p3.jpg"]
    assert _files(tmp_path / "bad")["p1_pose.jpg"] == _files(tmp_path / "seq")["p1_pose.jpg"]
    lines = (tmp_path / "bad" / "predictions.jsonl").read_text().splitlines()
    assert [Path(json.loads(line)["file"]).name for line in lines] == [f"p{i}.jpg" for i in range(5)]
