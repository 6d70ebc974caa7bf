"""The predict job: poses for images, folders, globs and videos, drawn and written as the run goes.

* The output folder is checked for writability before any model is loaded.
* Every file's result is appended to ``predictions.jsonl`` (flushed) as soon as it is known, so a failure
  part-way loses nothing; ``predictions.json`` (all results and failures) is written atomically at the end.
* A file that cannot be read, decoded or run is reported and skipped; the run goes on.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from hhrnet.errors import HHRNetError, InputError
from hhrnet.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, encode_jpeg, read_image

Progress = Callable[[str], None]


def collect_sources(source: str | Path) -> list[Path]:
    """An image or video file, a folder (its images and videos, sorted) or a glob."""
    p = Path(source)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    elif p.exists():
        files = [p]
    else:
        files = sorted(Path(f) for f in glob.glob(str(source), recursive=True) if Path(f).is_file())
    if not files:
        raise InputError(f"no images or videos found at {source}")
    return files


def check_output_dir(out: str | Path) -> Path:
    """Create ``out`` if needed and prove it is writable; InputError naming the problem otherwise."""
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise InputError(f"--out {d} is a file, not a folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
        probe = d / f".hhrnet-write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise InputError(f"cannot write to --out {d}: {exc.strerror or exc}") from None
    return d


@dataclass
class PredictReport:
    files: int
    out: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def done(self) -> int:
        return self.files - len(self.failures)

    @property
    def empty(self) -> list[str]:
        """Images in which nobody was found."""
        return [r["file"] for r in self.records if "people" in r and not r["people"]]


class _Stream:
    """predictions.jsonl, one flushed line per file."""

    def __init__(self, path: Path) -> None:
        self.fh: TextIO = path.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def run_predict(
    files: Sequence[Path],
    predictor: Any,
    out: str | Path,
    *,
    min_score: float = 0.05,
    batch_size: int = 1,
    draw: bool = True,
    progress: Progress | None = None,
) -> PredictReport:
    """Predict every file with ``predictor`` (:class:`hhrnet.inference.Predictor`), writing into ``out``."""
    from hhrnet.evaluate import result_entries
    from hhrnet.io import atomic_write_bytes, atomic_write_text
    from hhrnet.visualize import draw_poses

    out_dir = check_output_dir(out)
    report = PredictReport(len(files), out_dir)
    stream = _Stream(out_dir / "predictions.jsonl")

    def done(record: dict[str, Any]) -> None:
        report.records.append(record)
        stream.write(record)
        if progress is not None:
            progress(record["file"])

    def failed(path: Path, exc: BaseException) -> None:
        report.failures.append((str(path), str(exc)))
        stream.write({"file": str(path), "error": str(exc)})
        if progress is not None:
            progress(str(path))

    try:
        videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
        stills = [p for p in files if p.suffix.lower() not in VIDEO_SUFFIXES]
        for path in videos:
            try:
                frames = predict_video(path, predictor, out_dir, min_score)
            except HHRNetError as exc:
                failed(path, exc)
            else:
                done({"file": str(path), "frames": frames})
        step = max(1, batch_size)
        for start in range(0, len(stills), step):
            chunk: list[tuple[Path, np.ndarray]] = []
            for path in stills[start : start + step]:
                try:
                    chunk.append((path, read_image(path)))
                except HHRNetError as exc:
                    failed(path, exc)
            results: list[Any] = []
            try:
                results = predictor.predict_batch([im for _, im in chunk]) if chunk else []
            except HHRNetError:  # one bad image in a batch: retry one by one so only it fails
                results = []
                for path, image in chunk:
                    try:
                        results.append(predictor.predict(image))
                    except HHRNetError as exc:
                        failed(path, exc)
                        results.append(None)
            for (path, image), poses in zip(chunk, results, strict=True):
                if poses is None:
                    continue
                if draw:
                    drawn = draw_poses(image, poses.keypoints, poses.scores, min_score=min_score)
                    atomic_write_bytes(out_dir / f"{path.stem}_pose.jpg", encode_jpeg(drawn))
                done({"file": str(path), "people": result_entries(0, poses.keypoints, poses.scores)})
    finally:
        stream.close()
        summary = {"predictions": report.records, "failures": report.failures}
        atomic_write_text(out_dir / "predictions.json", json.dumps(summary, indent=1))
    return report


def predict_video(path: Path, predictor: Any, out: Path, min_score: float) -> list[list[dict[str, Any]]]:
    """Poses per frame of a video; the drawn video appears atomically as ``<stem>_pose.mp4``."""
    import cv2

    from hhrnet.evaluate import result_entries
    from hhrnet.visualize import draw_poses

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    tmp = out / f".{path.stem}_pose.mp4.tmp"
    frames: list[list[dict[str, Any]]] = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            poses = predictor.predict(rgb)
            frames.append(result_entries(len(frames), poses.keypoints, poses.scores))
            drawn = cv2.cvtColor(draw_poses(rgb, poses.keypoints, poses.scores, min_score=min_score), cv2.COLOR_RGB2BGR)
            if writer is None:
                h, w = drawn.shape[:2]
                fourcc = cv2.VideoWriter_fourcc(*"mp4v")  # type: ignore[attr-defined]
                writer = cv2.VideoWriter(str(tmp), fourcc, fps, (w, h))
            writer.write(drawn)
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if not frames:
        tmp.unlink(missing_ok=True)
        raise InputError(f"no frames could be read from {path}")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out / f"{path.stem}_pose.mp4")
    return frames
