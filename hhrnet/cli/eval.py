"""``hhrnet eval``: COCO / CrowdPose keypoint AP of a model, or of an existing results file."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from hhrnet.cli.common import (
    BackendOpt,
    CheckpointOpt,
    ConfigOpt,
    DecoderOpt,
    DeviceOpt,
    EngineOpt,
    FlipOpt,
    JsonOpt,
    OnnxOpt,
    ScalesOpt,
    SetOpt,
    open_model,
)


def evaluate(
    config: ConfigOpt = None,
    set_: SetOpt = None,
    checkpoint: CheckpointOpt = None,
    onnx: OnnxOpt = None,
    engine: EngineOpt = None,
    backend: BackendOpt = "auto",
    images: Annotated[Path | None, typer.Option(help="Image folder (default: from data.root).")] = None,
    annotations: Annotated[Path | None, typer.Option(help="Ground-truth json (default: from data.root).")] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="Score this results json instead of running a model.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="coco or crowdpose (default: the config's).")] = None,
    max_images: Annotated[int | None, typer.Option(help="Evaluate the first N images only.")] = None,
    flip: FlipOpt = None,
    scales: ScalesOpt = None,
    decoder: DecoderOpt = "fast",
    device: DeviceOpt = "cpu",
    out: Annotated[Path | None, typer.Option(help="Write the results json here.")] = None,
    json_out: JsonOpt = None,
) -> None:
    """Keypoint AP with the official settings (pycocotools; CrowdPose sigmas, areas and crowd levels)."""
    from hhrnet.cli.common import check_number, check_output_file
    from hhrnet.cli.output import print_table, write_json
    from hhrnet.config import layered
    from hhrnet.errors import ConfigError
    from hhrnet.evaluate import evaluate_predictions, write_results

    check_output_file("--out", out)  # before any work
    check_output_file("--json", json_out)
    if max_images is not None:
        check_number("--max-images", max_images, 1, None)
    failures: list[tuple[str, str]] = []
    count: int | None = None
    if predictions is not None:
        if annotations is None:
            raise ConfigError("--predictions needs --annotations")
        ds = dataset or (layered(None, config, set_ or []).data.dataset if config or set_ else "coco")
        stats = evaluate_predictions(predictions, annotations, ds)
    else:
        loaded = open_model(**_model_options(locals()))
        result = _run_with_progress(loaded, images, annotations, max_images, decoder)
        stats, failures, count = result.stats, result.failures, result.images
        if out is not None:
            write_results(out, result.results)
    title = "keypoint AP" + (f" ({count} images)" if count is not None else "")
    print_table([stats], list(stats), title)
    for warning in stats.warnings:
        typer.echo(f"warning: {warning}", err=True)
    for path, reason in failures:
        typer.echo(f"skipped {path}: {reason}", err=True)
    if json_out is not None:
        write_json(json_out, {"stats": dict(stats), "images": count, "failures": failures, "warnings": stats.warnings})


def _model_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options :func:`~hhrnet.cli.common.open_model` takes, from the command's."""
    names = ("config", "set_", "checkpoint", "onnx", "engine", "backend", "flip", "scales", "device")
    return {k: options[k] for k in names}


def _run_with_progress(
    loaded: Any, images: Path | None, annotations: Path | None, max_images: int | None, decoder: str
) -> Any:
    """The model over the split (default: the config's test split), with a progress bar on a terminal."""
    from rich.console import Console
    from rich.progress import Progress

    from hhrnet.environment import running_in_ci
    from hhrnet.evaluate import evaluate_model

    if images is None or annotations is None:
        from hhrnet.data.coco import find_split_files

        annotations, images = find_split_files(Path(loaded.config.data.root), loaded.config.data.test_split)
    console = Console(stderr=True, soft_wrap=True)
    with Progress(console=console, disable=running_in_ci() or not console.is_terminal) as bar:
        task = bar.add_task("eval", total=None)
        return evaluate_model(
            loaded.network,
            loaded.codec,
            images,
            annotations,
            max_images=max_images,
            decoder=decoder,
            graph=loaded.graph,
            progress=lambda i, n: bar.update(task, completed=i, total=n),
        )
