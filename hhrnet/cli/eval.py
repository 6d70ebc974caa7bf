"""``hhrnet eval``: COCO / CrowdPose keypoint AP of a model, or of an existing results file."""

from __future__ import annotations

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


def evaluate(
    config: Annotated[str | None, typer.Option("--config", "-c", help="Preset or YAML (ours embed it).")] = None,
    set_: SetOpt = None,
    checkpoint: CheckpointOpt = None,
    onnx: OnnxOpt = None,
    engine: EngineOpt = None,
    backend: BackendOpt = BackendChoice.auto,
    images: Annotated[Path | None, typer.Option(help="Image folder (default: from data.root).")] = None,
    annotations: Annotated[Path | None, typer.Option(help="Ground-truth json (default: from data.root).")] = None,
    predictions: Annotated[
        Path | None, typer.Option(help="Score this results json instead of running a model.")
    ] = None,
    dataset: Annotated[str | None, typer.Option(help="coco or crowdpose (default: config).")] = None,
    max_images: Annotated[int | None, typer.Option(help="Evaluate the first N images only.")] = None,
    flip: FlipOpt = None,
    scales: ScalesOpt = None,
    decoder: DecoderOpt = DecoderChoice.fast,
    device: DeviceOpt = "cpu",
    out: Annotated[Path | None, typer.Option(help="Write the results json here.")] = None,
) -> None:
    """Keypoint AP with the official settings (pycocotools; CrowdPose sigmas, areas and crowd levels)."""
    from rich.console import Console
    from rich.table import Table

    from hhrnet.config import resolve
    from hhrnet.errors import ConfigError
    from hhrnet.evaluate import evaluate_model, evaluate_predictions, write_results

    cfg = resolve(config, set_ or []) if config is not None or set_ else None
    if predictions is not None:
        if annotations is None:
            raise ConfigError("--predictions needs --annotations")
        stats = evaluate_predictions(predictions, annotations, dataset or (cfg.data.dataset if cfg else "coco"))
        failures: list[tuple[str, str]] = []
        count = None
    else:
        network, cfg = make_network(cfg, checkpoint, onnx, backend, device, engine=engine)
        if images is None or annotations is None:
            from hhrnet.data.coco import find_split_files

            annotations, images = find_split_files(Path(cfg.data.root), cfg.data.test_split)
        result = evaluate_model(network, cfg, images, annotations, flip=flip, scales=parse_scales(scales),
                                max_images=max_images, decoder=decoder.value)  # fmt: skip
        stats, failures, count = result.stats, result.failures, result.images
        if out is not None:
            write_results(out, result.results)
    table = Table(title="keypoint AP" + (f" ({count} images)" if count is not None else ""))
    for name in stats:
        table.add_column(name)
    table.add_row(*(f"{v:.4f}" for v in stats.values()))
    Console().print(table)
    for path, reason in failures:
        typer.echo(f"skipped {path}: {reason}", err=True)
