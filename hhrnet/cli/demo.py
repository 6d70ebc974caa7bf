"""``hhrnet demo``: the whole toolchain end to end on built-in synthetic data."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def demo(
    out: Annotated[Path, typer.Option(help="Where everything is written.")] = Path("demo_out"),
    minutes: Annotated[float, typer.Option(help="Training time budget.")] = 6.0,
    train_images: Annotated[int, typer.Option(help="Synthetic training images.")] = 400,
    val_images: Annotated[int, typer.Option(help="Synthetic validation images.")] = 60,
) -> None:
    """Synthesize data, train, evaluate, export ONNX, benchmark parity and latency, predict, summarize."""
    import json

    from rich.console import Console

    from hhrnet.demo import run_demo

    console = Console()
    summary = run_demo(out, minutes=minutes, train_images=train_images, val_images=val_images,
                       log=lambda m: console.print(m, highlight=False))  # fmt: skip
    console.rule("summary")
    console.print(json.dumps({"outputs": summary.outputs, "numbers": summary.numbers}, indent=2, default=str))
    console.print(f"everything is in {summary.out}/ (summary.json, parity.json, latency.json, sample_pose.jpg)")
