"""Image -> poses throughput over a folder of photos: one stage after another vs overlapped stages
(:func:`hhrnet.stages.overlapped`), same model, same photos, same run; optionally beside the official pipeline
(a torch fp32 network + the literal port of the official parse, :mod:`.official_port`).

Stages per photo: read + preprocess -> network (+ maps) -> decode + poses in image pixels. Overlapped, the
network of photo i runs while photo i+1 is read and photo i-1 decoded (ONNX Runtime, torch and the Numba
decoder release the GIL), so images/s approaches 1 / the slowest stage. Rounds alternate sequential and
overlapped passes so drifting load hits both alike; ``images_per_s`` is the median over the rounds.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from hhrnet.benchmarks.common import Row, environment
from hhrnet.stages import overlapped

COLUMNS = ("pipeline", "mode", "images", "images_per_s", "s_per_image", "speedup_vs_official", "same")
# same: overlapped gave the sequential poses (image -> poses rows) / wrote the same bytes (predict rows)
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def photos(folder: Path, limit: int | None = None) -> list[Path]:
    """The image files of ``folder``, sorted by name (the first ``limit``)."""
    from hhrnet.errors import InputError

    found = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not found:
        raise InputError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}")
    return found[:limit]


def stages(predictor: Any, decode: Callable[[Any, Any], tuple[Any, Any]] | None = None) -> list[Callable[[Any], Any]]:
    """The three stages of ``predictor`` (an :class:`hhrnet.inference.Predictor`); ``decode(heatmaps, tags)``
    replaces its decoder (the official port), after the codec's own preparation of the maps."""
    from hhrnet.images import read_image

    def load(path: Path) -> Any:
        return predictor.preprocess(read_image(path))

    def network(prepared: Any) -> tuple[Any, Any]:
        return prepared, predictor.maps(prepared)

    def finish(item: tuple[Any, Any]) -> Any:
        prepared, maps = item
        if decode is None:
            poses, scores = predictor.decode(maps)
        else:
            poses, scores = decode(*predictor.codec.for_decoding(maps.heatmaps, maps.tags))
        return predictor.postprocess(poses, scores, prepared, maps.heatmaps.shape[1:])

    return [load, network, finish]


def _pass(paths: Sequence[Path], fns: Sequence[Callable[[Any], Any]], overlap: bool, depth: int) -> tuple[float, list]:
    """Seconds and results of one pass. Sequential: every stage of an item, then the next item, all on one worker
    thread (not the main one: under load torch's OpenMP team was several times slower driven from the main thread,
    which would flatter the overlapped pass and the speed-up over the torch official pipeline)."""

    def one_after_another(item: Any) -> Any:
        for fn in fns:
            item = fn(item)
        return item

    start = time.perf_counter()
    out = list(overlapped(paths, fns, depth) if overlap else overlapped(paths, [one_after_another], 1))
    return time.perf_counter() - start, out


def run(
    predictor: Any,
    paths: Sequence[Path],
    official: Any | None = None,
    rounds: int = 2,
    depth: int = 2,
    label: str = "hhrnet",
) -> list[Row]:
    """Rows (pipeline, mode, images, images_per_s, s_per_image, speedup_vs_official, same_poses): ``predictor``
    sequential and overlapped; with ``official`` (a torch fp32 predictor) also the official pipeline, one
    pass per round (it is sequential by nature). ``same_poses``: overlapped gave exactly the sequential poses."""
    from hhrnet.benchmarks.official_port import decode_official

    ours = stages(predictor)
    theirs = None
    if official is not None:
        params = official.codec.decode
        theirs = stages(official, lambda hm, tags: decode_official(hm, tags, params))
    ours[2](ours[1](ours[0](paths[0])))  # warm-up: compile, first-call allocation
    times: dict[str, list[float]] = {"sequential": [], "overlapped": [], "official": []}
    same = True
    for _ in range(max(rounds, 1)):
        t_seq, seq = _pass(paths, ours, False, depth)
        t_ovl, ovl = _pass(paths, ours, True, depth)
        times["sequential"].append(t_seq)
        times["overlapped"].append(t_ovl)
        same = same and all(a.keypoints.tobytes() == b.keypoints.tobytes() for a, b in zip(seq, ovl, strict=True))
        if theirs is not None:
            times["official"].append(_pass(paths, theirs, False, depth)[0])
    n = len(paths)
    official_s = statistics.median(times["official"]) if times["official"] else None
    env = environment("cpu")
    rows = []
    for mode, samples in times.items():
        if not samples:
            continue
        t = statistics.median(samples)
        rows.append(
            {
                "benchmark": "throughput",
                "pipeline": "official" if mode == "official" else label,
                "mode": "sequential" if mode == "official" else mode,
                "images": n,
                "images_per_s": round(n / t, 3),
                "s_per_image": round(t / n, 4),
                "speedup_vs_official": None if official_s is None else round(official_s / t, 2),
                "same_poses": same,
                "same": same,
                "rounds": len(samples),
                "depth": depth,
                **env,
            }
        )
    return rows


def make_video(paths: Sequence[Path], out: Path, size: tuple[int, int] = (640, 480), repeat: int = 2) -> Path:
    """A short MJPG video (``out``, .avi) of ``paths`` resized to ``size`` (W, H), each photo ``repeat`` frames."""
    import cv2
    import numpy as np

    from hhrnet.errors import InputError
    from hhrnet.images import read_image

    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)  # type: ignore[attr-defined]
    if not writer.isOpened():
        raise InputError(f"OpenCV cannot write {out}")
    try:
        for p in paths:
            bgr = np.ascontiguousarray(cv2.resize(read_image(p), size)[:, :, ::-1])
            for _ in range(repeat):
                writer.write(bgr)
    finally:
        writer.release()
    return out


def _outputs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def predict_rows(
    predictor: Any,
    paths: Sequence[Path],
    video: Path | None,
    work: Path,
    rounds: int = 2,
    depth: int = 2,
    label: str = "hhrnet",
    official_s_per_image: float | None = None,
) -> list[Row]:
    """Rows of ``hhrnet predict`` itself (drawings, JSON Lines and JSON written) on the photos and on ``video``,
    ``--sequential`` vs overlapped, rounds alternating; ``same_output``: both wrote the same bytes. Scratch
    output goes under ``work``."""
    from hhrnet.predict import predict_video, run_predict

    inputs: list[tuple[str, Any]] = [("photos", list(paths))] + ([("video", video)] if video is not None else [])
    times: dict[tuple[str, str], list[float]] = {}
    counts: dict[str, int] = {}
    same = True
    for _ in range(max(rounds, 1)):
        for kind, what in inputs:
            written = {}
            for mode in ("sequential", "overlapped"):
                out = work / f"{kind}-{mode}"
                out.mkdir(parents=True, exist_ok=True)
                start = time.perf_counter()
                if kind == "photos":
                    report = run_predict(what, predictor, out, overlap=mode == "overlapped", depth=depth)
                    counts[kind] = report.done
                else:
                    frames, _ = predict_video(what, predictor, out, 0.05, overlap=mode == "overlapped", depth=depth)
                    counts[kind] = len(frames)
                times.setdefault((kind, mode), []).append(time.perf_counter() - start)
                written[mode] = _outputs(out)
            same = same and written["sequential"] == written["overlapped"]
    env = environment("cpu")
    rows = []
    for (kind, mode), samples in times.items():
        t = statistics.median(samples)
        n = counts[kind]
        speedup = None
        if official_s_per_image is not None and kind == "photos":
            speedup = round(official_s_per_image / (t / n), 2)
        rows.append(
            {
                "benchmark": "throughput",
                "pipeline": f"predict {label} ({kind})",
                "mode": mode,
                "images": n,
                "images_per_s": round(n / t, 3),
                "s_per_image": round(t / n, 4),
                "speedup_vs_official": speedup,
                "same_output": same,
                "same": same,
                "rounds": len(samples),
                "depth": depth,
                **env,
            }
        )
    return rows
