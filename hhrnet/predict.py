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

* Stages overlap (default): reading + preprocessing of the next image (video frame) and decoding + drawing +
  writing of the previous one run while the network runs on the current one, each on its own thread
  (:func:`hhrnet.stages.overlapped`; ONNX Runtime, torch, Numba's decoder, OpenCV and NumPy release the GIL),
  with at most ``depth`` chunks waiting between two stages, so memory is bounded whatever the folder size.
  Results, drawings and their order are those of ``overlap=False`` (one step after another), byte for byte.

The per-image steps are :class:`ImageSteps` (videos: :class:`_VideoSteps`): read + preprocess -> network ->
decode + draw + write.
"""

from __future__ import annotations

import glob
import itertools
import json
import os
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from hhrnet.errors import HHRNetError, InputError
from hhrnet.images import IMAGE_SUFFIXES, VIDEO_SUFFIXES, ImageLimits, encode_jpeg, read_image
from hhrnet.stages import overlapped, sequential

Progress = Callable[[str], None]
FrameProgress = Callable[[str, int, int], None]  # (file, frames done, frames in the file or 0 when unknown)
MAX_GLOB_PATHS = 1_000_000  # a glob matching more (e.g. through nested symlink loops) is refused
MANIFEST_SCHEMA = 1
DEPTH = 2  # overlapped: chunks (video frames) waiting between two stages, at most


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
            "schema": MANIFEST_SCHEMA,
            "complete": self.complete,
            "interrupted": self.interrupted,
            "inputs": self.files,
            "finished": self.done,
            "failed": len(self.failures),
            "not_run": self.not_run,
        }


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


@dataclass
class _Job:
    """One image on its way through the steps; ``error`` set where a step refused it (the rest skip it)."""

    path: Path
    image: np.ndarray | None = None
    prepared: Any = None
    maps: Any = None
    on_device: tuple[np.ndarray, np.ndarray, tuple[int, int]] | None = None  # (poses, scores, map (H, W))
    record: dict[str, Any] | None = None
    error: HHRNetError | None = None


class ImageSteps:
    """predict's per-image work as three stages over a chunk of paths (one network call per chunk):

    1. :meth:`load` — read (bounded) and preprocess;
    2. :meth:`network` — the network and its maps (one batched call with a letterbox, else per image);
    3. :meth:`finish` — decode, poses in image pixels, drawing written, result record.

    An :class:`HHRNetError` for one image is kept on its job and the other images go on; any other exception
    propagates. The stages share no mutable state, so :func:`hhrnet.stages.overlapped` may run them on their
    own threads."""

    def __init__(
        self,
        predictor: Any,
        out_dir: Path,
        names: dict[Path, str],
        *,
        limits: ImageLimits,
        min_score: float,
        draw: bool,
    ) -> None:
        self.predictor = predictor
        self.codec = getattr(predictor, "codec", None)
        self.out_dir = out_dir
        self.names = names
        self.limits = limits
        self.min_score = min_score
        self.draw = draw

    def stages(self) -> list[Callable[[Any], Any]]:
        return [self.load, self.network, self.finish]

    def load(self, chunk: Sequence[Path]) -> list[_Job]:
        jobs = [_Job(path) for path in chunk]
        for job in jobs:
            try:
                job.image = read_input(job.path, self.limits, self.codec)
                job.prepared = self.predictor.preprocess(job.image)
            except HHRNetError as exc:
                job.error = exc
        return jobs

    def network(self, jobs: list[_Job]) -> list[_Job]:
        ok = [j for j in jobs if j.error is None]
        if len(ok) > 1 and self.codec is not None and self.codec.letterbox:
            batch = np.stack([j.prepared.inputs[0][1] for j in ok])  # (B, 3, H, W): one shape per letterbox
            try:
                for job, maps in zip(
                    ok, self.predictor.batch_maps(batch, self.codec.project_size(ok[0].prepared)), strict=True
                ):
                    job.maps = maps
                return jobs
            except HHRNetError:  # one bad image in a batch: one by one below, so only it fails
                pass
        for job in ok:
            try:
                if self.predictor.on_device():
                    job.on_device = self.predictor.predict_on_device(job.prepared)
                else:
                    job.maps = self.predictor.maps(job.prepared)
            except HHRNetError as exc:
                job.error = exc
        return jobs

    def finish(self, jobs: list[_Job]) -> list[_Job]:
        from hhrnet.evaluate import result_entries

        for job in jobs:
            if job.error is not None:
                continue
            try:
                if job.on_device is not None:
                    poses, scores, map_hw = job.on_device
                else:
                    poses, scores = self.predictor.decode(job.maps)
                    map_hw = job.maps.heatmaps.shape[1:]
                result = self.predictor.postprocess(poses, scores, job.prepared, map_hw)
                if self.draw:
                    assert job.image is not None  # load() set it
                    write_drawing(self.out_dir, self.names[job.path], job.image, result, self.min_score)
            except HHRNetError as exc:
                job.error = exc
                continue
            job.record = {"file": str(job.path), "people": result_entries(0, result.keypoints, result.scores)}
            job.image = job.prepared = job.maps = job.on_device = None  # nothing large waits for the consumer
        return jobs


def _pipeline(
    items: Iterable[Any], stages: Sequence[Callable[[Any], Any]], overlap: bool, depth: int
) -> Generator[Any, None, None]:
    """The stages over ``items``, overlapped (each on its own thread, bounded queues) or one after another."""
    return overlapped(items, stages, depth) if overlap else sequential(items, stages)


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
    overlap: bool = True,
    depth: int = DEPTH,
) -> PredictReport:
    """Predict every file with ``predictor`` (:class:`hhrnet.inference.Predictor`), writing into ``out``.

    ``overlap``: reading + preprocessing of the next image (video frame) and decoding + drawing + writing of the
    previous one run while the network runs on the current one (:func:`hhrnet.stages.overlapped`, at most
    ``depth`` chunks of ``batch_size`` images waiting between two stages); results, files and their order are
    the same as with ``overlap=False`` (one step after another). On Ctrl-C (KeyboardInterrupt) the results so
    far are written with ``interrupted: true`` and it propagates.
    """
    from hhrnet.io import atomic_write_text

    if depth < 1:
        raise InputError(f"depth must be >= 1, got {depth}")
    limits = limits or ImageLimits()
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
                frames, video = predict_video(
                    path,
                    predictor,
                    out_dir,
                    min_score,
                    name=names[path],
                    limits=limits,
                    on_frame=stream.write,
                    progress=frame_progress,
                    overlap=overlap,
                    depth=depth,
                )
            except HHRNetError as exc:
                failed(path, exc)
            else:
                done({"file": str(path), "video": str(video), "frames": frames})
        step = max(1, batch_size)
        chunks = [stills[start : start + step] for start in range(0, len(stills), step)]
        steps = ImageSteps(predictor, out_dir, names, limits=limits, min_score=min_score, draw=draw)
        with closing(_pipeline(chunks, steps.stages(), overlap, depth)) as results:
            for jobs in results:
                for job in jobs:
                    if job.error is not None:
                        failed(job.path, job.error)
                    else:
                        assert job.record is not None  # finish() set it
                        done(job.record)
    except KeyboardInterrupt:
        report.interrupted = True
        raise
    finally:
        stream.close()
        atomic_write_text(out_dir / "predictions.json", summary())
    return report


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


class _VideoSteps:
    """predict_video's per-frame work as stages: preprocess -> network -> decode + draw + write the frame.
    Only :meth:`finish` touches the writer, frames arrive there in order, and the caller reads ``writer`` /
    ``tmp`` only once every stage has stopped."""

    def __init__(self, predictor: Any, out: Path, name: str, fps: float, min_score: float) -> None:
        self.predictor = predictor
        self.out = out
        self.name = name
        self.fps = fps
        self.min_score = min_score
        self.writer: Any = None
        self.tmp: Path | None = None
        self.final: Path | None = None

    def stages(self) -> list[Callable[[Any], Any]]:
        return [self.load, self.network, self.finish]

    def load(self, frame: tuple[int, np.ndarray]) -> tuple[int, np.ndarray, Any]:
        index, rgb = frame
        return index, rgb, self.predictor.preprocess(rgb)

    def network(self, item: tuple[int, np.ndarray, Any]) -> tuple[int, np.ndarray, Any, Any]:
        index, rgb, prepared = item
        if self.predictor.on_device():
            return index, rgb, prepared, self.predictor.predict_on_device(prepared)
        maps = self.predictor.maps(prepared)
        return index, rgb, prepared, (*self.predictor.decode(maps), maps.heatmaps.shape[1:])

    def finish(self, item: tuple[int, np.ndarray, Any, Any]) -> list[dict[str, Any]]:
        import cv2

        from hhrnet.evaluate import result_entries
        from hhrnet.visualize import draw_poses

        index, rgb, prepared, (poses, scores, map_hw) = item
        result = self.predictor.postprocess(poses, scores, prepared, map_hw)
        drawn = draw_poses(rgb, result.keypoints, result.scores, min_score=self.min_score)
        bgr = cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
        if self.writer is None:
            self.writer, self.tmp, self.final = _open_writer(
                self.out, self.name, self.fps, (bgr.shape[1], bgr.shape[0])
            )
        self.writer.write(bgr)
        return result_entries(index, result.keypoints, result.scores)


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
    overlap: bool = True,
    depth: int = DEPTH,
) -> tuple[list[list[dict[str, Any]]], Path]:
    """(poses per frame, drawn video path). Each frame's result goes to ``on_frame`` as it is known; the drawn
    video appears atomically as ``<name>.mp4`` (or ``.avi`` where OpenCV has no MPEG-4 encoder). ``overlap``:
    decoding the next frame, the network and decoding + drawing + writing the previous frame run at once (at most
    ``depth`` frames waiting between two stages); the same frames and video as one after another."""
    import cv2

    limits = limits or ImageLimits()
    name = name or f"{path.stem}_pose"
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"cannot open video {path} (corrupt, or a codec OpenCV lacks)")
    steps: _VideoSteps | None = None
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

        def read_frames() -> Iterator[tuple[int, np.ndarray]]:
            for index in itertools.count():
                ok, frame = cap.read()
                if not ok:
                    return
                yield index, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)

        steps = _VideoSteps(predictor, out, name, fps, min_score)
        with closing(_pipeline(read_frames(), steps.stages(), overlap, depth)) as results:
            for entries in results:  # every stage has stopped when this loop is left, however it is left
                frames.append(entries)
                if on_frame is not None:
                    on_frame({"file": str(path), "frame": len(frames) - 1, "people": entries})
                if progress is not None:
                    progress(str(path), len(frames), total)
    except BaseException:
        if steps is not None and steps.tmp is not None:
            if steps.writer is not None:
                steps.writer.release()
                steps.writer = None
            steps.tmp.unlink(missing_ok=True)
        raise
    finally:
        cap.release()
        if steps is not None and steps.writer is not None:
            steps.writer.release()
    tmp, final = steps.tmp, steps.final
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
