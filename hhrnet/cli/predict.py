"""``hhrnet predict SOURCE``: poses for an image, a folder, a glob or a video; drawings + JSON Lines + JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from hhrnet.cli.common import (
    BackendOpt,
    CheckpointOpt,
    ConfigOpt,
    DecoderOpt,
    DeviceOpt,
    EngineOpt,
    FlipOpt,
    LetterboxOpt,
    MaxImageBytesOpt,
    MaxImagePixelsOpt,
    OnnxOpt,
    ScalesOpt,
    SetOpt,
    check_number,
    open_model,
)


def predict(
    source: Annotated[str, typer.Argument(help="Image, video, folder or glob.")],
    config: ConfigOpt = None,
    set_: SetOpt = None,
    checkpoint: CheckpointOpt = None,
    onnx: OnnxOpt = None,
    engine: EngineOpt = None,
    backend: BackendOpt = "auto",
    out: Annotated[Path, typer.Option(help="Output folder: drawings, predictions.jsonl, predictions.json.")] = Path(
        "predictions"
    ),
    flip: FlipOpt = None,
    scales: ScalesOpt = None,
    decoder: DecoderOpt = "fast",
    device: DeviceOpt = "cpu",
    min_score: Annotated[float, typer.Option(help="Draw persons scoring at least this.")] = 0.05,
    batch_size: Annotated[int, typer.Option(help="Images per network call (needs --letterbox).")] = 1,
    letterbox: LetterboxOpt = None,
    max_image_pixels: MaxImagePixelsOpt = 40_000_000,
    max_image_bytes: MaxImageBytesOpt = 32 << 20,
    random_weights: Annotated[bool, typer.Option(help="Untrained network (smoke tests only).")] = False,
    sequential: Annotated[
        bool,
        typer.Option(
            "--sequential",
            help="Run read, network and decode+draw one after another (default: overlapped on threads; same output).",
        ),
    ] = False,
) -> None:
    """Predict poses; unreadable files are reported and skipped, results are written as they come.

    Images are bounded before decoding (--max-image-pixels/--max-image-bytes) and their network input by the
    codec (--set test.max_input_pixels=... / test.max_input_side=...); predictions.json says whether the run
    completed.
    """
    from rich.console import Console
    from rich.progress import Progress

    from hhrnet.environment import running_in_ci
    from hhrnet.errors import ConfigError
    from hhrnet.images import ImageLimits
    from hhrnet.predict import check_output_dir, collect_sources, run_predict

    console = Console(stderr=True, soft_wrap=True)
    check_number("--min-score", min_score, 0.0, 1.0)
    check_number("--batch-size", batch_size, 1, 1024)
    limits = ImageLimits(max_image_bytes, max_image_pixels)
    files = collect_sources(source, exclude=out)
    check_output_dir(out)  # before any model is loaded: a bad --out must not cost a whole run
    if batch_size > 1 and letterbox is None:
        raise ConfigError("--batch-size needs --letterbox SIZE (the official resize gives every image its own shape)")
    loaded = open_model(
        config=config,
        set_=set_,
        checkpoint=checkpoint,
        onnx=onnx,
        engine=engine,
        backend=backend,
        flip=flip,
        scales=scales,
        letterbox=letterbox,
        device=device,
        random_weights=random_weights,
    )
    predictor = loaded.predictor(decoder)
    quiet = running_in_ci() or not console.is_terminal
    try:
        with Progress(console=console, disable=quiet) as bar:
            task = bar.add_task("predict", total=len(files))

            def on_frame(path: str, done: int, total: int) -> None:
                bar.update(task, description=f"{Path(path).name} frame {done}" + (f"/{total}" if total else ""))

            report = run_predict(
                files,
                predictor,
                out,
                min_score=min_score,
                batch_size=batch_size,
                limits=limits,
                progress=lambda _: bar.advance(task),
                frame_progress=on_frame,
                overlap=not sequential,
            )
    except KeyboardInterrupt:
        typer.echo(
            f"interrupted: the results so far are kept in {out}/predictions.jsonl and {out}/predictions.json "
            "(marked complete: false, interrupted: true)",
            err=True,
        )
        raise
    for path, reason in report.failures:
        typer.echo(f"skipped {path}: {reason}", err=True)
    for path in report.empty:
        typer.echo(f"found nobody in {path}", err=True)
    people = sum(len(r.get("people", [])) for r in report.records)
    frames = sum(len(r.get("frames", [])) for r in report.records)
    typer.echo(
        f"{report.done}/{report.files} files predicted ({people} people"
        + (f", {frames} video frames" if frames else "")
        + f") -> {out}/predictions.json"
        + (f"; {len(report.failures)} failed" if report.failures else "")
    )
    if report.done == 0:
        raise typer.Exit(1)
