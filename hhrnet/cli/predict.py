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
    OnnxOpt,
    ScalesOpt,
    SetOpt,
    open_model,
)  # fmt: skip


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
    random_weights: Annotated[bool, typer.Option(help="Untrained network (smoke tests only).")] = False,
) -> None:
    """Predict poses; unreadable files are reported and skipped, results are written as they come."""
    from rich.console import Console
    from rich.progress import Progress

    from hhrnet.environment import running_in_ci
    from hhrnet.errors import ConfigError
    from hhrnet.predict import check_output_dir, collect_sources, run_predict

    console = Console(stderr=True, soft_wrap=True)
    files = collect_sources(source)
    check_output_dir(out)  # before any model is loaded: a bad --out must not cost a whole run
    if batch_size > 1 and letterbox is None:
        raise ConfigError("--batch-size needs --letterbox SIZE (the official resize gives every image its own shape)")
    loaded = open_model(
        config=config, set_=set_, checkpoint=checkpoint, onnx=onnx, engine=engine, backend=backend, flip=flip,
        scales=scales, letterbox=letterbox, device=device, random_weights=random_weights,
    )  # fmt: skip
    predictor = loaded.predictor(decoder)
    quiet = running_in_ci() or not console.is_terminal
    with Progress(console=console, disable=quiet) as bar:
        task = bar.add_task("predict", total=len(files))
        report = run_predict(files, predictor, out, min_score=min_score, batch_size=batch_size,
                             progress=lambda _: bar.advance(task))  # fmt: skip
    for path, reason in report.failures:
        typer.echo(f"skipped {path}: {reason}", err=True)
    for path in report.empty:
        typer.echo(f"found nobody in {path}", err=True)
    people = sum(len(r.get("people", [])) for r in report.records)
    typer.echo(
        f"{report.done}/{report.files} files predicted ({people} people) -> {out}/predictions.json"
        + (f"; {len(report.failures)} failed" if report.failures else "")
    )
    if report.done == 0:
        raise typer.Exit(1)
