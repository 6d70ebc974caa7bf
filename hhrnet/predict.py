"""The predict job: poses for images, folders, globs and videos, drawn and written as the run goes.

* Inputs: a file, a folder (its images and videos) or a glob; every file is taken once (by resolved path, so a
  symlink loop in a ``**`` glob repeats nothing), and predict's own drawings in the output folder are never
  read back (an ``--out`` equal to or inside the source folder is safe).
* The output folder is checked for writability before any model is loaded. At the start ``predictions.json``
  is replaced by a manifest saying the run is in progress (``complete: false``), so the results of an earlier
  run never look current; stale temporary videos of a killed run are removed.
* Every file's result is appended to ``predictions.jsonl`` (flushed) as soon as it is known (a video: one line
  per frame, then one for the file), so a failure part-way loses nothing; ``predictions.json`` (the manifest,
  all results and failures) is written atomically at the end, and on Ctrl-C with ``interrupted: true``.
* A file that cannot be read, decoded, bounded or run is reported and skipped; the run goes on.
* Drawings are named ``<stem>_pose.jpg`` (videos ``<stem>_pose.mp4``); inputs sharing a stem (``a.jpg``,
  ``a.png``) keep their extension in the name (``a_jpg_pose.jpg``), so no drawing overwrites another.

Per-image steps are small functions (:func:`read_input` -> predictor (preprocess, network, decode) ->
:func:`write_drawing`) so a pipelined loop can reuse them.
"""

from __future__ import annotations

import glob
import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from hhrnet.errors import HHRNetError, InputError
from hhrnet.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, ImageLimits, encode_jpeg, read_image

Progress = Callable[[str], None]
FrameProgress = Callable[[str, int, int], None]  # (file, frames done, frames in the file or 0 when unknown)
MAX_GLOB_PATHS = 1_000_000  # a glob matching more (e.g. through nested symlink loops) is refused
MANIFEST_SCHEMA = 1


def _resolved(p: Path) -> Path:
    try:
        return p.resolve()
    except (OSError, RuntimeError):  # a symlink loop: resolve() gives up
        return p.absolute()


DRAWING_SUFFIX = "_pose"  # drawings are <name>_pose.jpg, videos <name>_pose.mp4 / .avi


def _is_output(path: Path, out: Path | None) -> bool:
    """A file predict writes (a drawing or drawn video) inside the output folder ``out``."""
    return (
        out is not None
        and out in path.parents
        and (path.stem.endswith(DRAWING_SUFFIX) or path.name.startswith("."))
        and path.suffix.lower() in {".jpg", ".mp4", ".avi"}
    )


def _glob(pattern: str) -> Iterator[Path]:
    for count, f in enumerate(glob.iglob(pattern, recursive=True)):
        if count >= MAX_GLOB_PATHS:
            raise InputError(f"{pattern} matches over {MAX_GLOB_PATHS} paths (a symlink loop?); narrow the glob")
        yield Path(f)


def collect_sources(source: str | Path, exclude: str | Path | None = None) -> list[Path]:
    """An image or video file, a folder (its images and videos, sorted) or a glob; each file once (by its
    resolved path); predict's own drawings (``*_pose.jpg|mp4|avi``) inside ``exclude`` (the output folder) are
    never taken, so a run whose --out is (or is inside) its source does not predict its drawings again."""
    p = Path(source)
    if p.is_dir():
        kinds = IMAGE_SUFFIXES | VIDEO_SUFFIXES
        found: Iterator[Path] = iter(sorted(f for f in p.iterdir() if f.suffix.lower() in kinds))
    elif p.exists():
        found = iter([p])
    else:
        found = _glob(str(source))
    skip = _resolved(Path(exclude)) if exclude is not None else None
    seen: set[Path] = set()
    files: list[Path] = []
    for f in found:
        real = _resolved(f)
        if real in seen or _is_output(real, skip) or not f.is_file():
            continue
        seen.add(real)
        files.append(f)
    files.sort()
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


def drawing_names(files: Sequence[Path]) -> dict[Path, str]:
    """Drawing name per input: ``<stem>_pose``; inputs sharing a stem get ``<stem>_<ext>_pose``, and any
    clash left (same name in two folders) a ``_<n>`` suffix. Distinct for distinct inputs."""
    stems: dict[str, int] = {}
    for f in files:
        stems[f.stem] = stems.get(f.stem, 0) + 1
    names: dict[Path, str] = {}
    used: set[str] = set()
    for f in files:
        base = f.stem if stems[f.stem] == 1 else f"{f.stem}_{f.suffix.lstrip('.').lower()}"
        name, n = f"{base}_pose", 1
        while name in used:
            n += 1
            name = f"{base}_{n}_pose"
        used.add(name)
        names[f] = name
    return names


@dataclass
class PredictReport:
    files: int
    out: Path
    records: list[dict[str, Any]] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)
    interrupted: bool = False

    @property
    def done(self) -> int:
        return len(self.records)

    @property
    def not_run(self) -> int:
        return self.files - len(self.records) - len(self.failures)

    @property
    def complete(self) -> bool:
        return not self.interrupted and self.not_run == 0

    @property
    def empty(self) -> list[str]:
        """Images in which nobody was found."""
        return [r["file"] for r in self.records if "people" in r and not r["people"]]

    def manifest(self) -> dict[str, Any]:
        """The counts ``predictions.json`` starts with: inputs seen, finished, failed, not run, complete."""
        return {
            "schema": MANIFEST_SCHEMA, "complete": self.complete, "interrupted": self.interrupted,
            "inputs": self.files, "finished": self.done, "failed": len(self.failures), "not_run": self.not_run,
        }  # fmt: skip


class _Stream:
    """predictions.jsonl, one flushed line per file (and per video frame)."""

    def __init__(self, path: Path) -> None:
        self.fh: TextIO = path.open("w", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self.fh.write(json.dumps(record) + "\n")
        self.fh.flush()

    def close(self) -> None:
        self.fh.close()


def read_input(path: Path, limits: ImageLimits, codec: Any) -> np.ndarray:
    """Step 1: an image file -> RGB uint8 (H, W, 3), its bytes, header and network input bounded before decoding."""
    return read_image(path, limits, codec.check_size if codec is not None else None)


def write_drawing(out_dir: Path, name: str, image: np.ndarray, poses: Any, min_score: float) -> Path:
    """Last step: the image with its poses drawn, atomically as ``<name>.jpg``."""
    from hhrnet.io import atomic_write_bytes
    from hhrnet.visualize import draw_poses

    drawn = draw_poses(image, poses.keypoints, poses.scores, min_score=min_score)
    return atomic_write_bytes(out_dir / f"{name}.jpg", encode_jpeg(drawn))


def _clean_stale(out_dir: Path) -> None:
    """Temporary videos a killed run left (``.*_pose.tmp.*``); predictions.json is replaced at start."""
    for f in out_dir.glob(".*_pose.tmp.*"):
        f.unlink(missing_ok=True)


def run_predict(
    files: Sequence[Path],
    predictor: Any,
    out: str | Path,
    *,
    min_score: float = 0.05,
    batch_size: int = 1,
    draw: bool = True,
    progress: Progress | None = None,
    frame_progress: FrameProgress | None = None,
    limits: ImageLimits | None = None,
) -> PredictReport:
    """Predict every file with ``predictor`` (:class:`hhrnet.inference.Predictor`), writing into ``out``.

    On Ctrl-C (KeyboardInterrupt) the results so far are written with ``interrupted: true`` and it propagates.
    """
    from hhrnet.evaluate import result_entries
    from hhrnet.io import atomic_write_text

    limits = limits or ImageLimits()
    codec = getattr(predictor, "codec", None)
    out_dir = check_output_dir(out)
    report = PredictReport(len(files), out_dir)
    names = drawing_names(files)

    def summary() -> str:
        return json.dumps({**report.manifest(), "predictions": report.records, "failures": report.failures}, indent=1)

    atomic_write_text(out_dir / "predictions.json", summary())  # complete: false until the end
    _clean_stale(out_dir)
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
                frames, video = predict_video(path, predictor, out_dir, min_score, name=names[path], limits=limits,
                                              on_frame=stream.write, progress=frame_progress)  # fmt: skip
            except HHRNetError as exc:
                failed(path, exc)
            else:
                done({"file": str(path), "video": str(video), "frames": frames})
        step = max(1, batch_size)
        for start in range(0, len(stills), step):
            chunk: list[tuple[Path, np.ndarray]] = []
            for path in stills[start : start + step]:
                try:
                    chunk.append((path, read_input(path, limits, codec)))
                except HHRNetError as exc:
                    failed(path, exc)
            for (path, image), poses in zip(chunk, _predict_chunk(predictor, chunk, failed), strict=True):
                if poses is None:
                    continue
                if draw:
                    write_drawing(out_dir, names[path], image, poses, min_score)
                done({"file": str(path), "people": result_entries(0, poses.keypoints, poses.scores)})
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        stream.close()
        atomic_write_text(out_dir / "predictions.json", summary())
    return report


def _predict_chunk(
    predictor: Any, chunk: list[tuple[Path, np.ndarray]], failed: Callable[[Path, BaseException], None]
) -> list[Any]:
    """Poses per image of a chunk (None where it failed): one network call, or one by one after a failure."""
    try:
        return list(predictor.predict_batch([im for _, im in chunk])) if chunk else []
    except HHRNetError:  # one bad image in a batch: retry one by one so only it fails
        results: list[Any] = []
        for path, image in chunk:
            try:
                results.append(predictor.predict(image))
            except HHRNetError as exc:
                failed(path, exc)
                results.append(None)
        return results


# (fourcc, suffix) tried in order for the drawn video; OpenCV's pip wheels write both
VIDEO_CODECS = (("mp4v", ".mp4"), ("MJPG", ".avi"))


def _open_writer(out: Path, name: str, fps: float, size: tuple[int, int]) -> tuple[Any, Path, Path]:
    """(writer, temporary path, final path) for the first codec OpenCV can write here; InputError when none."""
    import cv2

    for fourcc, suffix in VIDEO_CODECS:
        tmp = out / f".{name}.tmp{suffix}"  # OpenCV picks the container from the suffix: it must end the name
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*fourcc), fps, size)  # type: ignore[attr-defined]
        if writer.isOpened():
            return writer, tmp, out / f"{name}{suffix}"
        writer.release()
        tmp.unlink(missing_ok=True)
    tried = ", ".join(f"{c} ({s})" for c, s in VIDEO_CODECS)
    raise InputError(f"OpenCV cannot write a video here (no encoder for {tried}); install an OpenCV build with FFmpeg")


def predict_video(
    path: Path,
    predictor: Any,
    out: Path,
    min_score: float,
    *,
    name: str | None = None,
    limits: ImageLimits | None = None,
    on_frame: Callable[[dict[str, Any]], None] | None = None,
    progress: FrameProgress | None = None,
) -> tuple[list[list[dict[str, Any]]], Path]:
    """(poses per frame, drawn video path). Each frame's result goes to ``on_frame`` as it is known; the drawn
    video appears atomically as ``<name>.mp4`` (or ``.avi`` where OpenCV has no MPEG-4 encoder)."""
    import cv2

    from hhrnet.evaluate import result_entries
    from hhrnet.visualize import draw_poses

    limits = limits or ImageLimits()
    name = name or f"{path.stem}_pose"
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"cannot open video {path} (corrupt, or a codec OpenCV lacks)")
    writer = None
    tmp: Path | None = None
    final: Path | None = None
    frames: list[list[dict[str, Any]]] = []
    try:
        w, h = int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)), int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        if w * h > limits.max_pixels:
            raise InputError(f"{path} has {w}x{h} frames; at most {limits.max_pixels} pixels are accepted")
        if w > 0 and h > 0 and getattr(predictor, "codec", None) is not None:
            predictor.codec.check_size(w, h, str(path))
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if 0 < fps < 1000 else 25.0
        total = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT)))
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            poses = predictor.predict(rgb)
            entries = result_entries(len(frames), poses.keypoints, poses.scores)
            frames.append(entries)
            if on_frame is not None:
                on_frame({"file": str(path), "frame": len(frames) - 1, "people": entries})
            drawn = cv2.cvtColor(draw_poses(rgb, poses.keypoints, poses.scores, min_score=min_score), cv2.COLOR_RGB2BGR)
            if writer is None:
                writer, tmp, final = _open_writer(out, name, fps, (drawn.shape[1], drawn.shape[0]))
            writer.write(drawn)
            if progress is not None:
                progress(str(path), len(frames), total)
    except BaseException:
        if tmp is not None:
            if writer is not None:
                writer.release()
                writer = None
            tmp.unlink(missing_ok=True)
        raise
    finally:
        cap.release()
        if writer is not None:
            writer.release()
    if not frames or tmp is None or final is None:
        raise InputError(f"no frames could be read from {path}")
    if not tmp.is_file() or tmp.stat().st_size == 0:
        raise InputError(f"OpenCV wrote no video for {path} ({tmp.name} is missing or empty)")
    os.chmod(tmp, 0o666 & ~_umask())
    os.replace(tmp, final)
    return frames, final


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
