"""``hhrnet predict SOURCE``: poses for an image, a folder, a glob or a video; drawn outputs + JSON."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from hhrnet.cli.common import (
    BackendChoice,
    BackendOpt,
    CheckpointOpt,
    DecoderChoice,
    DecoderOpt,
    DeviceOpt,
    EngineOpt,
    FlipOpt,
    OnnxOpt,
    ScalesOpt,
    make_network,
    parse_scales,
)  # fmt: skip
from hhrnet.cli.info import SetOpt

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm"}


def collect_sources(source: str) -> list[Path]:
    """An image or video file, a folder (its images and videos, sorted) or a glob."""
    import glob

    from hhrnet.errors import InputError

    p = Path(source)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES)
    elif p.exists():
        files = [p]
    else:
        files = sorted(Path(f) for f in glob.glob(source, recursive=True) if Path(f).is_file())
    if not files:
        raise InputError(f"no images or videos found at {source}")
    return files


def predict(
    source: Annotated[str, typer.Argument(help="Image, video, folder or glob.")],
    config: Annotated[str | None, typer.Option("--config", "-c", help="Preset or YAML (ours embed it).")] = None,
    set_: SetOpt = None,
    checkpoint: CheckpointOpt = None,
    onnx: OnnxOpt = None,
    engine: EngineOpt = None,
    backend: BackendOpt = BackendChoice.auto,
    out: Annotated[Path, typer.Option(help="Output folder for drawings and predictions.json.")] = Path("predictions"),
    flip: FlipOpt = None,
    scales: ScalesOpt = None,
    decoder: DecoderOpt = DecoderChoice.fast,
    device: DeviceOpt = "cpu",
    min_score: Annotated[float, typer.Option(help="Draw persons scoring at least this.")] = 0.05,
    batch_size: Annotated[int, typer.Option(help="Images per network call (with --letterbox).")] = 1,
    letterbox: Annotated[
        int | None,
        typer.Option(
            help="Pad every image to this square size to batch them; changes results against the official pipeline."
        ),
    ] = None,
    random_weights: Annotated[bool, typer.Option(help="Untrained network (smoke tests only).")] = False,
) -> None:
    """Predict poses; unreadable files are reported and skipped, the run goes on."""
    import json

    import cv2
    from rich.console import Console
    from rich.progress import Progress

    from hhrnet.config import resolve
    from hhrnet.errors import HHRNetError
    from hhrnet.evaluate import result_entries
    from hhrnet.inference import Predictor, read_image
    from hhrnet.io import atomic_write_bytes, atomic_write_text
    from hhrnet.visualize import draw_poses

    console = Console(stderr=True)
    cfg = resolve(config, set_ or []) if config is not None or set_ else None
    files = collect_sources(source)
    network, cfg = make_network(cfg, checkpoint, onnx, backend, device, random_weights, engine)
    predictor = Predictor(network, cfg, decoder=decoder.value, flip=flip, scales=parse_scales(scales),  # type: ignore[arg-type]
                          letterbox=letterbox)  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict[str, object]] = []
    failures: list[tuple[str, str]] = []
    quiet = os.environ.get("CI", "").lower() in ("1", "true") or not console.is_terminal
    with Progress(console=console, disable=quiet) as bar:
        task = bar.add_task("predict", total=len(files))
        videos = [p for p in files if p.suffix.lower() in VIDEO_SUFFIXES]
        stills = [p for p in files if p.suffix.lower() not in VIDEO_SUFFIXES]
        for path in videos:
            try:
                frames = _predict_video(path, predictor, out, min_score, bar)
                records.append({"file": str(path), "frames": frames})
            except HHRNetError as exc:
                failures.append((str(path), str(exc)))
                console.print(f"[yellow]skipped[/] {path}: {exc}")
            bar.advance(task)
        for start in range(0, len(stills), max(1, batch_size)):
            chunk: list[tuple[Path, object]] = []
            for path in stills[start : start + max(1, batch_size)]:
                try:
                    chunk.append((path, read_image(path)))
                except HHRNetError as exc:
                    failures.append((str(path), str(exc)))
                    console.print(f"[yellow]skipped[/] {path}: {exc}")
                    bar.advance(task)
            if not chunk:
                continue
            try:
                results = predictor.predict_batch([im for _, im in chunk])  # type: ignore[misc]
            except HHRNetError as exc:
                for path, _ in chunk:
                    failures.append((str(path), str(exc)))
                    bar.advance(task)
                continue
            for (path, image), poses in zip(chunk, results, strict=True):
                drawn = draw_poses(image, poses.keypoints, poses.scores, min_score=min_score)  # type: ignore[arg-type]
                ok, buf = cv2.imencode(".jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR))
                if ok:
                    atomic_write_bytes(out / f"{path.stem}_pose.jpg", buf.tobytes())
                records.append({"file": str(path), "people": result_entries(0, poses.keypoints, poses.scores)})
                bar.advance(task)
    atomic_write_text(out / "predictions.json", json.dumps({"predictions": records, "failures": failures}, indent=1))
    done = len(files) - len(failures)
    typer.echo(f"{done}/{len(files)} files predicted -> {out}/predictions.json" + (
        f"; {len(failures)} failed: " + ", ".join(f for f, _ in failures) if failures else ""))  # fmt: skip
    if done == 0:
        raise typer.Exit(1)


def _predict_video(path: Path, predictor: object, out: Path, min_score: float, bar: object) -> list[object]:
    import cv2

    from hhrnet.errors import InputError
    from hhrnet.evaluate import result_entries
    from hhrnet.visualize import draw_poses

    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"cannot open video {path}")
    fps = cap.get(cv2.CAP_PROP_FPS) or 25.0
    writer = None
    tmp = out / f".{path.stem}_pose.mp4.tmp"
    frames: list[object] = []
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            rgb = cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            poses = predictor.predict(rgb)  # type: ignore[attr-defined]
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
        raise InputError(f"no frames could be read from {path}")
    os.replace(tmp, out / f"{path.stem}_pose.mp4")
    return frames
