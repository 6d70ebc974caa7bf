"""``hhrnet demo``: the whole toolchain end to end on built-in synthetic data."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer


def demo(
    out: Annotated[Path, typer.Option(help="Where everything is written.")] = Path("demo_out"),
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Training epochs of TRAIN_IMAGES/8 steps (default: the tiny preset's 30 = 1500 steps).", min=1
        ),
    ] = None,
    minutes: Annotated[
        float,
        typer.Option(
            help="Train to this wall-clock budget instead (0: off). The model then depends on the machine's speed.",
            min=0.0,
        ),
    ] = 0.0,
    train_images: Annotated[int, typer.Option(help="Synthetic training images.")] = 400,
    val_images: Annotated[int, typer.Option(help="Synthetic validation images (AP and the parity rows).")] = 200,
) -> None:
    """Synthesize data, train, evaluate, export ONNX, benchmark parity and latency, predict, summarize."""
    from rich.console import Console
    from rich.table import Table

    from hhrnet.benchmarks.demo import run_demo
    from hhrnet.cli.common import check_number
    from hhrnet.predict import check_output_dir

    if minutes != 0:  # 0 (the default) is off
        check_number("--minutes", minutes, 0.01, 100_000)
    check_number("--train-images", train_images, 1, 1_000_000)
    check_number("--val-images", val_images, 1, 1_000_000)
    check_output_dir(out)

    console = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 160)  # a log keeps whole rows
    summary = run_demo(
        out,
        epochs=epochs,
        minutes=minutes,
        train_images=train_images,
        val_images=val_images,
        log=lambda m: console.print(m, highlight=False),
    )
    table = Table(title="hhrnet demo: tiny model on synthetic data", show_lines=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    table.add_column("note", overflow="fold")
    for what, value, note in summary.rows():
        table.add_row(what, value, note)
    console.print(table)
    console.print(f"everything is in {summary.out}/ (summary.json, parity.json, latency.json, sample_pose.jpg)")
